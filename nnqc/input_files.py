"""Checks on input image files for what SimpleITK's readers let through.

SimpleITK reads a NIfTI file cut short by an interrupted copy without complaint (the missing voxels come back as
zeros) and turns NaN voxels into 0, so a truncated segmentation or an image with NaN would be assessed as if it
were whole. Every reader nnQC uses for inputs (conversion, prediction, evaluation) calls `check_input_file` first.

- Completeness: the decompressed data must be at least as long as the header says (offset + voxels × bytes).
  For `.nii.gz` the gzip trailer's length field is compared first (O(1)); only when it disagrees is the stream
  decompressed to count, so a multi-member gzip file is judged by its real length, and a stream that does not
  decompress is refused as corrupt. Uncompressed `.nii` files are compared by size.
- Dimensionality: 3D only; trailing axes of length 1 are allowed (ITK drops them), 2D and 4D are refused as such.
- NaN (and infinity): read with nibabel for floating-point NIfTI images (integer files cannot hold them).
Other formats (.nrrd, .mha, .gipl) get the dimensionality check from SimpleITK's header reader.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib

import nibabel as nib
import numpy as np
import SimpleITK as sitk

_CHUNK = 1 << 24


class InputFileError(ValueError):
    """An input file that cannot be used as it is; the message names the file and says why."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _is_nifti(path: str) -> bool:
    return path.endswith((".nii", ".nii.gz"))


def _gzip_trailer_length(path: str) -> int:
    """The ISIZE field of a gzip file: the uncompressed length modulo 2**32 (of its last member)."""
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def _decompressed_length(path: str) -> int:
    """Bytes a gzip stream decompresses to; raises InputFileError when it does not decompress."""
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise InputFileError(f"{path} is corrupt or truncated: it does not decompress ({_first_line(e)})") from None
    return total


def _check_nifti_length(path: str, expected: int) -> None:
    if path.endswith(".gz"):
        if os.path.getsize(path) < 18:
            raise InputFileError(f"{path} is truncated: too short to be a gzip file")
        if _gzip_trailer_length(path) == expected % 2 ** 32:
            return
        actual = _decompressed_length(path)
    else:
        actual = os.path.getsize(path)
    if actual < expected:
        raise InputFileError(f"{path} is truncated: its header declares {expected} bytes of header and voxels, "
                             f"the file holds {actual} (an interrupted copy?)")


def _dimension_problem(shape: tuple[int, ...]) -> str | None:
    """Why a shape is not a 3D volume (trailing axes of length 1 allowed, as ITK drops them), or None."""
    if len(shape) < 3 or any(int(n) != 1 for n in shape[3:]):
        return f"is a {len(shape)}D image (shape {tuple(int(n) for n in shape)}), not a 3D volume"
    return None


def _check_nifti(path: str, check_nan: bool) -> None:
    try:
        image = nib.load(path)
    except Exception as e:  # nibabel raises several types on files that are not NIfTI
        if path.endswith(".gz"):
            _decompressed_length(path)  # a cut compressed stream (even inside the header) is named as such
        raise InputFileError(f"{path} cannot be read as NIfTI: {_first_line(e)}") from None
    header = image.header
    shape = tuple(int(n) for n in header.get_data_shape())
    problem = _dimension_problem(shape)
    if problem:
        raise InputFileError(f"{path} {problem}")
    dtype = header.get_data_dtype()
    offset = int(image.dataobj.offset)  # nibabel's loaded header reads vox_offset 0; the array proxy knows it
    _check_nifti_length(path, offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
    if check_nan and dtype.kind in "fc":
        try:
            data = np.asanyarray(image.dataobj)
        except Exception as e:
            raise InputFileError(f"{path} cannot be read: {_first_line(e)}") from None
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise InputFileError(f"{path} holds {bad} NaN or infinite voxel(s)")


def _check_other(path: str) -> None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputFileError(f"{path} cannot be read: {_first_line(e)}") from None
    size = tuple(int(n) for n in reader.GetSize())
    problem = _dimension_problem(size)
    if problem:
        raise InputFileError(f"{path} {problem}")
    if reader.GetNumberOfComponents() != 1:
        raise InputFileError(f"{path} has {reader.GetNumberOfComponents()} components per voxel, not one")


def check_input_file(path: str, check_nan: bool = True) -> None:
    """Raise InputFileError naming `path` when it is missing, truncated, corrupt, not 3D or (for floating-point
    NIfTI with check_nan) holds NaN or infinite voxels."""
    if not os.path.isfile(path):
        raise InputFileError(f"{path} does not exist")
    if _is_nifti(path):
        _check_nifti(path, check_nan)
    else:
        _check_other(path)
