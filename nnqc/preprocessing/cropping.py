"""The network's fixed input window over a preprocessed case, and its exact inverse.

QC sees the whole case at the plan's fixed input shape: training centre-crops or zero-pads every example.
At prediction time a case larger than the input along an axis gets, along that axis, the window that keeps
as much of the assessed segmentation's foreground as fits, centred on it (a centred window could cut away
the very structure whose quality is asked); along the other axes it is centred as in training.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd

Window = list[list[int]]  # [[start, stop], ...] per spatial axis, in the array's voxels; may reach outside it


def centre_bbox(spatial_shape: Sequence[int], shape: Sequence[int]) -> Window:
    """The window of size `shape` centred on an array of `spatial_shape` (may reach outside it)."""
    return [[(s - p) // 2, (s - p) // 2 + p] for s, p in zip(spatial_shape, shape)]


def foreground_window(foreground: np.ndarray, shape: Sequence[int]) -> Window:
    """The window of size `shape` over `foreground` (a bool (*S) mask): centred like centre_bbox along the axes
    that fit; along those that do not, centred on the foreground's bounding box and kept inside the array
    (so no foreground is cut that could be kept)."""
    window = centre_bbox(foreground.shape, shape)
    occupied = np.argwhere(foreground)
    for axis, (s, p) in enumerate(zip(foreground.shape, shape)):
        if s <= p or not len(occupied):
            continue
        low, high = int(occupied[:, axis].min()), int(occupied[:, axis].max()) + 1
        start = min(max((low + high - p) // 2, 0), s - p)
        window[axis] = [start, start + p]
    return window


def crop_or_pad_to_window(array: np.ndarray, window: Window, pad_value: float = 0) -> np.ndarray:
    """The `window` of the trailing spatial axes of `array` (C, *S), zero-padded (pad_value) outside it."""
    return crop_and_pad_nd(array, window, pad_value)


def undo_crop_or_pad_to_window(array: np.ndarray, spatial_shape: Sequence[int], window: Window) -> np.ndarray:
    """Inverse of crop_or_pad_to_window for an output (C, *P): back to (C, *spatial_shape), each voxel where the
    window took it from, zero where the window did not reach."""
    out = np.zeros((array.shape[0], *spatial_shape), dtype=array.dtype)
    target = tuple(slice(max(lo, 0), min(hi, s)) for (lo, hi), s in zip(window, spatial_shape))
    source = tuple(slice(t.start - lo, t.stop - lo) for t, (lo, _) in zip(target, window))
    out[(slice(None), *target)] = array[(slice(None), *source)]
    return out


def centre_crop_or_pad(array: np.ndarray, shape: Sequence[int], pad_value: float = 0) -> np.ndarray:
    """Crop or zero-pad the trailing spatial axes of `array` (C, *S) to `shape`, keeping the centre."""
    return crop_or_pad_to_window(array, centre_bbox(array.shape[1:], shape), pad_value)


def undo_centre_crop_or_pad(array: np.ndarray, spatial_shape: Sequence[int]) -> np.ndarray:
    """Inverse of centre_crop_or_pad for an output (C, *P): back to (C, *spatial_shape), zero where the
    window did not reach."""
    return undo_crop_or_pad_to_window(array, spatial_shape, centre_bbox(spatial_shape, array.shape[1:]))


def window_covers(window: Window, spatial_shape: Sequence[int]) -> bool:
    """Whether the window holds the whole array."""
    return all(lo <= 0 and hi >= s for (lo, hi), s in zip(window, spatial_shape))
