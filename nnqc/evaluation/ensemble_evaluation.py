"""nnQC beside the segmenter's ensemble agreement, and the two fused: failure-detection figures side by side.

Where nnQC_predict was given --ensemble_members, every evaluated case has nnQC's predicted DSC, the members'
mean pairwise DSC and the assessed segmentation's DSC to the members. nnQC_evaluate then prints the AURC, e-AURC,
normalised AURC and failure AUROC of each confidence: nnQC's, the agreement's, the fused one applied at
prediction (--fusion) and the fused one cross-fitted here (each case fused by a model fitted on the other subject
groups only), and writes qc_fusion.json, the fusion fitted on all these labelled cases, for nnQC_predict --fusion.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from nnqc.calibration.fusion import FEATURES, FUSION_FILE, MIN_CASES, Fusion, cross_fitted_fusion
from nnqc.evaluation.failure_detection import failure_detection_summary

ENSEMBLE_EVALUATION_COLUMNS = ("ensemble_agreement", "dsc_to_members", "fused_dsc")
CONFIDENCE_NAMES = {"nnqc": "nnQC predicted DSC", "agreement": "ensemble agreement",
                    "fused_at_prediction": "fused (qc_fusion.json of nnQC_predict --fusion)",
                    "fused_cross_fitted": "fused (cross-fitted on these cases)"}


def ensemble_figures(evaluation: pd.DataFrame, threshold: float, output_folder: str) -> dict | None:
    """The figures of every confidence (None without agreement columns); writes OUT/qc_fusion.json when there
    are enough cases to fit it."""
    if "ensemble_agreement" not in evaluation:
        return None
    valid = evaluation[np.all([np.isfinite(evaluation[c].to_numpy(dtype=np.float64))
                               for c in FEATURES], axis=0)].set_index("case")
    fusion_file = os.path.join(output_folder, FUSION_FILE)
    confidences = {"nnqc": valid["predicted_dsc"], "agreement": valid["ensemble_agreement"]}
    if "fused_dsc" in valid and np.isfinite(valid["fused_dsc"].to_numpy(dtype=np.float64)).all():
        confidences["fused_at_prediction"] = valid["fused_dsc"]
    note = None
    if len(valid) >= MIN_CASES:
        true = valid["true_dsc"].to_numpy()
        confidences["fused_cross_fitted"] = pd.Series(cross_fitted_fusion(valid, true), index=valid.index)
        fusion = Fusion.fit(valid, true)
        fusion.save(fusion_file)
        note = f"fusion fitted on {len(valid)} cases written to {fusion_file} (nnQC_predict --fusion)"
    else:
        note = f"no fusion fitted: {len(valid)} case(s) with ensemble members, {MIN_CASES} needed"
        if os.path.isfile(fusion_file):
            os.remove(fusion_file)  # of an earlier evaluation: it would not come from these cases
    figures = {name: failure_detection_summary(valid["true_dsc"], values, threshold)
               for name, values in confidences.items()} if len(valid) else {}
    return {"n": int(len(valid)), "failure_threshold": float(threshold), "confidences": figures, "note": note}


def ensemble_lines(result: dict) -> list[str]:
    """The side-by-side table nnQC_evaluate prints."""
    ensemble = result.get("ensemble")
    if not ensemble:
        return []
    lines = [f"failure detection on {ensemble['n']} case(s) with ensemble members (failure: true DSC < "
             f"{ensemble['failure_threshold']:g}):",
             f"  {'confidence':<50s}{'AURC':>7s}{'e-AURC':>8s}{'norm.':>7s}{'AUROC':>7s}"]
    for name, s in ensemble["confidences"].items():
        auroc = s.get("failure_auroc")
        lines.append(f"  {CONFIDENCE_NAMES[name]:<50s}{s['aurc']:>7.3f}{s['e_aurc']:>8.3f}"
                     f"{s['normalised_aurc']:>7.3f}" + (f"{auroc:>7.3f}" if auroc is not None else f"{'n/a':>7s}"))
    if ensemble["confidences"]:
        s = next(iter(ensemble["confidences"].values()))
        lines.append(f"  optimal AURC {s['optimal_aurc']:.3f}, random {s['random_aurc']:.3f}")
    lines.append(f"  {ensemble['note']}")
    return lines
