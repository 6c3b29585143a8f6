"""Segmentation error maps (SEMs): per region, the voxels where the query disagrees with the reference; and the
bit codec that stores all SEMs of a case in one label map (nnQC_predict writes it, nnQC_evaluate reads it)."""
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


def encode_sem_bits(sem: np.ndarray) -> np.ndarray:
    """(C, *shape) bool -> one label map with bit c (value 2**c) set where region c is wrong, so that all error
    maps of a case fit in one image that any segmentation viewer opens."""
    sem = np.asarray(sem)
    if sem.shape[0] > 16:
        raise ValueError(f"at most 16 regions fit in a bit-encoded error map, got {sem.shape[0]}")
    dtype = np.uint8 if sem.shape[0] <= 8 else np.uint16
    out = np.zeros(sem.shape[1:], dtype=dtype)
    for c in range(sem.shape[0]):
        out |= sem[c].astype(dtype) << c
    return out


def decode_sem_bits(label_map: np.ndarray, num_regions: int) -> np.ndarray:
    """Bit-encoded error map (encode_sem_bits) -> bool (C, *shape); values that cannot encode `num_regions`
    regions are an error, so that a map of another dataset or a plain segmentation is not misread."""
    label_map = np.asarray(label_map)
    if not np.issubdtype(label_map.dtype, np.integer):
        raise TypeError(f"a bit-encoded error map holds integers, got dtype {label_map.dtype}")
    if label_map.size and (label_map.min() < 0 or int(label_map.max()) >= 2 ** num_regions):
        raise ValueError(f"values in [{label_map.min()}, {label_map.max()}] do not encode {num_regions} region(s) "
                         f"(expected 0..{2 ** num_regions - 1})")
    return np.stack([(label_map >> c) & 1 for c in range(num_regions)]).astype(bool)
