"""Checks on input image files for what SimpleITK's readers let through.

SimpleITK reads a NIfTI file cut short by an interrupted copy without complaint (the missing voxels come back as
zeros) and turns NaN voxels into 0, so a truncated segmentation or an image with NaN would be assessed as if it
were whole. Every reader nnQC uses for inputs (conversion, prediction, evaluation) calls `check_input_file` first.

- Completeness: the decompressed data must be at least as long as the header says (offset + voxels × bytes).
  For `.nii.gz` the gzip trailer's length field is compared first (O(1)); only when it disagrees is the stream
  decompressed to count, so a multi-member gzip file is judged by its real length, and a stream that does not
  decompress is refused as corrupt. Uncompressed `.nii` files are compared by size.
- Dimensionality: 3D only; trailing axes of length 1 are allowed (ITK drops them), 2D and 4D are refused as such,
  and so is an axis of length 0 (ITK would read one slice of whatever follows the header).
- Header: a NIfTI voxel offset inside the header is refused (nibabel and ITK then read different bytes as voxels).
- NaN (and infinity): read with nibabel for floating-point NIfTI images, and for integer ones whose scaling
  (scl_slope, scl_inter) makes them floating point: ITK reads those as 32-bit floats, in which a large slope
  overflows to infinity, so they are checked as such.
- Grid, as SimpleITK's header reader (which nnQC's geometry checks use) reports it: positive finite spacing,
  finite origin, orthonormal direction. A negative NIfTI pixdim reads as a negative spacing there but as a flipped
  axis through ITK's full reader, so the two views of one file would disagree; a sheared NRRD grid (non-orthogonal
  space directions, e.g. a tilted CT gantry) would be resampled as if it were orthogonal.
Other formats (.nrrd, .mha, .gipl) are read whole by SimpleITK, which refuses a body shorter than its header
declares (a truncated file) and keeps NaN voxels, so completeness and NaN are checked on what it reads. Before
that, NRRD header lines and the words of an ASCII-encoded body are checked for lengths no real file has: SimpleITK's
NRRD reader crashes the whole process (segmentation fault) on them.

`check_same_grid` holds the files of one case to one grid, by nnQC's geometry rule (nnqc.geometry), and
`resampling_problem` says when a header's spacing, resampled to a model's, leaves no voxel or would fill memory.
"""
from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from collections.abc import Sequence

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from nnqc.error_messages import one_line
from nnqc.geometry import GEOMETRY_TOLERANCE, image_mismatch

_CHUNK = 1 << 24
# more voxels per channel than this after resampling to the model's spacing (4 GiB of float32 each) comes from an
# absurd spacing in a header (e.g. 1e9 mm), not from a scan: refused instead of exhausting memory
MAX_RESAMPLED_VOXELS = 2 ** 30
_NRRD_TEXT_ENCODINGS = ("ascii", "text", "txt")
_MAX_NRRD_WORD = 256  # characters; teem's buffer holds about 1024, a number needs about 25
_MAX_NRRD_LINE = 512  # characters of a header line teem parses; "space directions" of a 3D image needs about 100


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
    if any(int(n) < 1 for n in shape):
        return f"is empty: its header declares shape {tuple(int(n) for n in shape)}, with an axis of length 0"
    return None


def _count_not_finite(data: np.ndarray) -> int:
    return int(np.count_nonzero(~np.isfinite(data)))


def _is_scaled(image: nib.Nifti1Image) -> bool:
    """Whether nibabel (and ITK) scale the stored values by scl_slope and scl_inter."""
    slope, inter = getattr(image.dataobj, "slope", 1.0), getattr(image.dataobj, "inter", 0.0)
    return float(slope) != 1.0 or float(inter) != 0.0


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
    minimum = int(type(header).sizeof_hdr) + 4  # the header and its 4 extension flag bytes
    if offset < minimum:
        raise InputFileError(f"{path} has a broken header: its voxel offset (vox_offset) {offset} lies inside the "
                             f"{minimum}-byte header, so readers disagree on where the voxels start")
    _check_nifti_length(path, offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
    scaled = _is_scaled(image)
    if check_nan and (dtype.kind in "fc" or scaled):
        try:
            data = np.asanyarray(image.dataobj)
        except Exception as e:
            raise InputFileError(f"{path} cannot be read: {_first_line(e)}") from None
        if scaled and dtype.itemsize <= 4:  # ITK scales into 32-bit floats: what overflows there is infinite
            with np.errstate(over="ignore", invalid="ignore"):
                data = data.astype(np.float32)
        bad = _count_not_finite(data)
        if bad:
            scaling = " after its scaling (scl_slope, scl_inter)" if scaled else ""
            raise InputFileError(f"{path} holds {bad} NaN or infinite voxel(s){scaling}")


def _itk_reason(error: RuntimeError) -> str:
    """The part of a SimpleITK error a user can act on: SimpleITK's own reason, else the innermost NRRD (teem)
    reason ("expected 840 bytes but received 738"), else ITK's reason without the object's address."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    teem = [line[len("[nrrd]"):].strip() for line in lines if line.startswith("[nrrd]")]
    itk = [line.split("ITK ERROR:", 1)[1] for line in lines if "ITK ERROR:" in line]
    if "sitk::ERROR:" not in text and teem:
        return teem[-1]
    if "sitk::ERROR:" not in text and itk:
        return re.sub(r"^\s*\w+\(0x[0-9a-fA-F]+\):\s*", "", itk[0]).strip()
    return one_line(error)


def _header(path: str) -> sitk.ImageFileReader:
    """SimpleITK's header reader on `path`, its header read; InputFileError when it cannot read it."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputFileError(f"{path} cannot be read: {_itk_reason(e)}") from None
    return reader


def _numbers(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def _grid_problem(reader: sitk.ImageFileReader) -> str | None:
    """Why the grid in a header is unusable (spacing not positive and finite, origin not finite, direction not
    orthonormal), or None. Only the first three axes count: the others have length 1."""
    dim = reader.GetDimension()
    spacing = np.asarray(reader.GetSpacing(), dtype=np.float64)[:3]
    origin = np.asarray(reader.GetOrigin(), dtype=np.float64)[:3]
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        return (f"has spacing {_numbers(spacing)}: voxel spacings must be positive and finite (a negative NIfTI "
                f"pixdim? flip the axis in the direction instead)")
    if not np.all(np.isfinite(origin)):
        return f"has origin {_numbers(origin)}: the origin must be finite"
    if not np.all(np.isfinite(direction)) or not np.allclose(direction @ direction.T, np.eye(3), rtol=0,
                                                             atol=GEOMETRY_TOLERANCE):
        return (f"has direction {_numbers(direction.ravel())}, which is not orthonormal (a "
                f"sheared or degenerate grid, e.g. a tilted CT gantry): resample it onto an orthogonal grid first")
    return None


def _check_grid(path: str) -> None:
    reader = _header(path)
    problem = _dimension_problem(tuple(int(n) for n in reader.GetSize())) or _grid_problem(reader)
    if problem:
        raise InputFileError(f"{path} {problem}")
    if reader.GetNumberOfComponents() != 1:
        raise InputFileError(f"{path} has {reader.GetNumberOfComponents()} components per voxel, not one")


def _nrrd_header(path: str) -> tuple[dict[str, str], int, tuple[int, int]]:
    """The fields of an NRRD header ({name: value}, names in lower case), the offset of the attached body, and the
    (number, length) of its longest line that teem parses (comments and "key:=value" pairs are kept as text)."""
    fields, offset, longest = {}, 0, (0, 0)
    with open(path, "rb") as f:
        for number, line in enumerate(iter(f.readline, b""), start=1):
            offset += len(line)
            text = line.decode("latin-1").rstrip("\r\n")
            if not text:
                break
            name, colon, value = text.partition(":")
            if text.startswith("#") or (colon and value.startswith("=")):
                continue
            if len(text) > longest[1]:
                longest = (number, len(text))
            if colon:
                fields[name.strip().lower()] = value.strip()
    return fields, offset, longest


def _check_nrrd_for_reader_crashes(path: str) -> None:
    """teem, the NRRD reader inside SimpleITK, copies header field values and the words of an ASCII body into
    buffers of about 1 kB: a longer one (a garbled header line, a binary body declared "encoding: ascii") overruns
    them and kills the process (segmentation fault) instead of raising. Such files are refused before SimpleITK
    reads them; real header lines and numbers are far shorter."""
    fields, offset, (number, length) = _nrrd_header(path)
    if length > _MAX_NRRD_LINE:
        raise InputFileError(f"{path} is corrupt: line {number} of its NRRD header is {length} characters long, "
                             f"on which SimpleITK's reader would crash")
    if fields.get("encoding", "").lower() not in _NRRD_TEXT_ENCODINGS:
        return
    if "data file" in fields or "datafile" in fields:
        raise InputFileError(f"{path} keeps its ASCII-encoded voxels in another file (data file: "
                             f"{fields.get('data file', fields.get('datafile'))}), which nnQC does not read: save it "
                             f"as one file with raw or gzip encoding")
    with open(path, "rb") as f:
        f.seek(offset)
        longest = max((len(word) for word in f.read().split()), default=0)
    if longest > _MAX_NRRD_WORD:
        raise InputFileError(f"{path} is corrupt: its ASCII-encoded body holds a {longest}-character word where "
                             f"numbers belong (a binary body declared as ASCII?), on which SimpleITK's reader would "
                             f"crash")


def _check_other(path: str, check_nan: bool) -> None:
    if path.lower().endswith((".nrrd", ".nhdr")):
        _check_nrrd_for_reader_crashes(path)
    _check_grid(path)
    try:  # the header reader does not look at the body: only a whole read finds it cut short or unreadable
        image = sitk.ReadImage(path)
    except RuntimeError as e:
        raise InputFileError(f"{path} cannot be read whole (truncated or corrupt?): {_itk_reason(e)}") from None
    if check_nan and image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        bad = _count_not_finite(sitk.GetArrayViewFromImage(image))
        if bad:
            raise InputFileError(f"{path} holds {bad} NaN or infinite voxel(s)")


def check_input_file(path: str, check_nan: bool = True) -> None:
    """Raise InputFileError naming `path` when it is missing, truncated, corrupt, not 3D, has an unusable grid or
    (with check_nan) holds NaN or infinite voxels: SimpleITK alone would read most of these without a word."""
    if not os.path.isfile(path):
        raise InputFileError(f"{path} does not exist")
    if _is_nifti(path):
        _check_nifti(path, check_nan)
        _check_grid(path)
    else:
        _check_other(path, check_nan)


def check_same_grid(paths: Sequence[str]) -> None:
    """Raise InputFileError naming the file when a file of `paths` does not share the first one's grid (size,
    spacing, origin, direction by nnqc.geometry's rule): the channels of one case must lie on one grid, and
    nnU-Net's reader only warns about other origins or directions. Headers only; check_input_file them first."""
    if len(paths) < 2:
        return
    first = _header(paths[0])
    for path in paths[1:]:
        mismatch = image_mismatch(_header(path), first)
        if mismatch:
            raise InputFileError(f"{path} does not share the grid of {paths[0]}: {mismatch}")


def resampling_problem(images: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float],
                       transpose: Sequence[int]) -> str | None:
    """Why images (C, *S) with `spacing` (numpy axis order) cannot be preprocessed at a model's `target_spacing`
    (in its transposed axis order), or None: their non-zero box (what nnU-Net crops to) would shrink to no voxel
    along an axis, or grow past MAX_RESAMPLED_VOXELS. Either comes from a spacing no scanner writes, and would end
    deep inside the resampling (an empty array, or an allocation of terabytes)."""
    nonzero = np.any(images != 0, axis=0)
    extents = []
    for axis in range(nonzero.ndim):
        present = np.flatnonzero(np.any(nonzero, axis=tuple(a for a in range(nonzero.ndim) if a != axis)))
        extents.append(int(present[-1] - present[0] + 1) if present.size else nonzero.shape[axis])
    resampled = [round(extents[i] * float(spacing[i]) / float(t)) for i, t in zip(transpose, target_spacing)]
    described = (f"its spacing {_numbers(spacing)} mm resampled to the model's {_numbers(target_spacing)} mm "
                 f"turns its non-zero box of "
                 f"{tuple(extents[i] for i in transpose)} voxels into {tuple(resampled)}")
    if min(resampled) < 1:
        return f"{described}: no voxel is left along an axis"
    if float(np.prod(resampled, dtype=np.float64)) > MAX_RESAMPLED_VOXELS:
        return f"{described}: more than {MAX_RESAMPLED_VOXELS} voxels per channel"
    return None
