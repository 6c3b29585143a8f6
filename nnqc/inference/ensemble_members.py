"""The segmenter's ensemble members of each assessed case (nnQC_predict --ensemble_members): checked up front,
read per case, turned into the agreement columns of the summary and, with a fusion file, the fused DSC.

A member folder holds one segmentation per case, CASE + file ending, as nnU-Net writes per-fold predictions
(`nnUNetv2_predict ... -f N`). Every folder must hold every case, on the grid of the assessed segmentation:
otherwise the run stops before predicting, naming the file, since an agreement over fewer members would
silently mean something else.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import isfile, join

from nnqc.calibration.decision import REVIEW, decide
from nnqc.calibration.fusion import Fusion
from nnqc.geometry import image_mismatch
from nnqc.input_files import InputFileError, check_input_file
from nnqc.metrics.agreement import dsc_to_members, mean_pairwise_dsc

ENSEMBLE_COLUMNS = ("ensemble_members", "ensemble_agreement", "dsc_to_members", "fused_dsc", "fused_dsc_lower",
                    "fused_dsc_upper", "decision_from")


class EnsembleMemberError(ValueError):
    """A member folder that cannot be used; the message names the folder or file."""


def _header(path: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return reader


def member_files(member_folders: Sequence[str], case: str, file_ending: str) -> list[str]:
    return [join(folder, case + file_ending) for folder in member_folders]


def check_member_folders(member_folders: Sequence[str], segmentations: dict[str, str], file_ending: str) -> None:
    """Raise EnsembleMemberError naming the file unless every member folder holds every case, readable and on
    the assessed segmentation's grid. `segmentations`: case -> the assessed segmentation's file."""
    if len(member_folders) < 2:
        raise EnsembleMemberError(f"--ensemble_members needs at least two member folders, got {len(member_folders)}")
    if len({os.path.realpath(f) for f in member_folders}) != len(member_folders):
        raise EnsembleMemberError("--ensemble_members names one folder twice")
    for folder in member_folders:
        if not os.path.isdir(folder):
            raise EnsembleMemberError(f"ensemble member folder {folder} does not exist")
    for case, segmentation in sorted(segmentations.items()):
        for path in member_files(member_folders, case, file_ending):
            if not isfile(path):
                raise EnsembleMemberError(f"ensemble member {path} is missing: every member folder must hold a "
                                          f"segmentation of every case")
            try:
                check_input_file(path)
                mismatch = image_mismatch(_header(path), _header(segmentation))
            except (InputFileError, RuntimeError) as e:
                raise EnsembleMemberError(f"ensemble member {path}: {e}") from None
            if mismatch:
                raise EnsembleMemberError(f"ensemble member {path} is not on the grid of {segmentation}: {mismatch}")


def agreement_columns(segmentation: str, members: Sequence[str]) -> dict:
    """ensemble_members, ensemble_agreement (mean pairwise DSC of the members) and dsc_to_members (mean DSC of the
    assessed segmentation to each member) of one case."""
    arrays = [sitk.GetArrayFromImage(sitk.ReadImage(p)) for p in members]
    assessed = sitk.GetArrayFromImage(sitk.ReadImage(segmentation))
    return {"ensemble_members": len(arrays), "ensemble_agreement": mean_pairwise_dsc(arrays),
            "dsc_to_members": dsc_to_members(assessed, arrays)}


def fused_columns(fusion: Fusion, row: dict, alpha: float, flag_below: float, out_of_range: Sequence = ()) -> dict:
    """fused_dsc and its interval from nnQC's prediction and the agreement of one case, and the decision they
    give (decision_from 'fused')."""
    known = bool(np.isfinite(row["predicted_dsc"]))
    if not known:
        return {"fused_dsc": float("nan"), "fused_dsc_lower": float("nan"), "fused_dsc_upper": float("nan"),
                "decision": REVIEW, "decision_from": "fused"}
    table = pd.DataFrame([{k: row[k] for k in ("predicted_dsc", "ensemble_agreement", "dsc_to_members")}])
    intervals = fusion.intervals(table, alpha)
    lower, upper, finite = float(intervals.lower[0]), float(intervals.upper[0]), bool(intervals.finite[0])
    return {"fused_dsc": float(intervals.point[0]), "fused_dsc_lower": lower, "fused_dsc_upper": upper,
            "decision": decide(lower, upper, flag_below, out_of_range, finite), "decision_from": "fused"}
