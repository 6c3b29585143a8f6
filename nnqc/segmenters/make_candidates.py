"""nnQC_make_candidates: out-of-fold segmentations of the source dataset by nnU-Net trained on channel subsets,
sampled along training (paper §2.2, steps 1-2), ready for `nnQC_convert --candidates OUT/*`.

For each channel subset: a derived nnU-Net dataset in roots of its own (nnqc.segmenters.derived_dataset),
planned and preprocessed by nnU-Net's own code, and one nnU-Net training per fold of the source's split, each
writing its validation cases at the snapshot epochs to OUT/<subset>_ep<E>/CASE<ending>. The split is the source's
splits_final.json when it has one, else nnU-Net's default 5-fold split, which is also the split nnQC's QC
folds use: a QC model is then never validated on subjects whose candidates came from segmenters that trained on
them. Everything resumes: a rerun continues unfinished trainings and skips what is done.

With `segment_test_images`, every fold's model also segments the source's imagesTs at every snapshot
(OUT/test/<subset>_ep<E>_fold<F>): subjects none of the folds trained on, each segmented by every fold, so the
folds of one snapshot form an ensemble (nnQC_predict --ensemble_members) and the cases can serve as held-out
evaluation candidates.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.utilities.crossval_split import generate_crossval_split
from tqdm import tqdm

from nnqc import paths
from nnqc.atomic_files import write_json_atomically
from nnqc.preprocessing.splits import NUM_FOLDS, SPLIT_SEED
from nnqc.qc_data.dataset_io import SourceDataset, open_source_dataset
from nnqc.segmenters.channel_subsets import parse_subsets
from nnqc.segmenters.derived_dataset import (
    SegmenterRoots,
    test_images_in,
    write_derived_dataset,
    write_derived_test_images,
)
from nnqc.segmenters.snapshot_state import SnapshotState, resolve_snapshot_epochs
from nnqc.segmenters.snapshot_trainer import TEST_FOLDER, snapshot_folder_name, test_folder_name
from nnqc.segmenters.worker import prepared_marker

DEFAULT_SNAPSHOTS = ("2%", "10%", "30%", "100%")
DEFAULT_TRAINER = "nnUNetTrainer"
CANDIDATES_FOLDER = "nnqc_candidates"
SEGMENTERS_FOLDER = "nnqc_segmenters"


@dataclass
class MakeCandidatesResult:
    output_folder: str
    work_folder: str
    candidate_folders: list[str]
    steps_run: int          # nnU-Net steps (prepare or train) this call ran; 0 when everything was done
    test_folders: list[str] = dataclasses.field(default_factory=list)  # OUT/test/<subset>_ep<E>_fold<F>


def source_splits(source: SourceDataset) -> tuple[list[dict], str]:
    """The source's splits_final.json (restricted to its cases) when nnUNet_preprocessed has one, else nnU-Net's
    default split (5 folds, seed 12345, sorted case ids: what nnU-Net and nnQC's QC folds both generate)."""
    subjects = sorted(source.cases)
    preprocessed = paths.nnUNet_preprocessed()
    file = join(preprocessed, source.name, "splits_final.json") if preprocessed else None
    if file and os.path.isfile(file):
        known = set(subjects)
        splits = [{"train": sorted(set(f["train"]) & known), "val": sorted(set(f["val"]) & known)}
                  for f in load_json(file)]
        origin = file
    else:
        splits = generate_crossval_split(subjects, seed=SPLIT_SEED, n_splits=NUM_FOLDS)
        origin = f"nnU-Net's default {NUM_FOLDS}-fold split"
    for i, fold in enumerate(splits):
        overlap = sorted(set(fold["train"]) & set(fold["val"]))
        if overlap or not fold["val"] or not fold["train"]:
            raise ValueError(f"fold {i} of {origin} " + (f"trains on its validation cases {overlap[:5]}" if overlap
                                                         else "has an empty training or validation set") +
                             ": its segmentations would not be out of fold")
    return splits, origin


def _check_output_folder(output_folder: str, source_folder: str) -> None:
    out, src = os.path.realpath(output_folder), os.path.realpath(source_folder)
    if out == src or out.startswith(src + os.sep) or src.startswith(out + os.sep):
        raise ValueError(f"the output folder {output_folder} must not be, contain or lie inside the source dataset "
                         f"{source_folder} (inputs are never written)")


def _run_worker(arguments: Sequence[str], roots: SegmenterRoots, extra_environment: dict[str, str],
                what: str) -> None:
    environment = {**os.environ, **roots.environment(), **extra_environment}
    completed = subprocess.run([sys.executable, "-m", "nnqc.segmenters.worker", *arguments], env=environment)
    if completed.returncode != 0:
        raise RuntimeError(f"{what} failed (exit code {completed.returncode}, its messages are above); run the "
                           f"same command again to resume")


def make_candidates(source: str | int, configuration: str = "3d_fullres", subsets: Sequence[str] | None = None,
                    snapshots: Sequence[str] = DEFAULT_SNAPSHOTS, folds: Sequence[int] | None = None,
                    trainer: str = DEFAULT_TRAINER, initial_lr: float | None = None, device: str = "cuda",
                    num_processes: int = 2, output_folder: str | None = None, use_mirroring: bool = True,
                    prepare_only: bool = False, segment_test_images: bool = False) -> MakeCandidatesResult:
    """Train the segmenters (or continue them) and write their out-of-fold snapshots; see the module docstring."""
    dataset = open_source_dataset(source)
    channel_subsets = parse_subsets(subsets, dataset.dataset_json["channel_names"])
    test_cases = sorted(test_images_in(dataset.folder, dataset.file_ending, dataset.num_channels))
    if segment_test_images and not test_cases:
        raise ValueError(f"test images were asked for, but {dataset.folder} has no imagesTs cases")
    splits, origin = source_splits(dataset)
    folds = list(range(len(splits))) if folds is None else [int(f) for f in folds]
    beyond = [f for f in folds if not 0 <= f < len(splits)]
    if beyond:  # nnU-Net would silently train such a fold on a random 80:20 split
        raise ValueError(f"fold(s) {beyond} do not exist in {origin}, which has {len(splits)} folds")
    results = paths.require("nnUNet_results")
    output_folder = os.path.abspath(output_folder or join(results, dataset.name, CANDIDATES_FOLDER))
    work_folder = join(results, dataset.name, SEGMENTERS_FOLDER)
    _check_output_folder(output_folder, dataset.folder)
    os.makedirs(work_folder, exist_ok=True)
    splits_file = join(work_folder, "splits_final.json")
    if not os.path.isfile(splits_file) or load_json(splits_file) != splits:
        write_json_atomically(splits_file, splits)
    print(f"nnQC_make_candidates: {dataset.name}, {len(dataset.cases)} cases, subsets "
          f"{', '.join(s.tag for s in channel_subsets)}, folds {folds} of {origin}, snapshots {list(snapshots)}")

    steps_run = 0
    folders: set[str] = set()
    test_folders: set[str] = set()

    def tests_complete(tag: str, epochs: Sequence[int], fold: int) -> bool:
        return all(os.path.isfile(join(output_folder, TEST_FOLDER, test_folder_name(tag, e, fold),
                                       c + dataset.file_ending)) for e in epochs for c in test_cases)
    progress = tqdm(total=len(channel_subsets) * (1 + len(folds)), desc="nnQC make candidates")
    for subset in channel_subsets:
        roots = SegmenterRoots(join(work_folder, subset.tag), dataset.name)
        write_derived_dataset(dataset, subset, roots)
        if segment_test_images:
            write_derived_test_images(dataset, subset, roots)
        if not os.path.isfile(prepared_marker(roots.preprocessed_dataset, configuration)):
            progress.set_postfix_str(f"{subset.tag}: planning and preprocessing")
            _run_worker(["prepare", dataset.name, configuration, "-np", str(num_processes), "--splits", splits_file],
                        roots, {}, f"planning and preprocessing of subset {subset.tag}")
            steps_run += 1
        progress.update()
        if prepare_only:
            progress.update(len(folds))
            continue
        for fold in folds:
            state_file = join(roots.folder, f"fold_{fold}_snapshots.json")
            state = SnapshotState.load(state_file)
            if state.num_epochs is not None:
                wanted = resolve_snapshot_epochs(snapshots, state.num_epochs)
                folders |= {snapshot_folder_name(subset.tag, e) for e in wanted}
                if segment_test_images:
                    test_folders |= {test_folder_name(subset.tag, e, fold) for e in wanted}
                if state.is_complete(wanted) and (not segment_test_images or
                                                  tests_complete(subset.tag, wanted, fold)):
                    progress.update()
                    continue
            progress.set_postfix_str(f"{subset.tag}: fold {fold}")
            arguments = ["train", dataset.name, configuration, str(fold), "-tr", trainer, "--snapshots", *snapshots,
                         "-o", output_folder, "--tag", subset.tag, "--state", state_file, "-device", device]
            if initial_lr is not None:
                arguments += ["--initial_lr", repr(initial_lr)]
            if not use_mirroring:
                arguments.append("--disable_tta")
            if segment_test_images:
                arguments.append("--test")
            # a separate augmentation worker only competes with training on a CPU (nnUNet_n_proc_DA=0 is set for
            # training only: nnU-Net's planning breaks with it)
            extra = {"nnUNet_n_proc_DA": os.environ.get("nnUNet_n_proc_DA", "0")} if device == "cpu" else {}
            _run_worker(arguments, roots, extra, f"training of subset {subset.tag}, fold {fold}")
            steps_run += 1
            state = SnapshotState.load(state_file)
            folders |= {snapshot_folder_name(subset.tag, e) for e in state.snapshot_epochs}
            if segment_test_images:
                test_folders |= {test_folder_name(subset.tag, e, fold) for e in state.snapshot_epochs}
            progress.update()
    progress.close()
    return MakeCandidatesResult(output_folder, work_folder, sorted(join(output_folder, f) for f in folders),
                                steps_run, sorted(join(output_folder, TEST_FOLDER, f) for f in test_folders))

