"""The network's view of a subject: the box that nnU-Net's preprocessing crops it to.

nnU-Net crops every case to the bounding box of its images' non-zero mask (crop_to_nonzero) before the network
sees it, and the candidate with it. Foreground outside that box never reaches the network, so errors there can
be neither seen nor learnt while the stored DSC/NSD still count them. Conversion computes the view once per
subject from its images, keeps generated foreground inside it, and records for every candidate (and reference)
the fraction of its foreground outside it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from acvl_utils.cropping_and_padding.bounding_boxes import get_bbox_from_mask
from nnunetv2.preprocessing.cropping.cropping import create_nonzero_mask

from nnqc.input_files import check_input_file

# a candidate (or reference) with more of its foreground outside the view than this is warned about by name
OUTSIDE_VIEW_WARNING = 0.01


@dataclass(frozen=True)
class SubjectView:
    """The images' non-zero mask (holes filled, as nnU-Net computes it) and its half-open bounding box, both in
    numpy (z, y, x) order of the subject's files."""
    nonzero: np.ndarray
    box: tuple[tuple[int, int], ...]

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(lo, hi) for lo, hi in self.box)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.nonzero.shape)


def view_of_images(images: np.ndarray) -> SubjectView:
    """View of stacked channels (C, z, y, x); images that are zero everywhere have no view (nnU-Net would crop
    them to nothing)."""
    nonzero = create_nonzero_mask(images)
    if not nonzero.any():
        raise ValueError("the images are zero everywhere: nnU-Net's crop to the non-zero region leaves nothing")
    box = tuple((int(lo), int(hi)) for lo, hi in get_bbox_from_mask(nonzero))
    return SubjectView(nonzero=nonzero, box=box)


def read_subject_view(image_files: Sequence[str], check: bool = True) -> SubjectView:
    """View of a subject from its channel files (read as SimpleITK reads them, like nnU-Net's SimpleITKIO);
    with `check` every file first goes through check_input_file (truncation, non-3D, NaN)."""
    if check:
        for path in image_files:
            check_input_file(path, check_nan=True)
    channels = [sitk.GetArrayFromImage(sitk.ReadImage(path)) for path in image_files]
    return view_of_images(np.stack(channels))


def fraction_outside(label_map: np.ndarray, view: SubjectView) -> float:
    """Share of the foreground voxels of `label_map` that lie outside the view (0 for an empty map)."""
    total = int(np.count_nonzero(label_map))
    if total == 0:
        return 0.0
    return (total - int(np.count_nonzero(label_map[view.slices]))) / total


def limit_to_view(label_map: np.ndarray, view: SubjectView) -> np.ndarray:
    """`label_map` with everything outside the view set to background (in place; returned for chaining)."""
    for axis, (lo, hi) in enumerate(view.box):
        before, after = [slice(None)] * label_map.ndim, [slice(None)] * label_map.ndim
        before[axis], after[axis] = slice(0, lo), slice(hi, None)
        label_map[tuple(before)] = 0
        label_map[tuple(after)] = 0
    return label_map
