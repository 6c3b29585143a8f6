"""Where to look: per region, the slices with the most predicted error voxels.

A reviewer who opens a flagged case should not page through every slice. Slices are taken across the axis of
lowest resolution (the largest voxel spacing: the acquisition's slice direction, where a reviewer pages), axis 0 of
nnU-Net's (z, y, x) array order when the spacing is isotropic (axial for the usual orientation). Counted in the
input's own geometry, so the slice numbers are those of the assessed file.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_NUM_WORST_SLICES = 3


def slice_axis(spacing: Sequence[float]) -> int:
    """The array axis of the largest spacing; ties go to the lowest axis (axis 0 when isotropic)."""
    spacing = np.asarray(spacing, dtype=np.float64)
    return int(np.flatnonzero(spacing == spacing.max())[0])


def worst_slices(bits: np.ndarray, region_names: Sequence[str], spacing: Sequence[float],
                 k: int = DEFAULT_NUM_WORST_SLICES) -> dict:
    """{"axis": a, "regions": {region: [{"slice": i, "error_voxels": n}, ...]}} from a bit-encoded SEM map (bit c:
    region c predicted wrong) in the input geometry: per region the (at most) k slices along axis a with the most
    predicted error voxels, most first, ties to the lower slice; slices without error are never listed."""
    if k < 1:
        raise ValueError(f"the number of worst slices must be at least 1, got {k}")
    axis = slice_axis(spacing)
    other = tuple(a for a in range(bits.ndim) if a != axis)
    regions = {}
    for c, name in enumerate(region_names):
        counts = ((bits >> c) & 1).astype(bool).sum(axis=other)
        order = np.lexsort((np.arange(counts.size), -counts))  # most errors first, then the lower slice
        regions[name] = [{"slice": int(i), "error_voxels": int(counts[i])} for i in order[:k] if counts[i] > 0]
    return {"axis": axis, "regions": regions}
