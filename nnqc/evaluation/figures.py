"""Quality figures as people read them: one number format, and the text and HTML renderings of an evaluation.

nnQC_evaluate's text, the HTML report, nnQC_predict's table and the model description all show DSC, NSD, Pearson
r, MAE, intervals and decisions. They format numbers with format_number, and an evaluation's figures are picked
once from nnQC_evaluate's result (or a fold's validation summary) by headline_figures, which every rendering
formats, so that the printed text and the report say the same.
"""
from __future__ import annotations

import html
import math

from nnqc.evaluation.ensemble_evaluation import ensemble_lines
from nnqc.evaluation.region_evaluation import region_lines

MISSING = "n/a"


def format_number(value, digits: int = 3, missing: str = MISSING) -> str:
    """value with `digits` decimals; `missing` for what is no finite number (None, NaN, text, a figure that could
    not be computed). Tables leave such cells empty (missing=""), sentences say n/a."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return missing
    return f"{value:.{digits}f}" if math.isfinite(value) else missing


def format_with_sd(mean, sd, digits: int = 3, missing: str = "") -> str:
    """"mean ± sd"; the mean alone without a finite sd, `missing` without a finite mean."""
    text = format_number(mean, digits, "")
    if not text:
        return missing
    spread = format_number(sd, digits, "")
    return f"{text} ± {spread}" if spread else text


def format_interval(lower, upper, digits: int = 3) -> str:
    """"[lower, upper]", or "" unless both bounds are finite."""
    lower, upper = format_number(lower, digits, ""), format_number(upper, digits, "")
    return f"[{lower}, {upper}]" if lower and upper else ""


def headline_figures(result: dict) -> dict:
    """The figures an evaluation is read by, picked once from nnQC_evaluate's result (qc_evaluation.json) or a
    validation summary.json: per metric r, MAE, its sd and n; DSC_SEM per region (mean, sd) and their mean; the
    failure-detection block and the calibration's interval, decision and mean-error figures (None when absent);
    the note on why calibration figures are missing."""
    figures = {"num_cases": result.get("num_cases", 0), "num_evaluated": result.get("num_evaluated"),
               "balanced": result.get("balanced")}
    for key in ("dsc", "nsd"):
        summary = result.get(key) or {}
        figures[key] = {name: summary.get(name) for name in ("r", "mae", "mae_sd", "n")}
    sem = result.get("dsc_sem") or {}
    figures["dsc_sem_mean"] = sem.get("mean")
    figures["dsc_sem_regions"] = {name: (v.get("mean"), v.get("sd")) for name, v in sem.items()
                                  if isinstance(v, dict)}
    figures["failure_detection"] = result.get("failure_detection")
    calibration = result.get("calibration")
    figures["calibration"] = None
    if calibration is not None:
        intervals, decisions = calibration["intervals"], calibration["decisions"]
        error = calibration["mean_error_true_dsc_above_0_85"]["dsc"]
        figures["calibration"] = {
            "target_coverage": intervals["target_coverage"],
            "dsc_coverage": intervals["dsc"]["coverage"], "dsc_mean_width": intervals["dsc"]["mean_width"],
            "nsd_coverage": intervals["nsd"]["coverage"], "nsd_mean_width": intervals["nsd"]["mean_width"],
            **{decision: decisions["counts"][decision] for decision in ("pass", "review", "fail")},
            "missed_failures": decisions["missed_failures"], "false_alarms": decisions["false_alarms"],
            "mean_error_raw": error["raw"]["mean_error"], "mean_error_n": error["raw"]["n"],
            "mean_error_recalibrated": error["recalibrated"]["mean_error"]}
    figures["note"] = result.get("calibration_note")
    return figures


# ---- text -------------------------------------------------------------------------------------------------------
def calibration_lines(result: dict) -> list[str]:
    """The failure-detection, interval, decision and recalibration figures of an evaluation, as text lines
    (what nnQC_evaluate, the demo and the learning benchmark print)."""
    figures = headline_figures(result)
    lines = []
    detection = figures["failure_detection"]
    if detection:
        lines.append(f"failure detection (risk 1 - true DSC, confidence predicted DSC, n {detection['n']}): AURC "
                     f"{format_number(detection['aurc'])} (optimal {format_number(detection['optimal_aurc'])}, "
                     f"random {format_number(detection['random_aurc'])}), e-AURC {format_number(detection['e_aurc'])}"
                     f", normalised AURC {format_number(detection['normalised_aurc'])}, failure AUROC at DSC "
                     f"{detection['failure_threshold']:g} {format_number(detection['failure_auroc'])}")
    calibration = figures["calibration"]
    if calibration:
        lines.append(f"intervals at target coverage {calibration['target_coverage']:g}: DSC coverage "
                     f"{format_number(calibration['dsc_coverage'])}, mean width "
                     f"{format_number(calibration['dsc_mean_width'])}; NSD coverage "
                     f"{format_number(calibration['nsd_coverage'])}, mean width "
                     f"{format_number(calibration['nsd_mean_width'])}")
        lines.append(f"decisions: {calibration['pass']} pass, {calibration['review']} review, {calibration['fail']} "
                     f"fail ({calibration['missed_failures']} missed failure(s), {calibration['false_alarms']} false "
                     f"alarm(s))")
        lines.append(f"mean error (predicted - true DSC) for true DSC > 0.85: raw "
                     f"{format_number(calibration['mean_error_raw'])}, recalibrated "
                     f"{format_number(calibration['mean_error_recalibrated'])} (n {calibration['mean_error_n']})")
    if figures["note"]:
        lines.append(f"note: {figures['note']}")
    return lines


def format_figures(result: dict) -> str:
    """The evaluation figures as a short plain-text table (what nnQC_evaluate prints)."""
    figures = headline_figures(result)
    subset = f" (DSC-balanced subset of {figures['num_evaluated']})" if figures["balanced"] else ""
    lines = [f"nnQC evaluation: {figures['num_cases']} case(s){subset}",
             f"{'':8s}{'r':>8s}  {'MAE ± sd':>16s}  {'n':>5s}"]
    for key in ("dsc", "nsd"):
        s = figures[key]
        mae = f"{format_number(s['mae'])} ± {format_number(s['mae_sd'])}"
        lines.append(f"{key.upper():8s}{format_number(s['r']):>8s}  {mae:>16s}  {s['n']:>5d}")
    regions = ", ".join(f"{name} {format_number(mean)} ± {format_number(sd)}"
                        for name, (mean, sd) in figures["dsc_sem_regions"].items())
    lines.append(f"DSC_SEM  mean {format_number(figures['dsc_sem_mean'])}" + (f" ({regions})" if regions else ""))
    lines += calibration_lines(result)
    lines += ensemble_lines(result)
    if "regions" in result:
        lines += region_lines(result)
    if result["not_evaluated"]:
        lines.append(f"not evaluated: {len(result['not_evaluated'])} case(s): "
                     + "; ".join(f"{c['case']} ({c['reason']})" for c in result["not_evaluated"][:5])
                     + (" ..." if len(result["not_evaluated"]) > 5 else ""))
    return "\n".join(lines)


def validation_line(summary: dict) -> str:
    """A fold's validation summary in one phrase (the model description nnQC_predict starts with)."""
    figures = headline_figures(summary)
    return (f"DSC r {format_number(figures['dsc']['r'])}, NSD r {format_number(figures['nsd']['r'])}, DSC_SEM "
            f"{format_number(figures['dsc_sem_mean'])} ({summary.get('num_samples', '?')} samples)")


# ---- HTML -------------------------------------------------------------------------------------------------------
def regression_html(result: dict) -> list[str]:
    """The report's table of r and MAE ± sd per metric, and DSC_SEM per region, of an evaluation."""
    figures = headline_figures(result)
    subset = " (DSC-balanced subset)" if figures["balanced"] else ""
    parts = [f"<p>{figures['num_cases']} case(s) evaluated{subset}.</p>",
             "<table><tr><th>metric</th><th>r</th><th>MAE ± sd</th><th>n</th></tr>"]
    for key, label in (("dsc", "DSC"), ("nsd", "NSD")):
        s = figures[key]
        parts.append(f"<tr><td class='case'>{label}</td><td>{format_number(s['r'], missing='')}</td>"
                     f"<td>{format_with_sd(s['mae'], s['mae_sd'])}</td><td>{'' if s['n'] is None else s['n']}</td>"
                     f"</tr>")
    parts.append("</table>")
    rows = "".join(f"<tr><td class='case'>{html.escape(name)}</td><td>{format_with_sd(mean, sd)}</td></tr>"
                   for name, (mean, sd) in figures["dsc_sem_regions"].items())
    if rows or figures["dsc_sem_mean"] is not None:
        parts.append(f"<p></p><table><tr><th>region</th><th>DSC<sub>SEM</sub> mean ± sd</th></tr>{rows}"
                     f"<tr><th>mean</th><th>{format_number(figures['dsc_sem_mean'], missing='')}</th></tr></table>")
    return parts


def failure_detection_html(result: dict) -> list[str]:
    """The report's failure-detection table, interval and decision figures, and the calibration note."""
    figures = headline_figures(result)
    detection, calibration = figures["failure_detection"], figures["calibration"]
    parts = []
    if detection is not None:
        cell = {key: format_number(detection.get(key), missing="")
                for key in ("aurc", "optimal_aurc", "random_aurc", "e_aurc", "normalised_aurc", "failure_auroc")}
        parts.append("<p>risk = 1 - true DSC, confidence = predicted DSC (as the DKFZ segmentation failure-detection "
                     "benchmark defines them); the AURC is the area under the risk-coverage curve, lower is "
                     "better, beside the optimal ranking's and a random one's.</p>")
        parts.append("<table><tr><th>AURC</th><th>optimal AURC</th><th>random AURC</th><th>e-AURC</th>"
                     "<th>normalised AURC</th><th>failure AUROC</th><th>failures</th><th>n</th></tr>"
                     f"<tr><td>{cell['aurc']}</td><td>{cell['optimal_aurc']}</td>"
                     f"<td>{cell['random_aurc']}</td><td>{cell['e_aurc']}</td>"
                     f"<td>{cell['normalised_aurc']}</td>"
                     f"<td>{cell['failure_auroc']}</td><td>{detection.get('num_failures', '')} "
                     f"(true DSC &lt; {format_number(detection.get('failure_threshold'), 2, missing='')})</td>"
                     f"<td>{detection.get('n', '')}</td></tr></table>")
    if calibration is not None:
        c = {key: format_number(calibration[key], missing="")
             for key in ("dsc_coverage", "dsc_mean_width", "nsd_coverage", "nsd_mean_width")}
        parts.append(f"<p>Target coverage {format_number(calibration['target_coverage'], 2, missing='')}: DSC "
                     f"intervals held the true DSC in {c['dsc_coverage']} of the cases (mean width "
                     f"{c['dsc_mean_width']}), NSD intervals the true NSD in {c['nsd_coverage']} (mean width "
                     f"{c['nsd_mean_width']}). Decisions: {calibration['pass']} pass, {calibration['review']} review, "
                     f"{calibration['fail']} fail; {calibration['missed_failures']} true failure(s) passed, "
                     f"{calibration['false_alarms']} true success(es) failed. Mean error of the DSC on good "
                     f"segmentations (true DSC &gt; 0.85, n {calibration['mean_error_n']}): "
                     f"{format_number(calibration['mean_error_raw'])} raw, "
                     f"{format_number(calibration['mean_error_recalibrated'])} recalibrated.</p>")
    if figures["note"]:
        parts.append(f"<p class='note'>{html.escape(figures['note'])}</p>")
    return parts
