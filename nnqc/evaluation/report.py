"""The QC report: one self-contained HTML page over an nnQC_predict output folder.

Made to be mailed or archived with the data: pictures are embedded as base64 PNG data URIs and the styling is
inline, so the page needs no network, no JavaScript and no other file.
"""
from __future__ import annotations

import base64
import html
import os
from collections.abc import Callable

import numpy as np
import pandas as pd

from nnqc.atomic_files import write_text_atomically
from nnqc.calibration.decision import DECISIONS, decision_counts
from nnqc.evaluation.calibration_plots import DECISION_COLOURS, intervals_png
from nnqc.evaluation.figures import (
    failure_detection_html,
    format_interval,
    format_number,
    format_with_sd,
    regression_html,
)
from nnqc.evaluation.prediction_output import is_true, read_evaluation_output, read_prediction_output, worst_first
from nnqc.evaluation.previews import case_preview
from nnqc.evaluation.slice_strip import worst_slices_by_case, worst_slices_strip
from nnqc.output_files import REPORT_HTML, RISK_COVERAGE_PNG, SCATTER_PNGS

DEFAULT_MAX_PREVIEWS = 100
SEM_VOLUME_PREFIX = "sem_volume_ml_"


_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.8em; }
.meta { color: #555; font-size: 0.9em; }
.stats { display: flex; flex-wrap: wrap; gap: 1em; margin: 1em 0; }
.stat { border: 1px solid #ccc; border-radius: 6px; padding: 0.6em 1.2em; min-width: 8em; }
.stat b { display: block; font-size: 1.6em; }
.stat.alert { border-color: #c62828; background: #fdecea; color: #8e1b1b; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.case { text-align: left; }
tr.flagged td { background: #fdecea; }
.badge { display: inline-block; padding: 0.05em 0.5em; border-radius: 4px; font-weight: bold; font-size: 0.85em; }
.badge.flag { background: #c62828; color: #fff; } .badge.ok { background: #e3f1e4; color: #1b5e20; }
.badge.partial { background: #ef6c00; color: #fff; }
.badge.pass { background: #2ca02c; color: #fff; } .badge.review { background: #ff7f0e; color: #fff; }
.badge.fail { background: #d62728; color: #fff; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 0.6em; width: 410px; }
.card.flagged { border: 3px solid #c62828; }
.card h3 { margin: 0 0 0.3em 0; font-size: 1em; word-break: break-all; }
.card img { max-width: 400px; display: block; }
.note { color: #777; font-style: italic; }
"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _flag_badge(flagged: bool) -> str:
    return '<span class="badge flag">FLAGGED</span>' if flagged else '<span class="badge ok">ok</span>'


def _partial_view(row) -> bool:
    return "partial_view" in row and is_true(row["partial_view"])


def _partial_badge(row) -> str:
    """The mark of a case the network saw only in part (larger than its input, or foreground outside the
    images' non-zero box); empty for others and for summaries written before the column existed."""
    if not _partial_view(row):
        return ""
    return ' <span class="badge partial">PARTIAL VIEW</span>'


def _partial_note(row) -> str:
    if not _partial_view(row):
        return ""
    share = format_number(100 * float(row.get("foreground_outside_view", float("nan"))), 1, missing="")
    return (f"<div class='note'>Partial view: {share or '?'} % of the segmentation's foreground lay outside what "
            f"the network saw; DSC and NSD are predicted from the visible part, the error map is empty outside "
            f"it.</div>")


def _worst_region_line(row) -> str:
    """'Worst region: ET, DSC 0.42, FAIL': the region to look at first (empty without per-region outputs)."""
    name = row.get("worst_region")
    if not isinstance(name, str) or not name:
        return ""
    decision = row.get("worst_region_decision")
    badge = (f' <span class="badge {decision}">{decision.upper()}</span>'
             if isinstance(decision, str) and decision in DECISIONS else "")
    return (f"<div>Worst region: <b>{html.escape(name)}</b>, DSC "
            f"{format_number(row.get('worst_region_dsc'), missing='n/a')}{badge}</div>")


def _strip(case: str, settings: dict, output_folder: str, worst: dict | None) -> str:
    """The card's strip of the worst slices per region (empty when there are none or no picture can be made)."""
    if not worst:
        return ""
    try:
        png = worst_slices_strip(case, settings, output_folder, worst)
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        return f"<p class='note'>No strip of the worst slices: {html.escape(str(error))}</p>"
    if png is None:
        return ""
    return f'<img alt="slices of {html.escape(case)} with the most predicted error per region" src="{_data_uri(png)}">'


def _has_decisions(settings: dict, table: pd.DataFrame) -> bool:
    return bool((settings.get("calibration") or {}).get("available")) and "decision" in table


def _decision_badge(row) -> str:
    decision = row.get("decision")
    if not isinstance(decision, str) or decision not in DECISIONS:
        return ""
    return f' <span class="badge {decision}">{decision.upper()}</span>'


def _calibration_section(settings: dict, assessed: pd.DataFrame, evaluation: pd.DataFrame | None) -> list[str]:
    """How the decisions were made, and the DSC intervals of the cases as bars against the threshold."""
    calibration = settings.get("calibration")
    if calibration is None:
        return []
    parts = ["<h2>Calibrated decisions</h2>"]
    if not calibration.get("available"):
        return parts + [f"<p class='note'>No calibration: {html.escape(str(calibration.get('reason', '')))}. "
                        "There are no intervals and no pass/review/fail decisions, only the flag.</p>"]
    built = calibration.get("built_from", {})
    centre = ("around the recalibrated prediction" if settings.get("recalibration")
              else "around the raw prediction (no recalibration)")
    parts.append(f"<p>Intervals at coverage {format_number(1 - settings.get('alpha', 0.1), 2, missing='')} (alpha "
                 f"{settings.get('alpha')}), {centre}, calibrated on {calibration.get('num_samples', '?')} "
                 f"out-of-fold predictions of fold(s) "
                 f"{html.escape(str(built.get('folds', '?')))}.</p>")
    warnings = settings.get("calibration_warnings") or []
    if warnings:
        parts.append("<ul>" + "".join(f"<li class='note'>{html.escape(w)}</li>" for w in warnings) + "</ul>")
    shown = assessed[np.isfinite(pd.to_numeric(assessed.get("dsc_lower"), errors="coerce").to_numpy(float))]
    if len(shown):
        true = None
        if evaluation is not None and all(c in evaluation.index for c in shown["case"]):
            true = evaluation.loc[shown["case"], "true_dsc"].to_numpy(dtype=np.float64)
        png = intervals_png(shown["case"].tolist(), shown["calibrated_dsc"].to_numpy(float),
                            shown["dsc_lower"].to_numpy(float), shown["dsc_upper"].to_numpy(float),
                            shown["decision"].astype(str).tolist(), float(settings.get("flag_below", 0.7)), true)
        parts.append(f'<p><img alt="DSC intervals of the cases against the threshold" src="{_data_uri(png)}"></p>')
    return parts


def _evaluation_section(output_folder: str, figures: dict | None) -> list[str]:
    scatter = {metric: os.path.join(output_folder, name) for metric, name in SCATTER_PNGS.items()
               if os.path.isfile(os.path.join(output_folder, name))}
    if figures is None and not scatter:
        return []
    parts = ["<h2>Predicted against true quality</h2>",
             "<p>Computed by nnQC_evaluate against reference segmentations: Pearson r and the mean absolute "
             "error (MAE ± sd) of the predicted values, and DSC<sub>SEM</sub>, the Dice between predicted and "
             "true error maps.</p>"]
    if figures is not None:
        parts += regression_html(figures)
    for metric, path in scatter.items():
        with open(path, "rb") as f:
            parts.append(f'<p><img alt="predicted against true {metric}" src="{_data_uri(f.read())}"></p>')
    parts += _failure_detection_section(output_folder, figures)
    return parts


def _failure_detection_section(output_folder: str, figures: dict | None) -> list[str]:
    detection = (figures or {}).get("failure_detection")
    calibration = (figures or {}).get("calibration")
    png = os.path.join(output_folder, RISK_COVERAGE_PNG)
    if detection is None and calibration is None and not os.path.isfile(png):
        return []
    parts = ["<h2>Failure detection and intervals</h2>", *failure_detection_html(figures or {})]
    if os.path.isfile(png):
        with open(png, "rb") as f:
            parts.append(f'<p><img alt="risk-coverage curve" src="{_data_uri(f.read())}"></p>')
    return parts


def write_report(output_folder: str, max_previews: int | None = DEFAULT_MAX_PREVIEWS,
                 preview: Callable[[str, dict, str], bytes] = case_preview) -> str:
    """Write OUT/qc_report.html for an nnQC_predict output folder and return its path.

    Cases are listed worst first; the first `max_previews` of them (all when None) get a picture of the slice
    with the most predicted error. A picture that cannot be made (e.g. the images moved) is replaced by a note.
    Includes the evaluation figures and scatter plots when nnQC_evaluate has written them.
    """
    settings, table = read_prediction_output(output_folder)
    region_names = list(settings["region_names"])
    assessed, skipped = worst_first(table), table[table["status"] != "ok"]
    figures, evaluation = read_evaluation_output(output_folder)
    flag_below = settings.get("flag_below")
    coverage = format_number(1 - settings.get("alpha", 0.1), 2, "")
    n_flagged = int(assessed["flagged"].sum())
    n_partial = int(sum(_partial_view(row) for _, row in assessed.iterrows()))
    decisions = _has_decisions(settings, assessed)
    counts = decision_counts(assessed["decision"].tolist()) if decisions else {}
    worst_slices = worst_slices_by_case(output_folder)
    e = html.escape

    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>nnQC report: {e(str(settings.get('dataset', '')))}</title>", f"<style>{_STYLE}</style>",
             "</head><body>", "<h1>nnQC quality control report</h1>",
             f"<p class='meta'>QC model: {e(str(settings.get('dataset', '?')))}, configuration "
             f"{e(str(settings.get('configuration', '?')))}, folds {e(str(settings.get('folds', '?')))}, trainer "
             f"{e(str(settings.get('trainer', '?')))}.<br>Segmentations assessed: "
             f"{e(str(settings.get('segmentations_folder', '?')))}</p>",
             "<div class='stats'>",
             f"<div class='stat'><b>{len(assessed)}</b>case(s) assessed</div>",
             f"<div class='stat{' alert' if n_flagged else ''}'><b>{n_flagged}</b>flagged</div>",
             f"<div class='stat'><b>{len(skipped)}</b>skipped</div>",
             f"<div class='stat{' alert' if n_partial else ''}'><b>{n_partial}</b>partial view</div>",
             f"<div class='stat'><b>{format_number(flag_below, 2)}</b>flag threshold (predicted DSC)</div>",
             *[f"<div class='stat'><b style='color:{DECISION_COLOURS[d]}'>{counts[d]}</b>{d}</div>"
               for d in counts],
             "</div>",
             "<h2>What the numbers mean</h2>",
             "<p>nnQC estimates, without a reference segmentation, how well each segmentation would score against "
             "an expert one. <b>Predicted DSC</b> is the Dice similarity coefficient (overlap over all labels: 1 "
             "is perfect, 0 no overlap). <b>Predicted NSD</b> is the normalized surface Dice: the share of the "
             f"boundary that lies within {format_number(settings.get('nsd_tolerance_mm'), 2, 'the tolerance')} mm of "
             "the reference boundary, averaged over the regions. The ± is the standard deviation over the "
             "ensembled models; a large spread means they disagree and the estimate is less certain. A case is "
             f"<b>flagged</b> when its predicted DSC is below {format_number(flag_below, 2, 'the threshold')}: review "
             "it before use. <b>Error volume</b> is the volume (mL) the model predicts to be wrongly segmented, per "
             "region. A <b>partial view</b> case was larger than the network's fixed input, or part of its "
             "segmentation lay outside the images' non-zero region: the network saw a window centred on the "
             "segmentation's foreground, and the share of the foreground it did not see is given. "
             + ("The <b>interval</b> holds the true DSC with probability "
                f"{coverage}, calibrated on predictions of cases the models never "
                "saw; <b>calibrated DSC</b> is the prediction corrected for the models' bias on such cases. The "
                "<b>decision</b> is <i>fail</i> when the whole interval lies below the threshold, <i>pass</i> when it "
                "lies at or above it, and <i>review</i> otherwise, when the case lies outside what the model was "
                "trained on (the reason is given), or when the network saw it only in part. " if decisions else "")
             + ("<b>Ensemble agreement</b> is the mean DSC between every two of your segmenter's ensemble members: "
                "low where the members disagree, a sign that the case is hard. " if "ensemble_agreement" in table
                else "")
             + ("The <b>fused DSC</b> combines nnQC's prediction with the agreement (a model fitted on labelled "
                "cases by nnQC_evaluate); the decision then follows its interval. " if "fused_dsc" in table else "")
             + "The pictures show, "
             "per case, the axial slice with the most predicted error: the first image channel in grey, the "
             "segmentation's outline per region, and the predicted error in translucent red. Where the model "
             "predicts every region's quality, a card names the <b>worst region</b> (the most severe region "
             "decision, then the lowest DSC; every region's values are in qc_summary.csv) and a strip shows, per "
             "region, the slices with the most predicted error along the axis of lowest resolution: look there "
             "first.</p>",
             "<h2>Cases, worst first</h2>"]
    if len(assessed):
        has_truth = evaluation is not None
        agreement = "ensemble_agreement" in assessed
        fused = "fused_dsc" in assessed
        header = ["#", "case", "predicted DSC", "predicted NSD", "flag",
                  *(["ensemble agreement"] if agreement else []),
                  *(["fused DSC", "fused interval"] if fused else []),
                  *(["calibrated DSC", "DSC interval", "decision", "outside the training range"] if decisions else []),
                  *[f"error volume {e(name)} (mL)" for name in region_names]]
        if has_truth:
            header += ["true DSC", "true NSD"]
        parts.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>")
        for rank, row in assessed.iterrows():
            cells = [str(rank + 1), f"<a href='#case-{rank + 1}'>{e(row['case'])}</a>",
                     format_with_sd(row["predicted_dsc"], row.get("predicted_dsc_sd")),
                     format_with_sd(row["predicted_nsd"], row.get("predicted_nsd_sd")),
                     _flag_badge(row["flagged"]) + _partial_badge(row),
                     *([format_number(row.get("ensemble_agreement"), missing="")] if agreement else []),
                     *([format_number(row.get("fused_dsc"), missing=""),
                        format_interval(row.get("fused_dsc_lower"), row.get("fused_dsc_upper"))] if fused else []),
                     *([format_number(row.get("calibrated_dsc"), missing=""),
                        format_interval(row.get("dsc_lower"), row.get("dsc_upper")), _decision_badge(row),
                        e(str(row.get("out_of_training_range") or "") if isinstance(row.get("out_of_training_range"),
                                                                                   str) else "")]
                       if decisions else []),
                     *[format_number(row.get(SEM_VOLUME_PREFIX + name), 2, missing="") for name in region_names]]
            if has_truth:
                truth = evaluation.loc[row["case"]] if row["case"] in evaluation.index else {}
                cells += [format_number(truth.get(key), missing="") for key in ("true_dsc", "true_nsd")]
            css = " class='flagged'" if row["flagged"] else ""
            parts.append(f"<tr{css}><td>{cells[0]}</td><td class='case'>{cells[1]}</td>"
                         + "".join(f"<td>{c}</td>" for c in cells[2:]) + "</tr>")
        parts.append("</table>")
        parts.append("<h2>Predicted error maps</h2><div class='cards'>")
        for rank, row in assessed.iterrows():
            css = " flagged" if row["flagged"] else ""
            parts.append(f"<div class='card{css}' id='case-{rank + 1}'><h3>{rank + 1}. {e(row['case'])} "
                         f"{_flag_badge(row['flagged'])}{_partial_badge(row)}{_decision_badge(row)}</h3>"
                         f"<div>DSC {format_with_sd(row['predicted_dsc'], row.get('predicted_dsc_sd'))}, "
                         f"NSD {format_with_sd(row['predicted_nsd'], row.get('predicted_nsd_sd'))}</div>"
                         f"{_worst_region_line(row)}{_partial_note(row)}")
            if max_previews is None or rank < max_previews:
                try:
                    png = preview(row["case"], settings, output_folder)
                    parts.append(f'<img alt="axial slice of {e(row["case"])} with the predicted errors" '
                                 f'src="{_data_uri(png)}">')
                    parts.append(_strip(row["case"], settings, output_folder, worst_slices.get(row["case"])))
                except (OSError, RuntimeError, ValueError, KeyError) as error:
                    parts.append(f"<p class='note'>No picture: {e(str(error))}</p>")
            else:
                parts.append(f"<p class='note'>No picture: only the {max_previews} worst cases get one.</p>")
            parts.append("</div>")
        parts.append("</div>")
    else:
        parts.append("<p class='note'>No case could be assessed.</p>")
    parts += _calibration_section(settings, assessed, evaluation)
    if len(skipped):
        parts.append("<h2>Skipped cases</h2><ul>")
        parts += [f"<li><b>{e(str(row['case']))}</b>: {e(str(row['status']).removeprefix('skipped: '))}</li>"
                  for _, row in skipped.sort_values("case").iterrows()]
        parts.append("</ul>")
    parts += _evaluation_section(output_folder, figures)
    parts.append("</body></html>")
    path = os.path.join(output_folder, REPORT_HTML)
    write_text_atomically(path, "\n".join(parts) + "\n")
    return path
