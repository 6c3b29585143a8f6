"""Export a trained nnQC model to a zip that nnQC_install_pretrained_model_from_zip installs elsewhere.

Only what prediction needs goes in: plans.json, dataset.json, the chosen folds' checkpoints and
training_range.json, calibration.json when the model has one, and nnqc_model.json (what the model is, its
validation figures, every file's SHA-256). Training logs, progress.png and the validation predictions only when
asked; the fingerprint and checkpoint_latest.pth never (unless named with -chk). Paths inside the archive are
relative to nnUNet_results, as nnU-Net's exporter writes them.

A model without out-of-fold predictions (trained before folds stored them) is exported as it is, and the export
says so; an out-of-fold predictions file or calibration.json that exists but cannot be used stops the export
(CorruptCalibrationData naming the file), so that a damaged or outdated calibration is never shipped silently.
"""
from __future__ import annotations

import json
import os
import stat
import time
import zipfile

from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, subfiles

from nnqc.atomic_files import file_sha256, replace_atomically
from nnqc.calibration.calibration_file import (
    OUT_OF_FOLD_PREDICTIONS,
    CorruptCalibrationData,
    calibration_folds,
    load_or_build_calibration,
    read_calibration_file,
    read_out_of_fold_predictions,
)
from nnqc.calibration.fold_coverage import TRAINING_RANGE_FILE
from nnqc.experiment_planning.planner import DEFAULT_PLANS_NAME
from nnqc.model_sharing.model_metadata import (
    CALIBRATION_FILE,
    DEFAULT_CHECKPOINT,
    METADATA_FILE,
    available_folds,
    build_model_metadata,
    fold_folder,
    parse_folds,
    trained_model_folder,
)

TRAINING_LOG_FILES = ("progress.png", "debug.json")


def files_to_export(model_folder: str, folds: list[int | str], checkpoints: list[str], training_logs: bool = False,
                    validation_predictions: bool = False) -> list[str]:
    """Paths relative to the model folder; a requested fold without one of its checkpoints is an error."""
    files = ["plans.json", "dataset.json"]
    if isfile(join(model_folder, CALIBRATION_FILE)):
        files.append(CALIBRATION_FILE)
    for fold in folds:
        folder = fold_folder(fold)
        if not isdir(join(model_folder, folder)):
            raise FileNotFoundError(f"fold {fold} of {model_folder} was not trained: {folder} does not exist")
        for checkpoint in checkpoints:
            if not isfile(join(model_folder, folder, checkpoint)):
                raise FileNotFoundError(f"{join(model_folder, folder, checkpoint)} does not exist")
            files.append(f"{folder}/{checkpoint}")
        if isfile(join(model_folder, folder, TRAINING_RANGE_FILE)):
            files.append(f"{folder}/{TRAINING_RANGE_FILE}")
        if training_logs:
            files += [f"{folder}/{name}" for name in TRAINING_LOG_FILES if isfile(join(model_folder, folder, name))]
            files += [f"{folder}/{name}" for name in subfiles(join(model_folder, folder), prefix="training_log_",
                                                             suffix=".txt", join=False)]
        if validation_predictions and isdir(join(model_folder, folder, "validation")):
            files += [f"{folder}/validation/{name}" for name in subfiles(join(model_folder, folder, "validation"),
                                                                        join=False) if not name.startswith(".")]
    return files


def _fold_list(folds) -> str:
    return ", ".join(str(f) for f in folds)


def _refresh_calibration(model_folder: str, folds: list[int | str]) -> str:
    """calibration.json built for exactly the exported folds when their out-of-fold predictions are here, so that
    the installed model, which gets calibration.json but not the predictions, calibrates as the original does.
    Returns one line saying what the export ships; raises CorruptCalibrationData for a file that exists but
    cannot be used (the export stops before writing anything)."""
    numeric = calibration_folds(model_folder) if "all" in folds else sorted(int(f) for f in folds)
    path = join(model_folder, CALIBRATION_FILE)
    try:
        existing = read_calibration_file(path) if isfile(path) else None
    except CorruptCalibrationData as e:
        raise CorruptCalibrationData(f"{e}; nothing exported (delete it to export without it, or to rebuild it "
                                     f"from the out-of-fold predictions)") from e
    present = [f for f in numeric if isfile(join(model_folder, fold_folder(f), OUT_OF_FOLD_PREDICTIONS))]
    if numeric and present == numeric:
        calibration = load_or_build_calibration(model_folder, numeric)
        return (f"calibration.json from the out-of-fold predictions of fold(s) {_fold_list(numeric)} "
                f"({calibration['num_samples']} samples)")
    for fold in present:  # a damaged file stops the export even where the calibration cannot be built
        read_out_of_fold_predictions(join(model_folder, fold_folder(fold), OUT_OF_FOLD_PREDICTIONS))
    missing = [f for f in numeric if f not in present] or folds
    reason = f"no out-of-fold predictions (fold_X/{OUT_OF_FOLD_PREDICTIONS}) for fold(s) {_fold_list(missing)}"
    if existing is None:
        return f"none: {reason}; the installed model predicts without intervals"
    built_from = existing["built_from"]["folds"]
    if built_from == numeric:
        return f"calibration.json as it is (built from fold(s) {_fold_list(built_from)}; {reason} here)"
    return (f"calibration.json as it is, built from fold(s) {_fold_list(built_from)}: nnQC_predict does not use it "
            f"for the exported fold(s) ({reason})")


def export_model_folder_to_zip(model_folder: str, output_file: str, folds=None,
                               checkpoints: list[str] | tuple[str, ...] = (DEFAULT_CHECKPOINT,),
                               training_logs: bool = False, validation_predictions: bool = False) -> dict:
    """Write the zip atomically (no partial archive under its name) and return the metadata stored in it."""
    model_folder = os.path.abspath(model_folder)
    checkpoints = list(dict.fromkeys(checkpoints))
    if not isdir(model_folder):
        raise FileNotFoundError(f"model folder {model_folder} does not exist: train first")
    folds = parse_folds(folds) if folds is not None else available_folds(model_folder, checkpoints)
    if not folds:
        raise FileNotFoundError(f"no fold_X/{' and '.join(checkpoints)} in {model_folder}")
    calibration_note = _refresh_calibration(model_folder, folds)
    metadata = build_model_metadata(model_folder, folds, checkpoints)
    if None in (metadata["trainer"], metadata["configuration"]):
        raise ValueError(f"{model_folder} is not named TRAINER__PLANS__CONFIGURATION as nnU-Net names model folders")
    files = files_to_export(model_folder, folds, checkpoints, training_logs, validation_predictions)
    metadata["files"] = {name: file_sha256(join(model_folder, name)) for name in files}
    prefix = f"{os.path.basename(os.path.dirname(model_folder))}/{os.path.basename(model_folder)}"

    def write(temporary: str) -> None:
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            for name in files:
                # checkpoints are torch's own (uncompressed) zip files of float weights: deflating gains ~8 %
                # for ~13 s of CPU per 200 MB checkpoint, so they are stored as they are
                stored = name.endswith(".pth")
                archive.write(join(model_folder, name), f"{prefix}/{name}",
                              zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
            info = zipfile.ZipInfo(f"{prefix}/{METADATA_FILE}", time.localtime()[:6])
            info.external_attr, info.compress_type = (stat.S_IFREG | 0o644) << 16, zipfile.ZIP_DEFLATED
            archive.writestr(info, json.dumps(metadata, indent=2))

    output_folder = os.path.dirname(os.path.abspath(output_file))
    if not isdir(output_folder):
        raise FileNotFoundError(f"the folder of the output file {output_file} does not exist")
    replace_atomically(output_file, write)
    print(f"calibration: {calibration_note}")
    return metadata


def export_model_to_zip(dataset_name_or_id: str | int, output_file: str, configuration: str = "3d_fullres",
                        trainer: str = "nnQCTrainer", plans: str = DEFAULT_PLANS_NAME, folds=None,
                        checkpoints: list[str] | tuple[str, ...] = (DEFAULT_CHECKPOINT,), training_logs: bool = False,
                        validation_predictions: bool = False) -> dict:
    """The model nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIGURATION as a zip (default: every fold)."""
    return export_model_folder_to_zip(trained_model_folder(dataset_name_or_id, trainer, plans, configuration),
                                      output_file, folds, checkpoints, training_logs, validation_predictions)
