"""The regression targets of one candidate segmentation: what QC learns to predict."""
from collections.abc import Sequence

import numpy as np

from nnqc.metrics.dice import multiclass_dice, region_dice
from nnqc.metrics.surface_dice import region_surface_dice


def quality_targets(reference: np.ndarray, query: np.ndarray, regions: Sequence[Sequence[int]],
                    spacing: Sequence[float], tolerance_mm: float) -> dict:
    """Subject-level DSC (multi-class) and NSD (mean of the regions' NSDs), plus the per-region values.

    Returns {"dsc": float, "nsd": float, "dsc_per_region": (C,) float64, "nsd_per_region": (C,) float64}.
    """
    reference, query = np.asarray(reference), np.asarray(query)
    if reference.shape != query.shape:
        raise ValueError(f"reference and query differ in shape: {reference.shape} vs {query.shape}")
    if len(regions) == 0:
        raise ValueError("quality targets need at least one region")
    nsd_per_region = region_surface_dice(reference, query, regions, spacing, tolerance_mm)
    return {
        "dsc": multiclass_dice(reference, query),
        "nsd": float(nsd_per_region.mean()),
        "dsc_per_region": region_dice(reference, query, regions),
        "nsd_per_region": nsd_per_region,
    }
