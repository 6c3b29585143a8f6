"""Segmentation error maps (SEMs): per region, the voxels where the query disagrees with the reference."""
from collections.abc import Sequence

import numpy as np

from nnqc.metrics.regions import region_masks


def segmentation_error_maps(reference: np.ndarray, query: np.ndarray,
                            regions: Sequence[Sequence[int]]) -> np.ndarray:
    """Boolean (C, *shape): SEM_c = region_c(query) XOR region_c(reference)."""
    reference, query = np.asarray(reference), np.asarray(query)
    if reference.shape != query.shape:
        raise ValueError(f"reference and query differ in shape: {reference.shape} vs {query.shape}")
    return np.logical_xor(region_masks(query, regions), region_masks(reference, regions))
