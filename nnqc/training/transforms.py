"""QC augmentation (paper §3.5) from batchgeneratorsv2: rotation, scaling, mirroring, Gaussian noise, gamma.

Spatial transforms act on the images and on the stacked [reference, candidate] label maps with the same
parameters; label maps are resampled nearest-neighbour, so an SEM computed after augmentation equals the
augmented SEM voxel for voxel. Intensity transforms touch only the images: the query's one-hot channels
are built after augmentation and are never perturbed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform


def qc_training_transforms(patch_size: Sequence[int], rotation_rad: float = np.pi / 12, dummy_2d: bool = False,
                           mirror_axes: Sequence[int] = (0, 1, 2)) -> ComposeTransforms:
    """Rotation (±15° by default), scaling 0.85-1.25, mirroring, Gaussian noise and gamma, at nnU-Net's usual
    probabilities. `dummy_2d` (nnU-Net's choice for strongly anisotropic data) rotates and scales in-plane only."""
    spatial = SpatialTransform(tuple(patch_size[1:] if dummy_2d else patch_size), patch_center_dist_from_border=0,
                               random_crop=False, p_elastic_deform=0, p_rotation=0.2,
                               rotation=(-rotation_rad, rotation_rad), p_scaling=0.2, scaling=(0.85, 1.25),
                               p_synchronize_scaling_across_axes=1, mode_seg="nearest", border_mode_seg="constant",
                               padding_value_seg=0)
    spatial_steps = [Convert3DTo2DTransform(), spatial, Convert2DTo3DTransform()] if dummy_2d else [spatial]
    return ComposeTransforms([
        *spatial_steps,
        MirrorTransform(allowed_axes=tuple(mirror_axes)),
        RandomTransform(GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1,
                                               synchronize_channels=True), apply_probability=0.1),
        RandomTransform(GammaTransform(gamma=(0.7, 1.5), p_invert_image=0, synchronize_channels=False,
                                       p_per_channel=1, p_retain_stats=1), apply_probability=0.3),
    ])
