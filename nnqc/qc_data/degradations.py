"""Degradations of a reference label map that imitate the failures of real segmenters.

SegGen and real segmenters mostly produce good candidates; these families reach the rest of the DSC range
(QCResUNet paper §2.2: every one of the 10 DSC bins must be populated). Each family draws its severity from
`rng` so that over seeds the DSC of its candidates spans [0, 1]; sizes are relative to the object (its
equivalent-sphere radius) and distances are in millimetres with the voxel spacing, so a family behaves the
same on any resolution. All work happens inside the bounding box of what changes.

Common signature: (reference, rng, spacing, labels, regions) -> uint8 label map of the reference's shape,
with values in `labels` (all valid label values including 0). An empty reference gives an empty candidate,
except for false_positive_blobs, which adds blobs anyway (inside the subject's non-zero region when it is given).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from nnunetv2.configuration import ANISO_THRESHOLD
from scipy.ndimage import distance_transform_edt, generate_binary_structure, label

from nnqc.qc_data.seggen import foreground_bbox

Box = list[list[int]]


def _box_slices(box: Box) -> tuple[slice, ...]:
    return tuple(slice(lo, hi) for lo, hi in box)


def _pad_box(box: Box, pad: Sequence[int], shape: Sequence[int]) -> Box:
    return [[max(0, lo - p), min(n, hi + p)] for (lo, hi), p, n in zip(box, pad, shape)]


def _equivalent_radius_mm(n_voxels: int, spacing: np.ndarray) -> float:
    """Radius of the sphere with the volume of `n_voxels` voxels: the object's size, whatever its shape."""
    return float((3 * n_voxels * np.prod(spacing) / (4 * np.pi)) ** (1 / 3))


def _mm_to_voxels(distance_mm: float, spacing: np.ndarray) -> np.ndarray:
    return np.ceil(distance_mm / spacing).astype(int)


def _foreground_labels(labels: Sequence[int]) -> list[int]:
    return sorted({int(l) for l in labels} - {0})


def _present_labels(reference: np.ndarray, box: Box | None, labels: Sequence[int]) -> list[int]:
    """Foreground labels of the reference (searched inside its foreground box); all must be in `labels`."""
    if box is None:
        return []
    present = [int(l) for l in np.flatnonzero(np.bincount(reference[_box_slices(box)].ravel()))[1:]]
    unknown = sorted(set(present) - {int(l) for l in labels})
    if unknown:
        raise ValueError(f"the reference holds labels {unknown} that are not in labels {sorted(labels)}")
    return present


def _physical_grid(box: Box, spacing: np.ndarray) -> list[np.ndarray]:
    """Sparse (z, y, x) voxel-centre positions in mm over a box."""
    return np.meshgrid(*[np.arange(lo, hi) * s for (lo, hi), s in zip(box, spacing)], indexing='ij', sparse=True)


def _is_anisotropic(spacing: np.ndarray) -> bool:
    return spacing.max() / spacing.min() > ANISO_THRESHOLD


def _nearest_labels_outside(crop: np.ndarray, mask: np.ndarray, spacing: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) from each voxel of `mask` to the nearest voxel outside it, and that voxel's label."""
    distance, indices = distance_transform_edt(mask, sampling=spacing, return_indices=True)
    return distance, crop[tuple(indices)]


def _start(reference: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray, Box | None]:
    if reference.ndim != 3:
        raise ValueError(f"degradations need a 3D label map (z, y, x), got shape {reference.shape}")
    spacing_mm = np.asarray(spacing, dtype=float)
    if spacing_mm.shape != (3,) or np.any(spacing_mm <= 0):
        raise ValueError(f"spacing must be three positive numbers, got {tuple(spacing)}")
    return reference.astype(np.uint8, copy=True), spacing_mm, foreground_bbox(reference)


def erode_dilate(reference: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                 labels: Sequence[int], regions: list[tuple[int, ...]]) -> np.ndarray:
    """Erode or dilate all foreground or one label by a ball of random radius (mm, spacing-aware).

    The radius is up to the target's equivalent radius: erosion then removes up to everything (DSC -> 0),
    dilation up to about eight times the volume (DSC ~ 0.2). Eroded voxels of one label are given to the
    nearest other label (an under-segmented inner class is labelled as its neighbour); voxels gained by
    dilating the whole foreground take the nearest foreground label.
    """
    candidate, spacing, box = _start(reference, spacing)
    present = _present_labels(reference, box, labels)
    if not present:
        return candidate
    whole_foreground = rng.random() < .5
    target_label = None if whole_foreground else present[rng.integers(len(present))]
    dilate = rng.random() < .5
    crop_view = reference[_box_slices(box)]
    target = crop_view != 0 if target_label is None else crop_view == target_label
    radius_mm = max(float(rng.uniform(.05, 1.)) * _equivalent_radius_mm(int(target.sum()), spacing),
                    float(spacing.min()))
    target_box = foreground_bbox(target)
    target_box = [[lo + b[0], hi + b[0]] for (lo, hi), b in zip(target_box, box)]
    pad = _mm_to_voxels(radius_mm, spacing) + 1 if dilate else np.ones(3, int)
    work_box = _pad_box(target_box, pad, reference.shape)
    crop = reference[_box_slices(work_box)]
    target = crop != 0 if target_label is None else crop == target_label
    out = candidate[_box_slices(work_box)]
    if dilate:
        distance, nearest = _nearest_labels_outside(crop, ~target, spacing)
        gained = ~target & (distance <= radius_mm)
        out[gained] = nearest[gained] if target_label is None else target_label
    else:
        if target.all():
            return candidate
        distance, nearest = _nearest_labels_outside(crop, target, spacing)
        lost = target & (distance <= radius_mm)
        out[lost] = 0 if target_label is None else nearest[lost]
    return candidate


def _random_unit_vector(rng: np.random.Generator) -> np.ndarray:
    vector = rng.standard_normal(3)
    return vector / max(np.linalg.norm(vector), 1e-12)


def _half_space(box: Box, mask: np.ndarray, rng: np.random.Generator, spacing: np.ndarray) -> np.ndarray:
    """A random half-space over `box` holding a uniformly drawn fraction of the voxels of `mask`."""
    normal = _random_unit_vector(rng)
    grid = _physical_grid(box, spacing)
    projection = grid[0] * normal[0] + grid[1] * normal[1] + grid[2] * normal[2]
    threshold = np.quantile(projection[mask], rng.uniform(0, 1))
    return projection >= threshold


def swap_labels(reference: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                labels: Sequence[int], regions: list[tuple[int, ...]]) -> np.ndarray:
    """Permute or merge foreground labels, in the whole object or in a random part of it.

    Confusing classes is a typical failure of segmenters fed the wrong modality. The part is a random
    half-space holding a uniformly drawn fraction of the foreground, so DSC = 1 - swapped fraction spans
    [0, 1]. With a single foreground label there is nothing to swap with: the part becomes background.
    """
    candidate, spacing, box = _start(reference, spacing)
    present = _present_labels(reference, box, labels)
    if not present:
        return candidate
    foreground = _foreground_labels(labels)
    lookup = np.arange(256, dtype=np.uint8)
    if len(foreground) < 2:
        lookup[present] = 0
    elif rng.random() < .5:
        while np.all(lookup[present] == present):
            lookup[foreground] = rng.permutation(foreground)
    else:
        merged_into = foreground[rng.integers(len(foreground))]
        others = [l for l in present if l != merged_into]
        if not others:
            others, merged_into = present, [l for l in foreground if l not in present][0]
        chosen = rng.random(len(others)) < .5
        chosen[rng.integers(len(others))] = True
        lookup[np.asarray(others)[chosen]] = merged_into
    crop = reference[_box_slices(box)]
    out = candidate[_box_slices(box)]
    if rng.random() < .25:
        out[...] = lookup[crop]
    else:
        part = _half_space(box, crop != 0, rng, spacing)
        out[part] = lookup[crop[part]]
    return candidate


def drop_region(reference: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                labels: Sequence[int], regions: list[tuple[int, ...]]) -> np.ndarray:
    """Remove one label or one evaluated region entirely (a class the segmenter never found).

    Its voxels become background or, with equal probability, the nearest remaining label (an inner
    class absorbed by the tissue around it).
    """
    candidate, spacing, box = _start(reference, spacing)
    present = _present_labels(reference, box, labels)
    if not present:
        return candidate
    choices = sorted({tuple(sorted(int(l) for l in r)) for r in regions} | {(l,) for l in present})
    choices = [c for c in choices if set(c) & set(present)]
    dropped = choices[rng.integers(len(choices))]
    crop = reference[_box_slices(box)]
    out = candidate[_box_slices(box)]
    mask = np.isin(crop, dropped)
    if rng.random() < .5:
        out[mask] = 0
        return candidate
    work_box = _pad_box(box, (1, 1, 1), reference.shape)
    crop = reference[_box_slices(work_box)]
    mask = np.isin(crop, dropped)
    _, nearest = _nearest_labels_outside(crop, mask, spacing)
    candidate[_box_slices(work_box)][mask] = nearest[mask]
    return candidate


def drop_component(reference: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                   labels: Sequence[int], regions: list[tuple[int, ...]]) -> np.ndarray:
    """Remove connected components of the foreground, or a ball-shaped part of the object (missed lesions
    or missed parts of one lesion). The ball radius is 0.1-1.5 equivalent radii, so anything from a small
    bite to the whole object goes."""
    candidate, spacing, box = _start(reference, spacing)
    if box is None:
        return candidate
    crop = reference[_box_slices(box)]
    out = candidate[_box_slices(box)]
    foreground = crop != 0
    components, n_components = label(foreground, structure=generate_binary_structure(3, 3))
    if n_components > 1 and rng.random() < .5:
        removed = rng.random(n_components) < .5
        removed[rng.integers(n_components)] = True
        out[np.concatenate([[False], removed])[components]] = 0
        return candidate
    voxels = np.argwhere(foreground)
    centre = (voxels[rng.integers(len(voxels))] + [lo for lo, _ in box]) * spacing
    radius_mm = rng.uniform(.1, 1.5) * _equivalent_radius_mm(len(voxels), spacing)
    grid = _physical_grid(box, spacing)
    ball = (grid[0] - centre[0]) ** 2 + (grid[1] - centre[1]) ** 2 + (grid[2] - centre[2]) ** 2 <= radius_mm ** 2
    out[ball] = 0
    return candidate


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def false_positive_blobs(reference: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                         labels: Sequence[int], regions: list[tuple[int, ...]],
                         inside: np.ndarray | None = None) -> np.ndarray:
    """Add 1-5 ellipsoidal blobs of random foreground labels, near the object or anywhere in the subject.

    Their total volume is a log-uniform 0.02-30 times the foreground's volume (DSC ~ 2 / (2 + factor),
    about 0.06-0.99); on an empty reference it is based on a 10 mm radius sphere. Blobs either only
    paint background (pure false positives) or overwrite whatever is there. `inside` (bool, the reference's
    shape) is where blobs may go: the subject's non-zero region, which the network sees; blobs centred
    "anywhere" are centred on one of its voxels and clipped to it. None: the whole image.
    """
    candidate, spacing, box = _start(reference, spacing)
    foreground = _foreground_labels(labels)
    if not foreground:
        return candidate
    n_foreground = 0 if box is None else int(np.count_nonzero(reference[_box_slices(box)]))
    base_volume = n_foreground * np.prod(spacing) if n_foreground else 4 / 3 * np.pi * 10. ** 3
    total_volume = base_volume * np.exp(rng.uniform(np.log(.02), np.log(30.)))
    n_blobs = int(rng.integers(1, 6))
    volumes = total_volume * rng.dirichlet(np.ones(n_blobs))
    only_background = rng.random() < .5
    shape = np.array(reference.shape)
    if inside is not None and inside.shape != reference.shape:
        raise ValueError(f"the region for blobs has shape {inside.shape}, the reference {reference.shape}")
    inside_voxels = None
    foreground_voxels = None
    for volume in volumes:
        blob_label = foreground[rng.integers(len(foreground))]
        axis_ratios = np.exp(rng.uniform(-.5, .5, size=3))
        semi_axes = (3 * volume / (4 * np.pi)) ** (1 / 3) * axis_ratios / np.prod(axis_ratios) ** (1 / 3)
        rotation = _random_rotation(rng)
        if box is not None and rng.random() < .5:
            if foreground_voxels is None:
                foreground_voxels = np.argwhere(reference[_box_slices(box)]) + [lo for lo, _ in box]
            anchor = foreground_voxels[rng.integers(len(foreground_voxels))] * spacing
            centre = anchor + _random_unit_vector(rng) * semi_axes.max() * rng.uniform(0, 1.5)
        elif inside is None:
            centre = rng.uniform(0, 1, size=3) * (shape - 1) * spacing
        else:
            if inside_voxels is None:
                inside_voxels = np.flatnonzero(inside)
            if inside_voxels.size == 0:
                return candidate
            centre = np.array(np.unravel_index(inside_voxels[rng.integers(inside_voxels.size)], inside.shape),
                              dtype=float) * spacing
        reach = _mm_to_voxels(semi_axes.max(), spacing) + 1
        centre_vox = np.round(centre / spacing).astype(int)
        blob_box = [[max(0, c - r), min(n, c + r + 1)] for c, r, n in zip(centre_vox, reach, shape)]
        if any(lo >= hi for lo, hi in blob_box):
            continue
        grid = _physical_grid(blob_box, spacing)
        # ellipsoid in its own frame: sum_k ((R^T (p - c))_k / a_k)^2 <= 1
        ellipsoid = np.zeros(tuple(hi - lo for lo, hi in blob_box))
        for k in range(3):
            local = sum(rotation[j, k] * (grid[j] - centre[j]) for j in range(3))
            ellipsoid = ellipsoid + (local / semi_axes[k]) ** 2
        blob = ellipsoid <= 1
        if inside is not None:
            blob &= inside[_box_slices(blob_box)]
        out = candidate[_box_slices(blob_box)]
        if only_background:
            blob &= out == 0
        out[blob] = blob_label
    return candidate


def _shifted(block: np.ndarray, shifts: Sequence[int]) -> np.ndarray:
    """`block` translated by integer voxel shifts, zero-filled (no wrap-around)."""
    out = np.zeros_like(block)
    source = tuple(slice(max(0, -s), n - max(0, s)) for s, n in zip(shifts, block.shape))
    target = tuple(slice(max(0, s), n - max(0, -s)) for s, n in zip(shifts, block.shape))
    out[target] = block[source]
    return out


def slice_errors(reference: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                 labels: Sequence[int], regions: list[tuple[int, ...]]) -> np.ndarray:
    """Blank, shift in-plane or overwrite by a copy of a neighbour a run of contiguous slices.

    The axis is random, but on anisotropic data it is the thick-slice axis, where such errors happen
    (slice-wise segmenters, motion between slices). The run is 1 slice up to the object's whole extent,
    so DSC spans [0, 1].
    """
    candidate, spacing, box = _start(reference, spacing)
    if box is None:
        return candidate
    axis = int(np.argmax(spacing)) if _is_anisotropic(spacing) else int(rng.integers(3))
    lo, hi = box[axis]
    n_slices = int(rng.integers(1, hi - lo + 1))
    first = int(rng.integers(lo, hi - n_slices + 1))
    run = [slice(None)] * 3
    run[axis] = slice(first, first + n_slices)
    run = tuple(run)
    operation = rng.integers(3)
    if operation == 0:
        candidate[run] = 0
    elif operation == 1:
        reach_mm = _equivalent_radius_mm(int(np.count_nonzero(reference[_box_slices(box)])), spacing)
        shifts = [0 if a == axis else int(np.round(rng.uniform(-1, 1) * reach_mm / spacing[a])) for a in range(3)]
        candidate[run] = _shifted(reference[run], shifts)
    else:
        neighbours = [i for i in (first - 1, first + n_slices) if 0 <= i < reference.shape[axis]]
        source = neighbours[rng.integers(len(neighbours))] if neighbours else first
        candidate[run] = np.expand_dims(np.take(reference, source, axis=axis), axis)
    return candidate
