"""SegGen: random spatial transforms of a reference label map (QCResUNet paper §2.2, Table 2).

Rotation, scaling, translation and elastic deformation, each drawn with its own probability, are composed
into one backward coordinate map and applied to the reference with nearest-neighbour sampling, so a
candidate only ever holds labels of the reference. Rotation and scaling happen in physical space (the
spacing is honoured) about the centre of the foreground's bounding box. Distances given "in voxels"
(translation, elastic displacement, control-point spacing) are voxels of the finest axis, converted to
millimetres and then to voxels of each axis: on isotropic data they are plain voxels, on data with thick
slices they do not shove the object through many slices.

When none of the four transforms is drawn (probability 1/16 with the paper's p = 0.5) the reference is
returned unchanged, as the paper's scheme implies; such a perfect candidate belongs to the top DSC bin.

Speed: the map is only evaluated over the bounding box the transformed foreground can reach (the
forward image of the foreground's box, enlarged by the largest elastic displacement); everything
outside it is background by construction.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from nnunetv2.configuration import ANISO_THRESHOLD
from scipy.ndimage import affine_transform, map_coordinates


def foreground_bbox(label_map: np.ndarray) -> list[list[int]] | None:
    """Half-open box [[lo, hi], ...] of the non-zero voxels (nnU-Net's convention), None when empty.

    Projects onto the first axis once and searches the remaining axes only inside that slab, which is
    much faster than np.nonzero on a small object in a large volume.
    """
    occupied = [np.flatnonzero(label_map.any(axis=tuple(range(1, label_map.ndim))))]
    if occupied[0].size == 0:
        return None
    slab = label_map[occupied[0][0]:occupied[0][-1] + 1]
    for axis in range(1, label_map.ndim):
        occupied.append(np.flatnonzero(slab.any(axis=tuple(a for a in range(label_map.ndim) if a != axis))))
    return [[int(o[0]), int(o[-1]) + 1] for o in occupied]


@dataclass(frozen=True)
class SegGenParams:
    """Ranges and probabilities of SegGen's transforms; defaults are the paper's Table 2."""
    rotation_deg: float = 15.
    rotation_p: float = .5
    scale: tuple[float, float] = (0.85, 1.25)
    scale_p: float = .5
    translation_vox: float = 20.
    translation_p: float = .5
    elastic_displacement_vox: float = 20.
    elastic_p: float = .5
    # control points of the elastic field sit this far apart; at twice the largest displacement the
    # cubic B-spline field cannot fold space (the usual rule for B-spline elastic deformation)
    elastic_control_spacing_vox: float = 40.


DEFAULT_SEGGEN_PARAMS = SegGenParams()


@dataclass(frozen=True)
class SegGenTransform:
    """One drawn SegGen transform in voxel coordinates of the reference.

    A voxel y of the candidate takes the label of the reference at `matrix @ (y + d(y)) + offset`,
    where d is the elastic displacement field (zero when `elastic_coefficients` is None).
    `translation_vox` is the shift applied to the content, per axis, in voxels of that axis.
    """
    matrix: np.ndarray                        # (3, 3) backward linear part (inverse rotation and scaling)
    offset: np.ndarray                        # (3,) backward offset
    rotation_deg: np.ndarray | None           # (3,) angles about the z, y, x axes, None when not drawn
    scale: float | None
    translation_vox: np.ndarray | None        # (3,)
    elastic_coefficients: np.ndarray | None   # (3, gz, gy, gx) B-spline coefficients, voxels of each axis
    elastic_control_spacing: np.ndarray       # (3,) control-point spacing in voxels of each axis
    elastic_max_displacement: np.ndarray      # (3,) bound of |d| per axis in voxels of that axis

    @property
    def is_identity(self) -> bool:
        return (self.rotation_deg is None and self.scale is None and self.translation_vox is None
                and self.elastic_coefficients is None)


def _rotation_matrix(angles_rad: Sequence[float]) -> np.ndarray:
    """Rotation about the z, y and x axes (in this order of composition) of (z, y, x) vectors."""
    rotation = np.eye(3)
    for axis, angle in enumerate(angles_rad):
        if angle == 0:
            continue
        plane = [a for a in range(3) if a != axis]
        cos, sin = np.cos(angle), np.sin(angle)
        single = np.eye(3)
        single[plane[0], plane[0]] = cos
        single[plane[0], plane[1]] = -sin
        single[plane[1], plane[0]] = sin
        single[plane[1], plane[1]] = cos
        rotation = single @ rotation
    return rotation


def draw_seggen_transform(reference: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                          params: SegGenParams = DEFAULT_SEGGEN_PARAMS) -> SegGenTransform:
    """Draw one SegGen transform for `reference` (only its shape and foreground box are used).

    On anisotropic data (max/min spacing > nnU-Net's ANISO_THRESHOLD) rotation is in-plane only (about
    the low-resolution axis), as nnU-Net does for its own augmentation.
    """
    if reference.ndim != 3:
        raise ValueError(f"SegGen needs a 3D label map (z, y, x), got shape {reference.shape}")
    spacing_mm = np.asarray(spacing, dtype=float)
    if spacing_mm.shape != (3,) or np.any(spacing_mm <= 0):
        raise ValueError(f"spacing must be three positive numbers, got {tuple(spacing)}")
    unit_mm = spacing_mm.min()
    anisotropic = spacing_mm.max() / unit_mm > ANISO_THRESHOLD

    do_rotation = rng.random() < params.rotation_p
    do_scale = rng.random() < params.scale_p
    do_translation = rng.random() < params.translation_p
    do_elastic = rng.random() < params.elastic_p

    rotation_deg = None
    if do_rotation:
        rotation_deg = rng.uniform(-params.rotation_deg, params.rotation_deg, size=3)
        if anisotropic:
            rotation_deg[np.arange(3) != int(np.argmax(spacing_mm))] = 0.
    scale = float(rng.uniform(*params.scale)) if do_scale else None
    translation_vox = None
    if do_translation:
        translation_vox = rng.uniform(-params.translation_vox, params.translation_vox, size=3) * unit_mm \
            / spacing_mm
    control_spacing = params.elastic_control_spacing_vox * unit_mm / spacing_mm
    max_displacement = params.elastic_displacement_vox * unit_mm / spacing_mm
    coefficients = None
    if do_elastic:
        # control point k of an axis sits at voxel (k - 1) * spacing; one extra point before and two
        # after the image give every voxel its four cubic B-spline neighbours
        grid = [int(np.ceil((n - 1) / s)) + 3 for n, s in zip(reference.shape, control_spacing)]
        coefficients = rng.uniform(-1., 1., size=(3, *grid)) * max_displacement[:, None, None, None]
    else:
        max_displacement = np.zeros(3)

    # physical forward map p -> c + k R (p - c) + t; voxels: y = S^-1 p. Backward in voxels:
    # x = c_v + S^-1 R^T S (y - c_v - t_v) / k
    forward_linear = np.eye(3)
    if rotation_deg is not None:
        forward_linear = _rotation_matrix(np.deg2rad(rotation_deg))
    if scale is not None:
        forward_linear = forward_linear * scale
    matrix = np.diag(1 / spacing_mm) @ np.linalg.inv(forward_linear) @ np.diag(spacing_mm)
    bbox = foreground_bbox(reference)
    centre = np.zeros(3) if bbox is None else np.array([(lo + hi - 1) / 2 for lo, hi in bbox])
    shift = np.zeros(3) if translation_vox is None else translation_vox
    offset = centre - matrix @ (centre + shift)
    return SegGenTransform(matrix=matrix, offset=offset, rotation_deg=rotation_deg, scale=scale,
                           translation_vox=translation_vox, elastic_coefficients=coefficients,
                           elastic_control_spacing=control_spacing, elastic_max_displacement=max_displacement)


def _cubic_bspline(t: np.ndarray) -> np.ndarray:
    """The cubic B-spline kernel; non-negative and a partition of unity, so the field never overshoots."""
    t = np.abs(t)
    out = np.zeros_like(t)
    inner = t < 1
    outer = (t >= 1) & (t < 2)
    out[inner] = 2 / 3 - t[inner] ** 2 + t[inner] ** 3 / 2
    out[outer] = (2 - t[outer]) ** 3 / 6
    return out


def _bspline_weights(start: int, stop: int, control_spacing: float, n_control: int) -> np.ndarray:
    """(stop - start, n_control) weights of the control points for voxels start..stop-1 of one axis."""
    position = np.arange(start, stop, dtype=float) / control_spacing
    return _cubic_bspline(position[:, None] - (np.arange(n_control)[None, :] - 1))


def elastic_displacement(transform: SegGenTransform, box: Sequence[Sequence[int]]) -> np.ndarray:
    """Displacement field (3, *box shape) in voxels over the half-open voxel box [[lo, hi], ...]."""
    coefficients = transform.elastic_coefficients
    weights = [_bspline_weights(lo, hi, s, n)
               for (lo, hi), s, n in zip(box, transform.elastic_control_spacing, coefficients.shape[1:])]
    # separable tensor-product evaluation: far cheaper than interpolating every voxel
    field = np.einsum('zi,cijk->czjk', weights[0], coefficients)
    field = np.einsum('yj,czjk->czyk', weights[1], field)
    return field @ weights[2].T


def _reachable_box(transform: SegGenTransform, source_box: Sequence[Sequence[int]],
                   shape: Sequence[int]) -> list[list[int]] | None:
    """Voxel box of the candidate that the transformed foreground can reach, clipped to the image."""
    # candidate voxel y reads source round(A (y + d) + b); it lands in the source box iff the continuous
    # source position lies within the box widened by half a voxel
    corners = np.array(np.meshgrid(*[(lo - .5, hi - .5) for lo, hi in source_box], indexing='ij'))
    corners = corners.reshape(3, -1)
    forward = np.linalg.solve(transform.matrix, corners - transform.offset[:, None])
    reach = transform.elastic_max_displacement + 1
    lower = np.floor(forward.min(1) - reach).astype(int)
    upper = np.ceil(forward.max(1) + reach).astype(int) + 1
    box = [[max(0, int(lo)), min(int(n), int(hi))] for lo, hi, n in zip(lower, upper, shape)]
    if any(lo >= hi for lo, hi in box):
        return None
    return box


def apply_seggen_transform(reference: np.ndarray, transform: SegGenTransform) -> np.ndarray:
    """Resample `reference` with the drawn transform (nearest neighbour, background outside)."""
    if transform.is_identity:
        return reference.copy()
    source_box = foreground_bbox(reference)
    candidate = np.zeros_like(reference)
    if source_box is None:
        return candidate
    target_box = _reachable_box(transform, source_box, reference.shape)
    if target_box is None:
        return candidate
    source = reference[tuple(slice(lo, hi) for lo, hi in source_box)]
    source_lo = np.array([lo for lo, _ in source_box], dtype=float)
    target_lo = np.array([lo for lo, _ in target_box], dtype=float)
    target_shape = tuple(hi - lo for lo, hi in target_box)
    target = tuple(slice(lo, hi) for lo, hi in target_box)
    if transform.elastic_coefficients is None:
        candidate[target] = affine_transform(
            source, transform.matrix, offset=transform.matrix @ target_lo + transform.offset - source_lo,
            output_shape=target_shape, order=0, mode='grid-constant', cval=0, prefilter=False)
        return candidate
    # y + d(y), then the linear part: one coordinate map for the whole composition
    moved = elastic_displacement(transform, target_box)
    for axis, (lo, hi) in enumerate(target_box):
        expand = [None, None, None]
        expand[axis] = slice(None)
        moved[axis] += np.arange(lo, hi, dtype=float)[tuple(expand)]
    coordinates = np.tensordot(transform.matrix, moved, axes=1)
    coordinates += (transform.offset - source_lo)[:, None, None, None]
    candidate[target] = map_coordinates(source, coordinates, order=0, mode='grid-constant', cval=0,
                                        prefilter=False)
    return candidate


def seggen(reference: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
           params: SegGenParams = DEFAULT_SEGGEN_PARAMS) -> np.ndarray:
    """A SegGen candidate of `reference` (z, y, x label map): same shape and dtype, labels preserved."""
    return apply_seggen_transform(reference, draw_seggen_transform(reference, rng, spacing, params))
