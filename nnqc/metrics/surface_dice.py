"""Normalized surface Dice (NSD, "surface Dice" of Nikolov et al. 2021), exact and fast.

A mask's surface is made of surfels that live on the voxel-corner grid: every 2x2x2 voxel neighbourhood
that is neither all inside nor all outside holds a piece of the marching-cubes surface through the edge
midpoints; its area in mm^2 (with the voxel spacing) is the surfel's weight. Distances are measured in mm
between corner-grid points, and a surfel counts as within tolerance when its distance to the nearest surfel
of the other surface is <= tau. NSD pools both directions:
    (area(S_a within tau of S_b) + area(S_b within tau of S_a)) / (area(S_a) + area(S_b)).

The surfel areas, the corner grid and the distance arithmetic are those of DeepMind's `surface_distance`
package, so values agree with it; speed comes from cropping to the masks' joint bounding box and from
testing only the integer offsets inside the tolerance ellipsoid instead of computing distance transforms.
"""
import itertools
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import ndimage

from nnqc.metrics.regions import region_masks

_NUM_CORNERS = 8
_ALL_INSIDE = 255
# A corner of the 2x2x2 neighbourhood has offset (k0, k1, k2) and carries bit 4 * k0 + 2 * k1 + k2 of the code.
_CORNER_OFFSETS = np.array([[(corner >> 2) & 1, (corner >> 1) & 1, corner & 1] for corner in range(_NUM_CORNERS)])
_CUBE_EDGES = tuple((corner, corner | axis_bit) for corner in range(_NUM_CORNERS) for axis_bit in (4, 2, 1)
                    if not corner & axis_bit)
_CUBE_FACES = tuple(tuple(corner for corner in range(_NUM_CORNERS) if bool(corner & axis_bit) == side)
                    for axis_bit in (4, 2, 1) for side in (False, True))
# Above this many offset tests per grid voxel, scipy's exact distance transform is the cheaper route.
_OFFSET_TESTS_PER_VOXEL_LIMIT = 16


def _surface_polygons(code: int) -> list[np.ndarray]:
    """The closed polygons (vertices at edge midpoints, in voxel units) that separate the inside corners.

    On a face whose inside corners sit on a diagonal, the corners of the minority side are cut off
    separately, as classic marching cubes does (with 4 of 8 inside, either side gives the same areas).
    """
    inside = [(code >> corner) & 1 for corner in range(_NUM_CORNERS)]
    separated_side = 1 if sum(inside) <= _NUM_CORNERS // 2 else 0
    crossing = [edge for edge in _CUBE_EDGES if inside[edge[0]] != inside[edge[1]]]
    neighbours: dict[tuple[int, int], list[tuple[int, int]]] = {edge: [] for edge in crossing}
    for face in _CUBE_FACES:
        face_crossing = [edge for edge in crossing if edge[0] in face and edge[1] in face]
        if len(face_crossing) == 2:
            links = [face_crossing]
        else:  # 0 or 4 crossing edges; with 4, link the two edges around each separated corner
            links = [[edge for edge in face_crossing if corner in edge] for corner in face
                     if len(face_crossing) == 4 and inside[corner] == separated_side]
        for first, second in links:
            neighbours[first].append(second)
            neighbours[second].append(first)
    polygons, visited = [], set()
    for start in crossing:
        if start in visited:
            continue
        cycle, previous, current = [start], None, start
        visited.add(start)
        while True:
            following = [edge for edge in neighbours[current] if edge != previous and edge not in visited]
            if not following:
                break
            previous, current = current, following[0]
            cycle.append(current)
            visited.add(current)
        polygons.append(np.array([(_CORNER_OFFSETS[a] + _CORNER_OFFSETS[b]) / 2 for a, b in cycle]))
    return polygons


def _triangulations(vertex_ids: tuple[int, ...]) -> list[list[tuple[int, int, int]]]:
    """All triangulations of a polygon given by its vertex ids in cyclic order."""
    if len(vertex_ids) < 3:
        return [[]]
    first, last = vertex_ids[0], vertex_ids[-1]
    result = []
    for apex in range(1, len(vertex_ids) - 1):
        for left in _triangulations(vertex_ids[:apex + 1]):
            for right in _triangulations(vertex_ids[apex:]):
                result.append(left + right + [(first, vertex_ids[apex], last)])
    return result


def _largest_triangulation(polygon: np.ndarray) -> np.ndarray:
    """Area vectors (n - 2, 3) of the triangulation with the largest area (in voxel units).

    Planar polygons have one area whatever the split; for the non-planar ones (pentagons, hexagons) this is
    the split of the marching-cubes table behind the reference implementation, and where several splits tie
    they also tie under every anisotropic scaling.
    """
    best_vectors, best_area = None, -1.0
    for triangles in _triangulations(tuple(range(len(polygon)))):
        a, b, c = (polygon[[triangle[i] for triangle in triangles]] for i in range(3))
        vectors = np.cross(b - a, c - a) / 2
        area = np.linalg.norm(vectors, axis=1).sum()
        if area > best_area + 1e-12:
            best_vectors, best_area = vectors, area
    return best_vectors


@lru_cache(maxsize=1)
def _surfel_triangles() -> tuple[np.ndarray, np.ndarray]:
    """(code per triangle, triangle area vector in voxel units) for all 256 neighbourhood codes."""
    codes, vectors = [], []
    for code in range(_ALL_INSIDE + 1):
        for polygon in _surface_polygons(code):
            triangle_vectors = _largest_triangulation(polygon)
            codes.extend([code] * len(triangle_vectors))
            vectors.append(triangle_vectors)
    return np.array(codes), np.concatenate(vectors)


def surfel_area_table(spacing: Sequence[float]) -> np.ndarray:
    """Surfel area in mm^2 of each of the 256 neighbourhood codes at the given voxel spacing.

    Scaling the axes by the spacing maps a triangle's area vector n to
    (s1 s2 n0, s0 s2 n1, s0 s1 n2), so anisotropic areas are exact.
    """
    s0, s1, s2 = (float(s) for s in spacing)
    codes, vectors = _surfel_triangles()
    areas = np.linalg.norm(vectors * np.array([s1 * s2, s0 * s2, s0 * s1]), axis=1)
    return np.bincount(codes, weights=areas, minlength=_ALL_INSIDE + 1)


def _neighbourhood_codes(mask: np.ndarray) -> np.ndarray:
    """Code of every 2x2x2 neighbourhood of the zero-padded mask, shape mask.shape + 1, uint8."""
    padded = np.pad(mask.view(np.uint8), 1)
    codes = padded[..., :-1] | (padded[..., 1:] << 1)
    codes = codes[:, :-1] | (codes[:, 1:] << 2)
    return codes[:-1] | (codes[1:] << 4)


def _joint_bounding_box(mask_a: np.ndarray, mask_b: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box holding every foreground voxel of both masks, or None when both are empty."""
    box: list[slice] = []
    for axis in range(mask_a.ndim):
        other_axes = tuple(ax for ax in range(mask_a.ndim) if ax != axis)
        occupied = np.flatnonzero(mask_a.any(axis=other_axes) | mask_b.any(axis=other_axes))
        if occupied.size == 0:
            return None
        box.append(slice(int(occupied[0]), int(occupied[-1]) + 1))
        slab = (slice(None),) * axis + (box[axis],)
        mask_a, mask_b = mask_a[slab], mask_b[slab]
    return tuple(box)


def _distances_mm(offsets: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Length in mm of integer grid offsets (K, 3), with the float arithmetic of scipy's distance transform."""
    scaled = offsets.T.astype(np.float64)
    for axis in range(len(spacing)):
        scaled[axis] *= spacing[axis]
    np.multiply(scaled, scaled, out=scaled)
    return np.sqrt(np.add.reduce(scaled, axis=0))


def _offsets_within(spacing: np.ndarray, tolerance_mm: float) -> np.ndarray:
    """Integer offsets (K, 3) no longer than the tolerance, nearest first."""
    reach = np.floor(tolerance_mm / spacing).astype(np.int64) + 1
    offsets = np.array(list(itertools.product(*(range(-r, r + 1) for r in reach))), dtype=np.int64)
    lengths = _distances_mm(offsets, spacing)
    keep = lengths <= tolerance_mm
    return offsets[keep][np.argsort(lengths[keep], kind="stable")]


def _near_by_offsets(points: np.ndarray, target: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """For each grid point (N, 3), whether target is True at the point plus any of the offsets."""
    reach = np.abs(offsets).max(axis=0)
    padded = np.pad(target, [(r, r) for r in reach])
    strides = np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1], dtype=np.int64)
    padded = padded.ravel()
    remaining = (points + reach) @ strides
    remaining_ids = np.arange(len(points))
    offset_steps = offsets @ strides
    near = np.zeros(len(points), dtype=bool)
    start, chunk = 0, 1
    while start < len(offset_steps) and remaining.size:
        steps = offset_steps[start:start + chunk]
        hit = padded[remaining[None, :] + steps[:, None]].any(axis=0)
        near[remaining_ids[hit]] = True
        remaining, remaining_ids = remaining[~hit], remaining_ids[~hit]
        start += chunk
        chunk = max(1, min(4 * chunk, (1 << 22) // max(remaining.size, 1)))
    return near


def _near_by_distance_transform(points: np.ndarray, target: np.ndarray, spacing: np.ndarray,
                                tolerance_mm: float) -> np.ndarray:
    distances = ndimage.distance_transform_edt(~target, sampling=spacing)
    return distances[tuple(points.T)] <= tolerance_mm


def _within_tolerance(points: np.ndarray, target: np.ndarray, spacing: np.ndarray, tolerance_mm: float,
                      use_distance_transform: bool | None = None) -> np.ndarray:
    """Whether each grid point lies within tolerance_mm of a True voxel of target (which has one)."""
    offsets = _offsets_within(spacing, tolerance_mm)
    if use_distance_transform is None:
        use_distance_transform = len(offsets) * len(points) > _OFFSET_TESTS_PER_VOXEL_LIMIT * target.size
    if use_distance_transform:
        return _near_by_distance_transform(points, target, spacing, tolerance_mm)
    return _near_by_offsets(points, target, offsets)


def _check_inputs(mask_a: np.ndarray, mask_b: np.ndarray, spacing: Sequence[float], tolerance_mm: float
                  ) -> np.ndarray:
    if mask_a.shape != mask_b.shape:
        raise ValueError(f"the two masks differ in shape: {mask_a.shape} vs {mask_b.shape}")
    if mask_a.ndim != 3:
        raise ValueError(f"surface Dice needs 3D masks (z, y, x), got shape {mask_a.shape}")
    spacing_array = np.asarray(spacing, dtype=np.float64)
    if spacing_array.shape != (3,) or not np.all(np.isfinite(spacing_array)) or np.any(spacing_array <= 0):
        raise ValueError(f"spacing must be 3 positive numbers in the masks' axis order, got {spacing}")
    if not np.isfinite(tolerance_mm) or tolerance_mm < 0:
        raise ValueError(f"tolerance_mm must be finite and >= 0, got {tolerance_mm}")
    return spacing_array


def surface_dice(mask_a: np.ndarray, mask_b: np.ndarray, spacing: Sequence[float], tolerance_mm: float) -> float:
    """NSD of two boolean 3D masks at tolerance_mm; spacing in the masks' axis order.

    Both empty -> 1.0, exactly one empty -> 0.0.
    """
    mask_a, mask_b = np.asarray(mask_a, dtype=bool), np.asarray(mask_b, dtype=bool)
    spacing_array = _check_inputs(mask_a, mask_b, spacing, tolerance_mm)
    box = _joint_bounding_box(mask_a, mask_b)
    if box is None:
        return 1.0
    codes_a, codes_b = _neighbourhood_codes(mask_a[box]), _neighbourhood_codes(mask_b[box])
    surface_a = (codes_a != 0) & (codes_a != _ALL_INSIDE)
    surface_b = (codes_b != 0) & (codes_b != _ALL_INSIDE)
    if not surface_a.any() or not surface_b.any():
        return 0.0
    area_table = surfel_area_table(spacing_array)
    points_a, points_b = np.argwhere(surface_a), np.argwhere(surface_b)
    areas_a, areas_b = area_table[codes_a[surface_a]], area_table[codes_b[surface_b]]
    near_a = _within_tolerance(points_a, surface_b, spacing_array, float(tolerance_mm))
    near_b = _within_tolerance(points_b, surface_a, spacing_array, float(tolerance_mm))
    overlap = areas_a[near_a].sum() + areas_b[near_b].sum()
    return float(overlap / (areas_a.sum() + areas_b.sum()))


def region_surface_dice(reference: np.ndarray, query: np.ndarray, regions: Sequence[Sequence[int]],
                        spacing: Sequence[float], tolerance_mm: float) -> np.ndarray:
    """NSD of every region's masks, float64 (C,)."""
    reference, query = np.asarray(reference), np.asarray(query)
    if reference.shape != query.shape:
        raise ValueError(f"reference and query differ in shape: {reference.shape} vs {query.shape}")
    reference_masks, query_masks = region_masks(reference, regions), region_masks(query, regions)
    return np.array([surface_dice(r, q, spacing, tolerance_mm) for r, q in zip(reference_masks, query_masks)],
                    dtype=np.float64)
