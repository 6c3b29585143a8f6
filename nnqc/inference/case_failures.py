"""What a failing case means for a prediction run: a named input problem, an unexpected error, or a dead device.

- CaseError: the case's inputs are wrong in a way the message names; the case is skipped ("skipped: ...") and the
  run goes on and succeeds.
- Any other exception is unexpected (a bug, out of memory): the case is recorded as "error: ..." with its
  traceback in OUT/qc_errors.log, the other cases go on, and nnQC_predict exits non-zero after the summary.
- A CUDA error that leaves the device unusable (device-side assert, illegal address) would fail every later case:
  the run stops at once, with the summary of the cases done so far written.
After CUDA runs out of memory, the cached blocks are freed before the next case.
"""
from __future__ import annotations

import traceback

import torch

from nnqc.error_messages import one_line

SKIPPED, ERROR = "skipped", "error"
# messages of CUDA errors after which the context is unusable: every later kernel launch fails as well
_DEVICE_FATAL = ("device-side assert", "illegal memory access", "illegal address", "unspecified launch failure",
                 "misaligned address", "an illegal instruction", "CUDA error: unknown error", "ECC error")


class CaseError(RuntimeError):
    """A problem with one case's inputs: the case is skipped and listed in the summary with this reason."""


class UnexpectedCaseError(RuntimeError):
    """An unexpected failure of one case, with the traceback it happened at and what it means for the device, kept
    as plain values: it crosses from preprocessing workers to the main process."""

    def __init__(self, message: str, details: str, device_unusable: bool = False, out_of_memory: bool = False):
        super().__init__(message, details, device_unusable, out_of_memory)
        self.message, self.details = message, details
        self.device_unusable, self.out_of_memory = device_unusable, out_of_memory

    def __str__(self) -> str:
        return self.message


class DeviceUnusableError(RuntimeError):
    """The device failed in a way that fails every later case; the run stops."""


def _device_unusable(error: BaseException) -> bool:
    return (isinstance(error, RuntimeError) and not isinstance(error, torch.OutOfMemoryError)
            and any(marker.lower() in str(error).lower() for marker in _DEVICE_FATAL))


def unexpected(error: BaseException, what: str) -> UnexpectedCaseError:
    """`error` (being handled now) as an UnexpectedCaseError whose message starts with `what` (case and file)."""
    if isinstance(error, UnexpectedCaseError):
        return error
    return UnexpectedCaseError(f"{what}: {one_line(error, with_type=True)}", traceback.format_exc(),
                               _device_unusable(error), isinstance(error, torch.OutOfMemoryError))


def device_is_unusable(error: BaseException) -> bool:
    """A CUDA error after which the device cannot run anything (not an out-of-memory error, which passes)."""
    return error.device_unusable if isinstance(error, UnexpectedCaseError) else _device_unusable(error)


def recover_after(error: BaseException, device: torch.device) -> None:
    """Free the CUDA cache after an out-of-memory error, so the next case starts with the memory this one held."""
    out_of_memory = error.out_of_memory if isinstance(error, UnexpectedCaseError) else isinstance(
        error, torch.OutOfMemoryError)
    if out_of_memory and device.type == "cuda":
        torch.cuda.empty_cache()


def status_kind(status: str) -> str:
    """"ok", "skipped" or "error" of a summary row's status."""
    return status.split(":", 1)[0] if isinstance(status, str) else SKIPPED


def errors_log_text(rows: list[dict]) -> str:
    """The tracebacks of the cases that ended in an error, one block each, for OUT/qc_errors.log."""
    blocks = [f"=== {row['case']}: {row['status']}\n{row.get('traceback', '(no traceback recorded)').rstrip()}\n"
              for row in rows if status_kind(row.get("status")) == ERROR]
    return "\n".join(blocks)
