"""Whether this CPU computes bf16 natively (AMX or AVX-512 BF16): detected at run time, never assumed.

bf16 autocast on such a CPU roughly halves a QCResUNet forward; on one without, PyTorch emulates bf16 and it is
slower than fp32, so nnQC only turns it on where this says yes. `NNQC_CPU_BF16=0/1` overrides the detection.
"""
from __future__ import annotations

import functools
import os

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
OVERRIDE_VARIABLE = "NNQC_CPU_BF16"


def _cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True on CPUs with AMX-BF16 or AVX-512 BF16 (Linux /proc/cpuinfo), or as NNQC_CPU_BF16 says."""
    override = os.environ.get(OVERRIDE_VARIABLE)
    if override is not None and override.strip() in ("0", "1"):
        return override.strip() == "1"
    return bool(_cpu_flags() & set(BF16_FLAGS))
