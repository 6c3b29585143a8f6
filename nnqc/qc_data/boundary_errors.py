"""Degradations at the top of the quality range: the errors trained segmenters make along boundaries.

Real segmenters' candidates are mostly good; what separates good from nearly good are boundary errors: a
stretch of the contour displaced by a few voxels, thin parts lost or thickened, labels confused along the
interface between two structures, small components missed, small false-positive islands next to the structure.
At a given DSC they carry far more surface error than the classic families (nnqc.qc_data.degradations), so they
are what lets a QC model learn NSD and the ranking inside DSC 0.6-0.98.

Distances are in units of the finest voxel spacing (a displacement of 2 is two in-plane voxels on thick-slice
data), sizes relative to the structure. Same signature and guarantees as the classic families.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt, generate_binary_structure, label

from nnqc.qc_data.degradations import (
    Box,
    _box_slices,
    _equivalent_radius_mm,
    _half_space,
    _nearest_labels_outside,
    _pad_box,
    _present_labels,
    _start,
)

MAX_SHIFT = 3.0  # voxels


def _unit_spacing(spacing: np.ndarray) -> np.ndarray:
    """Spacing in units of the finest axis: distances computed with it count finest voxels."""
    return spacing / spacing.min()


def _target_choices(present: list[int], regions: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The whole foreground, every evaluated region and every single label that the reference holds."""
    choices = {tuple(present)} | {tuple(sorted(int(l) for l in r)) for r in regions} | {(l,) for l in present}
    return sorted(c for c in choices if set(c) & set(present))


def _work_area(reference: np.ndarray, box: Box, pad: float,
               spacing: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
    """Slices of the foreground box padded by `pad` finest voxels (plus one), and the reference inside them."""
    pad_voxels = np.ceil(pad / _unit_spacing(spacing)).astype(int) + 1
    slices = _box_slices(_pad_box(box, pad_voxels, reference.shape))
    return slices, reference[slices]


def _relabel(out: np.ndarray, crop: np.ndarray, target: np.ndarray, new_target: np.ndarray,
             spacing: np.ndarray) -> None:
    """Make `new_target` the target: voxels gained take the nearest target label, voxels lost the nearest label
    outside the target (background or the structure around)."""
    gained, lost = new_target & ~target, target & ~new_target
    if gained.any():
        _, inside_label = _nearest_labels_outside(crop, ~target, spacing)
        out[gained] = inside_label[gained]
    if lost.any():
        _, outside_label = _nearest_labels_outside(crop, target, spacing)
        out[lost] = outside_label[lost]


def _signed_distance(mask: np.ndarray, sampling: np.ndarray) -> np.ndarray:
    """Distance to the boundary (finest voxels), negative inside, the boundary between voxel centres at 0."""
    if not mask.any():
        return np.full(mask.shape, np.inf)
    outside = distance_transform_edt(~mask, sampling=sampling)
    inside = distance_transform_edt(mask, sampling=sampling)
    return np.where(mask, .5 - inside, outside - .5)


def _random_target(reference: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                   labels: Sequence[int], regions: list[tuple[int, ...]]):
    """The candidate to edit, the spacing, and (slices, reference crop, mask) of a randomly chosen structure
    (the whole foreground, an evaluated region or a label) padded by MAX_SHIFT; None for an empty reference."""
    candidate, spacing, box = _start(reference, spacing)
    present = _present_labels(reference, box, labels)
    if not present:
        return candidate, spacing, None
    choices = _target_choices(present, regions)
    chosen = choices[rng.integers(len(choices))]
    slices, crop = _work_area(reference, box, MAX_SHIFT, spacing)
    return candidate, spacing, (slices, crop, np.isin(crop, chosen))


def boundary_shift(reference: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                   labels: Sequence[int], regions: list[tuple[int, ...]]) -> np.ndarray:
    """Smoothly displace 1-4 stretches of a structure's boundary outwards or inwards by 1-3 voxels.

    The displacement is a sum of Gaussian bumps centred on boundary voxels, each 0.3-1 equivalent radii wide:
    the contour bulges or dents where a segmenter misjudged a faint edge, and stays right elsewhere.
    """
    candidate, spacing, area = _random_target(reference, rng, spacing, labels, regions)
    if area is None:
        return candidate
    slices, crop, target = area
    sampling = _unit_spacing(spacing)
    distance = _signed_distance(target, sampling)
    boundary = np.argwhere(np.abs(distance) < 1)
    radius = _equivalent_radius_mm(int(target.sum()), sampling)
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(crop.shape, sampling)], indexing="ij", sparse=True)
    displacement = np.zeros(crop.shape)
    outwards = rng.random() < .5
    for _ in range(int(rng.integers(1, 5))):
        centre = boundary[rng.integers(len(boundary))] * sampling
        width = rng.uniform(.3, 1.) * radius
        amplitude = rng.uniform(1., MAX_SHIFT) * (1 if (outwards if rng.random() < .8 else not outwards) else -1)
        squared = sum((g - c) ** 2 for g, c in zip(grid, centre))
        displacement += amplitude * np.exp(-squared / (2 * width ** 2))
    displacement = np.clip(displacement, -MAX_SHIFT, MAX_SHIFT)  # overlapping bumps stay within 1-3 voxels
    _relabel(candidate[slices], crop, target, distance < displacement, spacing)
    return candidate


def thin_parts(reference: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
               labels: Sequence[int], regions: list[tuple[int, ...]]) -> np.ndarray:
    """Lose or thicken the thin parts of a structure: what a morphological opening of radius 1-2.5 voxels
    removes (thin rims, strands, tips). A structure without thin parts loses or gains a one-voxel layer over
    a random part of its surface instead."""
    candidate, spacing, area = _random_target(reference, rng, spacing, labels, regions)
    if area is None:
        return candidate
    slices, crop, target = area
    sampling = _unit_spacing(spacing)
    radius = rng.uniform(1., 2.5)
    core = distance_transform_edt(target, sampling=sampling) > radius
    opened = distance_transform_edt(~core, sampling=sampling) <= radius if core.any() else np.zeros_like(target)
    thin = target & ~opened
    lose = rng.random() < .5
    if thin.sum() < .01 * target.sum():  # nothing thin: a one-voxel layer over part of the surface
        part = _half_space([[0, n] for n in crop.shape], target, rng, spacing)
        layer = (np.abs(_signed_distance(target, sampling)) < 1) & part
        new_target = (target & ~(layer & target)) if lose else (target | (layer & ~target))
    elif lose:
        new_target = target & ~thin
    else:
        new_target = target | (distance_transform_edt(~thin, sampling=sampling) <= rng.uniform(1., 2.))
    _relabel(candidate[slices], crop, target, new_target, spacing)
    return candidate


def interface_confusion(reference: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                        labels: Sequence[int], regions: list[tuple[int, ...]]) -> np.ndarray:
    """Give the voxels of one label within 1-3 voxels of a neighbouring label that label, along all of their
    interface or a part of it (a segmenter unsure where one tissue ends and the next begins). With a single
    foreground label the interface with the background moves instead (boundary_shift)."""
    candidate, spacing, box = _start(reference, spacing)
    present = _present_labels(reference, box, labels)
    if len(present) < 2:
        return boundary_shift(reference, rng, spacing, labels, regions)
    slices, crop = _work_area(reference, box, 1, spacing)
    sampling = _unit_spacing(spacing)
    pairs = []
    for a in present:
        near_a = distance_transform_edt(crop != a, sampling=sampling) <= 1.5
        pairs += [(a, b) for b in present if b != a and np.any(near_a & (crop == b))]
    if not pairs:
        return boundary_shift(reference, rng, spacing, labels, regions)
    giver, taker = pairs[rng.integers(len(pairs))]
    width = rng.uniform(1., MAX_SHIFT)
    band = (crop == giver) & (distance_transform_edt(crop != taker, sampling=sampling) <= width)
    if rng.random() < .6 and band.any():
        band &= _half_space([[0, n] for n in crop.shape], band, rng, spacing)
    candidate[slices][band] = taker
    return candidate


def missed_small_parts(reference: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                       labels: Sequence[int], regions: list[tuple[int, ...]]) -> np.ndarray:
    """Miss small things: connected components of one label other than its largest (each with probability
    1/2, at least one), or, where a label is one piece, 1-3 bites (0.25-0.6 equivalent radii) off its
    boundary. Missed voxels take the nearest label outside."""
    candidate, spacing, box = _start(reference, spacing)
    present = _present_labels(reference, box, labels)
    if not present:
        return candidate
    chosen = present[rng.integers(len(present))]
    slices, crop = _work_area(reference, box, 1, spacing)
    target = crop == chosen
    components, n = label(target, structure=generate_binary_structure(3, 3))
    missed = np.zeros_like(target)
    if n > 1 and rng.random() < .7:
        sizes = np.bincount(components.ravel())[1:]
        small = [i + 1 for i in np.argsort(sizes)[:-1]]
        dropped = [c for c in small if rng.random() < .5] or [small[rng.integers(len(small))]]
        missed = np.isin(components, dropped)
    else:
        sampling = _unit_spacing(spacing)
        boundary = np.argwhere(target & (distance_transform_edt(target, sampling=sampling) < 1.5))
        radius = _equivalent_radius_mm(int(target.sum()), sampling)
        grid = np.meshgrid(*[np.arange(k) * s for k, s in zip(crop.shape, sampling)], indexing="ij", sparse=True)
        for _ in range(int(rng.integers(1, 4))):
            centre = boundary[rng.integers(len(boundary))] * sampling
            bite = rng.uniform(.25, .6) * radius
            missed |= sum((g - c) ** 2 for g, c in zip(grid, centre)) <= bite ** 2
        missed &= target
    _relabel(candidate[slices], crop, target, target & ~missed, spacing)
    return candidate


def adjacent_islands(reference: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                     labels: Sequence[int], regions: list[tuple[int, ...]],
                     inside: np.ndarray | None = None) -> np.ndarray:
    """Add 1-6 small false-positive islands (each 0.5-5 % of the foreground's volume) 1-4 voxels outside the
    structure, labelled as the structure next to them: the speckle a segmenter leaves around a lesion. Only
    background is painted; `inside` (the subject's non-zero region) bounds where islands may go."""
    candidate, spacing, box = _start(reference, spacing)
    present = _present_labels(reference, box, labels)
    if not present:
        return candidate
    sampling = _unit_spacing(spacing)
    n_foreground = int(np.count_nonzero(reference[_box_slices(box)]))
    reach = 4 + _equivalent_radius_mm(int(.05 * n_foreground) + 1, sampling)
    slices, crop = _work_area(reference, box, reach, spacing)
    allowed = np.ones(crop.shape, bool) if inside is None else inside[slices]
    _, nearest = _nearest_labels_outside(crop, crop == 0, spacing)
    outside = distance_transform_edt(crop == 0, sampling=sampling)
    grid = np.meshgrid(*[np.arange(k) * s for k, s in zip(crop.shape, sampling)], indexing="ij", sparse=True)
    out = candidate[slices]
    for _ in range(int(rng.integers(1, 7))):
        radius = _equivalent_radius_mm(max(1, int(rng.uniform(.005, .05) * n_foreground)), sampling)
        gap = rng.uniform(1., 4.)
        centres = np.argwhere((outside > radius + gap - .5) & (outside <= radius + gap + .5) & allowed)
        if not len(centres):
            continue
        centre = centres[rng.integers(len(centres))]
        island = sum((g - c * s) ** 2 for g, c, s in zip(grid, centre, sampling)) <= max(radius, .5) ** 2
        island &= (out == 0) & allowed
        out[island] = nearest[tuple(centre)]
    return candidate
