"""The picture of each case in the report: the axial slice with the most predicted error, read back from the
images, the assessed segmentation and the error map in the output folder."""
from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk

from nnqc.evaluation.plots import case_preview_png
from nnqc.metrics import get_regions


def _read_volume(path: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """Array in (z, y, x) order and its spacing in the same order; 2D images become one slice."""
    image = sitk.ReadImage(path)
    array = sitk.GetArrayFromImage(image)
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise ValueError(f"{path} is not a scalar image")
    if array.ndim == 2:
        return array[None], (1.0, *spacing)
    if array.ndim != 3:
        raise ValueError(f"{path} is neither 2D nor 3D (shape {array.shape})")
    return array, spacing


def most_erroneous_slice(error_any: np.ndarray | None, segmentation: np.ndarray) -> int:
    """Index along axis 0 with the most predicted error voxels; without errors, the one with most foreground,
    without foreground, the middle slice. Ties go to the lowest index."""
    for volume in (error_any, segmentation):
        if volume is not None:
            counts = np.count_nonzero(np.asarray(volume).reshape(volume.shape[0], -1), axis=1)
            if counts.max(initial=0) > 0:
                return int(np.argmax(counts))
    return segmentation.shape[0] // 2


def case_preview(case: str, settings: dict, output_folder: str) -> bytes:
    """PNG of the case's axial slice with the most predicted error (raises OSError/RuntimeError/ValueError)."""
    ending = settings["file_ending"]
    image, _ = _read_volume(os.path.join(settings["images_folder"], f"{case}_0000{ending}"))
    segmentation, spacing = _read_volume(os.path.join(settings["segmentations_folder"], case + ending))
    if image.shape != segmentation.shape:
        raise ValueError(f"image shape {image.shape} differs from segmentation shape {segmentation.shape}")
    error_any = None
    map_path = os.path.join(output_folder, case + ending)
    if os.path.isfile(map_path):
        error_map, _ = _read_volume(map_path)
        if error_map.shape != segmentation.shape:
            raise ValueError(f"error map shape {error_map.shape} differs from segmentation shape {segmentation.shape}")
        error_any = error_map != 0
    index = most_erroneous_slice(error_any, segmentation)
    regions = ([tuple(r) for r in settings["regions"]] if "regions" in settings
               else get_regions(settings["dataset_json"])[1])
    return case_preview_png(image[index], segmentation[index], None if error_any is None else error_any[index],
                            settings["region_names"], regions, spacing[1:],
                            f"{case}, slice {index} of {segmentation.shape[0]} (axis 0)")
