"""The figures of QC evaluation and of the QC report, rendered to PNG bytes with matplotlib's Agg canvas.

Figures are drawn on their own Figure objects (no pyplot state), so they can be made from worker processes and
headless machines; callers decide where the bytes go (a file written atomically, or a data URI).
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

PREVIEW_WIDTH_PX = 400
_DPI = 100
ERROR_COLOUR = (0.95, 0.05, 0.05)
ERROR_ALPHA = 0.5
# outline colours chosen away from the red of the error overlay
OUTLINE_COLOURS = ((0.0, 0.85, 1.0), (0.2, 0.95, 0.2), (1.0, 0.85, 0.0), (0.35, 0.45, 1.0), (1.0, 0.55, 0.9),
                   (1.0, 0.6, 0.1), (0.6, 1.0, 0.7), (0.75, 0.5, 1.0))


def _png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def _format(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def scatter_png(true: Sequence[float], predicted: Sequence[float], flagged: Sequence[bool], metric: str,
                summary: dict, flag_below: float | None = None) -> bytes:
    """Predicted against true values of one metric (DSC or NSD), identity line, r and MAE in the title.

    summary: regression_summary of the same values ({"r", "mae", "mae_sd", "n"}); flagged cases are marked.
    """
    true, predicted = np.asarray(true, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    flagged = np.asarray(flagged, dtype=bool).reshape(true.shape)
    figure = Figure(figsize=(4.6, 4.6), dpi=_DPI, layout="constrained")
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1, label="identity")
    ax.scatter(true[~flagged], predicted[~flagged], s=22, color="#1f77b4", alpha=0.8, label="not flagged")
    if flagged.any():
        label = "flagged" if flag_below is None else f"flagged (predicted DSC < {flag_below:g})"
        ax.scatter(true[flagged], predicted[flagged], s=30, marker="^", color="#d62728", alpha=0.9, label=label)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel(f"true {metric}")
    ax.set_ylabel(f"predicted {metric}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{metric}: r = {_format(summary.get('r'))}, MAE = {_format(summary.get('mae'))} "
                 f"± {_format(summary.get('mae_sd'))} (n = {summary.get('n', true.size)})", fontsize=10)
    return _png_bytes(figure)


def _grey(image_slice: np.ndarray) -> np.ndarray:
    """Intensities to [0, 1] between the 0.5 and 99.5 percentiles, so outliers do not wash out the slice."""
    image_slice = np.nan_to_num(np.asarray(image_slice, dtype=np.float64))
    low, high = np.percentile(image_slice, (0.5, 99.5))
    if high <= low:
        return np.zeros_like(image_slice)
    return np.clip((image_slice - low) / (high - low), 0, 1)


def case_preview_png(image_slice: np.ndarray, segmentation_slice: np.ndarray, error_slice: np.ndarray | None,
                     region_names: Sequence[str], regions: Sequence[Sequence[int]],
                     pixel_spacing: Sequence[float], title: str = "") -> bytes:
    """One 2D slice: image in grey, each region's outline in its colour, predicted errors as a red overlay.

    image_slice, segmentation_slice: (rows, cols); error_slice: bool (rows, cols) where any region is predicted
    wrong, or None when no error map exists; pixel_spacing: (row, col) spacing, so the picture keeps its
    physical proportions. At most PREVIEW_WIDTH_PX pixels wide.
    """
    grey = _grey(image_slice)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if error_slice is not None:
        error_slice = np.asarray(error_slice, dtype=bool)
        rgb[error_slice] = (1 - ERROR_ALPHA) * rgb[error_slice] + ERROR_ALPHA * np.asarray(ERROR_COLOUR)
    segmentation_slice = np.asarray(segmentation_slice)
    colours = [OUTLINE_COLOURS[i % len(OUTLINE_COLOURS)] for i in range(len(regions))]
    handles = [Line2D([], [], color=colour, linewidth=2, label=f"{name} outline")
               for name, colour in zip(region_names, colours)]
    if error_slice is not None:
        handles.append(Patch(facecolor=ERROR_COLOUR, alpha=ERROR_ALPHA, label="predicted error"))

    rows, cols = rgb.shape[:2]
    height_to_width = rows * float(pixel_spacing[0]) / max(cols * float(pixel_spacing[1]), 1e-12)
    width_in = PREVIEW_WIDTH_PX / _DPI
    image_height_in = min(width_in * height_to_width, 4.5)
    legend_rows = int(np.ceil(len(handles) / 2))
    legend_in, title_in = 0.25 * legend_rows + 0.1, 0.3 if title else 0.05
    figure = Figure(figsize=(width_in, image_height_in + legend_in + title_in), dpi=_DPI)
    total = image_height_in + legend_in + title_in
    ax = figure.add_axes((0.0, legend_in / total, 1.0, image_height_in / total))
    ax.imshow(rgb, interpolation="nearest", aspect=float(pixel_spacing[0]) / float(pixel_spacing[1]))
    for labels, colour in zip(regions, colours):
        # outlines run between pixels, so they never hide the error overlay underneath
        mask = np.isin(segmentation_slice, labels)
        if mask.any() and not mask.all():
            ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.5)
    ax.set_axis_off()
    if title:
        figure.text(0.5, 1 - 0.5 * title_in / total, title, ha="center", va="center", fontsize=9)
    if handles:
        figure.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False,
                      bbox_to_anchor=(0.5, 0.0))
    return _png_bytes(figure)
