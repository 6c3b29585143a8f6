"""The report's "where to look" strip: per region, the slices with the most predicted error (qc_summary.json's
worst_slices), each with that region's outline and its predicted error, so a reviewer opens those first."""
from __future__ import annotations

import json
import os

import numpy as np
from matplotlib.figure import Figure

from nnqc.evaluation.plots import _DPI, ERROR_ALPHA, ERROR_COLOUR, OUTLINE_COLOURS, _grey, _png_bytes
from nnqc.evaluation.previews import _read_volume
from nnqc.metrics import get_regions
from nnqc.output_files import SUMMARY_JSON

THUMBNAIL_IN = 1.6
AXIS_NAMES = ("axis 0", "axis 1", "axis 2")


def worst_slices_by_case(output_folder: str) -> dict[str, dict]:
    """{case: worst_slices} from qc_summary.json ({} when it is missing or predates worst slices)."""
    path = os.path.join(output_folder, SUMMARY_JSON)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        cases = json.load(f).get("cases", [])
    return {c["case"]: c["worst_slices"] for c in cases if c.get("worst_slices")}


def worst_slices_strip(case: str, settings: dict, output_folder: str, worst: dict) -> bytes | None:
    """PNG: one row per region with predicted errors, its worst slices left to right (None when no region has
    any). Raises OSError/RuntimeError/ValueError when the files cannot be read."""
    rows = [(c, name, entries) for c, (name, entries) in enumerate(worst["regions"].items()) if entries]
    if not rows:
        return None
    ending, axis = settings["file_ending"], int(worst["axis"])
    image, _ = _read_volume(os.path.join(settings["images_folder"], f"{case}_0000{ending}"))
    segmentation, spacing = _read_volume(os.path.join(settings["segmentations_folder"], case + ending))
    error_map, _ = _read_volume(os.path.join(output_folder, case + ending))
    if not image.shape == segmentation.shape == error_map.shape:
        raise ValueError(f"image, segmentation and error map of {case} differ in shape")
    regions = ([tuple(r) for r in settings["regions"]] if "regions" in settings
               else get_regions(settings["dataset_json"])[1])
    columns = max(len(entries) for _, _, entries in rows)
    in_plane = [s for a, s in enumerate(spacing) if a != axis]
    figure = Figure(figsize=(THUMBNAIL_IN * columns, (THUMBNAIL_IN + 0.25) * len(rows)), dpi=_DPI,
                    layout="constrained")
    axes = np.atleast_2d(figure.subplots(len(rows), columns, squeeze=False))
    for r, (c, name, entries) in enumerate(rows):
        for j in range(columns):
            ax = axes[r, j]
            ax.set_axis_off()
            if j >= len(entries):
                continue
            index = entries[j]["slice"]
            grey = _grey(np.take(image, index, axis=axis))
            rgb = np.repeat(grey[..., None], 3, axis=-1)
            wrong = ((np.take(error_map, index, axis=axis).astype(np.int64) >> c) & 1).astype(bool)
            rgb[wrong] = (1 - ERROR_ALPHA) * rgb[wrong] + ERROR_ALPHA * np.asarray(ERROR_COLOUR)
            ax.imshow(rgb, interpolation="nearest", aspect=float(in_plane[0]) / float(in_plane[1]))
            mask = np.isin(np.take(segmentation, index, axis=axis), regions[c])
            if mask.any() and not mask.all():
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=[OUTLINE_COLOURS[c % len(OUTLINE_COLOURS)]],
                           linewidths=1.0)
            ax.set_title(f"{name}: slice {index} ({entries[j]['error_voxels']} vx)", fontsize=7)
    figure.suptitle(f"{case}: slices with the most predicted error, per region ({AXIS_NAMES[axis]})", fontsize=8)
    return _png_bytes(figure)
