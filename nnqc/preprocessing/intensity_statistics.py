"""The raw images' intensity statistics that preprocessing records in every case's properties.

nnQCPreprocessor.run_case_npy records them for training subjects and predicted cases alike, from this one place,
so that the training-range check (nnqc.calibration.training_range) compares a case with its training subjects by
the same numbers. They describe the image alone (the voxels non-zero in any channel, which nnU-Net crops to), not
a segmentation's foreground.
"""
from __future__ import annotations

import numpy as np

PERCENTILES = {"percentile_00_5": 0.5, "median": 50.0, "percentile_99_5": 99.5}
# percentiles of a BraTS-size channel from every voxel cost ~0.1 s; a regular subsample of this many is exact enough
MAX_INTENSITY_VOXELS = 200_000
# where nnQCPreprocessor.run_case_npy records image_intensity_statistics in a case's properties
IMAGE_INTENSITIES_PROPERTY = "nnqc_image_intensities"


def image_intensity_statistics(images: np.ndarray) -> list[dict | None]:
    """Per channel of raw images (M, *S): the PERCENTILES of the voxels non-zero in any channel (the region
    nnU-Net crops to, without its hole filling), from at most MAX_INTENSITY_VOXELS of them taken at a regular
    stride; None for every channel of an image without a non-zero voxel."""
    images = np.asarray(images)
    nonzero = np.any(images != 0, axis=0)
    count = int(np.count_nonzero(nonzero))
    if count == 0:
        return [None] * images.shape[0]
    stride = -(-count // MAX_INTENSITY_VOXELS)
    statistics = []
    for channel in images:
        values = channel[nonzero][::stride].astype(np.float64)
        statistics.append(dict(zip(PERCENTILES, map(float, np.percentile(values, list(PERCENTILES.values()))))))
    return statistics
