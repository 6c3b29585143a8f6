"""Fuzzing nnQC's input checks: mutated NIfTI and NRRD files fed to what nnQC_predict and nnQC_convert check.

Shared by tests/test_fuzz_inputs.py (a bounded, derandomized run) and benchmarks/benchmark_fuzz_inputs.py (a
longer one that counts). Every example starts from a valid small case, four image channels, a reference and a
segmentation, and breaks or changes it:

- arrays before writing: NaN/Inf voxels, constant images, label values that are negative, non-integer or not
  declared, other data types, other shapes (one file or all), 2D, 4D and multi-component files, another grid;
- headers after writing: NIfTI fields (dim, pixdim, datatype, vox_offset, scaling, qform/sform, magic, ...) and
  NRRD fields (dimension, sizes, type, space directions, origin, encoding, byte skip, ...);
- bodies: cut at any byte, bytes flipped, garbage appended, in the file or in its decompressed payload.

Each case goes through the checks themselves, called as functions (no subprocess): nnQCPredictor.preprocess_files
(what nnQC_predict does per case, check_input_file included) and the subject checks of nnQC_convert
(check_case_geometry, read_label_map, check_labels, check_external_candidate). The oracle: a check either refuses
with the project's error type (CaseError, ConversionError) and a message naming the case or the file, or accepts;
an input it accepts must be valid by `independent_verdict`, which re-reads every file with SimpleITK and nibabel
(whole bodies, both readers agreeing), and requires 3D single-component volumes, finite voxels, a sane grid
(spacing > 0, finite origin, orthonormal direction) shared by all files, and labels in the declared set; for
nnQC_predict also images that keep at least one voxel per axis, and no more than nnQC allows, at the model's
spacing. Any other exception is a crash; an invalid input accepted is a silent acceptance. Both are what the
fuzzing hunts. A refusal of a valid input is counted too ("refused although valid"); oddities such as a damaged gzip
container around whole data, or a trailing axis of length 1 that the reader keeps, may be refused or accepted.
Files on which SimpleITK itself would crash the process are judged without handing them to it.

It is a helper module; benchmark_fuzz_inputs.py is the script.
"""
from __future__ import annotations

import gzip
import io
import logging
import os
import re
import shutil
import traceback
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from hypothesis import strategies as st

from nnqc.inference.case_failures import CaseError
from nnqc.inference.cases import CaseFiles as PredictCase
from nnqc.inference.predictor import nnQCPredictor
from nnqc.qc_data.dataset_io import CaseFiles as ConvertCase
from nnqc.qc_data.dataset_io import ConversionError, check_case_geometry, check_labels, read_label_map
from nnqc.qc_data.external import check_external_candidate

CASE = "fuzzcase"
SHAPE = (9, 11, 10)  # numpy (z, y, x)
SPACING = (1.1, 0.9, 1.3)  # ITK (x, y, z)
ORIGIN = (-3.0, 12.5, 40.0)
FORMATS = (".nii.gz", ".nii", ".nrrd", ".nrrd (raw)")
TARGETS = ("image", "reference", "segmentation", "every file")
GEOMETRY_TOLERANCE = 1e-4  # nnqc.geometry's rule, restated independently
MAX_ASCII_WORD = 256  # characters of one word of an ASCII NRRD body that nnQC reads (a number needs about 25)
MAX_NRRD_LINE = 512  # characters of an NRRD header line that nnQC reads (comments and key:=value pairs aside)
OUTCOMES = ("accepted", "refused", "crash", "silent acceptance", "refused although valid")

_NAN, _INF = float("nan"), float("inf")


# ---- the valid case ---------------------------------------------------------------------------------------------
def base_arrays(num_channels: int) -> dict[str, np.ndarray]:
    """Role -> array (z, y, x) of a valid case: images non-zero in a box (so that cropping to it matters), a
    reference and a segmentation with labels 1..3 inside it."""
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    arrays = {}
    for c in range(num_channels):
        image = np.zeros(SHAPE, dtype=np.float32)
        image[1:8, 2:10, 1:9] = (50 + 10 * c + 3 * z + 2 * y - x)[1:8, 2:10, 1:9]
        arrays[f"image{c}"] = image
    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg[2:7, 3:9, 2:8] = 1
    seg[3:6, 4:8, 3:7] = 2
    seg[4:5, 5:7, 4:6] = 3
    arrays["reference"] = seg
    shifted = seg.copy()
    shifted[2:7, 3:9, 3:8] = seg[2:7, 3:9, 2:7]
    arrays["segmentation"] = shifted
    return arrays


def file_name(role: str, file_format: str) -> str:
    ending = ".nrrd" if file_format.startswith(".nrrd") else file_format
    if role.startswith("image"):
        return f"{CASE}_{int(role[5:]):04d}{ending}"
    return f"{CASE}_{role}{ending}"


# ---- mutations --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mutation:
    """One change to the case. stage: "array" (before writing), "nifti"/"nrrd" (header fields), "body" (bytes).
    target: image | reference | segmentation | every file; channel: which image."""
    stage: str
    kind: str
    target: str
    channel: int = 0
    params: tuple = ()

    def describe(self) -> str:
        where = f"image {self.channel}" if self.target == "image" else self.target
        return f"{self.stage}:{self.kind}{list(self.params)} on {where}"


@dataclass(frozen=True)
class Example:
    file_format: str
    mutations: tuple[Mutation, ...]

    def describe(self) -> str:
        return f"{self.file_format} with " + ("; ".join(m.describe() for m in self.mutations) or "no mutation")


_fractions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, width=32)
_targets = st.sampled_from(TARGETS)
_special_floats = st.sampled_from([0.0, -0.0, -1.0, -0.5, 1e-30, 1e-9, 0.5, 2.0, 1e9, 1e30, 3.5e38, _NAN, _INF,
                                   -_INF])
_dtypes = st.sampled_from(["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32",
                           "float64"])


def _array_mutations() -> st.SearchStrategy[tuple[str, tuple]]:
    return st.one_of(
        st.tuples(st.sampled_from(["nan", "posinf", "neginf"]), st.tuples(_fractions)),
        st.tuples(st.just("value"), st.tuples(_fractions, st.sampled_from(
            [-1.0, 4.0, 5.0, 255.0, 256.0, 1000.0, 1e10, 1.5, 0.5, 2.0000001, 3.0, 1e38, -1e38]))),
        st.tuples(st.just("constant"), st.tuples(st.sampled_from([0.0, 1.0, -5.0, 1e30]))),
        st.tuples(st.just("dtype"), st.tuples(_dtypes)),
        st.tuples(st.just("resize"), st.tuples(st.integers(0, 2), st.sampled_from([1, 2, -3, -1, 1, 3, 20]))),
        st.tuples(st.just("2d"), st.tuples(st.integers(0, 2))),
        st.tuples(st.just("4d"), st.tuples(st.integers(1, 3))),
        st.tuples(st.just("vector"), st.tuples(st.integers(2, 3))),
        st.tuples(st.just("spacing"), st.tuples(st.integers(0, 2), st.sampled_from(
            [0.5, 0.99, 1 + 1e-6, 1.5, 3.0, 1e-3, 1e3]))),
        st.tuples(st.just("origin"), st.tuples(st.integers(0, 2), st.sampled_from([1e-7, 1e-2, 5.0, -100.0, 1e6]))),
        st.tuples(st.just("rotation"), st.tuples(st.integers(0, 2), st.sampled_from([1e-7, 1e-2, 0.5, 3.14159]))),
        st.tuples(st.just("flip"), st.tuples(st.integers(0, 2))),
    )


_NIFTI_FIELDS = {
    "dim": st.tuples(st.sampled_from([-1, 0, 1, 2, 3, 4, 5, 7, 8, 9]), st.integers(1, 7),
                     st.sampled_from([-1, 0, 1, 2, 3, 9, 10, 11, 12, 100, 32767])),
    "pixdim": st.tuples(st.integers(0, 7), _special_floats),
    "datatype": st.tuples(st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 77, 128, 256, 512, 768, 1024, 1280, 1536, 1792,
                                           2048, 2304]), st.sampled_from([None, 0, 8, 16, 24, 32, 64, 128])),
    "vox_offset": st.tuples(st.sampled_from([0.0, 100.0, 347.0, 348.0, 351.0, 352.0, 353.0, 400.0, 1e6, -1.0,
                                             _NAN])),
    "scl_slope": st.tuples(_special_floats),
    "scl_inter": st.tuples(_special_floats),
    "qform_code": st.tuples(st.sampled_from([-1, 0, 1, 2, 3, 4, 5, 100])),
    "sform_code": st.tuples(st.sampled_from([-1, 0, 1, 2, 3, 4, 5, 100])),
    "quatern": st.tuples(st.sampled_from(["quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y",
                                          "qoffset_z"]), _special_floats),
    "srow": st.tuples(st.sampled_from(["srow_x", "srow_y", "srow_z"]), st.integers(0, 3), _special_floats,
                      st.booleans()),
    "sizeof_hdr": st.tuples(st.sampled_from([0, -1, 100, 347, 349, 540])),
    "magic": st.tuples(st.sampled_from([b"n+1", b"ni1", b"n+2", b"xyz", b""])),
    "intent": st.tuples(st.sampled_from([0, 2, 1002, 1007, 1011, 2001])),
}

_VECTORS = ["(1.1,0,0)", "(0,0,0)", "(nan,nan,nan)", "(-1.1,0,0)", "(1e-12,0,0)", "(1e12,0,0)", "(1,0.5,0)",
            "(0,0.9,0)", "(1.1,0)", "none", "(inf,0,0)"]
_NRRD_FIELDS = {
    "dimension": ["0", "1", "2", "3", "4", "-1", "x", ""],
    "sizes": ["10 11 9", "10 11", "10 11 9 2", "10 11 9 1", "10 11 0", "10 11 -1", "10 11 90", "10 11 8",
              "100000 100000 100000", "a b c"],
    "type": ["uchar", "signed char", "short", "ushort", "int", "uint", "longlong", "ulonglong", "float", "double",
             "block", "bogus"],
    "space directions": None,  # drawn from _VECTORS
    "space origin": ["(0,0,0)", "(nan,0,0)", "(inf,0,0)", "(1e300,0,0)", "(1,2)", "none"],
    "encoding": ["raw", "gzip", "bzip2", "ascii", "hex", "bogus"],
    "endian": ["big", "little", "middle"],
    "kinds": ["domain domain domain", "RGB-color domain domain", "vector domain domain domain", "space space space",
              "list domain domain"],
    "space": ["left-posterior-superior", "right-anterior-superior", "scanner-xyz", "3D-right-handed", "bogus",
              "left-posterior-superior-time"],
    "byte skip": ["-1", "0", "10", "100000"],
    "line skip": ["0", "1", "5"],
    "data file": ["missing.raw", "LIST"],
    "spacings": ["1 1 1", "0 0 0", "nan nan nan"],
    "measurement frame": ["(1,0,0) (0,1,0) (0,0,1)", "(0,0,0) (0,0,0) (0,0,0)"],
}


def _nrrd_header_mutations() -> st.SearchStrategy[tuple[str, tuple]]:
    fields = sorted(_NRRD_FIELDS)
    value = st.sampled_from(fields).flatmap(
        lambda f: st.tuples(st.just(f), st.lists(st.sampled_from(_VECTORS), min_size=1, max_size=4).map(" ".join))
        if _NRRD_FIELDS[f] is None else st.tuples(st.just(f), st.sampled_from(_NRRD_FIELDS[f])))
    return st.one_of(st.tuples(st.just("set"), value),
                     st.tuples(st.just("set long"), st.tuples(st.sampled_from(fields), st.integers(100, 5000))),
                     st.tuples(st.just("delete"), st.tuples(st.sampled_from(["sizes", "type", "space directions",
                                                                             "encoding", "dimension", "endian"]))),
                     st.tuples(st.just("ascii body"), st.tuples(st.sampled_from([0, 20, 300, 1000, 1100, 4000]),
                                                                _fractions)))


def _nifti_header_mutations() -> st.SearchStrategy[tuple[str, tuple]]:
    return st.sampled_from(sorted(_NIFTI_FIELDS)).flatmap(lambda f: st.tuples(st.just(f), _NIFTI_FIELDS[f]))


def _body_mutations() -> st.SearchStrategy[tuple[str, tuple]]:
    layer = st.sampled_from(["file", "payload"])
    return st.one_of(
        st.tuples(st.just("truncate"), st.tuples(layer, _fractions)),
        st.tuples(st.just("flip"), st.tuples(layer, st.lists(st.tuples(_fractions, st.integers(1, 255)), min_size=1,
                                                            max_size=4).map(tuple))),
        st.tuples(st.just("append"), st.tuples(layer, st.integers(1, 64))),
    )


@st.composite
def examples(draw, num_channels: int) -> Example:
    """A format and one to three mutations that fit it."""
    file_format = draw(st.sampled_from(FORMATS))
    header = _nrrd_header_mutations() if file_format.startswith(".nrrd") else _nifti_header_mutations()
    stage_strategies = {"array": _array_mutations(), "header": header, "body": _body_mutations()}
    mutations = []
    for _ in range(draw(st.integers(1, 3))):
        stage = draw(st.sampled_from(["array", "header", "body"]))
        kind, params = draw(stage_strategies[stage])
        if stage == "header":
            stage = "nrrd" if file_format.startswith(".nrrd") else "nifti"
        mutations.append(Mutation(stage, kind, draw(_targets), draw(st.integers(0, num_channels - 1)),
                                  tuple(params)))
    return Example(file_format, tuple(mutations))


# ---- applying mutations -----------------------------------------------------------------------------------------
@dataclass
class _Volume:
    """What is written for one role: its array and grid (ITK order), and how."""
    array: np.ndarray
    spacing: tuple[float, ...] = SPACING
    origin: tuple[float, ...] = ORIGIN
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    vector: bool = False


def _roles_of(mutation: Mutation, num_channels: int) -> list[str]:
    images = [f"image{c}" for c in range(num_channels)]
    if mutation.target == "every file":
        return [*images, "reference", "segmentation"]
    if mutation.target == "image":
        return [images[mutation.channel % num_channels]]
    return [mutation.target]


def _voxel(array: np.ndarray, fraction: float) -> tuple[int, ...]:
    index = min(int(fraction * array.size), array.size - 1)
    return np.unravel_index(index, array.shape)


def _with_value(array: np.ndarray, value: float) -> np.ndarray:
    """The array in a type that holds `value` exactly (or as float)."""
    if np.isfinite(value) and value == int(value) and abs(value) < 2 ** 31:
        dtype = np.result_type(array.dtype, np.min_scalar_type(int(value)))
        return array.astype(dtype if dtype.kind in "iuf" else np.float64)
    return array.astype(np.float64 if array.dtype.kind == "f" and array.dtype.itemsize == 8 or abs(value) > 3e38
                        else np.float32 if np.isfinite(value) and value == np.float32(value) else np.float64)


def _rotation(axis: int, angle: float) -> tuple[float, ...]:
    c, s = np.cos(angle), np.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return tuple(float(v) for v in m.ravel())


def _apply_array(volume: _Volume, kind: str, params: tuple) -> None:
    a = volume.array
    if kind in ("resize", "2d", "4d", "vector") and (a.ndim != 3 or volume.vector):
        return  # one change of dimensionality per file
    if kind in ("nan", "posinf", "neginf"):
        value = {"nan": _NAN, "posinf": _INF, "neginf": -_INF}[kind]
        a = a.astype(np.float32 if a.dtype.itemsize <= 4 else np.float64)
        a[_voxel(a, params[0])] = value
    elif kind == "value":
        a = _with_value(a, params[1])
        a[_voxel(a, params[0])] = params[1]
    elif kind == "constant":
        a = np.full(a.shape, params[0], dtype=np.float32 if a.dtype.kind == "f" or params[0] < 0 or params[0] > 255
                    else a.dtype)
    elif kind == "dtype":
        with np.errstate(invalid="ignore", over="ignore"):
            a = a.astype(params[0])
    elif kind == "resize":
        axis, delta = params
        size = max(1, a.shape[axis] + delta) if delta != 20 else 1  # 20: down to one voxel
        if size <= a.shape[axis]:
            a = np.take(a, range(size), axis=axis)
        else:
            pad = [(0, 0)] * a.ndim
            pad[axis] = (0, size - a.shape[axis])
            a = np.pad(a, pad)
    elif kind == "2d":
        a = np.take(a, a.shape[params[0]] // 2, axis=params[0])
    elif kind == "4d":
        a = np.stack([a] * params[0])
    elif kind == "vector":
        a = np.stack([a] * params[0], axis=-1)
        volume.vector = True
    elif kind == "spacing":
        spacing = list(volume.spacing)
        spacing[params[0]] *= params[1]
        volume.spacing = tuple(spacing)
    elif kind == "origin":
        origin = list(volume.origin)
        origin[params[0]] += params[1]
        volume.origin = tuple(origin)
    elif kind == "rotation":
        rotated = np.asarray(_rotation(*params)).reshape(3, 3) @ np.asarray(volume.direction).reshape(3, 3)
        volume.direction = tuple(float(v) for v in rotated.ravel())
    elif kind == "flip":
        direction = np.asarray(volume.direction).reshape(3, 3).copy()
        direction[:, params[0]] *= -1
        volume.direction = tuple(float(v) for v in direction.ravel())
    volume.array = a


def _write(volume: _Volume, path: str, file_format: str) -> None:
    array = volume.array
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=volume.vector)
    dim = image.GetDimension()
    spacing = (list(volume.spacing) + [1.0] * dim)[:dim]
    origin = (list(volume.origin) + [0.0] * dim)[:dim]
    direction = np.eye(dim)
    k = min(dim, 3)
    direction[:k, :k] = np.asarray(volume.direction).reshape(3, 3)[:k, :k]
    if dim == 2:  # the 2D part of a rotation is not orthonormal in general: keep the axes
        direction = np.eye(2)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    sitk.WriteImage(image, path, file_format in (".nii.gz", ".nrrd"))


def _split_nrrd(data: bytes) -> tuple[bytes, bytes]:
    end = data.find(b"\n\n")
    return (data[:end + 2], data[end + 2:]) if end >= 0 else (data, b"")


def _apply_nifti_header(data: bytes, kind: str, params: tuple) -> bytes:
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(data[:348]), check=False)
    if kind == "dim":
        dim = header["dim"].copy()
        dim[0] = params[0]
        dim[params[1]] = params[2]
        header["dim"] = dim
    elif kind == "pixdim":
        pixdim = header["pixdim"].copy()
        pixdim[params[0]] = params[1]
        header["pixdim"] = pixdim
    elif kind == "datatype":
        header["datatype"] = params[0]
        if params[1] is not None:
            header["bitpix"] = params[1]
    elif kind == "quatern":
        header[params[0]] = params[1]
    elif kind == "srow":
        row = header[params[0]].copy()
        row[params[1]] = params[2]
        header[params[0]] = row
        if params[3]:
            header["sform_code"] = 1
    elif kind == "magic":
        header["magic"] = params[0]
    elif kind == "intent":
        header["intent_code"] = params[0]
    else:
        header[kind] = params[0]
    return header.binaryblock + data[348:]


def _nrrd_dtype(name: str) -> np.dtype:
    """numpy's type for an NRRD "type" (any of teem's spellings: uchar, unsigned char, uint8_t, long long int, ...)."""
    name = name.strip().lower()
    if name in ("float", "double"):
        return np.dtype(np.float32 if name == "float" else np.float64)
    unsigned = name.startswith("u")
    size = (1 if "char" in name or "8" in name else 2 if "short" in name or "16" in name
            else 8 if "long" in name or "64" in name else 4)
    return np.dtype(f"{'u' if unsigned else 'i'}{size}")


def _ascii_body(head: str, body: bytes, word_length: int, fraction: float) -> tuple[str, bytes]:
    """The voxels written as text ("encoding: ascii"), one number zero-padded to `word_length` characters."""
    fields = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line)
    dtype = _nrrd_dtype(fields.get("type", "float"))
    if fields.get("encoding") == "gzip":
        body = _gunzip(body) or b""
    values = np.frombuffer(body[:len(body) // dtype.itemsize * dtype.itemsize], dtype=dtype)
    words = [repr(v.item()) for v in values]
    if words and word_length:
        i = min(int(fraction * len(words)), len(words) - 1)
        words[i] = words[i].rjust(word_length, "0") if words[i][0] != "-" else words[i]
    head = re.sub(r"^encoding:[^\n]*$", "encoding: ascii", head, flags=re.M)
    return head, (" ".join(words) + "\n").encode("latin-1")


def _apply_nrrd_header(data: bytes, kind: str, params: tuple) -> bytes:
    head, body = _split_nrrd(data)
    text = head.decode("latin-1")
    if kind == "ascii body":
        text, body = _ascii_body(text, body, *params)
        return text.encode("latin-1") + body
    if kind == "set long":
        params = (params[0], "1" * params[1])
    field = params[0]
    line = re.compile(rf"^{re.escape(field)}:[^\n]*\n", re.M)
    if kind == "delete":
        text = line.sub("", text)
    elif line.search(text):
        text = line.sub(lambda _: f"{field}: {params[1]}\n", text)
    else:
        text = text[:-1] + f"{field}: {params[1]}\n\n"
    return text.encode("latin-1") + body


def _mutate_bytes(data: bytes, kind: str, params: tuple) -> bytes:
    if kind == "truncate":
        return data[:int(params[1] * len(data))]
    if kind == "flip":
        out = bytearray(data)
        for fraction, xor in params[1]:
            if out:
                out[min(int(fraction * len(out)), len(out) - 1)] ^= xor
        return bytes(out)
    return data + bytes((7 * i + 13) % 256 for i in range(params[1]))


def _gunzip(data: bytes) -> bytes | None:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return None


def _apply_bytes(path: str, file_format: str, mutation: Mutation) -> None:
    """A header or body mutation of the written file; payload-level ones change the decompressed content and
    compress it again (a whole gzip stream with wrong content); those that cannot (a corrupt stream) are skipped."""
    with open(path, "rb") as f:
        data = f.read()
    compressed_nifti = file_format == ".nii.gz"
    nrrd_gzip = file_format == ".nrrd" and b"encoding: gzip" in _split_nrrd(data)[0]

    def on_payload(change):
        if compressed_nifti:
            payload = _gunzip(data)
            return data if payload is None else gzip.compress(change(payload), compresslevel=1)
        if nrrd_gzip and mutation.stage == "body":
            head, body = _split_nrrd(data)
            payload = _gunzip(body)
            return data if payload is None else head + gzip.compress(change(payload), compresslevel=1)
        return change(data)

    if mutation.stage == "nifti":
        data = on_payload(lambda d: _apply_nifti_header(d, mutation.kind, mutation.params) if len(d) >= 348 else d)
    elif mutation.stage == "nrrd":
        data = _apply_nrrd_header(data, mutation.kind, mutation.params)
    elif mutation.params[0] == "payload":
        data = on_payload(lambda d: _mutate_bytes(d, mutation.kind, mutation.params))
    else:
        data = _mutate_bytes(data, mutation.kind, mutation.params)
    with open(path, "wb") as f:
        f.write(data)


def write_case(example: Example, folder: str, num_channels: int) -> dict[str, str]:
    """Write the example's case into `folder` (emptied first); returns role -> path."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    volumes = {role: _Volume(array) for role, array in base_arrays(num_channels).items()}
    for mutation in example.mutations:
        if mutation.stage == "array":
            for role in _roles_of(mutation, num_channels):
                _apply_array(volumes[role], mutation.kind, mutation.params)
    paths = {}
    for role, volume in volumes.items():
        paths[role] = os.path.join(folder, file_name(role, example.file_format))
        _write(volume, paths[role], example.file_format)
    for mutation in example.mutations:
        if mutation.stage != "array":
            for role in _roles_of(mutation, num_channels):
                _apply_bytes(paths[role], example.file_format, mutation)
    return paths


# ---- the independent oracle -------------------------------------------------------------------------------------
@dataclass
class _Read:
    array: np.ndarray  # numpy (z, y, x)
    grid: dict
    oddities: list[str]


def _nrrd_crash_risk(path: str) -> str | None:
    """SimpleITK (teem) crashes the process on NRRD header lines or ASCII words over about 1 kB: such files are
    not valid inputs, and are not given to SimpleITK here either."""
    with open(path, "rb") as f:
        head, body = _split_nrrd(f.read())
    lines = [line for line in head.split(b"\n") if not line.startswith(b"#") and b":=" not in line]
    if max(len(line) for line in lines) > MAX_NRRD_LINE:
        return f"a header line of {max(len(line) for line in lines)} characters"
    if re.search(rb"^encoding: *(ascii|text|txt) *$", head, re.M):
        longest = max((len(word) for word in body.split()), default=0)
        if longest > MAX_ASCII_WORD:
            return f"a {longest}-character word in its ASCII body"
    return None


def _nifti_values(path: str) -> tuple[np.ndarray | None, str | None]:
    """A NIfTI file's voxels (x, y, z) as nibabel reads them, scaled by ITK's rule (scl_slope and scl_inter apply
    only when the slope is not about 0 and they change anything; then into 32-bit floats), or why not. Read before
    SimpleITK, which corrupts its heap on some files nibabel calls 5D (a vector image with scl_inter)."""
    try:
        nifti = nib.load(path)
        shape, dtype = nifti.shape, nifti.get_data_dtype()
        if len(shape) < 3 or any(n != 1 for n in shape[3:]) or dtype.fields is not None:
            return None, f"nibabel reads shape {shape} of {dtype}, not a 3D scalar volume"
        raw = np.asarray(nifti.dataobj.get_unscaled())
    except Exception as e:  # nibabel's many error types: whatever it cannot read whole is not valid
        return None, f"nibabel cannot read it whole ({type(e).__name__})"
    slope, inter, eps = float(nifti.dataobj.slope), float(nifti.dataobj.inter), np.finfo(np.float64).eps
    if abs(slope) > eps and (abs(slope - 1) > eps or abs(inter) > eps):
        with np.errstate(over="ignore", invalid="ignore"):
            raw = (raw.astype(np.float64) * slope + inter).astype(np.float32)
    return raw.reshape(shape[:3]), None


def _read_independently(path: str, label_map: bool, labels: Sequence[int]) -> tuple[_Read | None, list[str]]:
    """The file as both readers see it, or the reasons it is not a valid input."""
    name = os.path.basename(path)
    nifti = path.endswith((".nii", ".nii.gz"))
    risk = _nrrd_crash_risk(path) if path.endswith(".nrrd") else None
    if risk:
        return None, [f"{name}: {risk}"]
    if nifti:
        values, why = _nifti_values(path)
        if why:
            return None, [f"{name}: {why}"]
    try:
        image = sitk.ReadImage(path)
    except RuntimeError:
        return None, [f"{name}: SimpleITK cannot read it"]
    if image.GetNumberOfComponentsPerPixel() != 1:
        return None, [f"{name}: {image.GetNumberOfComponentsPerPixel()} components"]
    array, oddities = sitk.GetArrayFromImage(image), []
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:  # a trailing axis of length 1 is a 3D volume
        array = array[0]
        oddities.append(f"{name}: a trailing axis of length 1")
    elif image.GetDimension() != 3:
        return None, [f"{name}: {image.GetDimension()}D"]
    dim = image.GetDimension()
    header = sitk.ImageFileReader()  # the header reader's view, which nnQC's geometry checks use, must agree
    header.SetFileName(path)
    header.ReadImageInformation()
    if not np.allclose(header.GetSpacing(), image.GetSpacing(), rtol=1e-6, atol=0, equal_nan=True):
        return None, [f"{name}: its header reads spacing {header.GetSpacing()}, the image {image.GetSpacing()}"]
    grid = {"size": tuple(array.shape[::-1]), "spacing": np.asarray(image.GetSpacing()[:3]),
            "origin": np.asarray(image.GetOrigin()[:3]),
            "direction": np.asarray(image.GetDirection()).reshape(dim, dim)[:3, :3]}
    problems = []
    if nifti:
        values = values.transpose(2, 1, 0)
        if values.shape != array.shape:
            return None, [f"{name}: nibabel reads shape {values.shape}, SimpleITK {array.shape}"]
        with np.errstate(over="ignore", invalid="ignore"):
            if not np.allclose(values.astype(np.float64), array.astype(np.float64), rtol=1e-6, atol=0,
                               equal_nan=True):
                problems.append(f"{name}: nibabel and SimpleITK read different voxels")
        if not np.all(np.isfinite(values)):  # SimpleITK turns NaN into 0: nibabel's voxels tell
            problems.append(f"{name}: NaN or infinite voxels (nibabel)")
    if not np.all(np.isfinite(grid["spacing"])) or np.any(grid["spacing"] <= 0):
        problems.append(f"{name}: spacing {grid['spacing']}")
    if not np.all(np.isfinite(grid["origin"])):
        problems.append(f"{name}: origin {grid['origin']}")
    d = grid["direction"]
    if not np.all(np.isfinite(d)) or not np.allclose(d @ d.T, np.eye(3), atol=1e-4):
        problems.append(f"{name}: direction is not orthonormal")
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
        problems.append(f"{name}: NaN or infinite voxels")
    if label_map and not problems:
        values = np.unique(array)
        if not np.all(values == np.round(values)) or not set(values.tolist()) <= set(labels):
            problems.append(f"{name}: values {values[:8].tolist()} are not labels {list(labels)}")
    return _Read(array, grid, oddities), problems


def _grid_difference(a: dict, b: dict) -> str | None:
    if a["size"] != b["size"]:
        return f"size {a['size']} != {b['size']}"
    if not np.allclose(a["spacing"], b["spacing"], rtol=GEOMETRY_TOLERANCE, atol=0):
        return "spacing"
    scale = max(1.0, float(np.max(np.abs(b["origin"]))))
    if not np.allclose(a["origin"], b["origin"], rtol=0, atol=GEOMETRY_TOLERANCE * scale):
        return "origin"
    if not np.allclose(a["direction"], b["direction"], rtol=0, atol=GEOMETRY_TOLERANCE):
        return "direction"
    return None


def _gzip_damage(path: str) -> str | None:
    """Whether a gzip container (a .nii.gz, or an NRRD's gzip body) fails Python's full check (CRC, length, bytes
    after the stream) although the readers got whole data from it: a damaged container that a check may refuse or,
    judging by the data, accept."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".nrrd"):
        head, data = _split_nrrd(data)
        if b"encoding: gzip" not in head and b"encoding: gz" not in head:
            return None
    elif not path.endswith(".gz"):
        return None
    return None if _gunzip(data) is not None else f"{os.path.basename(path)}: damaged gzip container"


@dataclass
class Verdict:
    """The oracle on a set of files: problems make them invalid; oddities (a broken gzip container around whole
    data, a trailing axis of length 1 that the reader keeps) permit a refusal without requiring it."""
    problems: list[str]
    oddities: list[str]


def _resampled_problem(images: Sequence[np.ndarray], spacing_xyz: np.ndarray, model: tuple) -> str | None:
    """Whether images whose non-zero box, resampled from `spacing_xyz` to the model's spacing (model: target spacing
    and transpose, as nnU-Net's plans give them), keep at least one voxel per axis and at most the voxels nnQC
    allows (a policy value: MAX_RESAMPLED_VOXELS)."""
    from nnqc.input_files import MAX_RESAMPLED_VOXELS

    target, transpose = model
    nonzero = np.zeros(images[0].shape, dtype=bool)
    for image in images:
        nonzero |= image != 0
    spacing = spacing_xyz[::-1]
    sizes = []
    for axis in transpose:
        along = np.flatnonzero(nonzero.any(axis=tuple(a for a in range(3) if a != axis)))
        sizes.append(int(along[-1] - along[0] + 1) if along.size else nonzero.shape[axis])
    resampled = [round(n * float(spacing[axis]) / float(t)) for n, axis, t in zip(sizes, transpose, target)]
    if min(resampled) < 1 or float(np.prod(resampled, dtype=np.float64)) > MAX_RESAMPLED_VOXELS:
        return f"resampled to the model's spacing the images' non-zero box becomes {resampled} voxels"
    return None


def independent_verdict(paths: dict[str, str], roles: Sequence[str], labels: Sequence[int],
                        model: tuple | None = None) -> Verdict:
    """Why the files of `roles` are not a valid input together (no problems when they are), from the files alone;
    with `model` (target spacing, transpose) also whether the images can be preprocessed at its spacing."""
    verdict, grids, images = Verdict([], []), {}, []
    for role in roles:
        read, found = _read_independently(paths[role], not role.startswith("image"), labels)
        verdict.problems += found
        if read is not None:
            grids[role] = read.grid
            if role.startswith("image"):
                images.append(read.array)
            verdict.oddities += read.oddities
            damage = _gzip_damage(paths[role])
            if damage:
                verdict.oddities.append(damage)
    first = roles[0]
    for role in roles[1:]:
        if first in grids and role in grids:
            difference = _grid_difference(grids[role], grids[first])
            if difference:
                verdict.problems.append(f"{os.path.basename(paths[role])}: grid differs ({difference})")
    if model is not None and not verdict.problems and images:
        problem = _resampled_problem(images, grids[roles[0]]["spacing"], model)
        if problem:
            verdict.problems.append(problem)
    return verdict


# ---- running the checks -----------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """One check's verdict on one example: outcome in OUTCOMES, with the message (and traceback for crashes)."""
    check: str
    outcome: str
    message: str = ""


REASON_KINDS = (("would crash", "reader-crashing NRRD"), ("truncat", "truncated"), ("decompress", "corrupt gzip"),
                ("CRC", "corrupt gzip"), ("NaN or infinite", "NaN/Inf voxels"), ("holds labels", "undeclared labels"),
                ("not labels", "non-label values"), ("non-integer", "non-label values"),
                ("components", "multi-component"), ("D image", "not 3D"), ("not a 3D", "not 3D"),
                ("axis of length 0", "empty axis"), ("does not share", "grid mismatch"),
                ("does not match the geometry", "grid mismatch"), ("vox_offset", "broken NIfTI header"),
                ("must be positive", "bad grid"), ("not orthonormal", "bad grid"), ("must be finite", "bad grid"),
                ("no voxel is left", "spacing vs model"), ("voxels per channel", "spacing vs model"),
                ("cannot be read", "unreadable"), ("Cannot read", "unreadable"), ("cannot read", "unreadable"))


def reason_kind(message: str) -> str:
    """A coarse name for a refusal's reason, for the benchmark's counts."""
    return next((kind for key, kind in REASON_KINDS if key in message), "other")


def _named(message: str, names: Sequence[str]) -> bool:
    return any(n in message for n in names)


def check_predict(predictor: nnQCPredictor, paths: dict[str, str], num_channels: int) -> tuple[str, str, object]:
    """nnQC_predict's per-case preprocessing: ("accepted", "", result), ("refused", message, None) for a
    CaseError that names the case, or ("crash", traceback, None)."""
    case = PredictCase(CASE, [paths[f"image{c}"] for c in range(num_channels)], paths["segmentation"])
    try:
        return "accepted", "", predictor.preprocess_files(case)
    except CaseError as e:
        if not _named(str(e), [CASE]):
            return "crash", f"CaseError without the case's name: {e}", None
        return "refused", str(e), None
    except Exception:
        return "crash", traceback.format_exc(), None


def check_convert(paths: dict[str, str], num_channels: int, labels: Sequence[int]) -> tuple[str, str, object]:
    """nnQC_convert's subject checks (validate_subject's steps, called one by one so that an exception that is not
    a ConversionError shows): images and reference, the reference's labels, the segmentation as an external
    candidate."""
    files = ConvertCase(tuple(paths[f"image{c}"] for c in range(num_channels)), paths["reference"])
    try:
        geometry = check_case_geometry(CASE, files)
        reference, _ = read_label_map(files.reference)
        check_labels(reference, labels, files.reference)
        check_external_candidate(paths["segmentation"], geometry, labels)
        candidate, _ = read_label_map(paths["segmentation"])
        return "accepted", "", (geometry, reference, candidate)
    except ConversionError as e:
        if not _named(str(e), [CASE, *(os.path.basename(p) for p in paths.values())]):
            return "crash", f"ConversionError naming neither the case nor a file: {e}", None
        return "refused", str(e), None
    except Exception:
        return "crash", traceback.format_exc(), None


def _predict_result_problems(result: tuple, num_channels: int, labels: Sequence[int]) -> list[str]:
    data, candidate, _ = result
    problems = []
    if data.ndim != 4 or data.shape[0] != num_channels or not np.all(np.isfinite(data)):
        problems.append(f"preprocessed images of shape {data.shape} or not finite")
    if candidate.shape != (1, *data.shape[1:]) or not set(np.unique(candidate).tolist()) <= set(labels):
        problems.append(f"candidate of shape {candidate.shape} or with labels {np.unique(candidate).tolist()}")
    return problems


def _convert_result_problems(result: tuple, labels: Sequence[int]) -> list[str]:
    geometry, reference, candidate = result
    problems = []
    if tuple(geometry.size) != tuple(reference.shape[::-1]) or candidate.shape != reference.shape:
        problems.append(f"geometry size {geometry.size} vs arrays {reference.shape}, {candidate.shape}")
    for name, array in (("reference", reference), ("candidate", candidate)):
        if not set(np.unique(array).tolist()) <= set(labels):
            problems.append(f"{name} labels {np.unique(array).tolist()}")
    return problems


def run_example(example: Example, folder: str, predictor: nnQCPredictor, num_channels: int, labels: Sequence[int]
                ) -> list[Outcome]:
    """Write the example, run both checks and judge them against the oracle."""
    paths = write_case(example, folder, num_channels)
    images = [f"image{c}" for c in range(num_channels)]
    outcomes = []
    for check, roles in (("predict", [*images, "segmentation"]), ("convert", [*images, "reference", "segmentation"])):
        if check == "predict":
            verdict, message, result = check_predict(predictor, paths, num_channels)
        else:
            verdict, message, result = check_convert(paths, num_channels, labels)
        if verdict == "crash":
            outcomes.append(Outcome(check, "crash", message))
            continue
        model = ((predictor.configuration_manager.spacing, predictor.plans_manager.transpose_forward)
                 if check == "predict" else None)
        oracle = independent_verdict(paths, roles, labels, model)
        problems = oracle.problems
        if verdict == "accepted":
            problems += (_predict_result_problems(result, num_channels, labels) if check == "predict"
                         else _convert_result_problems(result, labels))
            outcomes.append(Outcome(check, "silent acceptance", "; ".join(problems)) if problems
                            else Outcome(check, "accepted"))
        else:
            outcomes.append(Outcome(check, "refused" if problems or oracle.oddities else "refused although valid",
                                    message))
    return outcomes


def preprocessing_predictor(model_folder: str, fold: int = 0) -> nnQCPredictor:
    """An nnQCPredictor of a trained (or untrained) model folder on the CPU, for preprocess_files."""
    import torch

    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False, fp32=True)
    predictor.initialize_from_trained_model_folder(model_folder, (fold,))
    return predictor


@contextmanager
def quiet_readers() -> Iterator[None]:
    """ITK and nibabel warn about odd headers for every example; the checks' verdicts are what counts. Both are
    restored afterwards."""
    display, logger = sitk.ProcessObject_GetGlobalWarningDisplay(), logging.getLogger("nibabel")
    level = logger.level
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        sitk.ProcessObject_SetGlobalWarningDisplay(display)
        logger.setLevel(level)



# ---- folder layouts (nnQC_predict's check of the whole folder) --------------------------------------------------
LAYOUT_ENDING = ".nii.gz"
_STEMS = ["case", "case_1", "a_0000", "b.c", "x_y", "case__0", "0000"]
_CHANNELS = ["_0000", "_0001", "_0002", "_0003", "_0004", "_9999", "_0", "_00000", "_abcd", ""]
_ENDINGS = [LAYOUT_ENDING, ".nii", ".nrrd", ".gz", "", ".NII.GZ", ".nii.gz.tmp", ".nii.gz.nii.gz"]


@st.composite
def layouts(draw, num_channels: int) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """(images, segmentations): names (hidden ones included) and whether each is a folder instead of a file; a
    valid layout of one to three cases, some of its entries dropped, and random entries added."""
    cases = draw(st.lists(st.sampled_from(_STEMS), min_size=1, max_size=3, unique=True))
    valid_images = [(f"{case}_{c:04d}{LAYOUT_ENDING}", False) for case in cases for c in range(num_channels)]
    valid_segmentations = [(f"{case}{LAYOUT_ENDING}", False) for case in cases]
    entry = st.tuples(st.sampled_from(["", "", "."]), st.sampled_from(_STEMS), st.sampled_from(_CHANNELS),
                      st.sampled_from(_ENDINGS), st.integers(0, 9)).map(lambda t: ("".join(t[:4]), t[4] == 0))

    def perturbed(valid, max_added):
        kept = [e for e in valid if draw(st.integers(0, 9)) > 0]
        added = draw(st.lists(entry, max_size=max_added))
        unique = {}
        for name, is_folder in kept + added:
            if name not in ("", "."):
                unique.setdefault(name, is_folder)
        return sorted(unique.items())

    return perturbed(valid_images, 4), perturbed(valid_segmentations, 2)


def write_layout(layout: tuple[list[tuple[str, bool]], list[tuple[str, bool]]], folder: str) -> tuple[str, str]:
    """Empty files (and folders) named as the layout says, in folder/images and folder/segmentations."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    made = []
    for sub, entries in zip(("images", "segmentations"), layout):
        os.makedirs(os.path.join(folder, sub))
        for name, is_folder in entries:
            path = os.path.join(folder, sub, name)
            if is_folder:
                os.makedirs(path)
            else:
                open(path, "wb").close()
        made.append(os.path.join(folder, sub))
    return made[0], made[1]


def layout_problems(images_folder: str, segmentations_folder: str, num_channels: int) -> list[str]:
    """Why a folder pair does not fit a model of `num_channels` channels reading LAYOUT_ENDING, from the listing
    alone (the rule of nnqc.inference.input_folder, restated): visible image files CASE_XXXX + ending must name
    exactly channels 0..num_channels-1 over the folder; visible segmentation files, if any, must use the ending."""
    def visible(folder):
        return [n for n in os.listdir(folder) if not n.startswith(".") and os.path.isfile(os.path.join(folder, n))]

    channels = set()
    for name in visible(images_folder):
        if name.endswith(LAYOUT_ENDING):
            stem = name[:-len(LAYOUT_ENDING)]
            if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit() and stem[-4:].isascii():
                channels.add(int(stem[-4:]))
    problems = []
    if channels != set(range(num_channels)):
        problems.append(f"channels {sorted(channels)}")
    segmentations = visible(segmentations_folder)
    if segmentations and not any(n.endswith(LAYOUT_ENDING) for n in segmentations):
        problems.append("no segmentation with the file ending")
    return problems


def run_layout(layout: tuple[list[tuple[str, bool]], list[tuple[str, bool]]], folder: str, num_channels: int
               ) -> Outcome:
    """check_input_folders and find_cases on a layout, judged by layout_problems: a refusal must be an
    InputFolderError naming the folder; after an acceptance, find_cases must list only existing files."""
    from nnqc.inference.cases import find_cases
    from nnqc.inference.input_folder import InputFolderError, check_input_folders

    images, segmentations = write_layout(layout, folder)
    dataset_json = {"channel_names": {str(c): f"channel{c}" for c in range(num_channels)},
                    "file_ending": LAYOUT_ENDING}
    try:
        check_input_folders(images, segmentations, dataset_json)
        cases, problems = find_cases(images, segmentations, LAYOUT_ENDING, num_channels)
    except InputFolderError as e:
        if images not in str(e) and segmentations not in str(e):
            return Outcome("folder", "crash", f"InputFolderError naming neither folder: {e}")
        return Outcome("folder", "refused" if layout_problems(images, segmentations, num_channels)
                       else "refused although valid", str(e))
    except Exception:
        return Outcome("folder", "crash", traceback.format_exc())
    found = layout_problems(images, segmentations, num_channels)
    missing = [f for c in cases for f in (*c.images, c.segmentation) if not os.path.exists(f)]
    if missing:
        found.append(f"find_cases lists missing files {missing}")
    if not all(case in reason for case, reason in problems.items()):
        found.append(f"unnamed problems {problems}")
    return Outcome("folder", "silent acceptance", "; ".join(found)) if found else Outcome("folder", "accepted")
