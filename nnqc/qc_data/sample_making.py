"""Making QC samples: checking a subject's inputs, and generating (or reading) a candidate with its targets.

These functions run in worker processes (module level, so that spawned workers can import them). A worker
keeps the last subject's reference and view, since samples come grouped by subject. Every failure of a sample
becomes one ConversionError line naming the sample, its subject and the file.
"""
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from nnqc.atomic_files import is_complete_copy, link_or_copy
from nnqc.metrics import quality_targets
from nnqc.qc_data.dataset_io import (
    CaseFiles,
    ConversionError,
    Geometry,
    check_case_geometry,
    check_labels,
    read_label_map,
    readable_message,
    write_label_map,
)
from nnqc.qc_data.external import check_external_candidate
from nnqc.qc_data.generators import generate_candidate
from nnqc.qc_data.layout import IMAGES_FOLDER, LABELS_FOLDER, candidate_path, image_file_name
from nnqc.qc_data.sample_plan import EXTERNAL_GENERATOR, SampleSpec
from nnqc.qc_data.targets_table import LABELS_COLUMN, labels_text
from nnqc.qc_data.view import SubjectView, fraction_outside, read_subject_view


@dataclass(frozen=True)
class WorkerContext:
    target_folder: str
    cases: dict[str, CaseFiles]
    file_ending: str
    region_names: tuple[str, ...]
    regions: tuple[tuple[int, ...], ...]
    labels: tuple[int, ...]
    tolerance_mm: float


_context: WorkerContext | None = None
_reference_cache: dict[str, tuple[np.ndarray, Geometry]] = {}
_view_cache: dict[str, SubjectView] = {}
_copied_subjects: set[str] = set()


def init_worker(context: WorkerContext) -> None:
    global _context
    _context = context
    _reference_cache.clear()
    _view_cache.clear()
    _copied_subjects.clear()


def subject_reference(subject: str, path: str) -> tuple[np.ndarray, Geometry]:
    """The subject's reference as uint8 (labels checked); only the last subject's is kept."""
    if subject not in _reference_cache:
        _reference_cache.clear()
        array, geometry = read_label_map(path)
        check_labels(array, _context.labels, path)
        _reference_cache[subject] = (array.astype(np.uint8, copy=False), geometry)
    return _reference_cache[subject]


def subject_view(subject: str, image_files: Sequence[str], check: bool) -> SubjectView:
    """The subject's view from its images, read once per subject (only the last subject's is kept)."""
    if subject not in _view_cache:
        _view_cache.clear()
        try:
            _view_cache[subject] = read_subject_view(image_files, check=check)
        except ValueError as e:
            raise ConversionError(f"{', '.join(image_files)}: {readable_message(e)}") from None
    return _view_cache[subject]


def copy_subject(cases: dict[str, CaseFiles], subject: str, target_folder: str, file_ending: str) -> None:
    """Images and reference of a subject, once, under nnU-Net names; idempotent."""
    files = cases[subject]
    pairs = [(src, os.path.join(target_folder, IMAGES_FOLDER, image_file_name(subject, c, file_ending)))
             for c, src in enumerate(files.images)]
    pairs.append((files.reference, os.path.join(target_folder, LABELS_FOLDER, subject + file_ending)))
    for src, dst in pairs:
        if not is_complete_copy(src, dst):
            link_or_copy(src, dst)


def target_record(spec: SampleSpec, targets: dict, region_names: Sequence[str], candidate: np.ndarray,
                  reference: np.ndarray, view: SubjectView) -> dict:
    """The sample's row of qc_targets.csv: ids, quality targets, the foreground outside the view and the
    candidate's labels."""
    record = {"sample": spec.sample, "subject": spec.subject, "source": spec.source, "generator": spec.generator,
              "seed": spec.seed, "dsc": float(targets["dsc"]), "nsd": float(targets["nsd"])}
    record.update({f"dsc_{r}": float(v) for r, v in zip(region_names, targets["dsc_per_region"])})
    record.update({f"nsd_{r}": float(v) for r, v in zip(region_names, targets["nsd_per_region"])})
    record["candidate_outside_view"] = float(fraction_outside(candidate, view))
    record["reference_outside_view"] = float(fraction_outside(reference, view))
    record[LABELS_COLUMN] = labels_text(candidate)
    return record


def make_candidate(spec: SampleSpec, reference: np.ndarray, geometry: Geometry, labels: Sequence[int],
                   regions: Sequence[tuple[int, ...]], view: SubjectView) -> np.ndarray:
    """The candidate label map of a sample: read (external) or generated from its own seed inside the view."""
    if spec.generator == EXTERNAL_GENERATOR:
        array, _ = read_label_map(spec.external_file)
        return array.astype(np.uint8)
    candidate = generate_candidate(spec.generator, reference, spec.seed, geometry.array_spacing, labels,
                                   list(regions), view)
    if candidate.shape != reference.shape:
        raise RuntimeError(f"generator {spec.generator} returned shape {candidate.shape}, expected "
                           f"{reference.shape}")
    return np.asarray(candidate, dtype=np.uint8)


def sample_error(spec: SampleSpec, file: str, error: BaseException) -> ConversionError:
    """One line naming the sample, its subject and the file (unless the message already names it)."""
    message = readable_message(error)
    if not isinstance(error, ConversionError):
        message = f"{type(error).__name__}: {message}"
    if file not in message:
        message = f"{file}: {message}"
    return ConversionError(f"Sample {spec.sample} (subject {spec.subject}): {message}")


def process_sample(spec: SampleSpec) -> dict:
    """Make one sample's candidate, write it next to the subject's copied images, return its targets record."""
    ctx = _context
    files = ctx.cases[spec.subject]
    file = files.reference
    try:
        if spec.subject not in _copied_subjects:
            copy_subject(ctx.cases, spec.subject, ctx.target_folder, ctx.file_ending)
            _copied_subjects.add(spec.subject)
        reference, geometry = subject_reference(spec.subject, files.reference)
        file = ", ".join(files.images)
        view = subject_view(spec.subject, files.images, check=False)
        file = spec.external_file or files.reference
        candidate = make_candidate(spec, reference, geometry, ctx.labels, ctx.regions, view)
        file = candidate_path(ctx.target_folder, spec.sample)
        write_label_map(candidate, geometry, file)
        file = files.reference
        targets = quality_targets(reference, candidate, list(ctx.regions), geometry.array_spacing,
                                  ctx.tolerance_mm)
        return target_record(spec, targets, ctx.region_names, candidate, reference, view)
    except Exception as e:  # any failure of one sample is reported as that sample's
        raise sample_error(spec, file, e) from None


def validate_subject(task: tuple[str, tuple[str, ...]]) -> list[str]:
    """Problems of one subject's inputs, one line each naming the case and the file: every file readable, whole
    and 3D, images without NaN, channel geometry, reference labels, external candidates."""
    subject, external_files = task
    files = _context.cases[subject]

    def named(error: BaseException) -> str:
        message = readable_message(error)
        if not isinstance(error, ConversionError):
            message = f"{type(error).__name__}: {message}"
        return message if message.startswith(f"Case {subject}") else f"Case {subject}: {message}"

    try:
        geometry = check_case_geometry(subject, files)
        array, _ = read_label_map(files.reference)
        check_labels(array, _context.labels, files.reference)
    except Exception as e:  # every problem of a subject is reported by name, not raised
        return [named(e)]
    problems = []
    for path in external_files:
        try:
            check_external_candidate(path, geometry, _context.labels)
        except Exception as e:
            problems.append(named(e))
    return problems
