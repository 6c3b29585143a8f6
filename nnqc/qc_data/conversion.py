"""Building a raw QC dataset from an nnU-Net raw dataset (SPEC §4): sample plan, writer, merge, verification.

The plan is a pure function of the subjects, the external folders and the options, and every generated
sample has its own seed derived from (base seed, sample id); so any sample can be regenerated alone and a
conversion can be split into parts, killed and restarted, and still end bit-identical to one clean run.
Each part appends one JSON line per finished sample to qc_progress/part_I_of_P.jsonl after the sample's
candidate file is in place; a sample counts as done when it has both. The run that finds every sample of
the plan done writes qc_targets.csv, dataset.json and the DSC histogram.
"""
import csv
import io
import json
import multiprocessing
import os
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from nnqc.atomic_files import (
    is_temporary_name,
    link_or_copy,
    replace_atomically,
    write_json_atomically,
    write_text_atomically,
)
from nnqc.metrics import allowed_labels, get_regions, nsd_tolerance_mm, quality_targets
from nnqc.qc_data.dataset_io import (
    CaseFiles,
    ConversionError,
    Geometry,
    SourceDataset,
    check_case_geometry,
    check_labels,
    dataset_short_name,
    is_complete_copy,
    load_dataset_json,
    open_source_dataset,
    raw_folder_of_dataset,
    read_geometry,
    read_label_map,
    write_label_map,
)
from nnqc.qc_data.external import ExternalSource, check_external_candidate, external_sources
from nnqc.qc_data.generators import GENERATOR_FAMILIES, generate_candidate

IMAGES_FOLDER = "imagesTr"
LABELS_FOLDER = "labelsTr"
CANDIDATES_FOLDER = "candidatesTr"
PROGRESS_FOLDER = "qc_progress"
SETTINGS_JSON = "settings.json"
TARGETS_CSV = "qc_targets.csv"
HISTOGRAM_PNG = "qc_dsc_histogram.png"
DATASET_JSON = "dataset.json"
# candidates are compressed NIfTI whatever the source's file ending (the QC dataset format fixes it)
CANDIDATE_FILE_ENDING = ".nii.gz"
QC_DATASET_ENTRIES = (DATASET_JSON, IMAGES_FOLDER, LABELS_FOLDER, CANDIDATES_FOLDER, PROGRESS_FOLDER,
                      TARGETS_CSV, HISTOGRAM_PNG)

SEGGEN_SOURCE = "seggen"
DEGRADE_SOURCE = "degrade"
EXTERNAL_GENERATOR = "external"
EXTERNAL_SEED = -1
# dataset.json fields carried over from the source dataset (nnU-Net's own, where present)
SOURCE_JSON_FIELDS = ("channel_names", "labels", "regions_class_order", "file_ending",
                      "overwrite_image_reader_writer")
BASE_COLUMNS = ("sample", "subject", "source", "generator", "seed", "dsc", "nsd")
N_HISTOGRAM_BINS = 10
TARGET_ATOL = 1e-6
DEFAULT_NUM_RECOMPUTED = 100


@dataclass(frozen=True)
class SampleSpec:
    """One planned QC sample: what to generate (or ingest) and under which id and seed."""
    sample: str
    subject: str
    source: str
    generator: str
    seed: int
    external_file: str | None = None


def make_sample_id(subject: str, source: str, k: int) -> str:
    return f"{subject}__{source}__{k:03d}"


def derive_seed(base_seed: int, sample: str) -> int:
    """Per-sample seed from the base seed and the sample id alone, independent of the plan around it."""
    entropy = [int(base_seed), zlib.crc32(sample.encode("utf-8"))]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


def degradation_families() -> tuple[str, ...]:
    return tuple(f for f in GENERATOR_FAMILIES if f != SEGGEN_SOURCE)


def plan_samples(subjects: Sequence[str], externals: Sequence[ExternalSource], num_seggen: int,
                 num_degradations: int, base_seed: int) -> list[SampleSpec]:
    """Per subject (sorted): one sample per external folder holding it, then `num_seggen` SegGen samples, then
    `num_degradations` degradations cycling through the families (continued across subjects so that every
    family is used equally often overall)."""
    families = degradation_families()
    plan = []
    for i, subject in enumerate(sorted(subjects)):
        for source in externals:
            if subject in source.files:
                plan.append(SampleSpec(make_sample_id(subject, source.tag, 0), subject, source.tag,
                                       EXTERNAL_GENERATOR, EXTERNAL_SEED, source.files[subject]))
        for k in range(num_seggen):
            sample = make_sample_id(subject, SEGGEN_SOURCE, k)
            plan.append(SampleSpec(sample, subject, SEGGEN_SOURCE, SEGGEN_SOURCE, derive_seed(base_seed, sample)))
        for k in range(num_degradations):
            sample = make_sample_id(subject, DEGRADE_SOURCE, k)
            family = families[(i * num_degradations + k) % len(families)]
            plan.append(SampleSpec(sample, subject, DEGRADE_SOURCE, family, derive_seed(base_seed, sample)))
    return plan


def subjects_of_part(subjects: Sequence[str], num_parts: int, part_id: int) -> list[str]:
    """Round robin over the sorted subjects, so a subject's samples (and its image copy) stay in one part."""
    return sorted(subjects)[part_id::num_parts]


def target_columns(region_names: Sequence[str]) -> list[str]:
    """qc_targets.csv columns, in order."""
    return [*BASE_COLUMNS, *(f"dsc_{r}" for r in region_names), *(f"nsd_{r}" for r in region_names)]


def image_file_name(subject: str, channel: int, file_ending: str) -> str:
    return f"{subject}_{channel:04d}{file_ending}"


# ---------------------------------------------------------------------------------------------------------------
# progress records


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


# ---------------------------------------------------------------------------------------------------------------
# work done in worker processes (module-level so that spawned workers can import it)


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
_copied_subjects: set[str] = set()


def init_worker(context: WorkerContext) -> None:
    global _context
    _context = context
    _reference_cache.clear()
    _copied_subjects.clear()


def _reference(subject: str, path: str) -> tuple[np.ndarray, Geometry]:
    """The subject's reference as uint8; the last one read is kept since samples come grouped by subject."""
    if subject not in _reference_cache:
        _reference_cache.clear()
        array, geometry = read_label_map(path)
        check_labels(array, _context.labels, path)
        _reference_cache[subject] = (array.astype(np.uint8, copy=False), geometry)
    return _reference_cache[subject]


def copy_subject(cases: dict[str, CaseFiles], subject: str, target_folder: str, file_ending: str) -> None:
    """Images and reference of a subject, once, under nnU-Net names; idempotent."""
    files = cases[subject]
    pairs = [(src, os.path.join(target_folder, IMAGES_FOLDER, image_file_name(subject, c, file_ending)))
             for c, src in enumerate(files.images)]
    pairs.append((files.reference, os.path.join(target_folder, LABELS_FOLDER, subject + file_ending)))
    for src, dst in pairs:
        if not is_complete_copy(src, dst):
            link_or_copy(src, dst)


def target_record(spec: SampleSpec, targets: dict, region_names: Sequence[str]) -> dict:
    record = {"sample": spec.sample, "subject": spec.subject, "source": spec.source, "generator": spec.generator,
              "seed": spec.seed, "dsc": float(targets["dsc"]), "nsd": float(targets["nsd"])}
    record.update({f"dsc_{r}": float(v) for r, v in zip(region_names, targets["dsc_per_region"])})
    record.update({f"nsd_{r}": float(v) for r, v in zip(region_names, targets["nsd_per_region"])})
    return record


def make_candidate(spec: SampleSpec, reference: np.ndarray, geometry: Geometry, labels: Sequence[int],
                   regions: Sequence[tuple[int, ...]]) -> np.ndarray:
    """The candidate label map of a sample: read (external) or generated from its own seed."""
    if spec.generator == EXTERNAL_GENERATOR:
        array, _ = read_label_map(spec.external_file)
        return array.astype(np.uint8)
    candidate = generate_candidate(spec.generator, reference, spec.seed, geometry.array_spacing, labels,
                                   list(regions))
    if candidate.shape != reference.shape:
        raise RuntimeError(f"Generator {spec.generator} returned shape {candidate.shape} for sample {spec.sample}, "
                           f"expected {reference.shape}")
    return np.asarray(candidate, dtype=np.uint8)


def process_sample(spec: SampleSpec) -> dict:
    """Make one sample's candidate, write it next to the subject's copied images, return its targets record."""
    ctx = _context
    if spec.subject not in _copied_subjects:
        copy_subject(ctx.cases, spec.subject, ctx.target_folder, ctx.file_ending)
        _copied_subjects.add(spec.subject)
    reference, geometry = _reference(spec.subject, ctx.cases[spec.subject].reference)
    candidate = make_candidate(spec, reference, geometry, ctx.labels, ctx.regions)
    write_label_map(candidate, geometry,
                    os.path.join(ctx.target_folder, CANDIDATES_FOLDER, spec.sample + CANDIDATE_FILE_ENDING))
    targets = quality_targets(reference, candidate, list(ctx.regions), geometry.array_spacing, ctx.tolerance_mm)
    return target_record(spec, targets, ctx.region_names)


def validate_subject(task: tuple[str, tuple[str, ...]]) -> list[str]:
    """Problems of one subject's inputs: channel geometry, reference labels, external candidates."""
    subject, external_files = task
    files = _context.cases[subject]
    try:
        geometry = check_case_geometry(subject, files)
        array, _ = read_label_map(files.reference)
        check_labels(array, _context.labels, files.reference)
    except ConversionError as e:
        return [str(e)]
    problems = []
    for path in external_files:
        try:
            check_external_candidate(path, geometry, _context.labels)
        except ConversionError as e:
            problems.append(str(e))
    return problems


def _run_tasks(function: Callable[[Any], Any], tasks: Sequence, num_processes: int, initargs: tuple,
               chunksize: int = 1) -> Iterator:
    """Results of function over tasks (in any order): in this process for -np 1, else in a spawn Pool."""
    if num_processes <= 1 or len(tasks) <= 1:
        init_worker(*initargs)
        for task in tasks:
            yield function(task)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(num_processes, len(tasks)), initializer=init_worker, initargs=initargs) as pool:
        yield from pool.imap_unordered(function, tasks, chunksize=chunksize)


# ---------------------------------------------------------------------------------------------------------------
# conversion


@dataclass
class ConversionResult:
    folder: str
    num_samples: int          # samples in the whole plan
    num_written: int          # samples this call produced
    complete: bool            # every sample of every part is done and the dataset files are written


def _dataset_regions(dataset_json: dict, where: str) -> tuple[list[str], list[tuple[int, ...]], tuple[int, ...]]:
    try:
        names, regions = get_regions(dataset_json)
        labels = allowed_labels(dataset_json)
    except ValueError as e:
        raise ConversionError(f"{where}: {e}") from None
    if max(labels) > 255:
        raise ConversionError(f"{where}: label {max(labels)} does not fit the uint8 candidates of a QC dataset")
    return names, [tuple(r) for r in regions], labels


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


def _done_samples(folder: str, plan: Sequence[SampleSpec]) -> dict[str, dict]:
    """Samples of the plan with both a progress record and their candidate file."""
    records = read_progress_records(folder)
    candidates_folder = os.path.join(folder, CANDIDATES_FOLDER)
    present = set(os.listdir(candidates_folder)) if os.path.isdir(candidates_folder) else set()
    return {s.sample: records[s.sample] for s in plan
            if s.sample in records and s.sample + CANDIDATE_FILE_ENDING in present}


def convert_dataset(source: str | int, target_id: int, target_name: str | None = None,
                    candidate_folders: Sequence[str] = (), candidate_tags: Sequence[str] | None = None,
                    num_seggen: int = 3, num_degradations: int = 10, tolerance_mm: float | None = None,
                    seed: int = 0, num_processes: int = 1, num_parts: int = 1, part_id: int = 0,
                    verbose: bool = True) -> ConversionResult:
    """Build (or resume) $nnUNet_raw/DatasetYYY_NameQC from a source nnU-Net raw dataset.

    All inputs of this part are validated before anything is written; bad input raises ConversionError.
    """
    if num_seggen < 0 or num_degradations < 0:
        raise ConversionError("--seggen and --degradations must be >= 0")
    if seed < 0:
        raise ConversionError(f"The seed must be >= 0, got {seed}")
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ConversionError(f"--part_id must be in 0..{num_parts - 1} for --num_parts {num_parts}")
    dataset = open_source_dataset(source)
    where = os.path.join(dataset.folder, DATASET_JSON)
    region_names, regions, labels = _dataset_regions(dataset.dataset_json, where)
    if tolerance_mm is None:
        try:
            tolerance_mm = nsd_tolerance_mm(dataset.dataset_json)
        except ValueError as e:
            raise ConversionError(f"{where}: {e}") from None
    if not np.isfinite(tolerance_mm) or tolerance_mm < 0:
        raise ConversionError(f"The NSD tolerance must be finite and >= 0 mm, got {tolerance_mm}")
    externals = external_sources(candidate_folders, candidate_tags, dataset.subjects, dataset.file_ending)
    plan = plan_samples(dataset.subjects, externals, num_seggen, num_degradations, seed)
    if not plan:
        raise ConversionError("The options produce no sample: give --candidates, --seggen or --degradations")

    name = target_name if target_name is not None else dataset_short_name(dataset.name) + "QC"
    try:
        folder = raw_folder_of_dataset(target_id, name)
    except RuntimeError as e:
        raise ConversionError(str(e)) from None
    if os.path.realpath(folder) == os.path.realpath(dataset.folder):
        raise ConversionError(f"The QC dataset would overwrite its source {dataset.folder}")
    settings = {"source_dataset": dataset.name, "region_names": region_names,
                "regions": [list(r) for r in regions], "labels": list(labels), "tolerance_mm": float(tolerance_mm),
                "seed": int(seed), "seggen": int(num_seggen), "degradations": int(num_degradations),
                "degradation_families": list(degradation_families()),
                "external_tags": [e.tag for e in externals]}
    check_resumable(folder, settings)

    my_subjects = set(subjects_of_part(sorted({s.subject for s in plan}), num_parts, part_id))
    done = _done_samples(folder, plan)
    pending = [s for s in plan if s.subject in my_subjects and s.sample not in done]
    context = WorkerContext(target_folder=folder, cases=dataset.cases, file_ending=dataset.file_ending,
                            region_names=tuple(region_names), regions=tuple(regions), labels=labels,
                            tolerance_mm=float(tolerance_mm))

    if pending:
        _validate_inputs(pending, context, num_processes, verbose)
        start_or_resume(folder, settings)
        _write_samples(pending, context, progress_file(folder, num_parts, part_id), num_processes, verbose)

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
    results = _run_tasks(validate_subject, tasks, num_processes, (context,))
    for result in tqdm(results, total=len(tasks), desc="Checking inputs", unit="subject", disable=not verbose):
        problems.extend(result)
    if problems:
        shown = "\n  ".join(sorted(problems)[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ConversionError(f"{len(problems)} input problem(s); nothing was written:\n  {shown}{more}")


def _write_samples(pending: Sequence[SampleSpec], context: WorkerContext, progress_path: str, num_processes: int,
                   verbose: bool) -> None:
    """The main process is the single writer of the progress file; workers return records."""
    drop_truncated_tail(progress_path)
    per_subject = max(1, round(len(pending) / len({s.subject for s in pending})))
    chunksize = max(1, min(per_subject, len(pending) // (4 * max(1, num_processes))))
    with open(progress_path, "a", encoding="utf-8") as log:
        results = _run_tasks(process_sample, pending, num_processes, (context,), chunksize)
        for record in tqdm(results, total=len(pending), desc="QC samples", unit="sample", disable=not verbose):
            log.write(json.dumps(record) + "\n")
            log.flush()


# ---------------------------------------------------------------------------------------------------------------
# merge


def merge_if_complete(folder: str, plan: Sequence[SampleSpec], dataset: SourceDataset, context: WorkerContext,
                      settings: dict, verbose: bool = True) -> bool:
    """Write qc_targets.csv, dataset.json and the histogram once every sample of the plan is done."""
    done = _done_samples(folder, plan)
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


def qc_targets_csv_text(rows: Iterable[dict], region_names: Sequence[str]) -> str:
    """CSV text, one row per sample in the given order; floats written with repr so they round-trip."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = target_columns(region_names)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([repr(float(row[c])) if isinstance(row[c], float) else row[c] for c in columns])
    return buffer.getvalue()


def read_qc_targets_csv(path: str) -> tuple[list[str], list[dict]]:
    """Columns and rows of qc_targets.csv with seeds as int and targets as float."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = []
        for row in reader:
            for column in columns[BASE_COLUMNS.index("dsc"):]:
                row[column] = float(row[column])
            row["seed"] = int(row["seed"])
            rows.append(row)
    return columns, rows


def plot_dsc_histogram(dscs: Sequence[float], sources: Sequence[str], path: str) -> None:
    """Histogram of the sample DSCs in 10 bins over [0, 1], stacked by source (the bins training balances)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dscs, sources = np.asarray(dscs, dtype=float), np.asarray(sources)
    names = sorted(set(sources.tolist()))
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    bins = np.linspace(0, 1, N_HISTOGRAM_BINS + 1)
    ax.hist([dscs[sources == n] for n in names], bins=bins, stacked=True, label=names, edgecolor="white")
    ax.set_xlim(0, 1)
    ax.set_xticks(bins)
    ax.set_xlabel("subject-level DSC")
    ax.set_ylabel("samples")
    ax.set_title(f"QC samples per DSC bin (n = {len(dscs)})")
    ax.legend(title="source", fontsize="small")
    figure.tight_layout()
    replace_atomically(path, lambda temporary: figure.savefig(temporary, dpi=100))


# ---------------------------------------------------------------------------------------------------------------
# verification


@dataclass
class VerificationReport:
    folder: str
    num_subjects: int = 0
    num_samples: int = 0
    num_recomputed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = (f"{self.folder}: {self.num_samples} samples of {self.num_subjects} subjects checked, targets "
                f"recomputed for {self.num_recomputed}: ")
        if self.ok:
            return head + "OK"
        shown = "\n  ".join(self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        return head + f"{len(self.problems)} problem(s)\n  {shown}{more}"


def verify_subject(task: tuple[str, list[dict], list[bool]]) -> list[str]:
    """Problems of one subject of a finished QC dataset: file geometry and labels, and (for the flagged
    samples) targets recomputed from the files and generated candidates regenerated from their seeds."""
    subject, rows, recompute = task
    ctx = _context
    qc_cases = ctx.cases
    problems = []
    try:
        geometry = check_case_geometry(subject, qc_cases[subject])
    except ConversionError as e:
        return [str(e)]
    reference = None
    for row, again in zip(rows, recompute):
        path = os.path.join(ctx.target_folder, CANDIDATES_FOLDER, row["sample"] + CANDIDATE_FILE_ENDING)
        try:
            header = read_geometry(path)
            mismatch = header.mismatches(geometry)
            if mismatch:
                problems.append(f"{path}: geometry differs from its reference: {'; '.join(mismatch)}")
                continue
            candidate, _ = read_label_map(path)
            check_labels(candidate, ctx.labels, path)
            if not again:
                continue
            if reference is None:
                reference, _ = _reference(subject, qc_cases[subject].reference)
            candidate = candidate.astype(np.uint8)
            targets = target_record(_spec_of_row(row), quality_targets(
                reference, candidate, list(ctx.regions), geometry.array_spacing, ctx.tolerance_mm), ctx.region_names)
            wrong = [c for c in target_columns(ctx.region_names)[BASE_COLUMNS.index("dsc"):]
                     if not abs(targets[c] - row[c]) <= TARGET_ATOL]
            if wrong:
                problems.append(f"{row['sample']}: qc_targets.csv differs from the recomputed targets in "
                                + ", ".join(f"{c} ({row[c]} vs {targets[c]})" for c in wrong))
            if row["generator"] != EXTERNAL_GENERATOR:
                regenerated = make_candidate(_spec_of_row(row), reference, geometry, ctx.labels, ctx.regions)
                if not np.array_equal(regenerated, candidate):
                    problems.append(f"{path}: differs from the candidate regenerated from its generator "
                                    f"{row['generator']!r} and seed {row['seed']}")
        except ConversionError as e:
            problems.append(str(e))
    return problems


def _spec_of_row(row: dict) -> SampleSpec:
    return SampleSpec(row["sample"], row["subject"], row["source"], row["generator"], int(row["seed"]))


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
        values = [r[c] for c in target_columns(region_names)[BASE_COLUMNS.index("dsc"):]]
        if not all(0.0 <= v <= 1.0 for v in values):
            problems.append(f"{csv_path}: sample {r['sample']} has targets outside [0, 1]")
    return problems


def _orphans(folder: str, sub: str, expected: set[str]) -> tuple[list[str], list[str]]:
    """(missing, orphan) file names of a sub-folder."""
    path = os.path.join(folder, sub)
    present = set(os.listdir(path)) if os.path.isdir(path) else set()
    return sorted(expected - present), sorted(present - expected)


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
        region_names, regions, labels = _dataset_regions(dataset_json, os.path.join(folder, DATASET_JSON))
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
        columns, rows = read_qc_targets_csv(csv_path)
    except (OSError, ValueError, KeyError) as e:
        report.problems.append(f"{csv_path} cannot be read: {e}")
        return report
    report.problems += _check_rows(rows, columns, region_names, csv_path)
    if report.problems:
        return report
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
    results = _run_tasks(verify_subject, tasks, num_processes, (context,))
    for result in tqdm(results, total=len(tasks), desc="Verifying", unit="subject", disable=not verbose):
        report.problems += result
    return report

