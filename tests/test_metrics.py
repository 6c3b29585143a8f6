"""The QC metrics against independent references (DeepMind surface_distance, MONAI, scipy) and hand values."""
import importlib
import math

import monai.metrics as monai_metrics
import numpy as np
import pytest
import surface_distance
import torch
from scipy import ndimage
from scipy.spatial.distance import dice as scipy_dice_dissimilarity

from nnqc.metrics import (
    allowed_labels,
    binary_dice,
    get_regions,
    multiclass_dice,
    nsd_tolerance_mm,
    quality_targets,
    region_dice,
    region_masks,
    region_surface_dice,
    segmentation_error_maps,
    surface_dice,
)

# the package re-exports the function surface_dice under the module's name
surface_dice_module = importlib.import_module("nnqc.metrics.surface_dice")
if not hasattr(np, "Inf"):
    np.Inf = np.inf  # the reference surface_distance package predates NumPy 2

BRATS_JSON = {"channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
              "labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3},
              "regions_class_order": [1, 2, 3], "file_ending": ".nii.gz"}
ACDC_JSON = {"labels": {"background": 0, "RV": 1, "MYO": 2, "LV": 3}, "file_ending": ".nii.gz",
             "nsd_tolerance_mm": 2.0}
SPACINGS = [(1.0, 1.0, 1.0), (2.5, 0.7, 1.3), (0.4, 3.0, 1.1), (5.0, 1.5, 1.5)]


@pytest.fixture(scope="module")
def deepmind():
    return surface_distance


def deepmind_nsd(deepmind, mask_a, mask_b, spacing, tolerance_mm):
    distances = deepmind.compute_surface_distances(mask_a, mask_b, spacing)
    return deepmind.compute_surface_dice_at_tolerance(distances, tolerance_mm)


def random_blobs(rng: np.random.Generator, shape, smoothness: float, fill: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.random(shape), smoothness)
    return field > np.quantile(field, 1 - fill)


def random_mask_pairs(seed: int, count: int):
    """Smooth blobs, voxel noise and thin structures of several sizes; many neighbourhood codes occur."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        shape = tuple(int(n) for n in rng.integers(4, 28, 3))
        kind = index % 3
        if kind == 0:
            a, b = (random_blobs(rng, shape, 1.5, rng.uniform(0.1, 0.5)) for _ in range(2))
        elif kind == 1:
            a = random_blobs(rng, shape, 1.0, 0.3)
            b = rng.random(shape) < 0.3
        else:
            a = rng.random(shape) < 0.15
            b = ndimage.binary_dilation(a) & (rng.random(shape) < 0.7)
        yield a, b


def deepmind_code_to_ours(code: int) -> int:
    """DeepMind gives bit 7 - (4 k0 + 2 k1 + k2) to corner offset k; nnQC gives bit 4 k0 + 2 k1 + k2."""
    return sum(1 << (7 - bit) for bit in range(8) if code >> bit & 1)


# ----------------------------------------------------------------------------------------------- NSD
@pytest.mark.parametrize("spacing", SPACINGS)
def test_surfel_areas_equal_deepmind_table(deepmind, spacing):
    theirs = deepmind.lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    ours = surface_dice_module.surfel_area_table(spacing)
    for code in range(256):
        assert ours[deepmind_code_to_ours(code)] == pytest.approx(theirs[code], abs=1e-12), code


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("tolerance_mm", [1.0, 2.0])
def test_surface_dice_equals_deepmind(deepmind, spacing, tolerance_mm):
    for a, b in random_mask_pairs(seed=int(10 * spacing[1] + tolerance_mm), count=12):
        expected = deepmind_nsd(deepmind, a, b, spacing, tolerance_mm)
        assert surface_dice(a, b, spacing, tolerance_mm) == pytest.approx(expected, abs=1e-9)


def test_surface_dice_equals_deepmind_at_odd_tolerances(deepmind):
    for tolerance_mm in (0.0, 0.5, 1.3, 3.7):
        for a, b in random_mask_pairs(seed=7, count=4):
            for spacing in SPACINGS[:2]:
                expected = deepmind_nsd(deepmind, a, b, spacing, tolerance_mm)
                assert surface_dice(a, b, spacing, tolerance_mm) == pytest.approx(expected, abs=1e-9)


def test_surface_dice_ignores_distant_empty_space(deepmind):
    """Cropping to the masks must not change anything: same masks embedded in a much larger volume."""
    rng = np.random.default_rng(3)
    a, b = random_blobs(rng, (12, 14, 10), 1.2, 0.3), random_blobs(rng, (12, 14, 10), 1.2, 0.3)
    big_a, big_b = np.zeros((40, 50, 45), bool), np.zeros((40, 50, 45), bool)
    big_a[20:32, 5:19, 30:40], big_b[20:32, 5:19, 30:40] = a, b
    spacing = (1.7, 0.8, 1.1)
    assert surface_dice(big_a, big_b, spacing, 1.0) == pytest.approx(surface_dice(a, b, spacing, 1.0), abs=1e-12)
    assert surface_dice(big_a, big_b, spacing, 1.0) == pytest.approx(
        deepmind_nsd(deepmind, big_a, big_b, spacing, 1.0), abs=1e-9)


def test_both_proximity_searches_agree():
    """The offset search and the distance-transform search answer the same question identically."""
    rng = np.random.default_rng(11)
    for spacing in SPACINGS:
        target = rng.random((15, 17, 13)) < 0.02
        target[7, 8, 6] = True
        points = np.argwhere(rng.random(target.shape) < 0.3)
        for tolerance_mm in (0.0, 1.0, 2.0, 4.5):
            args = (points, target, np.asarray(spacing), tolerance_mm)
            by_offsets = surface_dice_module._within_tolerance(*args, use_distance_transform=False)
            by_distance_transform = surface_dice_module._within_tolerance(*args, use_distance_transform=True)
            np.testing.assert_array_equal(by_offsets, by_distance_transform)


def test_surface_dice_equals_monai():

    def one_hot(mask):
        foreground = torch.from_numpy(mask.astype(np.float32))[None, None]
        return torch.cat([1 - foreground, foreground], dim=1)

    for a, b in random_mask_pairs(seed=5, count=3):
        for spacing in SPACINGS[:2]:
            for tolerance_mm in (1.0, 2.0):
                expected = monai_metrics.compute_surface_dice(one_hot(b), one_hot(a), [tolerance_mm], spacing=spacing,
                                                             use_subvoxels=True)
                # MONAI works in float32
                assert surface_dice(a, b, spacing, tolerance_mm) == pytest.approx(float(expected), abs=1e-6)


def single_voxel(shape, index):
    mask = np.zeros(shape, bool)
    mask[index] = True
    return mask


def test_surface_dice_hand_computed_single_voxels():
    voxel = single_voxel((7, 7, 7), (2, 3, 3))
    assert surface_dice(voxel, voxel, (1.0, 1.0, 1.0), 0.0) == 1.0
    # A voxel's 8 corner surfels sit on the corner grid at z in {2, 3}; shifted by 2 voxels along z, the
    # other's sit at z in {4, 5}: the inner halves are 1 grid step apart, the outer halves 2 or more.
    shifted = single_voxel((7, 7, 7), (4, 3, 3))
    assert surface_dice(voxel, shifted, (1.0, 1.0, 1.0), 0.99) == 0.0
    assert surface_dice(voxel, shifted, (1.0, 1.0, 1.0), 1.0) == 0.5
    assert surface_dice(voxel, shifted, (1.0, 1.0, 1.0), 2.0) == 1.0
    # the spacing follows the array axes: z steps of 0.5 mm, then y steps of 2 mm
    assert surface_dice(voxel, shifted, (0.5, 2.0, 1.0), 0.5) == 0.5
    assert surface_dice(voxel, shifted, (0.5, 2.0, 1.0), 1.0) == 1.0
    shifted_y = single_voxel((7, 7, 7), (2, 5, 3))
    assert surface_dice(voxel, shifted_y, (0.5, 2.0, 1.0), 1.9) == 0.0
    assert surface_dice(voxel, shifted_y, (0.5, 2.0, 1.0), 2.0) == 0.5


def test_surface_dice_hand_computed_cubes():
    cube = np.zeros((10, 10, 10), bool)
    cube[2:6, 2:6, 2:6] = True
    # shifting by one voxel moves every surfel by exactly one grid step: all within 1 mm
    assert surface_dice(cube, np.roll(cube, 1, axis=2), (1.0, 1.0, 1.0), 1.0) == pytest.approx(1.0, abs=1e-12)
    assert surface_dice(cube, np.roll(cube, 1, axis=2), (1.0, 1.0, 2.0), 1.0) < 1.0
    # a cube inside one 2 voxels larger on every side: no surfel is nearer than 2 grid steps to the other
    # surface, and the farthest (the outer corners) are (2, 2, 2) steps away
    outer = np.zeros((10, 10, 10), bool)
    outer[0:8, 0:8, 0:8] = True
    assert surface_dice(cube, outer, (1.0, 1.0, 1.0), 1.99) == 0.0
    assert 0.0 < surface_dice(cube, outer, (1.0, 1.0, 1.0), 2.0) < 1.0
    assert surface_dice(cube, outer, (1.0, 1.0, 1.0), math.sqrt(12) - 1e-9) < 1.0
    assert surface_dice(cube, outer, (1.0, 1.0, 1.0), math.sqrt(12)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.5, 0.8)])
def test_surface_area_of_a_box(spacing):
    """Marching-cubes area of a k0 x k1 x k2 box: flat faces, bevelled edges and 8 corner triangles."""
    extent = (3, 5, 4)
    box = np.zeros((7, 9, 8), bool)
    box[2:5, 1:6, 2:6] = True
    codes = surface_dice_module._neighbourhood_codes(box)
    surface = (codes != 0) & (codes != 255)
    area = surface_dice_module.surfel_area_table(spacing)[codes[surface]].sum()
    s, k = spacing, extent
    faces = 2 * ((k[1] - 1) * (k[2] - 1) * s[1] * s[2] + (k[0] - 1) * (k[2] - 1) * s[0] * s[2]
                 + (k[0] - 1) * (k[1] - 1) * s[0] * s[1])
    edges = 4 * sum((k[axis] - 1) * s[axis] * math.hypot(*(s[other] for other in range(3) if other != axis)) / 2
                    for axis in range(3))
    corners = math.sqrt((s[1] * s[2]) ** 2 + (s[0] * s[2]) ** 2 + (s[0] * s[1]) ** 2)
    assert area == pytest.approx(faces + edges + corners, rel=1e-12)


def test_surface_dice_empty_conventions(deepmind):
    empty = np.zeros((6, 7, 8), bool)
    blob = empty.copy()
    blob[2:4, 2:5, 3:6] = True
    assert surface_dice(empty, empty, (1.0, 1.0, 1.0), 1.0) == 1.0
    assert surface_dice(blob, empty, (1.0, 2.0, 3.0), 1.0) == 0.0
    assert surface_dice(empty, blob, (1.0, 2.0, 3.0), 100.0) == 0.0
    assert deepmind_nsd(deepmind, blob, empty, (1.0, 2.0, 3.0), 1.0) == 0.0


def test_surface_dice_is_symmetric_and_accepts_label_maps():
    a, b = next(random_mask_pairs(seed=2, count=1))
    spacing = (1.2, 0.9, 2.0)
    assert surface_dice(a, b, spacing, 1.0) == pytest.approx(surface_dice(b, a, spacing, 1.0), abs=1e-12)
    assert surface_dice(a.astype(np.uint8) * 3, b, spacing, 1.0) == surface_dice(a, b, spacing, 1.0)


def test_surface_dice_rejects_bad_input():
    mask = np.ones((4, 4, 4), bool)
    with pytest.raises(ValueError, match="shape"):
        surface_dice(mask, mask[:3], (1, 1, 1), 1.0)
    with pytest.raises(ValueError, match="3D"):
        surface_dice(mask[0], mask[0], (1, 1), 1.0)
    with pytest.raises(ValueError, match="spacing"):
        surface_dice(mask, mask, (1, 0, 1), 1.0)
    with pytest.raises(ValueError, match="spacing"):
        surface_dice(mask, mask, (1, 1), 1.0)
    with pytest.raises(ValueError, match="tolerance"):
        surface_dice(mask, mask, (1, 1, 1), -1.0)


# ----------------------------------------------------------------------------------------------- DSC
def multiclass_dice_by_voxel(reference: np.ndarray, query: np.ndarray) -> float:
    """Paper Appendix A counted voxel by voxel."""
    true_positives = false_positives = false_negatives = 0
    for g, q in zip(reference.ravel().tolist(), query.ravel().tolist()):
        if q != 0 and q == g:
            true_positives += 1
        if q != 0 and q != g:
            false_positives += 1
        if g != 0 and q != g:
            false_negatives += 1
    total = 2 * true_positives + false_positives + false_negatives
    return 1.0 if total == 0 else 2 * true_positives / total


def test_multiclass_dice_equals_voxelwise_count():
    rng = np.random.default_rng(0)
    for _ in range(10):
        shape = tuple(int(n) for n in rng.integers(2, 12, 3))
        reference = rng.choice(4, size=shape, p=[0.5, 0.2, 0.2, 0.1]).astype(np.uint8)
        query = np.where(rng.random(shape) < 0.7, reference, rng.integers(0, 4, shape)).astype(np.int16)
        assert multiclass_dice(reference, query) == pytest.approx(multiclass_dice_by_voxel(reference, query),
                                                                  abs=1e-15)


def test_multiclass_dice_hand_computed():
    reference = np.array([[[0, 1, 1, 2, 2, 0]]])
    query = np.array([[[1, 1, 2, 2, 0, 0]]])
    # TP: voxels 1 and 3; FP: voxel 0 (background labelled 1) and 2 (wrong class); FN: voxels 2 and 4
    assert multiclass_dice(reference, query) == pytest.approx(4 / (4 + 2 + 2))
    # a foreground-only swap of labels is no true positive at all
    assert multiclass_dice(np.array([1, 1, 2]), np.array([2, 2, 1])) == 0.0


def test_dice_empty_conventions():
    empty = np.zeros((3, 4, 5), np.uint8)
    full = np.ones((3, 4, 5), np.uint8)
    assert multiclass_dice(empty, empty) == 1.0
    assert multiclass_dice(empty, full) == 0.0
    assert multiclass_dice(full, empty) == 0.0
    assert binary_dice(empty, empty) == 1.0
    assert binary_dice(empty, full) == 0.0
    assert binary_dice(full, empty) == 0.0
    np.testing.assert_array_equal(region_dice(empty, empty, [(1,), (2, 3)]), [1.0, 1.0])


def test_binary_dice_equals_scipy():
    rng = np.random.default_rng(1)
    for fill in (0.05, 0.3, 0.8):
        a, b = rng.random((6, 7, 8)) < fill, rng.random((6, 7, 8)) < fill
        assert binary_dice(a, b) == pytest.approx(1 - scipy_dice_dissimilarity(a.ravel(), b.ravel()), abs=1e-12)


def test_dice_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        multiclass_dice(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="shape"):
        binary_dice(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))


def test_region_dice_on_nested_regions():
    reference = np.array([0, 1, 2, 3, 3, 2])
    query = np.array([0, 1, 3, 3, 0, 2])
    _, regions = get_regions(BRATS_JSON)
    # WT {1,2,3}: ref 5 voxels, query 4, overlap 4; TC {2,3}: ref 4, query 3, overlap 3; ET {3}: ref 2, query 2, 1
    np.testing.assert_allclose(region_dice(reference, query, regions), [8 / 9, 6 / 7, 2 / 4])


# ----------------------------------------------------------------------------------------------- regions
def test_get_regions_region_based_and_label_based():
    names, regions = get_regions(BRATS_JSON)
    assert names == ["whole_tumor", "tumor_core", "enhancing_tumor"]
    assert regions == [(1, 2, 3), (2, 3), (3,)]
    assert allowed_labels(BRATS_JSON) == (0, 1, 2, 3)
    names, regions = get_regions(ACDC_JSON)
    assert names == ["RV", "MYO", "LV"]
    assert regions == [(1,), (2,), (3,)]
    assert allowed_labels(ACDC_JSON) == (0, 1, 2, 3)
    # order follows dataset.json, not the label values
    names, regions = get_regions({"labels": {"background": 0, "liver": 2, "tumor": 1}})
    assert names == ["liver", "tumor"] and regions == [(2,), (1,)]


def test_nsd_tolerance_default_and_given():
    assert nsd_tolerance_mm(BRATS_JSON) == 1.0
    assert nsd_tolerance_mm(ACDC_JSON) == 2.0
    with pytest.raises(ValueError, match="nsd_tolerance_mm"):
        nsd_tolerance_mm({"nsd_tolerance_mm": -1})


@pytest.mark.parametrize("labels, message", [
    ({"background": 0}, "no foreground"),
    ({"background": 0, "a": 1, "ignore": 2}, "ignore"),
    ({"background": 0, "a": -1}, "'a'"),
    ({"background": 0, "a": [0, 1]}, "background value"),
    ({"background": 0, "a": 1, "b": 1}, "both"),
    ({"background": 0, "a": "1"}, "'a'"),
])
def test_get_regions_rejects_bad_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        get_regions({"labels": labels})


def test_region_masks():
    seg = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    masks = region_masks(seg, [(1, 2, 3), (2, 3), (3,)])
    assert masks.dtype == bool and masks.shape == (3, 2, 2)
    np.testing.assert_array_equal(masks[0], seg > 0)
    np.testing.assert_array_equal(masks[1], seg >= 2)
    np.testing.assert_array_equal(masks[2], seg == 3)
    with pytest.raises(TypeError, match="integer"):
        region_masks(seg.astype(np.float32), [(1,)])


# ----------------------------------------------------------------------------------------------- SEM, targets
def test_segmentation_error_maps_are_region_xor():
    rng = np.random.default_rng(4)
    reference = rng.integers(0, 4, (5, 6, 7))
    query = rng.integers(0, 4, (5, 6, 7)).astype(np.uint8)
    _, regions = get_regions(BRATS_JSON)
    sems = segmentation_error_maps(reference, query, regions)
    assert sems.dtype == bool and sems.shape == (3, 5, 6, 7)
    for sem, labels in zip(sems, regions):
        np.testing.assert_array_equal(sem, np.isin(reference, labels) != np.isin(query, labels))
    # a voxel that is tumour core in both (label 2 vs 3) is only an error of the enhancing-tumour region
    sems = segmentation_error_maps(np.array([[[2]]]), np.array([[[3]]]), regions)
    np.testing.assert_array_equal(sems[:, 0, 0, 0], [False, False, True])
    assert not segmentation_error_maps(reference, reference, regions).any()


def test_quality_targets():
    rng = np.random.default_rng(6)
    reference = np.zeros((12, 14, 13), np.uint8)
    reference[3:9, 3:11, 2:10] = 1
    reference[4:8, 5:9, 4:8] = 2
    reference[5:7, 6:8, 5:7] = 3
    query = reference.copy()
    query[rng.random(query.shape) < 0.05] = 2
    _, regions = get_regions(BRATS_JSON)
    spacing = (1.5, 1.0, 0.8)
    targets = quality_targets(reference, query, regions, spacing, 1.0)
    assert targets["dsc"] == multiclass_dice(reference, query)
    np.testing.assert_array_equal(targets["dsc_per_region"], region_dice(reference, query, regions))
    np.testing.assert_array_equal(targets["nsd_per_region"],
                                  region_surface_dice(reference, query, regions, spacing, 1.0))
    assert targets["nsd"] == pytest.approx(targets["nsd_per_region"].mean())
    assert 0 < targets["dsc"] < 1 and 0 < targets["nsd"] < 1
    perfect = quality_targets(reference, reference, regions, spacing, 1.0)
    assert perfect["dsc"] == 1.0 and perfect["nsd"] == 1.0
    np.testing.assert_array_equal(perfect["nsd_per_region"], [1.0, 1.0, 1.0])
