"""Synthetic BraTS-like and ACDC-like phantoms, written as nnU-Net raw datasets.

They let the whole nnQC pipeline run (tests, demo) without the licensed datasets. They are built to look, to a
QC network, like the real data: a skull-stripped brain with four MRI contrasts and a lumpy tumour whose
sub-regions show the way they do in MRI; a short-axis cine stack of thick slices with RV, myocardium and LV.
Everything is drawn from smooth random fields evaluated separably, so a 155x240x240 brain takes about a
second, and a seed reproduces a subject bit for bit.

    python -m dataset_conversion.phantoms -d 500 -n 20 --kind brats
"""
import argparse
import os
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from nnunetv2.configuration import default_num_processes
from scipy.special import expit

from dataset_conversion.raw_dataset_io import prepare_raw_dataset_folder, run_cases, write_dataset_json_atomic
from nnqc.atomic_files import write_image_atomically

BRATS_CHANNEL_NAMES = {0: "T1", 1: "T1ce", 2: "T2", 3: "FLAIR"}
# nnU-Net's BraTS convention: 1 = edema, 2 = necrosis / non-enhancing core, 3 = enhancing tumour
BRATS_LABELS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}
BRATS_REGIONS_CLASS_ORDER = (1, 2, 3)
ACDC_CHANNEL_NAMES = {0: "cineMRI"}
ACDC_LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}

DEFAULT_SHAPE = {"brats": (155, 240, 240), "acdc": (10, 128, 128)}
DEFAULT_SPACING = {"brats": (1.0, 1.0, 1.0), "acdc": (10.0, 1.5, 1.5)}

# Relative intensities per tissue in (T1, T1ce, T2, FLAIR), white matter T1 = 1. What matters for QC: enhancing
# tumour is bright on T1ce, necrosis dark on T1ce and bright on T2, edema bright on T2 and FLAIR, CSF bright on
# T2 and dark on FLAIR.
_BRAIN_CONTRASTS = {
    "wm": (1.00, 1.00, 0.55, 0.70),
    "gm": (0.75, 0.78, 0.85, 0.95),
    "csf": (0.30, 0.32, 1.60, 0.22),
    "edema": (0.80, 0.82, 1.25, 1.45),
    "necrosis": (0.45, 0.38, 1.45, 0.90),
    "enhancing": (0.80, 1.75, 1.00, 1.15),
}
# Brain semi-axes as fractions of the volume shape (z, y, x). At 155x240x240 the cropped brain spans about
# 133-153 x 163-188 x 134-154 voxels, as in BraTS, so a planner rounding up to multiples of 32 gets 160x192x160.
_BRAIN_SEMI_AXES = np.array([0.46, 0.365, 0.30])
DEFAULT_LESION_SIZE = (0.18, 0.42)  # lesion radius / brain radius: whole tumours of about 0.6-7 % of the brain
_BRAIN_SIZE_JITTER = 0.02
_BRAIN_BOUNDARY_AMPLITUDE = 0.05


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return np.random.default_rng(rng)


def _check_geometry(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, ...], np.ndarray]:
    shape = tuple(int(s) for s in shape)
    spacing = np.asarray(spacing, dtype=np.float64)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"phantom shape must be 3 sizes of at least 4 voxels (z, y, x), got {shape}")
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise ValueError(f"phantom spacing must be 3 positive values (z, y, x), got {tuple(spacing)}")
    return shape, spacing


def smooth_noise(coordinates: Sequence[np.ndarray], rng: np.random.Generator,
                 correlation_length: float) -> np.ndarray:
    """Smooth random field on the grid spanned by per-axis coordinate vectors, scaled to [-1, 1].

    Gaussian-weighted interpolation of random control values spaced `correlation_length` apart (same units as
    the coordinates), applied one axis at a time as matrix products: cheap even on 9 M voxels.
    """
    weights = []
    for axis_coordinates in coordinates:
        x = np.asarray(axis_coordinates, dtype=np.float64)
        num_controls = int(np.ceil((x.max() - x.min()) / correlation_length)) + 3
        centres = x.min() - correlation_length + correlation_length * np.arange(num_controls)
        w = np.exp(-0.5 * ((x[:, None] - centres[None, :]) / correlation_length) ** 2)
        weights.append((w / w.sum(axis=1, keepdims=True)).astype(np.float32))
    controls = rng.standard_normal([w.shape[1] for w in weights]).astype(np.float32)
    field = (weights[0] @ controls.reshape(controls.shape[0], -1)).reshape(-1, *controls.shape[1:])
    field = np.matmul(weights[1], field)
    field = field @ weights[2].T
    return field / max(float(np.abs(field).max()), 1e-12)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _sample_in_ball(rng: np.random.Generator, radius: float) -> np.ndarray:
    while True:
        point = rng.uniform(-radius, radius, 3)
        if np.sum(point ** 2) <= radius ** 2:
            return point


def _tissue_intensities(name: str, jitter: np.ndarray) -> np.ndarray:
    return np.asarray(_BRAIN_CONTRASTS[name], dtype=np.float32) * jitter


def make_brats_phantom(shape: Sequence[int] = (155, 240, 240), spacing: Sequence[float] = (1.0, 1.0, 1.0),
                       rng: np.random.Generator | int | None = None,
                       lesion_size: Sequence[float] = DEFAULT_LESION_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A skull-stripped multi-contrast brain with a glioma-like lesion.

    Returns images (4, *shape) float32 (T1, T1ce, T2, FLAIR; integer-valued, exactly 0 outside the brain) and
    seg uint8 with nnU-Net's BraTS labels (1 edema, 2 necrosis, 3 enhancing). Sizes scale with `shape`;
    `spacing` (z, y, x) keeps the lesion round in mm. `rng`: a Generator or a seed. `lesion_size`: range of
    the lesion's radius as a fraction of the brain's (BraTS-like by default).
    """
    shape, spacing = _check_geometry(shape, spacing)
    if not 0 < lesion_size[0] <= lesion_size[1] < 1:
        raise ValueError(f"lesion_size must be 0 < low <= high < 1 (fractions of the brain radius), got {lesion_size}")
    rng = _as_rng(rng)
    soft_mm = 0.5 * float(spacing.min())

    # brain: an egg-shaped ellipsoid with a smoothly irregular boundary. All fields are computed only within
    # its bounding box (about 40 % of a BraTS volume); outside it the images stay exactly 0.
    semi_axes = _BRAIN_SEMI_AXES * np.asarray(shape) * rng.uniform(1 - _BRAIN_SIZE_JITTER, 1 + _BRAIN_SIZE_JITTER, 3)
    centre = (np.asarray(shape) - 1) / 2 + rng.uniform(-0.015, 0.015, 3) * np.asarray(shape)
    egg = rng.uniform(0.0, 0.08)  # narrower towards one end along y
    reach = semi_axes * (1 + _BRAIN_BOUNDARY_AMPLITUDE) * (1 + egg)
    lo = np.clip(np.floor(centre - reach).astype(int) - 1, 0, None)
    hi = np.minimum(np.ceil(centre + reach).astype(int) + 2, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    box_shape = tuple(int(b - a) for a, b in zip(lo, hi))
    uz, uy, ux = [((np.arange(a, b) - c) / r).astype(np.float32) for a, b, c, r in zip(lo, hi, centre, semi_axes)]
    ux_in_plane = ux[None, :] / (1 + np.float32(egg) * uy[:, None])
    rho = np.sqrt(uz[:, None, None] ** 2 + (uy[:, None] ** 2 + ux_in_plane ** 2)[None])
    boundary = 1 + _BRAIN_BOUNDARY_AMPLITUDE * smooth_noise((uz, uy, ux), rng, 0.3)
    brain = rho < boundary
    brain_radius_mm = float(np.exp(np.mean(np.log(semi_axes * spacing))))
    depth_mm = (boundary - rho) * np.float32(brain_radius_mm)

    # cortex folded into gyri: grey matter reaches deep where the folding field is high, CSF fills the middle
    # of some sulci
    folding = np.clip(smooth_noise((uz, uy, ux), rng, 0.07), 0, None)
    cortex_mm = 0.04 * brain_radius_mm * (1 + 4 * folding)
    grey = expit((cortex_mm - depth_mm) / soft_mm)
    sulcal_mm = 0.12 * brain_radius_mm * np.clip(folding - 0.35, 0, None)
    csf = expit((sulcal_mm - depth_mm) / soft_mm) * (sulcal_mm > 0)
    # lateral ventricles: two ellipsoids either side of the midline
    ventricle_axes = np.array([0.2, 0.38, 0.09]) * rng.uniform(0.7, 1.3, 3)
    for side in (-1, 1):
        v_centre = np.array([0.12, -0.05, side * 0.12])
        v_lo = [int(np.searchsorted(u, c - 1.2 * a)) for u, c, a in zip((uz, uy, ux), v_centre, ventricle_axes)]
        v_hi = [int(np.searchsorted(u, c + 1.2 * a)) for u, c, a in zip((uz, uy, ux), v_centre, ventricle_axes)]
        v_box = tuple(slice(a, b) for a, b in zip(v_lo, v_hi))
        q = np.sqrt(sum(((u[s] - c) / a).reshape([-1 if i == j else 1 for j in range(3)]) ** 2
                        for i, (u, s, c, a) in enumerate(zip((uz, uy, ux), v_box, v_centre, ventricle_axes))))
        smallest_axis_mm = float(np.min(ventricle_axes * semi_axes * spacing))
        csf[v_box] = np.maximum(csf[v_box], expit((1 - q) * smallest_axis_mm / soft_mm))

    jitter = rng.uniform(0.95, 1.05, (len(_BRAIN_CONTRASTS), 4)).astype(np.float32)
    contrast = {name: _tissue_intensities(name, j) for name, j in zip(_BRAIN_CONTRASTS, jitter)}
    tissues = np.empty((4, *box_shape), dtype=np.float32)
    for c in range(4):
        tissue = contrast["wm"][c] + (contrast["gm"][c] - contrast["wm"][c]) * grey
        tissues[c] = tissue + (contrast["csf"][c] - tissue) * csf

    seg_in_box = np.zeros(box_shape, dtype=np.uint8)
    _add_lesion(tissues, seg_in_box, brain, centre - lo, semi_axes, spacing, brain_radius_mm, contrast, rng,
                soft_mm, lesion_size)

    # scanner effects: smooth bias field, noise, arbitrary per-contrast scale; background exactly 0
    images = np.zeros((4, *shape), dtype=np.float32)
    for c in range(4):
        bias = 1 + 0.08 * smooth_noise((uz, uy, ux), rng, 0.6)
        noise = rng.standard_normal(box_shape, dtype=np.float32) * np.float32(0.025)
        scale = np.float32(rng.uniform(400, 1200))
        channel = np.rint((tissues[c] * bias + noise) * scale)
        images[(c, *box)] = np.where(brain, np.clip(channel, 1, 32767), 0)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[box] = seg_in_box
    return images, seg


def _add_lesion(images: np.ndarray, seg: np.ndarray, brain: np.ndarray, brain_centre: np.ndarray,
                brain_semi_axes: np.ndarray, spacing: np.ndarray, brain_radius_mm: float,
                contrast: dict[str, np.ndarray], rng: np.random.Generator, soft_mm: float,
                lesion_size: Sequence[float]) -> None:
    """Edema around a tumour core (enhancing rim around necrosis), lumpy and randomly placed, in place."""
    centre = brain_centre + _sample_in_ball(rng, 0.5) * brain_semi_axes
    whole_mm = brain_radius_mm * rng.uniform(*lesion_size)
    core_mm = whole_mm * rng.uniform(0.35, 0.7)
    necrosis_mm = core_mm * rng.uniform(0.4, 0.8)
    has_enhancing = rng.random() > 0.1
    has_necrosis = rng.random() > 0.15
    axes = rng.uniform(0.8, 1.25, 3)
    rotation = _random_rotation(rng)

    reach_mm = whole_mm * axes.max() * 1.35 + 3 * soft_mm
    lo = np.maximum(np.floor(centre - reach_mm / spacing), 0).astype(int)
    hi = np.minimum(np.ceil(centre + reach_mm / spacing) + 1, seg.shape).astype(int)
    if np.any(hi <= lo):
        return
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    offsets_mm = [((np.arange(a, b) - c) * s).astype(np.float32) for a, b, c, s in zip(lo, hi, centre, spacing)]
    dz, dy, dx = offsets_mm[0][:, None, None], offsets_mm[1][None, :, None], offsets_mm[2][None, None, :]
    radius_mm = np.sqrt(sum(((rotation[0, j] * dz + rotation[1, j] * dy + rotation[2, j] * dx) / axes[j]) ** 2
                            for j in range(3)))

    def inside_mm(mean_radius: float, lumpiness: float) -> np.ndarray:
        """Signed depth (mm, > 0 inside) of a lumpy ball around the lesion centre."""
        lumps = smooth_noise(offsets_mm, rng, 0.3 * mean_radius)
        return mean_radius * (1 + lumpiness * lumps) - radius_mm

    whole = inside_mm(whole_mm, 0.35)
    core = inside_mm(core_mm, 0.25)
    necrosis = inside_mm(necrosis_mm, 0.25)
    texture = smooth_noise(offsets_mm, rng, max(2.0 * soft_mm, 0.1 * whole_mm))

    in_brain = brain[box]
    labels = np.zeros(in_brain.shape, dtype=np.uint8)
    labels[(whole > 0) | (core > 0)] = 1
    labels[core > 0] = 3 if has_enhancing else 2
    if has_necrosis:
        labels[(core > 0) & (necrosis > 0)] = 2
    labels[~in_brain] = 0
    seg[box] = labels

    w_whole = np.maximum(expit(whole / soft_mm), expit(core / soft_mm))
    w_core = expit(core / soft_mm)
    w_necrosis = expit(necrosis / soft_mm) * w_core if has_necrosis else None
    fade = 0.85 + 0.15 * expit(whole / (0.15 * whole_mm))  # edema fades towards its border
    core_tissue = contrast["enhancing"] if has_enhancing else contrast["necrosis"]
    for c in range(images.shape[0]):
        region = images[(c, *box)]
        region += (contrast["edema"][c] * fade * (1 + 0.06 * texture) - region) * w_whole
        region += (core_tissue[c] * (1 + 0.1 * texture) - region) * w_core
        if w_necrosis is not None:
            region += (contrast["necrosis"][c] * (1 + 0.05 * texture) - region) * w_necrosis


def _ring_radius(angles: np.ndarray, mean_radius: float, harmonics: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """A smoothly non-circular contour r(theta) from a few low angular harmonics."""
    k = np.arange(2, 2 + len(harmonics))
    wobble = np.sum(harmonics[:, None, None] * np.cos(k[:, None, None] * angles[None] + phases[:, None, None]),
                    axis=0)
    return mean_radius * (1 + wobble)


def make_acdc_phantom(shape: Sequence[int] = (10, 128, 128), spacing: Sequence[float] = (10.0, 1.5, 1.5),
                      rng: np.random.Generator | int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A short-axis cine-MRI stack from base (z = 0) to apex: RV (1), myocardium (2) around the LV (3).

    Returns image (1, *shape) float32 (integer-valued) and seg uint8. Anatomy is sized in mm relative to the
    in-plane field of view; thick slices average the signal over their thickness as real 2D cine slices do.
    """
    shape, spacing = _check_geometry(shape, spacing)
    rng = _as_rng(rng)
    num_slices, ny, nx = shape
    fov_y, fov_x = ny * spacing[1], nx * spacing[2]
    mm_scale = min(fov_y, fov_x) / 192.0
    soft_mm = 0.5 * float(min(spacing[1], spacing[2]))
    y_mm = ((np.arange(ny) - (ny - 1) / 2) * spacing[1]).astype(np.float32)[:, None]
    x_mm = ((np.arange(nx) - (nx - 1) / 2) * spacing[2]).astype(np.float32)[None, :]

    body_axes = np.array([0.42 * fov_y, 0.47 * fov_x]) * rng.uniform(0.9, 1.05, 2)
    lung_axes = np.array([0.28 * fov_y, 0.15 * fov_x]) * rng.uniform(0.85, 1.15, 2)
    lv_centre = np.array([fov_y, fov_x]) * rng.uniform([-0.08, -0.04], [0.06, 0.1])
    lv_drift = mm_scale * rng.uniform(-8, 8, 2)  # long axis not exactly through-plane
    cavity_mm = mm_scale * rng.uniform(17, 28)
    wall_mm = mm_scale * rng.uniform(6, 11)
    apex_cavity = rng.uniform(0.72, 0.9)
    apex_wall = min(apex_cavity + rng.uniform(0.06, 0.12), 0.99)
    rv_end = apex_cavity * rng.uniform(0.7, 0.95)
    rv_angle = np.pi + rng.uniform(-0.5, 0.5)
    rv_extent = rng.uniform(0.9, 1.2, 2)
    cavity_shape = (rng.uniform(0, 0.04, 3), rng.uniform(0, 2 * np.pi, 3))
    wall_shape = (rng.uniform(0, 0.04, 3), rng.uniform(0, 2 * np.pi, 3))
    has_fat = rng.random() < 0.6
    z_mm = (np.arange(num_slices) * spacing[0]).astype(np.float32)
    body_texture = smooth_noise((z_mm, y_mm[:, 0], x_mm[0]), rng, 12.0 * mm_scale)

    def soft(inside_mm: np.ndarray) -> np.ndarray:
        return expit(inside_mm / soft_mm)

    def ellipse_depth(cy: float, cx: float, ay: float, ax: float, along: np.ndarray | None = None) -> np.ndarray:
        """Approximate signed depth (mm, > 0 inside) of an ellipse; semi-axis ay lies along unit vector `along`."""
        dy, dx = y_mm - cy, x_mm - cx
        if along is not None:
            dy, dx = dy * along[0] + dx * along[1], dx * along[0] - dy * along[1]
        return (1 - np.sqrt((dy / ay) ** 2 + (dx / ax) ** 2)) * min(ay, ax)

    def profile(t: float, end: float) -> float:
        return float(np.sqrt(max(0.0, 1 - (t / end) ** 2)))

    def slice_at(t: float) -> tuple[np.ndarray, np.ndarray]:
        """Signal and labels of the infinitely thin section at relative height t (0 = base, 1 = apex end)."""
        centre = lv_centre + lv_drift * t
        dy, dx = y_mm - centre[0], x_mm - centre[1]
        r = np.sqrt(dy ** 2 + dx ** 2)
        angles = np.arctan2(dy, dx)
        cavity_r = _ring_radius(angles, cavity_mm * profile(t, apex_cavity), *cavity_shape)
        epi_r = _ring_radius(angles, (cavity_mm + wall_mm) * profile(t, apex_wall), *wall_shape)
        epi_r = np.where(cavity_r > 0, np.maximum(epi_r, cavity_r + 0.5 * wall_mm), epi_r)  # wall never vanishes
        epi_mean = (cavity_mm + wall_mm) * profile(t, apex_wall)
        rv_scale = profile(t, rv_end)
        rv_direction = np.array([np.sin(rv_angle), np.cos(rv_angle)])
        if rv_scale > 0 and epi_mean > 0:
            rv_centre = centre + rv_direction * 0.8 * epi_mean
            # a crescent: an ellipse wider across than along the LV-RV axis, minus the LV and the RV free wall
            rv_width_mm, rv_depth_mm = epi_mean * rv_scale * np.array([1.5, 1.0]) * rv_extent
            rv_outer = ellipse_depth(rv_centre[0], rv_centre[1], rv_depth_mm, rv_width_mm, rv_direction)
            rv = np.minimum(rv_outer - 3.0 * mm_scale, r - epi_r - 0.5 * soft_mm)
        else:
            rv = np.full(r.shape, -1e3, dtype=np.float32)
        cavity, epi = cavity_r - r, epi_r - r

        body = soft(ellipse_depth(0.0, 0.0, *body_axes))
        lungs = np.maximum(soft(ellipse_depth(-0.05 * fov_y, -0.26 * fov_x, *lung_axes)),
                           soft(ellipse_depth(-0.05 * fov_y, 0.26 * fov_x, *lung_axes)))
        signal = body * 0.45 + (0.06 - 0.45) * lungs * body
        if has_fat:
            signal = signal + (0.85 - signal) * soft(epi + 2.5 * mm_scale) * (1 - soft(epi))
        signal = signal + (0.28 - signal) * soft(epi)
        signal = signal + (1.0 - signal) * np.maximum(soft(cavity), soft(rv))

        labels = np.zeros(r.shape, dtype=np.uint8)
        labels[rv > 0] = 1
        labels[epi > 0] = 2
        labels[cavity > 0] = 3
        return signal.astype(np.float32), labels

    image = np.empty(shape, dtype=np.float32)
    seg = np.empty(shape, dtype=np.uint8)
    for z in range(num_slices):
        t = (z + 0.5) / num_slices
        offsets = (-1 / 3, 0.0, 1 / 3)
        sections = [slice_at(t + o / num_slices) for o in offsets]
        image[z] = np.mean([s[0] for s in sections], axis=0)
        seg[z] = sections[1][1]
    image *= 1 + 0.08 * body_texture

    # receive-coil shading and magnitude (Rician) noise; no zero background, as in real cine MRI
    coil = 1 + 0.25 * smooth_noise((z_mm, y_mm[:, 0], x_mm[0]), rng, 0.5 * min(fov_y, fov_x))
    noise = rng.standard_normal((2, *shape), dtype=np.float32) * np.float32(0.03)
    image = np.sqrt((image * coil + noise[0]) ** 2 + noise[1] ** 2)
    image = np.rint(image * np.float32(rng.uniform(150, 400))).astype(np.float32)
    return image[None], seg


def _geometry_for(shape: Sequence[int], spacing: Sequence[float], rng: np.random.Generator,
                  oblique: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """SimpleITK origin and direction (x, y, z order): a scanner-like offset, optionally a tilted frame."""
    extent = np.asarray(shape[::-1], dtype=np.float64) * np.asarray(spacing[::-1], dtype=np.float64)
    origin = -extent / 2 + rng.uniform(-20, 20, 3)
    direction = np.eye(3)
    if oblique:
        axis = rng.standard_normal(3)
        axis /= np.linalg.norm(axis)
        angle = np.deg2rad(rng.uniform(10, 35))
        cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        direction = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
        if rng.random() < 0.5:
            direction = direction @ np.diag([-1.0, 1.0, 1.0])  # also a mirrored (radiological) frame
    return tuple(float(o) for o in origin), tuple(float(d) for d in direction.ravel())


def _to_sitk(array: np.ndarray, dtype: type, spacing: Sequence[float], origin: tuple[float, ...],
             direction: tuple[float, ...]) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(dtype))
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def phantom_case_name(index: int) -> str:
    return f"case_{index:04d}"


def _write_phantom_case(kind: str, index: int, shape: Sequence[int], spacing: Sequence[float], seed: int,
                        oblique: bool, images_folder: str, labels_folder: str,
                        lesion_size: Sequence[float]) -> None:
    rng = np.random.default_rng([seed, index])
    if kind == "brats":
        images, seg = make_brats_phantom(shape, spacing, rng, lesion_size)
    else:
        images, seg = make_acdc_phantom(shape, spacing, rng)
    # the frame comes from its own stream so that `oblique` changes the header only, never the content
    origin, direction = _geometry_for(shape, spacing, np.random.default_rng([seed, index, 1]),
                                      oblique and index % 2 == 1)
    case = phantom_case_name(index)
    for c, channel in enumerate(images):
        write_image_atomically(_to_sitk(channel, np.int16, spacing, origin, direction),
                           os.path.join(images_folder, f"{case}_{c:04d}.nii.gz"))
    write_image_atomically(_to_sitk(seg, np.uint8, spacing, origin, direction),
                       os.path.join(labels_folder, f"{case}.nii.gz"))


def write_phantom_dataset(dataset_id: int, name: str, num_subjects: int, kind: str = "brats",
                          shape: Sequence[int] | None = None, spacing: Sequence[float] | None = None,
                          seed: int = 0, num_test: int = 0, raw_folder: str | None = None,
                          oblique: bool = False, num_processes: int = 1, overwrite: bool = False,
                          lesion_size: Sequence[float] = DEFAULT_LESION_SIZE) -> str:
    """Write phantoms as nnU-Net raw dataset Dataset{id:03d}_{name}; returns its folder.

    Training cases case_0000.. go to imagesTr/labelsTr, then `num_test` more to imagesTs/labelsTs. With
    `oblique`, every odd-numbered case gets a tilted (sometimes mirrored) direction matrix. Bit-for-bit
    reproducible for a seed, whatever num_processes. `raw_folder` defaults to $nnUNet_raw. `lesion_size`: see
    make_brats_phantom (larger lesions let small phantoms carry enough error voxels for a short training).
    """
    if kind not in DEFAULT_SHAPE:
        raise ValueError(f"unknown phantom kind {kind!r}; expected one of {sorted(DEFAULT_SHAPE)}")
    if num_subjects < 1 or num_test < 0:
        raise ValueError(f"need at least one training subject and num_test >= 0, got {num_subjects}, {num_test}")
    shape = tuple(int(s) for s in (shape if shape is not None else DEFAULT_SHAPE[kind]))
    spacing = tuple(float(s) for s in (spacing if spacing is not None else DEFAULT_SPACING[kind]))
    _check_geometry(shape, spacing)

    folder = prepare_raw_dataset_folder(dataset_id, name, raw_folder, overwrite)
    jobs = []
    for part, indices in (("Tr", range(num_subjects)), ("Ts", range(num_subjects, num_subjects + num_test))):
        if len(indices) == 0:
            continue
        images_folder, labels_folder = os.path.join(folder, f"images{part}"), os.path.join(folder, f"labels{part}")
        os.makedirs(images_folder, exist_ok=True)
        os.makedirs(labels_folder, exist_ok=True)
        jobs += [(kind, i, shape, spacing, int(seed), oblique, images_folder, labels_folder, tuple(lesion_size))
                 for i in indices]
    run_cases(_write_phantom_case, jobs, num_processes)

    brats = kind == "brats"
    write_dataset_json_atomic(
        folder,
        channel_names=dict(BRATS_CHANNEL_NAMES if brats else ACDC_CHANNEL_NAMES),
        labels=dict(BRATS_LABELS if brats else ACDC_LABELS),
        num_training_cases=num_subjects,
        file_ending=".nii.gz",
        regions_class_order=BRATS_REGIONS_CLASS_ORDER if brats else None,
        dataset_name=name,
        description=f"synthetic {'BraTS' if brats else 'ACDC'}-like phantoms (nnQC)",
        license="synthetic data, free to use",
        converted_by="dataset_conversion.phantoms",
        nsd_tolerance_mm=1.0,
        phantom={"kind": kind, "shape": list(shape), "spacing": list(spacing), "seed": int(seed),
                 "oblique": bool(oblique), **({"lesion_size": list(lesion_size)} if brats else {})},
    )
    return folder


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic BraTS-like or ACDC-like nnU-Net raw dataset.")
    parser.add_argument("-d", "--dataset_id", type=int, required=True)
    parser.add_argument("-n", "--num_subjects", type=int, required=True, help="number of training subjects")
    parser.add_argument("--kind", choices=sorted(DEFAULT_SHAPE), default="brats")
    parser.add_argument("--name", default=None, help="dataset name (default BraTSPhantom / ACDCPhantom)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, help="z y x voxels")
    parser.add_argument("--spacing", type=float, nargs=3, default=None, help="z y x mm")
    parser.add_argument("--num_test", type=int, default=0, help="extra subjects in imagesTs/labelsTs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--oblique", action="store_true", help="tilted direction matrix for odd cases")
    parser.add_argument("--lesion_size", type=float, nargs=2, default=DEFAULT_LESION_SIZE,
                        help="range of the lesion radius as a fraction of the brain radius (brats)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("-np", "--num_processes", type=int, default=default_num_processes)
    args = parser.parse_args(argv)
    name = args.name or ("BraTSPhantom" if args.kind == "brats" else "ACDCPhantom")
    folder = write_phantom_dataset(args.dataset_id, name, args.num_subjects, args.kind, args.shape, args.spacing,
                                   args.seed, args.num_test, oblique=args.oblique,
                                   num_processes=args.num_processes, overwrite=args.overwrite,
                                   lesion_size=args.lesion_size)
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
