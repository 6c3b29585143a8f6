"""Out-of-fold segmentations of an nnU-Net model the user already trained, as QC candidate sources.

nnU-Net's five-fold cross-validation leaves every training case segmented once, by the fold model that did not
train on it, in TRAINER__PLANS__CONFIGURATION/fold_N/validation/ (and `nnUNetv2_export_model_to_zip
--exp_cv_preds` ships them). These are real candidates from the very segmenter whose outputs the QC model will
judge, for free. Each fold's validation folder becomes one candidate source, tagged <model>_fold<N>.

Checked before anything is written: every case lies in exactly one fold's validation folder; each fold's cases
are validation cases of that fold in the split the QC folds will use (the source's splits_final.json in
nnUNet_preprocessed, which nnU-Net wrote when it trained): a QC model is then validated only on subjects whose
candidates came from a segmenter that never trained on them, and trained on candidates of the other folds. Folds
of the split without a validation folder are named. Geometry and labels are checked as for any candidate folder.
"""
from __future__ import annotations

import os
import re
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json

from nnqc import paths
from nnqc.qc_data.dataset_io import ConversionError
from nnqc.qc_data.external import sanitize_tag

FOLD_FOLDER = re.compile(r"fold_(\d+)")


@dataclass
class HarvestedModel:
    name: str                       # TRAINER__PLANS__CONFIGURATION
    folders: dict[int, str]         # fold -> its validation folder
    missing_folds: list[int]        # folds of the split without a validation folder

    def tags(self) -> list[str]:
        return [f"{sanitize_tag(self.name)}_fold{fold}" for fold in self.folders]


def _extract_validation_folders(archive: str, into: str) -> str:
    """The model folder inside an exported zip, with only its fold_N/validation/ files extracted (by their
    base names: nothing lands outside `into`)."""
    with zipfile.ZipFile(archive) as z:
        wanted = [n for n in z.namelist() if not n.endswith("/") and len(n.split("/")) >= 4
                  and n.split("/")[-2] == "validation" and FOLD_FOLDER.fullmatch(n.split("/")[-3])]
        models = sorted({"/".join(n.split("/")[:-3]) for n in wanted})
        if not models:
            raise ConversionError(f"{archive} holds no fold_N/validation/ folder: export the model with "
                                  f"nnUNetv2_export_model_to_zip --exp_cv_preds")
        if len(models) > 1:
            raise ConversionError(f"{archive} holds several models ({', '.join(models)}): export one "
                                  f"configuration, or unpack it and give the model folder")
        model_folder = join(into, *models[0].split("/"))
        for name in wanted:
            fold, file = name.split("/")[-3], os.path.basename(name)
            target = join(model_folder, fold, "validation", file)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as source, open(target, "wb") as out:
                out.write(source.read())
    return model_folder


def validation_folders(model_folder: str) -> dict[int, str]:
    folds = {}
    for name in sorted(os.listdir(model_folder)):
        match = FOLD_FOLDER.fullmatch(name)
        if match and os.path.isdir(join(model_folder, name, "validation")):
            folds[int(match.group(1))] = join(model_folder, name, "validation")
    return folds


def source_split(source_name: str) -> tuple[list[dict], str]:
    file = join(paths.nnUNet_preprocessed() or "", source_name, "splits_final.json")
    if not paths.nnUNet_preprocessed() or not isfile(file):
        raise ConversionError(f"no splits_final.json for {source_name} in nnUNet_preprocessed: the QC folds must "
                              f"follow the folds the nnU-Net model was trained on; nnU-Net writes that file when "
                              f"it trains (nnUNet_preprocessed/{source_name}/splits_final.json)")
    return load_json(file), file


def harvest_model(model: str, source_name: str, subjects: Sequence[str], file_ending: str,
                  work_folder: str) -> HarvestedModel:
    """Check a trained model folder (or exported zip, unpacked into work_folder) against the source's split."""
    if isfile(model) and zipfile.is_zipfile(model):
        model_folder = _extract_validation_folders(model, work_folder)
    elif os.path.isdir(model):
        model_folder = os.path.abspath(model)
    else:
        raise ConversionError(f"nnU-Net model {model} is neither a model folder nor an exported zip")
    name = os.path.basename(os.path.normpath(model_folder))
    folders = validation_folders(model_folder)
    if not folders:
        raise ConversionError(f"nnU-Net model {model} has no fold_N/validation/ folder: train its folds (nnU-Net "
                              f"writes each fold's validation segmentations at the end of training)")
    splits, splits_file = source_split(source_name)
    known, seen = set(subjects), {}
    for fold, folder in folders.items():
        if fold >= len(splits):
            raise ConversionError(f"nnU-Net model {model} has fold_{fold}, but {splits_file} has {len(splits)} "
                                  f"folds: the model was not trained on this split")
        validation = set(splits[fold]["val"])
        for file in sorted(os.listdir(folder)):
            if not file.endswith(file_ending) or file[:-len(file_ending)] not in known:
                continue
            case = file[:-len(file_ending)]
            if case in seen:
                raise ConversionError(f"case {case} was segmented out of fold twice: {seen[case]} and "
                                      f"{join(folder, file)}")
            seen[case] = join(folder, file)
            if case not in validation:
                raise ConversionError(f"{join(folder, file)}: case {case} is not a validation case of fold {fold} "
                                      f"in {splits_file}, so its fold model may have trained on it; the model was "
                                      f"trained on another split")
    missing = [f for f in range(len(splits)) if f not in folders]
    return HarvestedModel(name, folders, missing)


def harvested_sources(models: Sequence[str], source_name: str, subjects: Sequence[str], file_ending: str,
                      work_folder: str) -> tuple[list[str], list[str]]:
    """(candidate folders, tags) of every model's validation folders; the folds missing are printed by name."""
    folders, tags = [], []
    for i, model in enumerate(models):
        harvested = harvest_model(model, source_name, subjects, file_ending, join(work_folder, str(i)))
        if harvested.missing_folds:
            print(f"nnQC_convert: nnU-Net model {model}: fold(s) "
                  f"{', '.join(f'fold_{f}' for f in harvested.missing_folds)} of the split have no validation "
                  f"folder; their subjects get no candidate from this model")
        folders += list(harvested.folders.values())
        tags += harvested.tags()
    return folders, tags


def temporary_work_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="nnqc_harvest_")
