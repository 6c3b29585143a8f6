"""What a trained nnQC model folder holds, loaded for prediction: its folds' checkpoints, the network they share,
the training fingerprint its range checks compare against, its calibration, and how precisely the network runs.

The folder is laid out like nnU-Net's: plans.json, dataset.json and fold_X/checkpoint_final.pth. Checkpoints are
read as data only (a shared model runs no code); the network class comes from the trainer the checkpoint names,
looked up through the allow-list of nnqc.trainer_lookup.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, subdirs
from nnunetv2.utilities.helpers import dummy_context

from nnqc.calibration.calibration_file import (
    CALIBRATION_FILE,
    Calibration,
    CalibrationError,
    calibration_folds,
    load_or_build_calibration,
    read_calibration_file,
)
from nnqc.checkpoint_files import UnsafeCheckpointError, load_checkpoint
from nnqc.cpu_features import cpu_has_native_bf16
from nnqc.error_messages import one_line
from nnqc.model_sharing.model_metadata import METADATA_FILE
from nnqc.network_architecture.regression_outputs import regression_outputs_in_weights
from nnqc.trainer_lookup import get_trainer_class
from nnqc.trusted_classes import UntrustedClassError

FINGERPRINT_FILE = "dataset_fingerprint.json"


def forward_precision(device: torch.device, fp32: bool = False) -> str:
    """How the network runs: "cuda autocast" (CUDA's default mixed precision) on a GPU, "bf16" autocast on a CPU
    with native bf16 (AMX, AVX-512 BF16; emulated bf16 would be slower than fp32), "fp32" otherwise or when asked."""
    if fp32:
        return "fp32"
    if device.type == "cuda":
        return "cuda autocast"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast_context(precision: str):
    """The autocast context of the forward passes for a precision of forward_precision."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if precision == "cuda autocast":
        return torch.autocast("cuda")
    return dummy_context()


def find_folds(model_folder: str, checkpoint_name: str) -> list[str]:
    """The folds X of the model folder that have fold_X/checkpoint_name (at least one)."""
    folds = sorted(d[5:] for d in subdirs(model_folder, prefix="fold_", join=False)
                   if isfile(join(model_folder, d, checkpoint_name)))
    if not folds:
        raise FileNotFoundError(f"no fold_X/{checkpoint_name} in {model_folder}")
    return folds


@dataclass
class FoldCheckpoints:
    """The folds' network weights, and the trainer and configuration that trained them (those of the last fold)."""
    trainer_class: type
    trainer_name: str
    configuration_name: str
    weights: list[dict]
    mirror_axes: tuple[int, ...] = ()  # the axes the trainer mirrored in augmentation (test-time mirroring)
    # of the regression head: 2 + 2C, or 2 for a model trained before per-region outputs (None: no head)
    num_regression_outputs: int | None = None


def load_fold_checkpoints(model_folder: str, folds: list, checkpoint_name: str) -> FoldCheckpoints:
    """Read fold_X/checkpoint_name of every fold as data only; a checkpoint that is not nnQC's, or that names a
    trainer outside the allow-list, stops loading with its file named."""
    weights, trainer_class = [], None
    trainer_name = configuration_name = None
    for fold in folds:
        path = join(model_folder, f"fold_{fold}", checkpoint_name)
        checkpoint = load_checkpoint(path)  # data only: a shared model runs no code
        try:
            trainer_name, configuration_name = checkpoint["trainer_name"], checkpoint["init_args"]["configuration"]
        except (KeyError, TypeError) as e:
            raise UnsafeCheckpointError(f"{path} is not an nnQC checkpoint (no {e})") from None
        trainer_class = get_trainer_class(trainer_name, source=path)
        weights.append(checkpoint["network_weights"])
        mirror_axes = _mirror_axes(checkpoint.get("inference_allowed_mirroring_axes"), path)
    outputs = {regression_outputs_in_weights(w) for w in weights}
    if len(outputs) > 1:
        raise ValueError(f"the folds {list(folds)} of {model_folder} differ in their regression outputs "
                         f"({sorted(outputs, key=str)}: some were trained before per-region outputs); predict with "
                         f"folds of one kind (-f)")
    return FoldCheckpoints(trainer_class, trainer_name, configuration_name, weights, mirror_axes, outputs.pop())


def _mirror_axes(value, path: str) -> tuple[int, ...]:
    """nnU-Net's inference_allowed_mirroring_axes of a checkpoint: spatial axes 0-2 (None: none)."""
    if value is None:
        return ()
    axes = tuple(value) if isinstance(value, (list, tuple)) else None
    if axes is None or not all(isinstance(a, int) and 0 <= a <= 2 for a in axes) or len(set(axes)) != len(axes):
        raise UnsafeCheckpointError(f"{path}: inference_allowed_mirroring_axes {value!r} is not a set of axes 0-2")
    return tuple(sorted(axes))


def build_network(trainer_class: type, plans_manager, configuration_manager, model_folder: str,
                  device: torch.device, num_regression_outputs: int | None = None) -> torch.nn.Module:
    """The trainer's network for the plans with the checkpoints' regression head (num_regression_outputs, see
    FoldCheckpoints), on the device in eval mode; a class the plans name outside the allow-list stops loading with
    the model folder's plans.json named."""
    try:
        return trainer_class.build_qc_network(plans_manager, configuration_manager,
                                              num_regression_outputs).to(device).eval()
    except UntrustedClassError as e:  # its message starts with "plans.json:": say which one
        raise UntrustedClassError(join(model_folder, str(e))) from None


def training_fingerprint(model_folder: str) -> dict:
    """The training data's dataset_fingerprint.json ({} without one); an installed model ships only the training
    spacings' range in its nnqc_model.json (the fingerprint stays home), which stands in for the spacings."""
    fingerprint_file = join(model_folder, FINGERPRINT_FILE)
    fingerprint = load_json(fingerprint_file) if isfile(fingerprint_file) else {}
    metadata_file = join(model_folder, METADATA_FILE)
    if not fingerprint.get("spacings") and isfile(metadata_file):
        spacing_range = load_json(metadata_file).get("training_spacing_range")
        if spacing_range:
            fingerprint = {**fingerprint, "spacings": [spacing_range["min"], spacing_range["max"]]}
    return fingerprint


def load_model_calibration(model_folder: str, folds: list, recalibrate: bool = True
                           ) -> tuple[Calibration | None, dict]:
    """(Calibration or None, status) from the out-of-fold predictions of the folds (of every cross-validation
    fold for fold_all, which has no held-out data of its own), built or refreshed in calibration.json.

    An exported model ships calibration.json without the predictions it was built from: it is used as shipped
    when it was built from exactly these folds. Without any calibration data the status says why there are no
    intervals."""
    calibrated_folds = (calibration_folds(model_folder) if "all" in folds
                        else sorted(f for f in folds if f != "all"))
    try:
        data = load_or_build_calibration(model_folder, calibrated_folds)
        how = "built or checked against the out-of-fold predictions"
    except CalibrationError as e:
        data = shipped_calibration(model_folder, calibrated_folds)
        if data is None:
            return None, {"available": False, "reason": one_line(e)}
        how = "as shipped with the model (its out-of-fold predictions are not in the model folder)"
    status = {"available": True, "built_from": data["built_from"], "how": how,
              "num_samples": data["num_samples"], "saved": data.get("saved", True)}
    if "all" in folds:
        status["note"] = ("fold_all has no held-out data: calibrated on the cross-validation "
                          "folds' out-of-fold predictions")
    return Calibration(data, recalibrate=recalibrate), status


def shipped_calibration(model_folder: str, folds: list[int]) -> dict | None:
    """The model folder's calibration.json when it was shipped without its sources and built from these folds."""
    path = join(model_folder, CALIBRATION_FILE)
    if not folds or not isfile(path):
        return None
    data = read_calibration_file(path)  # a damaged one stops loading, naming the file: a broken model
    sources = data.get("built_from", {}).get("sources", [])
    if data.get("built_from", {}).get("folds") != folds or any(isfile(join(model_folder, s["file"]))
                                                              for s in sources):
        return None  # built from other folds, or its sources are here and no longer match it
    return data

