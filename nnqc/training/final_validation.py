"""A fold's final validation: its network's predictions for every validation sample, as the tables and summary
that calibration and the reported figures are made from.

- validation/qc_predictions_all.csv: every validation sample, in its natural distribution (out-of-fold predictions
  for calibration): sample, subject, source, generator, true and predicted DSC/NSD, per-region true DSC, NSD and
  (networks with per-region outputs) predicted DSC and NSD, DSC_SEM, and test_time_mirroring: the axes the
  predictions were averaged over mirrorings of ("0 1 2"; "none": one plain forward pass), as nnQC_predict mirrors
  by default, so that calibration is made from predictions made as the ones it calibrates;
- validation/qc_predictions.csv and summary.json: the deterministically balanced subset (SPEC §4), whose metrics
  are the reported validation figures (summary.json also has those of all samples).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from nnqc.atomic_files import replace_atomically, write_json_atomically
from nnqc.evaluation.qc_metrics import regression_summary, sem_dice_summary
from nnqc.network_architecture.regression_outputs import has_per_region_outputs
from nnqc.sampling import balanced_subset

VALIDATION_FOLDER = "validation"
ALL_PREDICTIONS_CSV, BALANCED_PREDICTIONS_CSV, SUMMARY_JSON = ("qc_predictions_all.csv", "qc_predictions.csv",
                                                               "summary.json")
# qc_predictions_all.csv: every validation sample of the fold, in its natural distribution (out-of-fold
# predictions for calibration); per-region true DSC and DSC_SEM columns follow these, then MIRRORING_COLUMN
ALL_PREDICTIONS_COLUMNS = ("sample", "subject", "source", "generator", "dsc", "nsd", "predicted_dsc",
                           "predicted_nsd")
MIRRORING_COLUMN = "test_time_mirroring"


def mirroring_label(mirror_axes: Sequence[int]) -> str:
    """The mirror axes as qc_predictions_all.csv records them: "0 1 2", or "none"."""
    return " ".join(str(a) for a in sorted(mirror_axes)) or "none"


def region_prediction_columns(region_names: Sequence[str]) -> list[str]:
    """predicted_dsc_<region>..., predicted_nsd_<region>...: the per-region outputs' columns, in their order."""
    return [*(f"predicted_dsc_{r}" for r in region_names), *(f"predicted_nsd_{r}" for r in region_names)]


def predictions_table(outputs: dict, samples: pd.DataFrame, region_names: Sequence[str], fold) -> pd.DataFrame:
    """The gathered per-sample validation outputs ("samples", "predicted" (N, 2) or (N, 2 + 2C), "sem_dice" (N, C))
    as columns predicted_dsc, predicted_nsd, predicted_{dsc,nsd}_<region> (with per-region outputs),
    dsc_sem_<region> in the rows and order of `samples`; a RuntimeError unless they cover every sample exactly
    once."""
    values = outputs["predicted"]
    per_region = {}
    if has_per_region_outputs(values.shape[1], len(region_names)):
        per_region = {c: values[:, 2 + i] for i, c in enumerate(region_prediction_columns(region_names))}
    predicted = pd.DataFrame({"predicted_dsc": values[:, 0], "predicted_nsd": values[:, 1], **per_region,
                              **{f"dsc_sem_{name}": outputs["sem_dice"][:, i] for i, name in enumerate(region_names)}},
                             index=outputs["samples"])
    if predicted.index.has_duplicates or set(predicted.index) != set(samples["sample"]):
        raise RuntimeError(f"fold {fold}: the validation predictions do not cover the validation samples "
                           f"exactly once ({len(predicted)} predictions for {len(samples)} samples)")
    return predicted.loc[samples["sample"]].reset_index(drop=True)


def validation_tables(samples: pd.DataFrame, predicted: pd.DataFrame, region_names: Sequence[str],
                      mirror_axes: Sequence[int] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(all samples' table for qc_predictions_all.csv, the balanced subset's for qc_predictions.csv) from the
    validation samples and predictions_table of them, predicted averaged over the mirrorings of `mirror_axes`."""
    everything = pd.concat([samples, predicted], axis=1)
    region_columns = [c for c in (*(f"dsc_{r}" for r in region_names), *(f"nsd_{r}" for r in region_names),
                                  *region_prediction_columns(region_names)) if c in everything]
    sem_columns = [f"dsc_sem_{name}" for name in region_names]
    all_table = everything[[c for c in ALL_PREDICTIONS_COLUMNS if c in everything] + region_columns + sem_columns]
    all_table = all_table.assign(**{MIRRORING_COLUMN: mirroring_label(mirror_axes)})
    table = everything.iloc[balanced_subset(everything["dsc"].to_numpy())]
    table = table[["sample", "subject", "source", "dsc", "nsd", "predicted_dsc", "predicted_nsd",
                   *sem_columns]].reset_index(drop=True)
    return all_table, table


def validation_summary(all_table: pd.DataFrame, table: pd.DataFrame, region_names: Sequence[str], fold,
                       trainer_name: str, mirror_axes: Sequence[int] = ()) -> dict:
    """summary.json: the balanced subset's r, MAE and DSC_SEM, and r and MAE over all validation samples."""
    sem_columns = [f"dsc_sem_{name}" for name in region_names]
    regions = {r: {m: regression_summary(all_table[f"{m}_{r}"], all_table[f"predicted_{m}_{r}"])
                   for m in ("dsc", "nsd")}
               for r in region_names if f"predicted_dsc_{r}" in all_table and f"dsc_{r}" in all_table}
    return {"fold": fold, "num_samples": len(table), "trainer": trainer_name,
            "test_time_mirroring": sorted(int(a) for a in mirror_axes),
            "dsc": regression_summary(table["dsc"], table["predicted_dsc"]),
            "nsd": regression_summary(table["nsd"], table["predicted_nsd"]),
            "dsc_sem": sem_dice_summary(table[sem_columns].to_numpy(), region_names),
            "all_samples": {"num_samples": len(all_table),
                            "dsc": regression_summary(all_table["dsc"], all_table["predicted_dsc"]),
                            "nsd": regression_summary(all_table["nsd"], all_table["predicted_nsd"]),
                            # per region, over all validation samples (empty: a model without per-region outputs)
                            "regions": regions}}


def write_final_validation(output_folder: str, samples: pd.DataFrame, predicted: pd.DataFrame,
                           region_names: Sequence[str], fold, trainer_name: str,
                           mirror_axes: Sequence[int] = ()) -> dict:
    """Write the fold's validation/ tables and summary.json (atomically, each) and return the summary."""
    all_table, table = validation_tables(samples, predicted, region_names, mirror_axes)
    summary = validation_summary(all_table, table, region_names, fold, trainer_name, mirror_axes)
    folder = os.path.join(output_folder, VALIDATION_FOLDER)
    os.makedirs(folder, exist_ok=True)
    for name, frame in ((ALL_PREDICTIONS_CSV, all_table), (BALANCED_PREDICTIONS_CSV, table)):
        replace_atomically(os.path.join(folder, name), lambda path, frame=frame: frame.to_csv(path, index=False))
    write_json_atomically(os.path.join(folder, SUMMARY_JSON), summary)
    return summary


def summary_line(summary: dict) -> str:
    """The final validation's figures for the training log."""
    return (f"final validation on {summary['num_samples']} balanced samples: DSC r {summary['dsc']['r']:.4f} "
            f"MAE {summary['dsc']['mae']:.4f}, NSD r {summary['nsd']['r']:.4f} MAE {summary['nsd']['mae']:.4f}, "
            f"DSC_SEM {summary['dsc_sem']['mean']:.4f}; on all {summary['all_samples']['num_samples']} validation "
            f"samples: DSC r {summary['all_samples']['dsc']['r']:.4f}, NSD r "
            f"{summary['all_samples']['nsd']['r']:.4f}")

