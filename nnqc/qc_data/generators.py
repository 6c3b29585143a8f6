"""One entry point for every synthetic candidate source: SegGen and the degradation families.

A candidate is fully determined by (family, reference, seed, spacing, labels, regions, view), so a QC dataset
stores only the family name and the seed next to each sample and can regenerate it bit for bit from its files
(the view is computed from the subject's images). With a view, every candidate's foreground lies inside the
network's view and false-positive blobs inside the subject's non-zero region: errors the network can see.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from nnqc.qc_data import boundary_errors, degradations
from nnqc.qc_data.seggen import seggen
from nnqc.qc_data.view import SubjectView, limit_to_view

Generator = Callable[[np.ndarray, np.random.Generator, Sequence[float], Sequence[int], list[tuple[int, ...]]],
                     np.ndarray]


def _seggen_family(reference: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                   labels: Sequence[int], regions: list[tuple[int, ...]]) -> np.ndarray:
    return seggen(reference, rng, spacing)


_GENERATORS: dict[str, Generator] = {
    "seggen": _seggen_family,
    "erode_dilate": degradations.erode_dilate,
    "swap_labels": degradations.swap_labels,
    "drop_region": degradations.drop_region,
    "drop_component": degradations.drop_component,
    "false_positive_blobs": degradations.false_positive_blobs,
    "slice_errors": degradations.slice_errors,
    "boundary_shift": boundary_errors.boundary_shift,
    "thin_parts": boundary_errors.thin_parts,
    "interface_confusion": boundary_errors.interface_confusion,
    "missed_small_parts": boundary_errors.missed_small_parts,
    "adjacent_islands": boundary_errors.adjacent_islands,
}

# families that place new foreground away from the reference and are told where the subject is
_USES_NONZERO_REGION = frozenset({"false_positive_blobs", "adjacent_islands"})

GENERATOR_FAMILIES: tuple[str, ...] = tuple(_GENERATORS)
# the paper's kind: each family spans the whole DSC range
CLASSIC_FAMILIES: tuple[str, ...] = ("erode_dilate", "swap_labels", "drop_region", "drop_component",
                                     "false_positive_blobs", "slice_errors")
# real segmenters' errors at the top of the range (nnqc.qc_data.boundary_errors)
BOUNDARY_FAMILIES: tuple[str, ...] = ("boundary_shift", "thin_parts", "interface_confusion", "missed_small_parts",
                                      "adjacent_islands")
DEGRADATION_FAMILIES: tuple[str, ...] = CLASSIC_FAMILIES + BOUNDARY_FAMILIES


def generate_candidate(family: str, reference: np.ndarray, seed: int, spacing: Sequence[float],
                       labels: Sequence[int], regions: list[tuple[int, ...]],
                       view: SubjectView | None = None) -> np.ndarray:
    """A candidate label map of `family` for `reference` (z, y, x), drawn with np.random.default_rng(seed).

    Returns uint8 of the reference's shape with values in `labels` (all valid label values, 0 included). With
    `view` (the subject's non-zero region and box), the candidate is background outside the view's box.
    """
    if family not in _GENERATORS:
        raise ValueError(f"unknown candidate generator family {family!r}; valid: {', '.join(GENERATOR_FAMILIES)}")
    valid = sorted({int(l) for l in labels})
    if not valid or valid[0] < 0 or valid[-1] > 255:
        raise ValueError(f"labels must be integers in [0, 255] (candidates are uint8), got {list(labels)}")
    if reference.ndim != 3:
        raise ValueError(f"the reference must be a 3D label map (z, y, x), got shape {reference.shape}")
    if not np.issubdtype(reference.dtype, np.integer) and not np.issubdtype(reference.dtype, np.bool_):
        if not np.array_equal(reference, np.round(reference)):
            raise ValueError(f"the reference holds non-integer values (dtype {reference.dtype})")
    if reference.size and (reference.min() < 0 or reference.max() > 255):
        raise ValueError(f"the reference holds labels outside [0, 255]: min {reference.min()}, "
                         f"max {reference.max()}")
    if view is not None and view.shape != reference.shape:
        raise ValueError(f"the view has shape {view.shape}, the reference {reference.shape}")
    reference = reference.astype(np.uint8, copy=False)
    allowed = np.zeros(256, dtype=bool)
    allowed[valid] = True
    if not allowed[reference].all():
        found = sorted(set(np.unique(reference).tolist()) - set(valid))
        raise ValueError(f"the reference holds labels {found} that are not in labels {valid}")
    extra = {"inside": view.nonzero} if view is not None and family in _USES_NONZERO_REGION else {}
    candidate = _GENERATORS[family](reference, np.random.default_rng(seed),
                                    spacing, valid, [tuple(int(l) for l in r) for r in regions], **extra)
    candidate = candidate.astype(np.uint8, copy=False)
    return candidate if view is None else limit_to_view(candidate, view)
