"""One step of one segmenter, run as `python -m nnqc.segmenters.worker STEP ...` in a process whose nnUNet_raw,
nnUNet_preprocessed and nnUNet_results point at that channel subset's own roots (nnU-Net reads them at import).

Steps: `prepare` (nnU-Net's fingerprint, ExperimentPlanner and DefaultPreprocessor for one configuration, and
the fold split) and `train` (nnU-Net's trainer with snapshots for one fold, resumed from checkpoint_latest).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil

from nnqc.segmenters.snapshot_state import SnapshotState, resolve_snapshot_epochs

PLANS_IDENTIFIER = "nnUNetPlans"
PREPARED_MARKER = "nnqc_prepared.json"


def _nnunet_paths() -> tuple[str, str, str]:
    from nnunetv2 import paths

    return paths.nnUNet_raw, paths.nnUNet_preprocessed, paths.nnUNet_results


def prepared_marker(preprocessed_dataset: str, configuration: str) -> str:
    return os.path.join(preprocessed_dataset, f"{configuration}_{PREPARED_MARKER}")


def _preprocess_case(task: tuple) -> None:
    from nnqc.preprocessing.plans_manager import nnQCPlansManager
    from nnqc.segmenters.nnunet_steps import SegmenterPreprocessor

    output, images, label, plans, configuration, dataset_json = task
    plans_manager = nnQCPlansManager(plans)
    SegmenterPreprocessor(verbose=False).run_case_save(output, images, label, plans_manager,
                                          plans_manager.get_configuration(configuration), dataset_json)


def prepare(dataset_name: str, configuration: str, num_processes: int, splits_file: str) -> None:
    """Fingerprint, plan and preprocess the derived dataset for `configuration`, and install the fold split."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
    from tqdm import tqdm

    from nnqc.atomic_files import copy_atomically
    from nnqc.segmenters.nnunet_steps import SegmenterPlanner

    raw, preprocessed, _ = _nnunet_paths()
    raw_dataset, preprocessed_dataset = os.path.join(raw, dataset_name), os.path.join(preprocessed, dataset_name)
    marker = prepared_marker(preprocessed_dataset, configuration)
    if os.path.isfile(marker):
        return
    DatasetFingerprintExtractor(dataset_name, num_processes).run()
    plans = SegmenterPlanner(dataset_name, plans_name=PLANS_IDENTIFIER).plan_experiment()
    if configuration not in plans["configurations"]:
        raise ValueError(f"nnU-Net planned no configuration {configuration!r} for {dataset_name} "
                         f"(it planned {', '.join(plans['configurations'])})")
    dataset_json = load_json(os.path.join(raw_dataset, "dataset.json"))
    copy_atomically(os.path.join(raw_dataset, "dataset.json"), os.path.join(preprocessed_dataset, "dataset.json"))
    data_identifier = plans["configurations"][configuration].get("data_identifier", f"{PLANS_IDENTIFIER}_"
                                                                                        f"{configuration}")
    output_folder = os.path.join(preprocessed_dataset, data_identifier)
    shutil.rmtree(output_folder, ignore_errors=True)
    os.makedirs(output_folder)
    cases = get_filenames_of_train_images_and_targets(raw_dataset, dataset_json)
    tasks = [(os.path.join(output_folder, k), v["images"], v["label"], plans, configuration, dataset_json)
             for k, v in cases.items()]
    progress = tqdm(total=len(tasks), desc=f"Preprocessing {configuration}")
    if num_processes <= 1:
        for task in tasks:
            _preprocess_case(task)
            progress.update()
    else:
        with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
            for _ in pool.imap_unordered(_preprocess_case, tasks):
                progress.update()
    progress.close()
    copy_atomically(splits_file, os.path.join(preprocessed_dataset, "splits_final.json"))
    with open(marker, "w", encoding="utf-8") as f:
        json.dump({"configuration": configuration, "cases": len(tasks)}, f)


def train(dataset_name: str, configuration: str, fold: int, trainer_name: str, snapshots: list[str],
          output_folder: str, tag: str, state_file: str, initial_lr: float | None, device_name: str,
          use_mirroring: bool, segment_test_images: bool = False) -> None:
    """Train one fold (resuming when a checkpoint_latest exists) and write its snapshots (with
    `segment_test_images`, also of the derived dataset's imagesTs)."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from nnqc.segmenters.derived_dataset import test_images_in
    from nnqc.segmenters.snapshot_trainer import with_snapshots
    from nnqc.segmenters.trainer_classes import segmenter_trainer_class

    _, preprocessed, _ = _nnunet_paths()
    preprocessed_dataset = os.path.join(preprocessed, dataset_name)
    device = torch.device(device_name)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    trainer_class = with_snapshots(segmenter_trainer_class(trainer_name))
    plans = load_json(os.path.join(preprocessed_dataset, f"{PLANS_IDENTIFIER}.json"))
    model_folder = os.path.join(_nnunet_paths()[2], dataset_name, f"{trainer_class.__name__}__{PLANS_IDENTIFIER}__"
                                                                   f"{configuration}", f"fold_{fold}")
    final = os.path.join(model_folder, "checkpoint_final.pth")
    latest = os.path.join(model_folder, "checkpoint_latest.pth")
    plans["continue_training"] = os.path.isfile(latest) or os.path.isfile(final)  # nnU-Net's logger resumes then
    trainer = trainer_class(plans=plans, configuration=configuration, fold=fold,
                            dataset_json=load_json(os.path.join(preprocessed_dataset, "dataset.json")), device=device)
    if initial_lr is not None:
        trainer.initial_lr = initial_lr
    epochs = resolve_snapshot_epochs(snapshots, trainer.num_epochs)
    state = SnapshotState.load(state_file)
    state.start(trainer=trainer_name, configuration=configuration, initial_lr=trainer.initial_lr,
                num_epochs=trainer.num_epochs, snapshot_epochs=epochs)
    state.save(state_file)
    dataset_json = trainer.dataset_json
    test_images = test_images_in(os.path.join(_nnunet_paths()[0], dataset_name), dataset_json["file_ending"],
                                 len(dataset_json["channel_names"])) if segment_test_images else {}
    if segment_test_images and not test_images:
        raise RuntimeError(f"test images were asked for, but {dataset_name} has no imagesTs")
    trainer.configure_snapshots(tuple(epochs), output_folder, tag, state_file, use_mirroring, test_images)
    done = trainer.done_snapshots()
    without_test = [e for e in epochs if e in done and test_images and trainer.missing_test_predictions(e)]
    final_exists = os.path.isfile(final)
    lost = [e for e in without_test if not (final_exists and e == trainer.num_epochs)]
    if final_exists:
        lost += [e for e in epochs if e not in done and e != trainer.num_epochs]
    if lost:
        raise RuntimeError(f"fold {fold} of {tag} is past snapshot epoch(s) {sorted(lost)} that were not written "
                           f"(or not with the test images); remove {trainer.output_folder} to train it again")
    if final_exists:
        missing = [e for e in epochs if e not in done or e in without_test]
        if missing:
            trainer.initialize()
            trainer.load_checkpoint(final)
            trainer.write_snapshot(trainer.num_epochs)
    else:
        if os.path.isfile(latest):
            trainer.load_checkpoint(latest)
        trainer.run_training()
    state = SnapshotState.load(state_file)
    state.training_finished = True
    state.save(state_file)


def main() -> None:
    parser = argparse.ArgumentParser(description="One step of an nnQC_make_candidates segmenter (internal).")
    steps = parser.add_subparsers(dest="step", required=True)
    p = steps.add_parser("prepare")
    p.add_argument("dataset")
    p.add_argument("configuration")
    p.add_argument("-np", type=int, default=1)
    p.add_argument("--splits", required=True)
    t = steps.add_parser("train")
    t.add_argument("dataset")
    t.add_argument("configuration")
    t.add_argument("fold", type=int)
    t.add_argument("-tr", required=True)
    t.add_argument("--snapshots", nargs="+", required=True)
    t.add_argument("-o", required=True)
    t.add_argument("--tag", required=True)
    t.add_argument("--state", required=True)
    t.add_argument("--initial_lr", type=float, default=None)
    t.add_argument("-device", default="cuda")
    t.add_argument("--disable_tta", action="store_true")
    t.add_argument("--test", action="store_true", help="also segment the dataset's imagesTs at every snapshot")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.dataset, args.configuration, args.np, args.splits)
    else:
        train(args.dataset, args.configuration, args.fold, args.tr, args.snapshots, args.o, args.tag, args.state,
              args.initial_lr, args.device, not args.disable_tta, args.test)


if __name__ == "__main__":
    main()
