"""What a trained model folder holds, as one small JSON document (nnqc_model.json).

Export writes it into the archive and install checks the archive against it; nnQC_predict prints it before
the first case, so a user sees which model (dataset, folds, trainer, validation figures) is assessing the cases.
For a folder trained here (no nnqc_model.json yet) the same document is built from the folder itself.
"""
from __future__ import annotations

import importlib.metadata
import os

from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, subdirs
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

from nnqc.evaluation.figures import validation_line
from nnqc.metrics.regions import get_regions, nsd_tolerance_mm
from nnqc.paths import require

METADATA_FILE = "nnqc_model.json"
CALIBRATION_FILE = "calibration.json"
METADATA_FORMAT = 1
DEFAULT_CHECKPOINT = "checkpoint_final.pth"


def trained_model_folder(dataset_name_or_id: str | int, trainer: str, plans: str, configuration: str) -> str:
    """nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIGURATION, as nnU-Net names it."""
    return join(require("nnUNet_results"), maybe_convert_to_dataset_name(dataset_name_or_id),
                f"{trainer}__{plans}__{configuration}")


def nnqc_version() -> str:
    """The installed nnQC's version ("unknown" when running from a checkout that was never installed)."""
    try:
        return importlib.metadata.version("nnqc")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def fold_folder(fold: int | str) -> str:
    return f"fold_{fold}"


def parse_folds(folds) -> list[int | str]:
    """Folds as nnU-Net's command lines give them ("0", "1", "all") -> [0, 1, "all"]."""
    parsed = []
    for fold in folds:
        if str(fold) == "all":
            parsed.append("all")
        elif str(fold).isdigit():
            parsed.append(int(fold))
        else:
            raise ValueError(f"fold {fold!r} is neither a number nor 'all'")
    return parsed


def available_folds(model_folder: str, checkpoints: list[str] | tuple[str, ...] = (DEFAULT_CHECKPOINT,)
                    ) -> list[int | str]:
    """Every fold_X of the folder that holds all the given checkpoints, numbers first, then 'all'."""
    folds = parse_folds(d[len("fold_"):] for d in subdirs(model_folder, prefix="fold_", join=False)
                        if d[len("fold_"):] == "all" or d[len("fold_"):].isdigit())
    folds = [f for f in folds if all(isfile(join(model_folder, fold_folder(f), c)) for c in checkpoints)]
    return sorted(folds, key=lambda f: (isinstance(f, str), f if isinstance(f, int) else 0))


def _identity_from_folder_name(model_folder: str) -> tuple[str | None, str | None, str | None]:
    parts = os.path.basename(os.path.normpath(model_folder)).split("__")
    return tuple(parts) if len(parts) == 3 and all(parts) else (None, None, None)


def _validation_summary(model_folder: str, fold: int | str) -> dict | None:
    path = join(model_folder, fold_folder(fold), "validation", "summary.json")
    if not isfile(path):
        return None
    summary = load_json(path)
    return {key: summary[key] for key in ("num_samples", "dsc", "nsd", "dsc_sem") if key in summary}


def build_model_metadata(model_folder: str, folds: list[int | str], checkpoints: list[str] | tuple[str, ...]
                         ) -> dict:
    """The metadata of a trained model folder for the given folds and checkpoints (no checksums)."""
    for name in ("plans.json", "dataset.json"):
        if not isfile(join(model_folder, name)):
            raise FileNotFoundError(f"{join(model_folder, name)} does not exist: {model_folder} is not a trained "
                                    f"nnQC model folder")
    plans, dataset_json = load_json(join(model_folder, "plans.json")), load_json(join(model_folder, "dataset.json"))
    trainer, plans_name, configuration = _identity_from_folder_name(model_folder)
    region_names, regions = get_regions(dataset_json)
    patch_size = None
    if configuration is not None and configuration in plans.get("configurations", {}):
        patch_size = plans["configurations"][configuration].get("patch_size")
    return {
        "format": METADATA_FORMAT,
        "nnqc_version": nnqc_version(),
        "dataset": plans.get("dataset_name"),
        "trainer": trainer,
        "plans": plans.get("plans_name", plans_name),
        "configuration": configuration,
        "folds": list(folds),
        "checkpoints": list(checkpoints),
        "regions": {name: list(values) for name, values in zip(region_names, regions)},
        "channel_names": dict(dataset_json["channel_names"]),
        "file_ending": dataset_json["file_ending"],
        "nsd_tolerance_mm": nsd_tolerance_mm(dataset_json),
        "network_input_shape": list(patch_size) if patch_size is not None else None,
        "calibration": CALIBRATION_FILE if isfile(join(model_folder, CALIBRATION_FILE)) else None,
        "validation": {str(f): _validation_summary(model_folder, f) for f in folds},
        "training_spacing_range": training_spacing_range(model_folder),
    }


def training_spacing_range(model_folder: str) -> dict | None:
    """Per axis, the smallest and largest training spacing (from the fingerprint, which is not exported):
    what nnQC_predict's training-range check needs of it, so that an installed model checks the same."""
    path = join(model_folder, "dataset_fingerprint.json")
    spacings = load_json(path).get("spacings") if isfile(path) else None
    if not spacings:
        return None
    return {"min": [float(min(s[a] for s in spacings)) for a in range(len(spacings[0]))],
            "max": [float(max(s[a] for s in spacings)) for a in range(len(spacings[0]))]}


def load_model_metadata(model_folder: str, folds: list[int | str], checkpoint: str = DEFAULT_CHECKPOINT) -> dict:
    """The metadata of an installed model (its nnqc_model.json) restricted to `folds`, or, for a folder trained
    here, built from the folder; validation summaries in the folder take precedence over the stored ones."""
    built = build_model_metadata(model_folder, folds, [checkpoint])
    path = join(model_folder, METADATA_FILE)
    if not isfile(path):
        return built
    stored = load_json(path)
    stored_validation = stored.get("validation") or {}
    built["validation"] = {str(f): built["validation"][str(f)] or stored_validation.get(str(f)) for f in folds}
    for key in ("trainer", "configuration", "network_input_shape"):  # a renamed folder loses them
        if built[key] is None:
            built[key] = stored.get(key)
    built["exported_with"] = stored.get("nnqc_version")
    return built


def describe_model(metadata: dict) -> str:
    """A few lines for the start of nnQC_predict: which model assesses the cases, and how well it validated."""
    channels = ", ".join(f"{k}: {v}" for k, v in metadata["channel_names"].items())
    shape = metadata.get("network_input_shape")
    lines = [f"nnQC model {metadata['dataset']}: trainer {metadata['trainer']}, plans {metadata['plans']}, "
             f"configuration {metadata['configuration']}, folds {' '.join(map(str, metadata['folds']))} "
             f"({', '.join(metadata['checkpoints'])})",
             f"  {len(metadata['channel_names'])} channel(s) ({channels}), file ending {metadata['file_ending']}, "
             f"regions {', '.join(metadata['regions'])}"
             + (f", network input {'x'.join(map(str, shape))}" if shape else "")]
    validation = metadata.get("validation") or {}
    figures = []
    for fold in metadata["folds"]:
        summary = validation.get(str(fold))
        if summary is None:
            figures.append(f"fold {fold}: no validation summary")
        else:
            figures.append(f"fold {fold}: {validation_line(summary)}")
    lines.append("  validation: " + "; ".join(figures))
    calibration = metadata.get("calibration")
    exported = metadata.get("exported_with")
    lines.append(f"  calibration: {calibration or 'none'}"
                 + (f"; exported with nnQC {exported}" if exported else "")
                 + f"; running nnQC {nnqc_version()}")
    return "\n".join(lines)
