"""The cases of an nnQC_predict run and the checks of each case's inputs before it is preprocessed.

A case is a segmentation CASE + file ending with its images CASE_XXXX + file ending. Everything that makes one
case unusable (a missing channel, an unreadable file, mismatching geometry, NaN) becomes a CaseError naming the
case and the problem, so that the case is skipped with its reason and the others go on. Whether a whole folder
fits the model is checked once, before the first case (see nnqc.inference.input_folder).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join

from nnqc.error_messages import one_line
from nnqc.geometry import properties_mismatch
from nnqc.inference.case_failures import CaseError
from nnqc.inference.input_fingerprints import input_fingerprints
from nnqc.input_files import InputFileError, check_input_file, check_same_grid, resampling_problem


@dataclass
class CaseFiles:
    case: str
    images: list[str]
    segmentation: str


def find_cases(images_folder: str, segmentations_folder: str, file_ending: str, num_channels: int
               ) -> tuple[list[CaseFiles], dict[str, str]]:
    """Cases with a segmentation, and {case: reason} for those that cannot be assessed (missing images,
    missing channels, or images without a segmentation)."""
    segmentations = sorted(f[:-len(file_ending)] for f in os.listdir(segmentations_folder)
                           if f.endswith(file_ending) and not f.startswith("."))
    images = {f[:-len(file_ending)] for f in os.listdir(images_folder) if f.endswith(file_ending)}
    image_cases = {name[:-5] for name in images if len(name) > 5 and name[-5] == "_" and name[-4:].isdigit()}
    cases, problems = [], {}
    for case in segmentations:
        files = [join(images_folder, f"{case}_{c:04d}{file_ending}") for c in range(num_channels)]
        missing = [os.path.basename(f) for f in files if not isfile(f)]
        if len(missing) == num_channels:
            problems[case] = f"no images in {images_folder} (expected {case}_0000{file_ending}, ...)"
        elif missing:
            problems[case] = f"missing channel file(s) {', '.join(missing)}"
        else:
            cases.append(CaseFiles(case, files, join(segmentations_folder, case + file_ending)))
    for case in sorted(image_cases - set(segmentations)):
        problems[case] = f"no segmentation {case}{file_ending} in {segmentations_folder}"
    return cases, problems


def read_case(case: CaseFiles, reader_writer) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """images (M, *S), segmentation (1, *S), the images' properties and the files' fingerprints of a case, read
    with the model's nnU-Net reader after checking each file; a CaseError names what is wrong with them."""
    try:  # SimpleITK reads truncated files and NaN without complaint, and 2D/4D files as something else
        for file in (case.segmentation, *case.images):
            check_input_file(file)
        check_same_grid(case.images)  # nnU-Net's reader only warns when the channels' origins differ
    except InputFileError as e:
        raise CaseError(f"{case.case}: {e}") from None
    fingerprints = input_fingerprints([*case.images, case.segmentation])
    try:
        images, properties = reader_writer.read_images(case.images)
        segmentation, seg_properties = reader_writer.read_seg(case.segmentation)
    except Exception as e:  # nnU-Net's readers raise plain errors on unreadable or inconsistent files
        raise CaseError(f"{case.case}: cannot read its files ({case.segmentation}, {case.images[0]}, ...): "
                        f"{one_line(e, with_type=True)}") from None
    if images.ndim != 4 or len(properties["spacing"]) != 3:
        raise CaseError(f"{case.case}: {case.images[0]} is not a 3D image")
    if segmentation.shape[1:] != images.shape[1:]:
        raise CaseError(f"{case.case}: the segmentation {case.segmentation} does not share the image geometry "
                        f"(shape {segmentation.shape[1:]} != {images.shape[1:]})")
    mismatch = properties_mismatch(seg_properties, properties)
    if mismatch:
        raise CaseError(f"{case.case}: the segmentation {case.segmentation} does not share the image geometry "
                        f"({mismatch})")
    return images, segmentation, properties, fingerprints


def check_case_arrays(images: np.ndarray, segmentation: np.ndarray, spacing, name: str, num_channels: int,
                      target_spacing, transpose_forward) -> None:
    """Raise a CaseError naming the case unless images (M, *S) and segmentation (1, *S) are 3D, of one shape,
    finite, with the model's number of channels, and resamplable to the model's spacing."""
    if images.ndim != 4 or segmentation.ndim != 4:
        raise CaseError(f"{name}: expected 3D images and segmentation, got shapes {images.shape[1:]} and "
                        f"{segmentation.shape[1:]}")
    if images.shape[1:] != segmentation.shape[1:]:
        raise CaseError(f"{name}: image shape {images.shape[1:]} differs from segmentation shape "
                        f"{segmentation.shape[1:]}")
    if not np.all(np.isfinite(images)):
        raise CaseError(f"{name}: the image holds NaN or infinite values")
    if images.shape[0] != num_channels:
        raise CaseError(f"{name}: {images.shape[0]} image channels, the model expects {num_channels}")
    problem = resampling_problem(images, spacing, target_spacing, transpose_forward)
    if problem:
        raise CaseError(f"{name}: {problem}")
