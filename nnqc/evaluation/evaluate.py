"""How good nnQC's predictions were, once reference segmentations exist (paper §3.4).

For every assessed case with a reference, the true DSC, NSD and error maps are computed exactly as the training
targets were (nnqc.metrics, in the original geometry and spacing) and compared with the predictions: Pearson r
and MAE for DSC and NSD, DSC_SEM per region for the error maps. Only the prediction output folder is written.
"""
from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk

from nnqc.atomic_files import write_bytes_atomically, write_text_atomically
from nnqc.calibration.conformal import DEFAULT_ALPHA
from nnqc.error_messages import one_line
from nnqc.evaluation.calibration_evaluation import calibration_evaluation
from nnqc.evaluation.calibration_plots import risk_coverage_png
from nnqc.evaluation.ensemble_evaluation import ENSEMBLE_EVALUATION_COLUMNS, ensemble_figures
from nnqc.evaluation.failure_detection import failure_detection_summary
from nnqc.evaluation.figures import format_figures
from nnqc.evaluation.plots import scatter_png
from nnqc.evaluation.prediction_output import read_prediction_output
from nnqc.evaluation.qc_metrics import regression_summary, sem_dice_summary
from nnqc.evaluation.region_evaluation import region_case_values, region_evaluation_columns, region_figures
from nnqc.evaluation.report import write_report
from nnqc.geometry import image_mismatch
from nnqc.inference.input_fingerprints import changed_since_prediction
from nnqc.input_files import InputFileError, check_input_file
from nnqc.metrics import binary_dice, get_regions, nsd_tolerance_mm, quality_targets, segmentation_error_maps
from nnqc.metrics.regions import allowed_labels
from nnqc.metrics.sem import decode_sem_bits
from nnqc.output_files import EVALUATION_CSV, EVALUATION_JSON, REPORT_HTML, RISK_COVERAGE_PNG, SCATTER_PNGS
from nnqc.sampling import balanced_subset


def _read_label_image(path: str, case: str, what: str, labels: Sequence[int] | None = None
                      ) -> tuple[sitk.Image, np.ndarray]:
    """A 3D integer label map, checked first for what SimpleITK lets through (truncated files, 2D/4D, NaN);
    with `labels`, every value must be one of them."""
    try:
        check_input_file(path)
    except InputFileError as e:
        raise ValueError(f"case {case}: the {what} {e}") from None
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as e:
        raise ValueError(f"case {case}: cannot read the {what} {path}: {one_line(e)}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"case {case}: the {what} {path} is not a scalar label map")
    array = sitk.GetArrayFromImage(image)
    if array.ndim != 3:
        raise ValueError(f"case {case}: the {what} {path} is a {array.ndim}D image, not a 3D volume")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.array_equal(array, np.round(array)):
            raise ValueError(f"case {case}: the {what} {path} holds non-integer values")
        array = array.astype(np.int32)
    if labels is not None:
        invalid = sorted(set(np.unique(array).tolist()) - set(labels))
        if invalid:
            raise ValueError(f"case {case}: the {what} {path} holds labels {invalid}; dataset.json allows "
                             f"{list(labels)}")
    return image, array


def evaluate_case(case: str, reference_file: str, segmentation_file: str, error_map_file: str | None,
                  regions: Sequence[Sequence[int]], tolerance_mm: float, labels: Sequence[int] | None = None
                  ) -> dict:
    """True DSC and NSD of one assessed segmentation, and DSC_SEM per region when a predicted map exists.

    labels: the values dataset.json allows in the reference and the segmentation (e.g. a BraTS reference still
    using label 4 is refused rather than scored). Returns {"case", "true_dsc", "true_nsd", "dsc_sem": (C,)
    float64, NaN without a map, "dsc_per_region", "nsd_per_region": (C,) float64}.
    """
    reference_image, reference = _read_label_image(reference_file, case, "reference", labels)
    segmentation_image, segmentation = _read_label_image(segmentation_file, case, "assessed segmentation", labels)
    mismatch = image_mismatch(reference_image, segmentation_image)
    if mismatch:
        raise ValueError(f"case {case}: the reference {reference_file} and the assessed segmentation "
                         f"{segmentation_file} do not share one geometry ({mismatch})")
    spacing = tuple(reversed(reference_image.GetSpacing()))  # numpy axis order
    targets = quality_targets(reference, segmentation, regions, spacing, tolerance_mm)
    dsc_sem = np.full(len(regions), np.nan)
    if error_map_file is not None:
        map_image, error_map = _read_label_image(error_map_file, case, "predicted error map")
        mismatch = image_mismatch(map_image, segmentation_image)
        if mismatch:
            raise ValueError(f"case {case}: the predicted error map {error_map_file} does not share the "
                             f"segmentation's geometry ({mismatch})")
        try:
            predicted = decode_sem_bits(error_map, len(regions))
        except ValueError as e:
            raise ValueError(f"case {case}: {error_map_file} is not an nnQC error map: {e}") from e
        true = segmentation_error_maps(reference, segmentation, regions)
        dsc_sem = np.array([binary_dice(p, t) for p, t in zip(predicted, true)], dtype=np.float64)
    return {"case": case, "true_dsc": targets["dsc"], "true_nsd": targets["nsd"], "dsc_sem": dsc_sem,
            "dsc_per_region": targets["dsc_per_region"], "nsd_per_region": targets["nsd_per_region"]}


def _evaluate_or_reason(*job) -> dict:
    """evaluate_case, or {"case", "reason"} when the case cannot be evaluated, whatever the failure."""
    case, reference_file = job[0], job[1]
    try:
        return evaluate_case(*job)
    except ValueError as e:
        return {"case": case, "reason": one_line(e)}
    except Exception as e:
        return {"case": case, "reason": f"case {case} ({reference_file}): evaluation failed: "
                                        f"{one_line(e, with_type=True)}"}


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def _json_ready(value):
    """NaN -> null and numpy scalars -> Python, so the JSON is strict."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _finite(*columns: pd.Series) -> np.ndarray:
    return np.all([np.isfinite(c.to_numpy(dtype=np.float64)) for c in columns], axis=0)


CALIBRATED_EVALUATION_COLUMNS = ("calibrated_dsc", "dsc_lower", "dsc_upper", "calibrated_nsd", "nsd_lower",
                                 "nsd_upper", "decision")


def calibration_figures(included: pd.DataFrame, settings: dict) -> tuple[dict | None, dict | None, str | None]:
    """(failure detection of the raw predicted DSC, the calibration block of calibration_evaluation, a note)
    over the cases with finite predictions; the calibration block is None, with the note saying why, when the
    predictions carry no intervals."""
    threshold = settings.get("flag_below")
    valid = included[_finite(included["predicted_dsc"])]
    if threshold is None:
        return None, None, "predict_settings.json records no threshold (flag_below): no failure-detection figures"
    if not len(valid):
        return None, None, "no evaluated case has a predicted DSC"
    detection = failure_detection_summary(valid["true_dsc"], valid["predicted_dsc"], threshold)
    calibration = settings.get("calibration") or {}
    if not calibration.get("available") or "dsc_lower" not in valid:
        why = calibration.get("reason", "nnQC_predict of this version recorded no calibration")
        return detection, None, f"no calibrated intervals in these predictions: {why}"
    columns = ("predicted_nsd", "calibrated_dsc", "calibrated_nsd", "dsc_lower", "dsc_upper", "nsd_lower",
               "nsd_upper")
    calibrated = valid[_finite(*[valid[c] for c in columns])]
    note = (f"{len(valid) - len(calibrated)} case(s) without calibrated values left out of the calibration figures"
            if len(calibrated) < len(valid) else None)
    if not len(calibrated):
        return detection, None, note
    block = calibration_evaluation(
        calibrated["true_dsc"], calibrated["true_nsd"], calibrated["predicted_dsc"], calibrated["predicted_nsd"],
        calibrated["calibrated_dsc"], calibrated["calibrated_nsd"], calibrated["dsc_lower"], calibrated["dsc_upper"],
        calibrated["nsd_lower"], calibrated["nsd_upper"], calibrated["decision"].astype(str).tolist(), threshold,
        settings.get("alpha", DEFAULT_ALPHA))
    block["recalibration"] = bool(settings.get("recalibration"))
    return detection, block, note


def evaluate_predictions(output_folder: str, reference_folder: str, dataset_json: dict | None = None,
                         balanced: bool = False, num_processes: int = 1, verbose: bool = True) -> dict:
    """Compare nnQC_predict's output with reference segmentations REFERENCES/CASE<file_ending>.

    Writes OUT/qc_evaluation.csv (per case), OUT/qc_evaluation.json (the figures, returned as well),
    OUT/scatter_dsc.png and OUT/scatter_nsd.png, and refreshes OUT/qc_report.html when it exists.
    dataset_json (default: the one in predict_settings.json) gives the regions and the NSD tolerance; its
    regions must be those the predictions were made for. balanced: figures over nnqc.sampling.balanced_subset
    of the true DSCs (deterministic), as the paper's evaluation sets.
    """
    settings, table = read_prediction_output(output_folder)
    if not os.path.isdir(reference_folder):
        raise FileNotFoundError(f"reference folder {reference_folder} does not exist")
    if _inside(output_folder, reference_folder) or _inside(reference_folder, output_folder):
        raise ValueError(f"the output folder {output_folder} must not be, contain or lie inside the reference "
                         f"folder {reference_folder}")
    if dataset_json is None:
        if "dataset_json" not in settings:
            raise ValueError(f"{output_folder}: predict_settings.json holds no dataset_json; pass the dataset (-d)")
        dataset_json = settings["dataset_json"]
    region_names, regions = get_regions(dataset_json)
    if "regions" in settings and ([list(r) for r in regions] != [list(r) for r in settings["regions"]]
                                  or region_names != list(settings["region_names"])):
        raise ValueError(f"the dataset.json regions {dict(zip(region_names, regions))} differ from those the "
                         f"predictions in {output_folder} were made for "
                         f"{dict(zip(settings['region_names'], map(tuple, settings['regions'])))}")
    tolerance = nsd_tolerance_mm(dataset_json)
    labels = allowed_labels(dataset_json)
    ending = settings["file_ending"]
    segmentations_folder = settings.get("segmentations_folder", "")
    if not os.path.isdir(segmentations_folder):
        raise FileNotFoundError(f"the assessed segmentations folder {segmentations_folder!r} recorded in "
                                f"{output_folder} does not exist")

    changed, unverified = changed_since_prediction(output_folder, list(table.loc[table["status"] == "ok", "case"]))
    if changed:
        files = "; ".join(f"{case}: {', '.join(paths)}" for case, paths in sorted(changed.items()))
        raise ValueError(f"input files changed or were replaced since nnQC_predict assessed them ({files}): the "
                         f"predictions in {output_folder} no longer describe them. Run nnQC_predict again with "
                         f"--continue_prediction (it assesses the changed cases again), then evaluate")
    if unverified:
        print(f"WARNING: {len(unverified)} case(s) were predicted without input fingerprints (an older nnQC), so "
              f"nnQC_evaluate cannot check that their files are still the ones assessed: {', '.join(unverified)}")

    jobs, not_evaluated = [], []
    for _, row in table.iterrows():
        case = row["case"]
        reference_file = os.path.join(reference_folder, case + ending)
        if row["status"] != "ok":
            not_evaluated.append({"case": case, "reason": f"not assessed by nnQC_predict ({row['status']})"})
        elif not os.path.isfile(reference_file):
            not_evaluated.append({"case": case, "reason": f"no reference {case}{ending}"})
        else:
            error_map_file = os.path.join(output_folder, case + ending)
            jobs.append((case, reference_file, os.path.join(segmentations_folder, case + ending),
                         error_map_file if os.path.isfile(error_map_file) else None, regions, tolerance, labels))
    if num_processes > 1 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
            results = pool.starmap(_evaluate_or_reason, jobs)
    else:
        results = [_evaluate_or_reason(*job) for job in jobs]
    for r in results:
        if "reason" in r:
            print(f"WARNING: not evaluating {r['case']}: {r['reason']}")
            not_evaluated.append({"case": r["case"], "reason": r["reason"]})
    results = [r for r in results if "reason" not in r]

    predicted = table.set_index("case")
    calibrated_columns = [c for c in CALIBRATED_EVALUATION_COLUMNS if c in table.columns]
    calibrated_columns += [c for c in ENSEMBLE_EVALUATION_COLUMNS if c in table.columns]
    rows = []
    for r in results:
        p = predicted.loc[r["case"]]
        rows.append({"case": r["case"],
                     "true_dsc": r["true_dsc"], "predicted_dsc": float(p["predicted_dsc"]),
                     "abs_error_dsc": abs(r["true_dsc"] - float(p["predicted_dsc"])),
                     "true_nsd": r["true_nsd"], "predicted_nsd": float(p["predicted_nsd"]),
                     "abs_error_nsd": abs(r["true_nsd"] - float(p["predicted_nsd"])),
                     "flagged": bool(p["flagged"]), **{c: p[c] for c in calibrated_columns},
                     **{f"dsc_sem_{name}": float(v) for name, v in zip(region_names, r["dsc_sem"])},
                     **region_case_values(r, p, region_names)})
    columns = ["case", "true_dsc", "predicted_dsc", "abs_error_dsc", "true_nsd", "predicted_nsd", "abs_error_nsd",
               "flagged", *calibrated_columns, *[f"dsc_sem_{name}" for name in region_names],
               *region_evaluation_columns(region_names, list(table.columns)), "in_summary"]
    evaluation = pd.DataFrame(rows, columns=columns)
    evaluation["in_summary"] = True
    if balanced and len(evaluation):
        by_name = np.argsort(evaluation["case"].to_numpy(dtype=str), kind="stable")  # independent of predictions
        chosen = by_name[balanced_subset(evaluation["true_dsc"].to_numpy()[by_name])]
        evaluation["in_summary"] = np.isin(np.arange(len(evaluation)), chosen)
    included = evaluation[evaluation["in_summary"]]

    result = {"num_cases": int(len(included)), "num_evaluated": int(len(evaluation)), "balanced": bool(balanced),
              "region_names": region_names, "nsd_tolerance_mm": tolerance}
    flag_below = settings.get("flag_below")
    for metric in ("dsc", "nsd"):
        valid = included[_finite(included[f"predicted_{metric}"])]
        result[metric] = regression_summary(valid[f"true_{metric}"], valid[f"predicted_{metric}"])
        png = scatter_png(valid[f"true_{metric}"], valid[f"predicted_{metric}"], valid["flagged"], metric.upper(),
                          result[metric], flag_below)
        write_bytes_atomically(os.path.join(output_folder, SCATTER_PNGS[metric.upper()]), png)
    sem_columns = [f"dsc_sem_{name}" for name in region_names]
    with_maps = included[_finite(*[included[c] for c in sem_columns])] if len(included) else included
    result["dsc_sem"] = sem_dice_summary(with_maps[sem_columns].to_numpy(dtype=np.float64), region_names)
    # per region, beside the subject level: r, MAE, failure detection, interval coverage
    result["regions"] = region_figures(included, region_names, flag_below)
    detection, calibration, note = calibration_figures(included, settings)
    result.update(failure_detection=detection, calibration=calibration, calibration_note=note)
    risk_coverage = os.path.join(output_folder, RISK_COVERAGE_PNG)
    if detection is not None:
        valid = included[_finite(included["predicted_dsc"])]
        write_bytes_atomically(risk_coverage, risk_coverage_png(valid["true_dsc"], valid["predicted_dsc"]))
    elif os.path.isfile(risk_coverage):
        os.remove(risk_coverage)  # of an earlier evaluation: it would not describe this one
    result["ensemble"] = ensemble_figures(included, flag_below, output_folder) if flag_below is not None else None
    result["not_evaluated"] = not_evaluated
    result["inputs_not_verified"] = unverified
    result = _json_ready(result)

    write_text_atomically(os.path.join(output_folder, EVALUATION_CSV), evaluation.to_csv(index=False))
    write_text_atomically(os.path.join(output_folder, EVALUATION_JSON), json.dumps(result, indent=2, allow_nan=False))
    if os.path.isfile(os.path.join(output_folder, REPORT_HTML)):
        write_report(output_folder)
    if verbose:
        print(format_figures(result))
    return result
