"""nnU-Net's three folders, read from the same environment variables nnU-Net reads.

Read at call time (not import time) so that tests and the demo can point them elsewhere.
"""
import os


def _folder(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def nnUNet_raw() -> str | None:
    return _folder("nnUNet_raw")


def nnUNet_preprocessed() -> str | None:
    return _folder("nnUNet_preprocessed")


def nnUNet_results() -> str | None:
    return _folder("nnUNet_results")


def require(name: str) -> str:
    """The folder named by environment variable `name`, or a clear error telling the user to set it."""
    value = _folder(name)
    if value is None:
        raise RuntimeError(f"The environment variable {name} is not set. nnQC uses nnU-Net's folders: "
                           f"export nnUNet_raw, nnUNet_preprocessed and nnUNet_results as for nnU-Net.")
    return value
