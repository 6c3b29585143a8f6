"""Resuming and merging a QC conversion.

Each part appends one JSON line per finished sample to qc_progress/part_I_of_P.jsonl after the sample's
candidate file is in place; a sample counts as done when it has both. A folder is only resumed with the
settings it was started with. The run that finds every sample of the plan done writes qc_targets.csv,
dataset.json and the DSC histogram.
"""
import json
import os
from typing import Sequence

import numpy as np

from nnqc.atomic_files import is_temporary_name, replace_atomically, write_json_atomically, write_text_atomically
from nnqc.qc_data.dataset_io import ConversionError, SourceDataset
from nnqc.qc_data.layout import (
    CANDIDATE_FILE_ENDING,
    CANDIDATES_FOLDER,
    DATASET_JSON,
    HISTOGRAM_PNG,
    IMAGES_FOLDER,
    LABELS_FOLDER,
    PROGRESS_FOLDER,
    QC_DATASET_ENTRIES,
    SETTINGS_JSON,
)
from nnqc.qc_data.sample_making import WorkerContext, copy_subject
from nnqc.qc_data.sample_plan import SampleSpec
from nnqc.qc_data.targets_table import LABELS_COLUMN, TARGETS_CSV, qc_targets_csv_text
from nnqc.sampling import dsc_bins

# dataset.json fields carried over from the source dataset (nnU-Net's own, where present)
SOURCE_JSON_FIELDS = ("channel_names", "labels", "regions_class_order", "file_ending",
                      "overwrite_image_reader_writer")
N_HISTOGRAM_BINS = 10


def progress_file(folder: str, num_parts: int, part_id: int) -> str:
    return os.path.join(folder, PROGRESS_FOLDER, f"part_{part_id}_of_{num_parts}.jsonl")


def read_progress_records(folder: str) -> dict[str, dict]:
    """Records of all parts (whatever the number of parts they ran with), by sample; lines that do not parse
    (the truncated last line of a killed run) are ignored."""
    records = {}
    progress_folder = os.path.join(folder, PROGRESS_FOLDER)
    if not os.path.isdir(progress_folder):
        return records
    for name in sorted(os.listdir(progress_folder)):
        if not name.endswith(".jsonl") or is_temporary_name(name):
            continue
        with open(os.path.join(progress_folder, name), encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and "sample" in record:
                    records[record["sample"]] = record
    return records


def drop_truncated_tail(path: str) -> None:
    """Cut a last line that a killed run left without its newline, so appended records start on a new line."""
    if not os.path.isfile(path):
        return
    with open(path, "rb+") as f:
        content = f.read()
        if content and not content.endswith(b"\n"):
            f.truncate(content.rfind(b"\n") + 1)


def check_resumable(folder: str, settings: dict) -> None:
    """A QC dataset folder is only resumed by a conversion with the same settings; nothing is written here."""
    path = os.path.join(folder, PROGRESS_FOLDER, SETTINGS_JSON)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
        differing = [k for k in sorted(set(previous) | set(settings)) if previous.get(k) != settings.get(k)]
        if differing:
            details = "; ".join(f"{k}: {previous.get(k)!r} before, {settings.get(k)!r} now" for k in differing)
            raise ConversionError(f"{folder} was started with other settings ({details}). Resume with the same "
                                  f"options, or remove the folder or choose another dataset id.")
    elif os.path.isdir(folder):
        unknown = [e for e in os.listdir(folder) if e not in QC_DATASET_ENTRIES]
        if unknown or os.path.isfile(os.path.join(folder, DATASET_JSON)):
            raise ConversionError(f"{folder} exists and is not an nnQC conversion in progress; remove it or "
                                  f"choose another dataset id")


def start_or_resume(folder: str, settings: dict) -> None:
    """Create the QC dataset folders and record the settings the first time."""
    for sub in (IMAGES_FOLDER, LABELS_FOLDER, CANDIDATES_FOLDER, PROGRESS_FOLDER):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    path = os.path.join(folder, PROGRESS_FOLDER, SETTINGS_JSON)
    if not os.path.isfile(path):
        write_json_atomically(path, settings)


def done_samples(folder: str, plan: Sequence[SampleSpec]) -> dict[str, dict]:
    """Samples of the plan with both a progress record and their candidate file. A record of an earlier nnQC
    without the candidate's labels is not done: the sample is made again."""
    records = read_progress_records(folder)
    candidates_folder = os.path.join(folder, CANDIDATES_FOLDER)
    present = set(os.listdir(candidates_folder)) if os.path.isdir(candidates_folder) else set()
    return {s.sample: records[s.sample] for s in plan
            if LABELS_COLUMN in records.get(s.sample, {}) and s.sample + CANDIDATE_FILE_ENDING in present}


def merge_if_complete(folder: str, plan: Sequence[SampleSpec], dataset: SourceDataset, context: WorkerContext,
                      settings: dict, verbose: bool = True) -> bool:
    """Write qc_targets.csv, dataset.json and the histogram once every sample of the plan is done."""
    done = done_samples(folder, plan)
    missing = len(plan) - len(done)
    if missing:
        if verbose:
            print(f"{missing} of {len(plan)} samples are not done yet (other parts); the QC dataset files are "
                  f"written by the run that completes the last one.")
        return False
    subjects = sorted({s.subject for s in plan})
    for subject in subjects:
        copy_subject(context.cases, subject, folder, context.file_ending)
    _remove_stale_temp_files(folder)
    rows = [done[s] for s in sorted(done)]
    write_text_atomically(os.path.join(folder, TARGETS_CSV), qc_targets_csv_text(rows, context.region_names))
    per_source: dict[str, int] = {}
    for row in rows:
        per_source[row["source"]] = per_source.get(row["source"], 0) + 1
    source_json = dataset.dataset_json
    dataset_json = {k: source_json[k] for k in SOURCE_JSON_FIELDS if k in source_json}
    dataset_json["numTraining"] = len(subjects)
    dataset_json["nsd_tolerance_mm"] = context.tolerance_mm
    dataset_json["nnqc"] = {"source_dataset": settings["source_dataset"],
                            "regions": {n: list(r) for n, r in zip(context.region_names, context.regions)},
                            "num_samples": len(rows),
                            "samples_per_source": {k: per_source[k] for k in sorted(per_source)},
                            "seed": settings["seed"]}
    write_json_atomically(os.path.join(folder, DATASET_JSON), dataset_json)
    plot_dsc_histogram([r["dsc"] for r in rows], [r["source"] for r in rows], os.path.join(folder, HISTOGRAM_PNG))
    if verbose:
        print(f"QC dataset complete: {folder} ({len(rows)} samples of {len(subjects)} subjects)")
    return True


def _remove_stale_temp_files(folder: str) -> None:
    """Temporary files of killed runs; only called when no part has work left. Temporaries are hidden files
    (nnqc.atomic_files), and no hidden file belongs in a QC dataset: nnU-Net would list one with the file
    ending as a case, so every hidden file goes."""
    for sub in (IMAGES_FOLDER, LABELS_FOLDER, CANDIDATES_FOLDER, PROGRESS_FOLDER, ""):
        path = os.path.join(folder, sub)
        for name in os.listdir(path):
            if name.startswith(".") and os.path.isfile(os.path.join(path, name)):
                os.remove(os.path.join(path, name))


def dsc_counts_by_source(dscs: Sequence[float], sources: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Sources (sorted) and their sample counts per DSC bin (10 bins over [0, 1], the bins training balances)."""
    bins, sources = dsc_bins(np.asarray(dscs, dtype=float), N_HISTOGRAM_BINS), np.asarray(sources)
    names = sorted(set(sources.tolist()))
    return names, np.array([np.bincount(bins[sources == n], minlength=N_HISTOGRAM_BINS) for n in names]
                           ).reshape(len(names), N_HISTOGRAM_BINS)


def plot_dsc_histogram(dscs: Sequence[float], sources: Sequence[str], path: str) -> None:
    """The sample DSCs in 10 bins over [0, 1]: stacked by source above, and each source's own counts per bin side
    by side below (one row per source, e.g. every nnQC_make_candidates snapshot), so that the bins each source
    fills can be read even with dozens of sources."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names, counts = dsc_counts_by_source(dscs, sources)
    bins = np.linspace(0, 1, N_HISTOGRAM_BINS + 1)
    figure = Figure(figsize=(8, 4 + 0.3 * len(names)))
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, gridspec_kw={"height_ratios": [4, 1 + 0.3 * len(names)]})
    bottoms = np.zeros(N_HISTOGRAM_BINS)
    for name, row in zip(names, counts):
        top.bar(bins[:-1], row, width=np.diff(bins), bottom=bottoms, align="edge", edgecolor="white", label=name)
        bottoms += row
    top.set_xlim(0, 1)
    top.set_xticks(bins)
    top.set_xlabel("subject-level DSC")
    top.set_ylabel("samples")
    top.set_title(f"QC samples per DSC bin (n = {int(counts.sum())}, {len(names)} sources)")
    if len(names) <= 12:
        top.legend(title="source", fontsize="small")
    bottom.imshow(counts, aspect="auto", cmap="Blues", extent=(0, 1, len(names), 0), vmin=0)
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            bottom.text((bins[j] + bins[j + 1]) / 2, i + 0.5, str(int(count)), ha="center", va="center",
                        fontsize="x-small", color="black" if count <= counts.max() / 2 else "white")
    bottom.set_yticks(np.arange(len(names)) + 0.5, names, fontsize="small")
    bottom.set_xticks(bins)
    bottom.set_xlabel("subject-level DSC (samples per bin, by source)")
    figure.tight_layout()
    replace_atomically(path, lambda temporary: figure.savefig(temporary, dpi=100))
