"""An nnQC_predict output folder: where it may lie, which earlier results a run keeps, the per-case results and the
summary built from them.

Results per case are kept in OUT/qc_cases/CASE.json, so that --continue_prediction (with the same settings only)
and -num_parts/-part_id runs merge into one summary; any other run into a used OUT replaces its results, so the
summary holds exactly this run's cases. Per-case results are written atomically, each case's map before its row.
"""
from __future__ import annotations

import json
import os

import pandas as pd
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json

from nnqc.atomic_files import write_text_atomically
from nnqc.calibration.calibrated_quality import CALIBRATED_COLUMNS
from nnqc.calibration.region_quality import summary_region_columns
from nnqc.inference.case_failures import ERROR, errors_log_text, status_kind
from nnqc.inference.ensemble_members import ENSEMBLE_COLUMNS
from nnqc.inference.input_fingerprints import changed_inputs
from nnqc.output_files import (
    CASE_RESULTS_FOLDER,
    ERRORS_LOG,
    EVALUATION_OUTPUTS,
    SETTINGS_JSON,
    SUMMARY_CSV,
    SUMMARY_JSON,
)

# what a run's results depend on: --continue_prediction must use the same, and -num_parts runs merge only when
# their settings (and number of parts) agree
CONTRACT_SETTINGS = ("images_folder", "segmentations_folder", "model_folder", "dataset", "trainer", "plans",
                     "configuration", "folds", "checkpoint", "flag_below", "maps_written", "precision", "alpha",
                     "recalibration", "calibration", "test_time_mirroring", "ensemble_members", "fusion")
# what a run recorded before a setting existed meant its default
SETTING_DEFAULTS = {"test_time_mirroring": [], "ensemble_members": [], "fusion": None}
SUMMARY_COLUMNS = ("case", "predicted_dsc", "predicted_dsc_sd", "predicted_nsd", "predicted_nsd_sd", "flagged",
                   "partial_view", "foreground_outside_view", *CALIBRATED_COLUMNS)


def check_output_folder(output_folder: str, *input_folders: str) -> None:
    """Outputs never go into (or above) an input folder: inputs are never written."""
    out = os.path.realpath(output_folder)
    for folder in input_folders:
        inp = os.path.realpath(folder)
        if out == inp or out.startswith(inp + os.sep) or inp.startswith(out + os.sep):
            raise ValueError(f"the output folder {output_folder} must not be, contain or lie inside the input "
                             f"folder {folder}")


def settings_differences(earlier: dict, settings: dict) -> list[str]:
    """The contract settings (CONTRACT_SETTINGS) in which `settings` differ from an earlier run's."""
    earlier = {**SETTING_DEFAULTS, **earlier}
    missing = "(not recorded)"
    return [f"{key} {earlier.get(key, missing)} -> {settings[key]}" for key in CONTRACT_SETTINGS
            if json.loads(json.dumps(earlier.get(key, missing))) != json.loads(json.dumps(settings[key]))]


def prepare_output_folder(output_folder: str, settings: dict, run_cases: set[str], continue_prediction: bool
                          ) -> None:
    """Check --continue_prediction against the earlier run's settings, then remove the results that are not
    this run's: all of them for a new run; for a continued run or another part of the same -num_parts run,
    those of cases no longer among the inputs. Settings are written last."""
    settings_file = join(output_folder, SETTINGS_JSON)
    earlier = load_json(settings_file) if isfile(settings_file) else None
    differences = settings_differences(earlier, settings) if earlier is not None else []
    if continue_prediction and differences:
        raise ValueError(f"--continue_prediction into {output_folder}, whose earlier run used other settings: "
                         f"{'; '.join(differences)}. Use another output folder, or run without "
                         f"--continue_prediction to replace its results.")
    same_run = earlier is not None and not differences and (
        continue_prediction or (settings["num_parts"] > 1 and earlier.get("num_parts") == settings["num_parts"]))
    case_folder = join(output_folder, CASE_RESULTS_FOLDER)
    os.makedirs(case_folder, exist_ok=True)
    earlier_cases = {f[:-5] for f in os.listdir(case_folder) if f.endswith(".json") and not f.startswith(".")}
    stale = earlier_cases - run_cases if same_run else earlier_cases
    earlier_ending = (earlier or settings).get("file_ending", settings["file_ending"])
    for case in sorted(stale):
        for file in (join(output_folder, case + earlier_ending), join(case_folder, case + ".json")):
            if isfile(file):
                os.remove(file)
    if stale or not same_run:
        for name in EVALUATION_OUTPUTS:
            if isfile(join(output_folder, name)):
                os.remove(join(output_folder, name))
    write_text_atomically(settings_file, json.dumps(settings, indent=2))


def map_file(output_folder: str, case: str, file_ending: str) -> str:
    """The case's SEM map in the output folder."""
    return join(output_folder, case + file_ending)


def case_is_done(output_folder: str, case: str, file_ending: str, save_maps: bool) -> bool:
    """An earlier run of the same settings assessed the case from the files that are there now (skipped and
    failed cases, and those whose inputs changed or whose run recorded none, are assessed again)."""
    file = join(output_folder, CASE_RESULTS_FOLDER, case + ".json")
    if not isfile(file) or (save_maps and not isfile(map_file(output_folder, case, file_ending))):
        return False
    with open(file) as f:
        record = json.load(f)
    if record.get("status") != "ok":
        return False
    changed = changed_inputs(record.get("inputs") or {})
    if changed or not record.get("inputs"):
        print(f"NOTE: {case}: " + (f"{', '.join(changed)} changed since it was assessed" if changed else
                                   "its earlier result records no input fingerprints") + ": assessed again")
        return False
    return True


def write_case_result(output_folder: str, row: dict) -> None:
    """The case's row in OUT/qc_cases/, saying so when it was skipped or failed."""
    kind = status_kind(row["status"])
    if kind == ERROR:
        print(f"ERROR: {row['case']}: {row['status'][len(ERROR) + 2:]} (traceback in {ERRORS_LOG})")
    elif kind != "ok":
        print(f"WARNING: skipping {row['case']}: {row['status'][len('skipped: '):]}")
    write_text_atomically(join(output_folder, CASE_RESULTS_FOLDER, row["case"] + ".json"), json.dumps(row))


def skip_case(output_folder: str, case: str, reason: str, file_ending: str) -> None:
    """List the case as skipped with its reason; an error map of an earlier run of it goes."""
    if isfile(map_file(output_folder, case, file_ending)):
        os.remove(map_file(output_folder, case, file_ending))
    write_case_result(output_folder, {"case": case, "status": f"skipped: {reason}"})


def record_case_error(output_folder: str, case: str, error: Exception, file_ending: str) -> None:
    """List the case as failed unexpectedly, with its traceback (for qc_errors.log); its old map goes."""
    if isfile(map_file(output_folder, case, file_ending)):
        os.remove(map_file(output_folder, case, file_ending))
    write_case_result(output_folder, {"case": case, "status": f"{ERROR}: {error}",
                                      "traceback": getattr(error, "details", "")})


def write_qc_summary(output_folder: str, region_names: list[str]) -> pd.DataFrame:
    """qc_summary.csv/.json from every case result in OUT, worst predicted DSC first, skipped cases last; the
    tracebacks of failed cases in qc_errors.log (removed when none failed). Per-region columns follow the
    subject-level ones; each case's worst slices per region are in qc_summary.json only."""
    folder = join(output_folder, CASE_RESULTS_FOLDER)
    rows = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json") and not name.startswith("."):
            with open(join(folder, name)) as f:
                rows.append(json.load(f))
    ensemble = [c for c in ENSEMBLE_COLUMNS if any(c in r for r in rows)]  # only where members were given
    columns = [*SUMMARY_COLUMNS, *ensemble, *summary_region_columns(region_names),
               *[f"sem_volume_ml_{n}" for n in region_names], "status"]
    table = pd.DataFrame(rows, columns=columns)
    table["_ok"] = table["status"] == "ok"
    table = table.sort_values(["_ok", "predicted_dsc", "case"], ascending=[False, True, True], kind="stable")
    table = table.drop(columns="_ok").reset_index(drop=True)
    write_text_atomically(join(output_folder, SUMMARY_CSV), table.to_csv(index=False))
    errors = errors_log_text(rows)
    if errors:
        write_text_atomically(join(output_folder, ERRORS_LOG), errors)
    elif isfile(join(output_folder, ERRORS_LOG)):
        os.remove(join(output_folder, ERRORS_LOG))
    settings = load_json(join(output_folder, SETTINGS_JSON))
    settings.pop("dataset_json", None)
    cases = json.loads(table.to_json(orient="records"))
    slices = {row["case"]: row.get("worst_slices") for row in rows}
    for case in cases:
        case["worst_slices"] = slices.get(case["case"])
    write_text_atomically(join(output_folder, SUMMARY_JSON),
                          json.dumps({"cases": cases, "settings": settings}, indent=2))
    return table
