"""Building a raw QC dataset from an nnU-Net raw dataset (SPEC §4): check the inputs, make the samples, merge.

Which samples: nnqc.qc_data.sample_plan; making them: sample_making; resuming and merging: progress;
verifying: verification. Every input of this part is checked before anything is written; then samples are
made in worker processes, and the main process is the single writer of the progress file.
"""
import json
import os
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from tqdm import tqdm

from nnqc.metrics import nsd_tolerance_mm
from nnqc.process_pool import map_unordered
from nnqc.qc_data.dataset_io import (
    ConversionError,
    dataset_regions,
    dataset_short_name,
    open_source_dataset,
    raw_folder_of_dataset,
)
from nnqc.qc_data.external import external_sources
from nnqc.qc_data.layout import DATASET_JSON
from nnqc.qc_data.nnunet_model import harvested_sources, temporary_work_folder
from nnqc.qc_data.progress import (
    check_resumable,
    done_samples,
    drop_truncated_tail,
    merge_if_complete,
    progress_file,
    start_or_resume,
)
from nnqc.qc_data.sample_making import WorkerContext, init_worker, process_sample, validate_subject
from nnqc.qc_data.sample_plan import SampleSpec, degradation_families, plan_samples, subjects_of_part
from nnqc.qc_data.view import OUTSIDE_VIEW_WARNING

# recorded in the settings: a conversion started by code without the view is not resumed by code with it
VIEW_SETTING = "nonzero_box"


class OutsideViewWarning(UserWarning):
    """A candidate or reference has foreground outside the network's view; its targets count voxels the
    network never sees."""


@dataclass
class ConversionResult:
    folder: str
    num_samples: int          # samples in the whole plan
    num_written: int          # samples this call produced
    complete: bool            # every sample of every part is done and the dataset files are written


def check_apart(target: str, inputs: Sequence[str]) -> None:
    """The QC dataset folder must be neither an input folder, nor inside one, nor around one, also through
    symbolic links, so that conversion never writes into its inputs."""
    resolved = os.path.realpath(target)
    for folder in inputs:
        other = os.path.realpath(folder)
        if resolved == other:
            relation = "is"
        elif resolved.startswith(other.rstrip(os.sep) + os.sep):
            relation = "lies inside"
        elif other.startswith(resolved.rstrip(os.sep) + os.sep):
            relation = "holds"
        else:
            continue
        through = "" if os.path.abspath(target) == resolved and os.path.abspath(folder) == other else \
            f" (through a link: {resolved})"
        raise ConversionError(f"The QC dataset folder {target} {relation} the input folder {folder}{through}; "
                              f"choose another dataset id or nnUNet_raw, inputs are never written")


def convert_dataset(source: str | int, target_id: int, target_name: str | None = None,
                    candidate_folders: Sequence[str] = (), candidate_tags: Sequence[str] | None = None,
                    num_seggen: int = 3, num_degradations: int = 10, tolerance_mm: float | None = None,
                    seed: int = 0, num_processes: int = 1, num_parts: int = 1, part_id: int = 0,
                    verbose: bool = True, families: Sequence[str] | None = None,
                    nnunet_models: Sequence[str] = ()) -> ConversionResult:
    """Build (or resume) $nnUNet_raw/DatasetYYY_NameQC from a source nnU-Net raw dataset. `families`: the
    degradation families or groups to cycle through (nnqc.qc_data.sample_plan.degradation_families);
    `nnunet_models`: trained nnU-Net model folders or exported zips whose folds' validation segmentations become
    candidate sources (nnqc.qc_data.nnunet_model).
    """
    if not nnunet_models:
        return _convert_dataset(source, target_id, target_name, candidate_folders, candidate_tags, num_seggen,
                                num_degradations, tolerance_mm, seed, num_processes, num_parts, part_id, verbose,
                                families)
    dataset = open_source_dataset(source)
    tags = list(candidate_tags) if candidate_tags is not None else \
        [os.path.basename(os.path.normpath(f)) for f in candidate_folders]
    with temporary_work_folder() as work:
        folders, harvested_tags = harvested_sources(nnunet_models, dataset.name, dataset.subjects,
                                                    dataset.file_ending, work)
        return _convert_dataset(source, target_id, target_name, [*candidate_folders, *folders],
                                [*tags, *harvested_tags], num_seggen, num_degradations, tolerance_mm, seed,
                                num_processes, num_parts, part_id, verbose, families, folders)


def _convert_dataset(source: str | int, target_id: int, target_name: str | None,
                     candidate_folders: Sequence[str], candidate_tags: Sequence[str] | None, num_seggen: int,
                     num_degradations: int, tolerance_mm: float | None, seed: int, num_processes: int,
                     num_parts: int, part_id: int, verbose: bool, families: Sequence[str] | None,
                     partial_folders: Sequence[str] = ()) -> ConversionResult:
    """convert_dataset with every candidate folder given.

    All inputs of this part are validated before anything is written; bad input raises ConversionError.
    """
    if num_seggen < 0 or num_degradations < 0:
        raise ConversionError("--seggen and --degradations must be >= 0")
    if seed < 0:
        raise ConversionError(f"The seed must be >= 0, got {seed}")
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ConversionError(f"--part_id must be in 0..{num_parts - 1} for --num_parts {num_parts}")
    try:
        families = degradation_families(families)
    except ValueError as e:
        raise ConversionError(str(e)) from None
    dataset = open_source_dataset(source)
    where = os.path.join(dataset.folder, DATASET_JSON)
    region_names, regions, labels = dataset_regions(dataset.dataset_json, where)
    if tolerance_mm is None:
        try:
            tolerance_mm = nsd_tolerance_mm(dataset.dataset_json)
        except ValueError as e:
            raise ConversionError(f"{where}: {e}") from None
    if not np.isfinite(tolerance_mm) or tolerance_mm < 0:
        raise ConversionError(f"The NSD tolerance must be finite and >= 0 mm, got {tolerance_mm}")
    externals = external_sources(candidate_folders, candidate_tags, dataset.subjects, dataset.file_ending,
                                 partial_folders)
    plan = plan_samples(dataset.subjects, externals, num_seggen, num_degradations, seed, families)
    if not plan:
        raise ConversionError("The options produce no sample: give --candidates, --seggen or --degradations")

    name = target_name if target_name is not None else dataset_short_name(dataset.name) + "QC"
    try:
        folder = raw_folder_of_dataset(target_id, name)
    except RuntimeError as e:
        raise ConversionError(str(e)) from None
    check_apart(folder, [dataset.folder, *(e.folder for e in externals)])
    settings = {"source_dataset": dataset.name, "region_names": region_names,
                "regions": [list(r) for r in regions], "labels": list(labels), "tolerance_mm": float(tolerance_mm),
                "seed": int(seed), "seggen": int(num_seggen), "degradations": int(num_degradations),
                "degradation_families": list(families),
                "external_tags": [e.tag for e in externals], "view": VIEW_SETTING}
    check_resumable(folder, settings)

    my_subjects = set(subjects_of_part(sorted({s.subject for s in plan}), num_parts, part_id))
    done = done_samples(folder, plan)
    pending = [s for s in plan if s.subject in my_subjects and s.sample not in done]
    context = WorkerContext(target_folder=folder, cases=dataset.cases, file_ending=dataset.file_ending,
                            region_names=tuple(region_names), regions=tuple(regions), labels=labels,
                            tolerance_mm=float(tolerance_mm))

    if pending:
        _validate_inputs(pending, context, num_processes, verbose)
        start_or_resume(folder, settings)
        records = _write_samples(pending, context, progress_file(folder, num_parts, part_id), num_processes,
                                 verbose)
        warn_outside_view(records)

    complete = merge_if_complete(folder, plan, dataset, context, settings, verbose)
    return ConversionResult(folder=folder, num_samples=len(plan), num_written=len(pending), complete=complete)


def _validate_inputs(pending: Sequence[SampleSpec], context: WorkerContext, num_processes: int,
                     verbose: bool) -> None:
    by_subject: dict[str, list[str]] = {}
    for spec in pending:
        files = by_subject.setdefault(spec.subject, [])
        if spec.external_file is not None:
            files.append(spec.external_file)
    tasks = [(subject, tuple(files)) for subject, files in by_subject.items()]
    problems = []
    results = map_unordered(validate_subject, tasks, num_processes, init_worker, (context,))
    for result in tqdm(results, total=len(tasks), desc="Checking inputs", unit="subject", disable=not verbose):
        problems.extend(result)
    if problems:
        shown = "\n  ".join(sorted(problems)[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ConversionError(f"{len(problems)} input problem(s); nothing was written:\n  {shown}{more}")


def _write_samples(pending: Sequence[SampleSpec], context: WorkerContext, progress_path: str, num_processes: int,
                   verbose: bool) -> list[dict]:
    """Make the samples; the main process is the single writer of the progress file; workers return records."""
    drop_truncated_tail(progress_path)
    per_subject = max(1, round(len(pending) / len({s.subject for s in pending})))
    chunksize = max(1, min(per_subject, len(pending) // (4 * max(1, num_processes))))
    records = []
    with open(progress_path, "a", encoding="utf-8") as log:
        results = map_unordered(process_sample, pending, num_processes, init_worker, (context,), chunksize)
        for record in tqdm(results, total=len(pending), desc="QC samples", unit="sample", disable=not verbose):
            log.write(json.dumps(record) + "\n")
            log.flush()
            records.append(record)
    return records


def warn_outside_view(records: Sequence[dict]) -> None:
    """One warning per candidate, and per subject reference, with more than OUTSIDE_VIEW_WARNING of its
    foreground outside the network's view."""
    limit = f"{100 * OUTSIDE_VIEW_WARNING:g} %"
    for r in sorted(records, key=lambda r: r["sample"]):
        if r["candidate_outside_view"] > OUTSIDE_VIEW_WARNING:
            warnings.warn(f"Sample {r['sample']}: {100 * r['candidate_outside_view']:.1f} % of the candidate's "
                          f"foreground lies outside the network's view (the images' non-zero box, over {limit}); "
                          f"its targets count voxels the network never sees", OutsideViewWarning, stacklevel=2)
    references = {r["subject"]: r["reference_outside_view"] for r in records}
    for subject, fraction in sorted(references.items()):
        if fraction > OUTSIDE_VIEW_WARNING:
            warnings.warn(f"Subject {subject}: {100 * fraction:.1f} % of the reference's foreground lies outside "
                          f"the network's view (the images' non-zero box, over {limit})", OutsideViewWarning,
                          stacklevel=2)
