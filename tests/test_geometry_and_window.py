"""The one geometry rule, the network's input window and its inverse, and one-line error messages."""
import numpy as np
import SimpleITK as sitk

from nnqc.error_messages import one_line
from nnqc.geometry import GEOMETRY_TOLERANCE, grid_mismatches, image_mismatch, properties_mismatch
from nnqc.preprocessing.cropping import (
    centre_crop_or_pad,
    crop_or_pad_to_window,
    foreground_window,
    undo_centre_crop_or_pad,
    undo_crop_or_pad_to_window,
    window_covers,
)
from nnqc.qc_data.dataset_io import Geometry

GRID = {"size": (10, 12, 14), "spacing": (1.0, 0.8, 3.0), "origin": (-120.0, 40.0, 7.5),
        "direction": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)}


def test_one_tolerance_for_every_field():
    assert grid_mismatches(GRID, GRID) == []
    within = {**GRID, "spacing": (1.0 + 0.5 * GEOMETRY_TOLERANCE, 0.8, 3.0),
              "origin": (-120.0 + 0.5 * GEOMETRY_TOLERANCE * 120, 40.0, 7.5)}
    assert grid_mismatches(within, GRID) == []
    for field, value in (("spacing", (1.0, 0.8, 3.0 * (1 + 2 * GEOMETRY_TOLERANCE))),
                         ("origin", (-120.0 + 2 * GEOMETRY_TOLERANCE * 120, 40.0, 7.5)),
                         ("direction", (1.0, 2 * GEOMETRY_TOLERANCE, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))):
        problems = grid_mismatches({**GRID, field: value}, GRID)
        assert len(problems) == 1 and problems[0].startswith(field), problems
    assert grid_mismatches({**GRID, "size": (10, 12, 15), "spacing": (9, 9, 9)}, GRID) == [
        "size (10, 12, 15) != (10, 12, 14)"]
    # the conversion's Geometry, SimpleITK images and nnU-Net reader properties follow the same rule
    shifted = {**GRID, "origin": (-119.0, 40.0, 7.5)}
    assert Geometry(**shifted).mismatches(Geometry(**GRID)) == grid_mismatches(shifted, GRID)
    a, b = sitk.Image(list(GRID["size"]), sitk.sitkUInt8), sitk.Image(list(GRID["size"]), sitk.sitkUInt8)
    for image, grid in ((a, GRID), (b, shifted)):
        image.SetSpacing(grid["spacing"])
        image.SetOrigin(grid["origin"])
        image.SetDirection(grid["direction"])
    assert image_mismatch(b, a) == grid_mismatches(shifted, GRID)[0]
    as_properties = [{"spacing": g["spacing"][::-1], "sitk_stuff": {k: g[k] for k in ("spacing", "origin",
                                                                                      "direction")}}
                     for g in (shifted, GRID)]
    assert properties_mismatch(*as_properties) == grid_mismatches(shifted, GRID)[0]
    assert properties_mismatch(as_properties[1], as_properties[1]) is None


def test_nibabel_properties_compare_by_affine():
    affine = np.diag([1.0, 0.8, 3.0, 1.0])
    affine[:3, 3] = (-120.0, 40.0, 7.5)
    moved = affine.copy()
    moved[0, 3] += 1.0
    props = [{"spacing": (3.0, 0.8, 1.0), "nibabel_stuff": {"original_affine": a}} for a in (moved, affine)]
    assert properties_mismatch(props[1], props[1]) is None
    assert properties_mismatch(*props).startswith("origin")


def test_foreground_window_keeps_the_foreground_and_undo_is_exact():
    mask = np.zeros((40, 10, 6), dtype=bool)
    mask[28:38, 2:5, 1:3] = True  # off-centre along the long axis
    window = foreground_window(mask, (16, 12, 6))
    assert window[0] == [24, 40]  # centred on the foreground (25..41), then kept inside the array
    assert window[1:] == [[-1, 11], [0, 6]]  # the other axes as training's centre crop / pad
    assert not window_covers(window, mask.shape)
    array = np.arange(np.prod(mask.shape)).reshape(1, *mask.shape)
    cropped = crop_or_pad_to_window(array, window)
    assert cropped.shape == (1, 16, 12, 6)
    restored = undo_crop_or_pad_to_window(cropped, mask.shape, window)
    seen = np.zeros(mask.shape, dtype=bool)
    seen[window[0][0]:window[0][1]] = True
    np.testing.assert_array_equal(restored[0][seen], array[0][seen])
    assert not restored[0][~seen].any()
    # a foreground longer than the window: centred on it
    long = np.zeros((40, 4, 4), dtype=bool)
    long[4:36] = True
    assert foreground_window(long, (16, 4, 4))[0] == [12, 28]
    # no foreground, or a case that fits: training's centred window
    assert foreground_window(np.zeros((40, 4, 4), dtype=bool), (16, 4, 4))[0] == [12, 28]
    small = np.ones((1, 6, 4, 4))
    np.testing.assert_array_equal(undo_centre_crop_or_pad(centre_crop_or_pad(small, (8, 8, 8)), (6, 4, 4)), small)


def test_one_line_drops_cxx_locations():
    sitk_error = RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: /src/Code/IO/src/"
                              "sitkImageReaderBase.cxx:99:\nsitk::ERROR: Unable to determine ImageIO reader for "
                              '"/data/x.nii.gz"')
    assert one_line(sitk_error) == 'Unable to determine ImageIO reader for "/data/x.nii.gz"'
    assert one_line(MemoryError(), with_type=True) == "MemoryError"
    assert one_line(OSError("No space left on device\nmore"), with_type=True) == "OSError: No space left on device"
    assert one_line(ValueError("\n  first\nsecond")) == "first"
