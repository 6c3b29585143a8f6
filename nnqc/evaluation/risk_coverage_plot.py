"""The risk-coverage plot of nnQC's predicted DSC beside the optimal ranking and a random one, as PNG bytes.

Drawn like the other evaluation figures (nnqc.evaluation.plots): its own Figure on matplotlib's Agg canvas, no
pyplot state, bytes that the caller writes atomically or embeds in the report.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

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
