"""Verifying a finished raw QC dataset (nnQC_convert --verify): files, geometry, labels, targets, the view.

A spread subset of samples (or all) gets its targets and view fractions recomputed from the files and, when
generated, its candidate regenerated from its seed; every sample's foreground outside the network's view is
reported from qc_targets.csv.
"""
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from tqdm import tqdm

from nnqc.metrics import nsd_tolerance_mm, quality_targets
from nnqc.process_pool import map_unordered
from nnqc.qc_data import sample_making
from nnqc.qc_data.dataset_io import (
    CaseFiles,
    ConversionError,
    check_case_geometry,
    check_labels,
    dataset_regions,
    load_dataset_json,
    read_geometry,
    read_label_map,
)
from nnqc.qc_data.generators import GENERATOR_FAMILIES
from nnqc.qc_data.layout import (
    CANDIDATE_FILE_ENDING,
    CANDIDATES_FOLDER,
    DATASET_JSON,
    IMAGES_FOLDER,
    LABELS_FOLDER,
    QC_DATASET_ENTRIES,
    candidate_path,
    image_file_name,
)
from nnqc.qc_data.sample_making import WorkerContext, init_worker, make_candidate, target_record
from nnqc.qc_data.sample_plan import EXTERNAL_GENERATOR, EXTERNAL_SEED, spec_of_row
from nnqc.qc_data.targets_table import (
    LABELS_COLUMN,
    TARGETS_CSV,
    VIEW_COLUMNS,
    labels_text,
    target_columns,
    target_rows,
    target_value_columns,
)
from nnqc.qc_data.view import OUTSIDE_VIEW_WARNING

TARGET_ATOL = 1e-6
DEFAULT_NUM_RECOMPUTED = 100


@dataclass
class VerificationReport:
    folder: str
    num_subjects: int = 0
    num_samples: int = 0
    num_recomputed: int = 0
    problems: list[str] = field(default_factory=list)
    # (sample, fraction) of the candidates / references with more than OUTSIDE_VIEW_WARNING outside the view
    candidates_outside_view: list[tuple[str, float]] = field(default_factory=list)
    references_outside_view: list[tuple[str, float]] = field(default_factory=list)
    max_candidate_outside_view: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def view_summary(self) -> str:
        limit = f"{100 * OUTSIDE_VIEW_WARNING:g} %"
        lines = [f"foreground outside the network's view (the images' non-zero box): "
                 f"{len(self.candidates_outside_view)} candidate(s) and {len(self.references_outside_view)} "
                 f"subject reference(s) over {limit}, "
                 f"largest candidate share {100 * self.max_candidate_outside_view:.1f} %"]
        for what, entries in (("candidate", self.candidates_outside_view),
                              ("reference", self.references_outside_view)):
            lines += [f"  {what} {name}: {100 * fraction:.1f} % outside the view" for name, fraction in entries[:50]]
            if len(entries) > 50:
                lines.append(f"  ... and {len(entries) - 50} more {what}s")
        return "\n".join(lines)

    def summary(self) -> str:
        head = (f"{self.folder}: {self.num_samples} samples of {self.num_subjects} subjects checked, targets "
                f"recomputed for {self.num_recomputed}: ")
        if self.ok:
            return head + "OK\n" + self.view_summary()
        shown = "\n  ".join(self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        return head + f"{len(self.problems)} problem(s)\n  {shown}{more}"


def verify_subject(task: tuple[str, list[dict], list[bool]]) -> list[str]:
    """Problems of one subject of a finished QC dataset: file geometry and labels, and (for the flagged
    samples) targets and view fractions recomputed from the files and generated candidates regenerated."""
    subject, rows, recompute = task
    ctx = sample_making._context
    files = ctx.cases[subject]
    problems = []
    try:
        geometry = check_case_geometry(subject, files)
    except ConversionError as e:
        return [str(e)]
    compared = [*target_value_columns(ctx.region_names), *VIEW_COLUMNS]
    for row, again in zip(rows, recompute):
        path = candidate_path(ctx.target_folder, row["sample"])
        try:
            mismatch = read_geometry(path).mismatches(geometry)
            if mismatch:
                problems.append(f"{path}: geometry differs from its reference: {'; '.join(mismatch)}")
                continue
            candidate, _ = read_label_map(path)
            check_labels(candidate, ctx.labels, path)
            if labels_text(candidate) != row[LABELS_COLUMN]:
                problems.append(f"{row['sample']}: qc_targets.csv lists labels {row[LABELS_COLUMN]!r}, the candidate "
                                f"holds {labels_text(candidate)!r}")
            if not again:
                continue
            reference, _ = sample_making.subject_reference(subject, files.reference)
            view = sample_making.subject_view(subject, files.images, check=False)
            candidate = candidate.astype(np.uint8)
            spec = spec_of_row(row)
            targets = target_record(spec, quality_targets(reference, candidate, list(ctx.regions),
                                                          geometry.array_spacing, ctx.tolerance_mm),
                                    ctx.region_names, candidate, reference, view)
            wrong = [c for c in compared if not abs(targets[c] - row[c]) <= TARGET_ATOL]
            if wrong:
                problems.append(f"{row['sample']}: qc_targets.csv differs from the recomputed values in "
                                + ", ".join(f"{c} ({row[c]} vs {targets[c]})" for c in wrong))
            if row["generator"] != EXTERNAL_GENERATOR:
                regenerated = make_candidate(spec, reference, geometry, ctx.labels, ctx.regions, view)
                if not np.array_equal(regenerated, candidate):
                    problems.append(f"{path}: differs from the candidate regenerated from its generator "
                                    f"{row['generator']!r} and seed {row['seed']}")
        except Exception as e:  # one line per broken sample; the others are still checked
            problems.append(str(sample_making.sample_error(spec_of_row(row), path, e)))
    return problems


def _check_rows(rows: Sequence[dict], columns: Sequence[str], region_names: Sequence[str], csv_path: str
                ) -> list[str]:
    problems = []
    if list(columns) != target_columns(region_names):
        problems.append(f"{csv_path}: columns {list(columns)} != expected {target_columns(region_names)}")
        return problems
    samples = [r["sample"] for r in rows]
    if samples != sorted(samples) or len(set(samples)) != len(samples):
        problems.append(f"{csv_path}: samples are not sorted and unique")
    known_generators = set(GENERATOR_FAMILIES) | {EXTERNAL_GENERATOR}
    for r in rows:
        prefix = f"{r['subject']}__{r['source']}__"
        k = r["sample"][len(prefix):]
        if not r["sample"].startswith(prefix) or not (len(k) >= 3 and k.isdigit()):
            problems.append(f"{csv_path}: sample id {r['sample']!r} is not subject__source__k")
        if r["generator"] not in known_generators:
            problems.append(f"{csv_path}: sample {r['sample']} has unknown generator {r['generator']!r}")
        elif (r["generator"] == EXTERNAL_GENERATOR) != (r["seed"] == EXTERNAL_SEED):
            problems.append(f"{csv_path}: sample {r['sample']} has seed {r['seed']} for generator {r['generator']}")
        values = [r[c] for c in [*target_value_columns(region_names), *VIEW_COLUMNS]]
        if not all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in values):
            problems.append(f"{csv_path}: sample {r['sample']} has targets or view fractions outside [0, 1]")
    return problems


def _orphans(folder: str, sub: str, expected: set[str]) -> tuple[list[str], list[str]]:
    """(missing, orphan) file names of a sub-folder."""
    path = os.path.join(folder, sub)
    present = set(os.listdir(path)) if os.path.isdir(path) else set()
    return sorted(expected - present), sorted(present - expected)


def _report_view(report: VerificationReport, rows: Sequence[dict]) -> None:
    report.candidates_outside_view = [(r["sample"], r["candidate_outside_view"]) for r in rows
                                      if r["candidate_outside_view"] > OUTSIDE_VIEW_WARNING]
    references = {r["subject"]: r["reference_outside_view"] for r in rows}
    report.references_outside_view = [(s, f) for s, f in sorted(references.items()) if f > OUTSIDE_VIEW_WARNING]
    report.max_candidate_outside_view = max((r["candidate_outside_view"] for r in rows), default=0.0)


def verify_qc_dataset(folder: str, num_processes: int = 1, num_recomputed: int | None = DEFAULT_NUM_RECOMPUTED,
                      verbose: bool = True) -> VerificationReport:
    """Check a finished raw QC dataset; `num_recomputed` samples (evenly spread over the sorted samples; None for
    all) get their targets recomputed and, when generated, their candidate regenerated from the seed."""
    report = VerificationReport(folder=folder)
    if not os.path.isdir(folder):
        report.problems.append(f"{folder} does not exist")
        return report
    try:
        dataset_json = load_dataset_json(folder)
        region_names, regions, labels = dataset_regions(dataset_json, os.path.join(folder, DATASET_JSON))
        tolerance = nsd_tolerance_mm(dataset_json)
    except (ConversionError, ValueError) as e:
        report.problems.append(str(e))
        return report
    nnqc_info = dataset_json.get("nnqc", {})
    if nnqc_info.get("regions") != {n: list(r) for n, r in zip(region_names, regions)}:
        report.problems.append(f"dataset.json: nnqc.regions {nnqc_info.get('regions')} do not match the labels")
    csv_path = os.path.join(folder, TARGETS_CSV)
    if not os.path.isfile(csv_path):
        report.problems.append(f"{csv_path} is missing")
        return report
    try:
        columns, rows = target_rows(csv_path)
    except (OSError, ValueError, KeyError) as e:
        report.problems.append(f"{csv_path} cannot be read: {e}")
        return report
    report.problems += _check_rows(rows, columns, region_names, csv_path)
    if report.problems:
        return report
    _report_view(report, rows)
    file_ending = dataset_json["file_ending"]
    num_channels = len(dataset_json["channel_names"])
    subjects = sorted({r["subject"] for r in rows})
    report.num_subjects, report.num_samples = len(subjects), len(rows)

    per_source: dict[str, int] = {}
    for r in rows:
        per_source[r["source"]] = per_source.get(r["source"], 0) + 1
    if dataset_json.get("numTraining") != len(subjects):
        report.problems.append(f"dataset.json: numTraining {dataset_json.get('numTraining')} != {len(subjects)} "
                               f"subjects in {TARGETS_CSV}")
    if nnqc_info.get("num_samples") != len(rows) or nnqc_info.get("samples_per_source") != per_source:
        report.problems.append(f"dataset.json: nnqc.num_samples / samples_per_source do not match {TARGETS_CSV}")

    unknown = sorted(set(os.listdir(folder)) - set(QC_DATASET_ENTRIES))
    report.problems += [f"orphan entry {os.path.join(folder, e)}" for e in unknown]
    expected = {
        CANDIDATES_FOLDER: {r["sample"] + CANDIDATE_FILE_ENDING for r in rows},
        LABELS_FOLDER: {s + file_ending for s in subjects},
        IMAGES_FOLDER: {image_file_name(s, c, file_ending) for s in subjects for c in range(num_channels)},
    }
    for sub, names in expected.items():
        missing, orphans = _orphans(folder, sub, names)
        report.problems += [f"missing file {os.path.join(folder, sub, m)}" for m in missing]
        report.problems += [f"orphan file {os.path.join(folder, sub, o)}" for o in orphans]
    if report.problems:
        return report

    n = len(rows)
    if num_recomputed is None or num_recomputed >= n:
        chosen = set(range(n))
    else:
        chosen = set(np.unique(np.round(np.linspace(0, n - 1, max(0, num_recomputed))).astype(int)).tolist())
    report.num_recomputed = len(chosen)
    by_subject: dict[str, tuple[list[dict], list[bool]]] = {s: ([], []) for s in subjects}
    for i, r in enumerate(rows):
        by_subject[r["subject"]][0].append(r)
        by_subject[r["subject"]][1].append(i in chosen)
    qc_cases = {s: CaseFiles(images=tuple(os.path.join(folder, IMAGES_FOLDER, image_file_name(s, c, file_ending))
                                          for c in range(num_channels)),
                             reference=os.path.join(folder, LABELS_FOLDER, s + file_ending)) for s in subjects}
    context = WorkerContext(target_folder=folder, cases=qc_cases, file_ending=file_ending,
                            region_names=tuple(region_names), regions=tuple(regions), labels=labels,
                            tolerance_mm=tolerance)
    tasks = [(s, rows_, flags) for s, (rows_, flags) in by_subject.items()]
    results = map_unordered(verify_subject, tasks, num_processes, init_worker, (context,))
    for result in tqdm(results, total=len(tasks), desc="Verifying", unit="subject", disable=not verbose):
        report.problems += result
    return report
