"""Reading a source nnU-Net raw dataset for QC conversion, and writing label maps with a reference's header.

Geometry and label maps are read with SimpleITK directly so that a candidate can be checked against (and
written with) the exact header of its subject's reference. Writes are atomic (nnqc.atomic_files).
"""
import dataclasses
import json
import os
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.utilities.dataset_name_id_conversion import find_candidate_datasets, maybe_convert_to_dataset_name

from nnqc.atomic_files import write_image_atomically
from nnqc.geometry import grid_mismatches
from nnqc.input_files import InputFileError, check_input_file
from nnqc.metrics import allowed_labels, get_regions
from nnqc.paths import require

# file endings that SimpleITK reads and writes with full geometry (nnU-Net's SimpleITKIO list, plus plain NIfTI)
SUPPORTED_FILE_ENDINGS: tuple[str, ...] = tuple(SimpleITKIO.supported_file_endings) + (".nii",)


class ConversionError(RuntimeError):
    """Bad input to the QC conversion (or a broken QC dataset); the message names the file or case."""


@dataclass(frozen=True)
class Geometry:
    """Image header as SimpleITK reports it: size, spacing, origin in (x, y, z) order, direction row-major."""
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @property
    def array_spacing(self) -> tuple[float, ...]:
        """Spacing in numpy (z, y, x) axis order, as nnU-Net's properties['spacing']."""
        return tuple(abs(float(s)) for s in self.spacing[::-1])

    def mismatches(self, other: "Geometry") -> list[str]:
        """Names and values of the header fields that differ from `other` (empty when they agree), by nnQC's one
        geometry rule (nnqc.geometry)."""
        return grid_mismatches(dataclasses.asdict(self), dataclasses.asdict(other))


def _geometry_of(image: sitk.Image | sitk.ImageFileReader) -> Geometry:
    return Geometry(size=tuple(int(s) for s in image.GetSize()),
                    spacing=tuple(float(s) for s in image.GetSpacing()),
                    origin=tuple(float(o) for o in image.GetOrigin()),
                    direction=tuple(float(d) for d in image.GetDirection()))


def check_input(path: str, check_nan: bool = False) -> None:
    """check_input_file as a ConversionError: missing, truncated or corrupt, not 3D, NaN (with check_nan)."""
    try:
        check_input_file(path, check_nan=check_nan)
    except InputFileError as e:
        raise ConversionError(str(e)) from None


def read_geometry(path: str, check_nan: bool = False) -> Geometry:
    """Header (no voxel data through SimpleITK), after check_input; for floating-point NIfTI with `check_nan`
    the voxels are read once to look for NaN, as images need."""
    check_input(path, check_nan)
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise ConversionError(f"Cannot read the image header of {path}: {readable_message(e)}") from None
    return _geometry_of(reader)


def read_label_map(path: str) -> tuple[np.ndarray, Geometry]:
    """Integer label map (numpy z, y, x order) and its geometry; truncated, non-3D or non-integer files are an
    error naming the file."""
    check_input(path, check_nan=True)
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as e:
        raise ConversionError(f"Cannot read the label map {path}: {readable_message(e)}") from None
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != 3:
        raise ConversionError(f"{path} is not a 3D single-component label map "
                              f"(dimension {image.GetDimension()}, {image.GetNumberOfComponentsPerPixel()} "
                              f"components)")
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise ConversionError(f"{path} holds non-integer values; a label map must hold integer labels")
        array = array.astype(np.int64)
    return array, _geometry_of(image)


def label_values(array: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer label map."""
    if array.size and array.dtype == np.uint8:
        return np.flatnonzero(np.bincount(array.ravel(), minlength=256))
    return np.unique(array)


def check_labels(array: np.ndarray, allowed: Sequence[int], path: str) -> None:
    """Raise naming `path` when the label map holds values outside `allowed`."""
    unexpected = np.setdiff1d(label_values(array), np.asarray(allowed))
    if unexpected.size:
        raise ConversionError(f"{path} holds labels {unexpected.tolist()} that the dataset does not declare "
                              f"(allowed: {list(allowed)})")


def write_label_map(array: np.ndarray, geometry: Geometry, path: str) -> None:
    """Atomically write a uint8 label map with exactly the given geometry, compressed."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.uint8))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    write_image_atomically(image, path)


@dataclass(frozen=True)
class CaseFiles:
    """Files of one subject of a source dataset: one image per channel (channel order) and the reference."""
    images: tuple[str, ...]
    reference: str


@dataclass(frozen=True)
class SourceDataset:
    folder: str
    name: str
    dataset_json: dict
    file_ending: str
    num_channels: int
    cases: dict[str, CaseFiles]  # subject -> files, sorted by subject

    @property
    def subjects(self) -> list[str]:
        return list(self.cases)


def resolve_raw_dataset_folder(source: str | int) -> str:
    """A path is taken as given; a dataset id or name is looked up in nnUNet_raw as nnU-Net does."""
    if isinstance(source, str) and not source.strip().isdigit() and os.path.isdir(source):
        return os.path.abspath(source)
    try:
        raw = require("nnUNet_raw")
        name = maybe_convert_to_dataset_name(source)
    except (RuntimeError, ValueError) as e:
        raise ConversionError(f"Cannot find the source dataset {source!r}: {readable_message(e)}") from None
    folder = os.path.join(raw, name)
    if not os.path.isdir(folder):
        raise ConversionError(f"The source dataset {name} is not in nnUNet_raw ({folder} does not exist)")
    return folder


def dataset_regions(dataset_json: dict, where: str) -> tuple[list[str], list[tuple[int, ...]], tuple[int, ...]]:
    """Region names, regions and allowed labels of a dataset.json; `where` names it in errors."""
    try:
        names, regions = get_regions(dataset_json)
        labels = allowed_labels(dataset_json)
    except ValueError as e:
        raise ConversionError(f"{where}: {e}") from None
    if max(labels) > 255:
        raise ConversionError(f"{where}: label {max(labels)} does not fit the uint8 candidates of a QC dataset")
    return names, [tuple(r) for r in regions], labels


def dataset_short_name(folder_name: str) -> str:
    """'Dataset137_BraTS2021' -> 'BraTS2021'; any other folder name is returned unchanged."""
    match = re.fullmatch(r"Dataset\d{3}_(.+)", folder_name)
    return match.group(1) if match else folder_name


def load_dataset_json(folder: str) -> dict:
    path = os.path.join(folder, "dataset.json")
    if not os.path.isfile(path):
        raise ConversionError(f"{path} does not exist: not an nnU-Net raw dataset")
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, ValueError) as e:
        raise ConversionError(f"Cannot read {path}: {readable_message(e)}") from None
    for key in ("channel_names", "labels", "file_ending"):
        if key not in content:
            raise ConversionError(f"{path} lacks the nnU-Net field {key!r}")
    if content["file_ending"] not in SUPPORTED_FILE_ENDINGS:
        raise ConversionError(f"{path}: file_ending {content['file_ending']!r} is not supported for QC conversion "
                              f"(supported: {', '.join(SUPPORTED_FILE_ENDINGS)})")
    return content


def _cases_from_dataset_key(folder: str, dataset_json: dict) -> dict[str, CaseFiles]:
    """Cases listed explicitly in dataset.json's 'dataset' field (nnU-Net's alternative to the folder layout)."""
    def absolute(p: str) -> str:
        p = os.path.expandvars(p)
        return p if os.path.isabs(p) else os.path.abspath(os.path.join(folder, p))
    return {case: CaseFiles(images=tuple(absolute(i) for i in entry["images"]), reference=absolute(entry["label"]))
            for case, entry in dataset_json["dataset"].items()}


def _cases_from_folders(folder: str, file_ending: str, num_channels: int) -> dict[str, CaseFiles]:
    labels_folder = os.path.join(folder, "labelsTr")
    if not os.path.isdir(labels_folder):
        raise ConversionError(f"{labels_folder} does not exist: the source dataset has no references")
    subjects = [f[:-len(file_ending)] for f in os.listdir(labels_folder)
                if f.endswith(file_ending) and not f.startswith(".")]
    images_folder = os.path.join(folder, "imagesTr")
    channel_file = re.compile(r"(.+)_\d{4}" + re.escape(file_ending))
    known = set(subjects)
    if os.path.isdir(images_folder):
        for name in sorted(os.listdir(images_folder)):
            match = channel_file.fullmatch(name)
            if match and not name.startswith(".") and match.group(1) not in known:
                raise ConversionError(f"Case {match.group(1)}: the image {os.path.join(images_folder, name)} has "
                                      f"no reference {os.path.join(labels_folder, match.group(1) + file_ending)}")
    return {s: CaseFiles(images=tuple(os.path.join(folder, "imagesTr", f"{s}_{c:04d}{file_ending}")
                                      for c in range(num_channels)),
                         reference=os.path.join(labels_folder, s + file_ending))
            for s in subjects}


def open_source_dataset(source: str | int) -> SourceDataset:
    """Resolve and list a source nnU-Net raw dataset; every channel file of every subject must exist."""
    folder = resolve_raw_dataset_folder(source)
    dataset_json = load_dataset_json(folder)
    file_ending = dataset_json["file_ending"]
    num_channels = len(dataset_json["channel_names"])
    if "dataset" in dataset_json:
        cases = _cases_from_dataset_key(folder, dataset_json)
    else:
        cases = _cases_from_folders(folder, file_ending, num_channels)
    if not cases:
        raise ConversionError(f"The source dataset {folder} has no reference in labelsTr "
                              f"(files ending with {file_ending})")
    for subject, files in cases.items():
        if len(files.images) != num_channels:
            raise ConversionError(f"Case {subject} of {folder} lists {len(files.images)} images but dataset.json "
                                  f"declares {num_channels} channels")
        for f in (*files.images, files.reference):
            if not os.path.isfile(f):
                raise ConversionError(f"Case {subject}: the file {f} is missing")
    cases = {s: cases[s] for s in sorted(cases)}
    return SourceDataset(folder=folder, name=os.path.basename(os.path.normpath(folder)), dataset_json=dataset_json,
                         file_ending=file_ending, num_channels=num_channels, cases=cases)


def check_case_geometry(subject: str, files: CaseFiles) -> Geometry:
    """Every channel of a subject must share its reference's geometry; returns that geometry."""
    reference = read_geometry(files.reference)
    for image in files.images:
        problems = read_geometry(image, check_nan=True).mismatches(reference)
        if problems:
            raise ConversionError(f"Case {subject}: {image} does not match the geometry of its reference "
                                  f"{files.reference}: {'; '.join(problems)}")
    return reference


def raw_folder_of_dataset(dataset_id: int, name: str) -> str:
    """$nnUNet_raw/DatasetYYY_Name for a new dataset; refuses an id already taken by another name."""
    if not 0 < dataset_id < 1000:
        raise ConversionError(f"Dataset id {dataset_id} is outside 1..999")
    if not name or re.search(r"[\s/\\]", name):
        raise ConversionError(f"Dataset name {name!r} must be non-empty without spaces or path separators")
    folder_name = f"Dataset{dataset_id:03d}_{name}"
    try:
        raw = require("nnUNet_raw")
    except RuntimeError as e:
        raise ConversionError(str(e)) from None
    others = [c for c in find_candidate_datasets(dataset_id) if c != folder_name]
    if others:
        raise ConversionError(f"Dataset id {dataset_id} is already used by {', '.join(others)}; "
                              f"choose another id or remove that dataset")
    return os.path.join(raw, folder_name)


_CPP_LOCATION = re.compile(r"\S+\.(?:cxx|cpp|hxx|txx|h):\d+:?")


def readable_message(error: BaseException) -> str:
    """One readable line for an exception: SimpleITK's 'sitk::ERROR:' line without the C++ source location it is
    wrapped in, otherwise the first non-empty line; the type name when there is no text."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "sitk::ERROR:" in line:
            return line.split("sitk::ERROR:", 1)[1].strip()
    for line in lines:
        cleaned = _CPP_LOCATION.sub("", line).replace("Exception thrown in SimpleITK", "").strip(" :")
        if cleaned:
            return cleaned
    return type(error).__name__
