"""Checkpoints read as data only: torch's weights-only unpickler, with the few plain types nnQC's checkpoints hold.

A checkpoint is a pickle, and unpickling a crafted one runs its code; nnU-Net itself loads with
weights_only=False. nnQC reads tensors, containers, numbers, strings, torch.device and numpy scalars (older
training logs hold numpy floats) and refuses anything else, naming the file and the type it found.
"""
from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import torch

# numpy scalars are rebuilt from a dtype and raw bytes: nothing in them can run code
_NUMPY_SCALAR_TYPES = [np.dtype, np.dtypes.Float16DType, np.dtypes.Float32DType, np.dtypes.Float64DType,
                       np.dtypes.Int32DType, np.dtypes.Int64DType, np.dtypes.BoolDType]
try:
    _NUMPY_SCALAR_TYPES.append(np._core.multiarray.scalar)
except AttributeError:  # numpy < 2
    _NUMPY_SCALAR_TYPES.append(np.core.multiarray.scalar)


class UnsafeCheckpointError(ValueError):
    """A checkpoint that holds more than data (or is no checkpoint at all); the message names the file."""


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint at `path` as a dict, loaded without running any code it may hold."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(_NUMPY_SCALAR_TYPES):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), "an object torch refuses")
        raise UnsafeCheckpointError(
            f"{path} was refused: it holds more than weights and plain data ({found}), and loading it could run "
            f"code from it; nnQC checkpoints hold tensors, numbers, strings and containers only") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as e:
        raise UnsafeCheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): "
                                    f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise UnsafeCheckpointError(f"{path} is not an nnQC checkpoint (no network_weights)")
    return checkpoint
