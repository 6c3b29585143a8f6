"""Figures of calibrated QC, as PNG bytes: the risk-coverage plot of nnQC's predicted DSC beside the optimal
ranking and a random one, and the cases' DSC intervals against the threshold, coloured by decision.

Drawn like the other evaluation figures (nnqc.evaluation.plots): its own Figure on matplotlib's Agg canvas, no
pyplot state, bytes that the caller writes atomically or embeds in the report.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from nnqc.calibration.decision import FAIL, PASS, REVIEW
from nnqc.evaluation.failure_detection import aurc, optimal_aurc, random_aurc, risk_coverage_curve
from nnqc.evaluation.plots import _DPI, _png_bytes


def risk_coverage_png(true_dsc: Sequence[float], predicted_dsc: Sequence[float],
                      label: str = "nnQC predicted DSC") -> bytes:
    """Selective risk (mean 1 - true DSC of the cases kept) against coverage (share of cases kept, the least
    confident withheld first), with the AURC of each curve in the legend."""
    risk = 1 - np.asarray(true_dsc, dtype=np.float64)
    predicted_dsc = np.asarray(predicted_dsc, dtype=np.float64)
    figure = Figure(figsize=(5.2, 4.2), dpi=_DPI, layout="constrained")
    ax = figure.add_subplot()
    coverages, risks, _ = risk_coverage_curve(risk, predicted_dsc)
    ax.plot(coverages, risks, color="#1f77b4", linewidth=2,
            label=f"{label} (AURC {aurc(risk, predicted_dsc):.3f})")
    coverages, risks, _ = risk_coverage_curve(risk, -risk)
    ax.plot(coverages, risks, color="#2ca02c", linestyle="--", linewidth=1.5,
            label=f"optimal ranking (AURC {optimal_aurc(risk):.3f})")
    ax.axhline(random_aurc(risk), color="0.5", linestyle=":", linewidth=1.5,
               label=f"random ranking (AURC {random_aurc(risk):.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("coverage (share of cases accepted, least confident withheld first)")
    ax.set_ylabel("selective risk (mean 1 - true DSC)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"Risk-coverage, n = {risk.size}", fontsize=10)
    return _png_bytes(figure)


DECISION_COLOURS = {PASS: "#2ca02c", REVIEW: "#ff7f0e", FAIL: "#d62728"}


def intervals_png(cases: Sequence[str], point: Sequence[float], lower: Sequence[float], upper: Sequence[float],
                  decisions: Sequence[str], threshold: float, true: Sequence[float] | None = None,
                  max_cases: int = 60) -> bytes:
    """One horizontal bar per case, worst predicted first: its DSC interval, the point prediction as a dot,
    the true DSC as a cross when known, the threshold as a vertical line, the colour of its decision. At most
    `max_cases` bars (the worst ones), said in the title when cases are left out."""
    order = np.argsort(np.asarray(point, dtype=np.float64), kind="stable")[:max_cases]
    shown = len(order)
    figure = Figure(figsize=(7.2, 1.2 + 0.18 * shown), dpi=_DPI, layout="constrained")
    ax = figure.add_subplot()
    y = np.arange(shown)[::-1]
    colours = [DECISION_COLOURS.get(decisions[i], "0.5") for i in order]
    low, high = np.asarray(lower, np.float64)[order], np.asarray(upper, np.float64)[order]
    ax.hlines(y, low, high, colors=colours, linewidth=4, alpha=0.8)
    ax.scatter(np.asarray(point, np.float64)[order], y, s=14, color="black", zorder=3, label="predicted DSC")
    if true is not None:
        ax.scatter(np.asarray(true, np.float64)[order], y, s=24, marker="x", color="#1f77b4", zorder=4,
                   label="true DSC")
    ax.axvline(threshold, color="0.3", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_yticks(y, [str(cases[i]) for i in order], fontsize=7)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("DSC")
    ax.grid(axis="x", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color=c, label=d) for d, c in DECISION_COLOURS.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    left_out = len(cases) - shown
    ax.set_title("DSC intervals" + (f" (the {shown} worst of {len(cases)} cases)" if left_out else ""), fontsize=10)
    return _png_bytes(figure)
