"""Candidate generators: determinism, label safety, SegGen geometry and DSC coverage of all bins."""
import numpy as np
import pytest
from scipy.ndimage import center_of_mass, map_coordinates

from nnqc.metrics.dice import multiclass_dice
from nnqc.qc_data import degradations
from nnqc.qc_data.generators import BOUNDARY_FAMILIES, CLASSIC_FAMILIES, GENERATOR_FAMILIES, generate_candidate
from nnqc.qc_data.seggen import (
    SegGenParams,
    apply_seggen_transform,
    draw_seggen_transform,
    foreground_bbox,
    seggen,
)
from nnqc.qc_data.view import fraction_outside, view_of_images
from nnqc.sampling import N_BINS, dsc_bins

LABELS = (0, 1, 2, 3)
REGIONS = [(1, 2, 3), (2, 3), (3,)]
ISOTROPIC = (1., 1., 1.)
ONLY = dict(rotation_p=0., scale_p=0., translation_p=0., elastic_p=0.)


def nested_ellipsoids(shape=(48, 64, 48), radii=(14, 20, 15), centre=None) -> np.ndarray:
    """BraTS-like reference: 1 = outer shell (edema), 2 = core, 3 = innermost (enhancing)."""
    centre = [(n - 1) / 2 for n in shape] if centre is None else centre
    grid = np.meshgrid(*[np.arange(n) - c for n, c in zip(shape, centre)], indexing='ij', sparse=True)
    r = np.sqrt(sum((g / a) ** 2 for g, a in zip(grid, radii)))
    reference = np.zeros(shape, np.uint8)
    reference[r < 1] = 1
    reference[r < .6] = 2
    reference[r < .35] = 3
    return reference


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return nested_ellipsoids()


@pytest.mark.parametrize("family", GENERATOR_FAMILIES)
def test_each_family_is_deterministic_and_seed_dependent(reference, family):
    first = generate_candidate(family, reference, 7, ISOTROPIC, LABELS, REGIONS)
    again = generate_candidate(family, reference, 7, ISOTROPIC, LABELS, REGIONS)
    assert first.dtype == np.uint8 and first.shape == reference.shape
    assert np.array_equal(first, again)
    others = [generate_candidate(family, reference, s, ISOTROPIC, LABELS, REGIONS) for s in (8, 9, 10)]
    assert any(not np.array_equal(first, other) for other in others)


@pytest.mark.parametrize("family", GENERATOR_FAMILIES)
def test_candidates_only_hold_valid_labels(family):
    # non-contiguous label values and a label the reference does not use
    reference = nested_ellipsoids(shape=(20, 40, 36), radii=(8, 14, 12))
    reference[reference == 3] = 5
    labels = (0, 1, 2, 5, 7)
    for seed in range(12):
        candidate = generate_candidate(family, reference, seed, (2., .8, .8), labels, [(1, 2, 5), (2, 5), (5,)])
        assert set(np.unique(candidate).tolist()) <= set(labels), (family, seed)


@pytest.mark.parametrize("family", GENERATOR_FAMILIES)
def test_empty_reference_and_thick_slices_work(family):
    empty = np.zeros((8, 40, 40), np.uint8)
    candidate = generate_candidate(family, empty, 3, (10., 1.5, 1.5), LABELS, REGIONS)
    assert candidate.shape == empty.shape and candidate.dtype == np.uint8
    if family == "false_positive_blobs":
        assert candidate.any()
    else:
        assert not candidate.any()
    cardiac = nested_ellipsoids(shape=(8, 40, 40), radii=(3, 12, 12))
    for seed in range(5):
        candidate = generate_candidate(family, cardiac, seed, (10., 1.5, 1.5), LABELS, REGIONS)
        assert candidate.shape == cardiac.shape


def test_generate_candidate_rejects_bad_input(reference):
    with pytest.raises(ValueError, match="erode_dilate"):
        generate_candidate("blur", reference, 0, ISOTROPIC, LABELS, REGIONS)
    with pytest.raises(ValueError, match=r"\[3\]"):
        generate_candidate("seggen", reference, 0, ISOTROPIC, (0, 1, 2), REGIONS)
    with pytest.raises(ValueError, match="3D"):
        generate_candidate("seggen", reference[0], 0, ISOTROPIC, LABELS, REGIONS)
    with pytest.raises(ValueError, match=r"\[3\]"):
        degradations.swap_labels(reference, np.random.default_rng(0), ISOTROPIC, (0, 1, 2), REGIONS)


def test_seggen_without_transforms_returns_the_reference(reference):
    candidate = seggen(reference, np.random.default_rng(0), ISOTROPIC, SegGenParams(**ONLY))
    assert np.array_equal(candidate, reference)


@pytest.mark.parametrize("spacing", [(1., 1., 1.), (2., 1., .5)])
def test_translation_moves_the_centre_of_mass_by_the_drawn_amount(spacing):
    reference = nested_ellipsoids(shape=(60, 72, 64), radii=(9, 12, 10))
    params = SegGenParams(**{**ONLY, "translation_p": 1.})
    drawn = draw_seggen_transform(reference, np.random.default_rng(11), spacing, params).translation_vox
    candidate = seggen(reference, np.random.default_rng(11), spacing, params)
    # translation is given in voxels of the finest axis, i.e. in mm of that axis's spacing
    assert np.all(np.abs(drawn * spacing) <= 20 * min(spacing)) and np.abs(drawn).max() > 1
    moved = np.array(center_of_mass(candidate > 0)) - np.array(center_of_mass(reference > 0))
    assert np.allclose(moved, drawn, atol=.5)
    assert np.count_nonzero(candidate) == np.count_nonzero(reference)


@pytest.mark.parametrize("scale_range", [(.85, .9), (1.15, 1.25)])
def test_scaling_scales_the_volume(scale_range):
    # scales too close to 1 are below nearest-neighbour resolution on a small object: use clear ones
    reference = nested_ellipsoids(shape=(72, 88, 80), radii=(16, 22, 18))
    params = SegGenParams(**{**ONLY, "scale_p": 1., "scale": scale_range})
    for seed in range(3):
        factor = draw_seggen_transform(reference, np.random.default_rng(seed), ISOTROPIC, params).scale
        candidate = seggen(reference, np.random.default_rng(seed), ISOTROPIC, params)
        assert scale_range[0] <= factor <= scale_range[1]
        assert np.count_nonzero(candidate) / np.count_nonzero(reference) == pytest.approx(factor ** 3, rel=.03)
        assert np.array_equal(np.unique(candidate), np.unique(reference))


def _physical_covariance(mask: np.ndarray, spacing) -> np.ndarray:
    points = np.argwhere(mask) * np.asarray(spacing)
    return np.cov(points.T)


def test_rotation_is_rigid_in_physical_space():
    spacing = (1.6, 1., .8)
    # semi-axes 24, 40 and 14 mm: distinct, so the principal axes are well defined
    reference = nested_ellipsoids(shape=(50, 100, 72), radii=(15, 40, 17.5))
    params = SegGenParams(**{**ONLY, "rotation_p": 1.})
    transform = draw_seggen_transform(reference, np.random.default_rng(5), spacing, params)
    scale = np.diag(spacing)
    rotation = np.linalg.inv(scale @ transform.matrix @ np.linalg.inv(scale))
    assert np.allclose(rotation @ rotation.T, np.eye(3)) and np.linalg.det(rotation) == pytest.approx(1)
    candidate = apply_seggen_transform(reference, transform)
    before, after = _physical_covariance(reference > 0, spacing), _physical_covariance(candidate > 0, spacing)
    assert np.allclose(np.linalg.eigvalsh(after), np.linalg.eigvalsh(before), rtol=.02)
    assert np.allclose(after, rotation @ before @ rotation.T, atol=.01 * np.abs(before).max())
    assert not np.allclose(after, before, atol=.04 * np.abs(before).max())


def test_rotation_is_in_plane_on_thick_slices():
    reference = nested_ellipsoids(shape=(10, 64, 64), radii=(3, 20, 20))
    params = SegGenParams(rotation_p=1., translation_p=1., scale_p=0., elastic_p=0.)
    for seed in range(5):
        transform = draw_seggen_transform(reference, np.random.default_rng(seed), (10., 1.25, 1.25), params)
        assert transform.rotation_deg[1] == 0 and transform.rotation_deg[2] == 0
        assert abs(transform.translation_vox[0]) <= 20 * 1.25 / 10


@pytest.mark.parametrize("elastic_p", [0., 1.])
def test_seggen_equals_the_brute_force_resampling_of_the_whole_image(elastic_p):
    # the fast path only evaluates the reachable box; sampling every voxel must give the same candidate
    reference = nested_ellipsoids(shape=(40, 56, 48), radii=(9, 13, 11), centre=(18, 30, 22))
    spacing = (1.5, 1., 1.)
    params = SegGenParams(rotation_p=1., scale_p=1., translation_p=1., elastic_p=elastic_p)
    for seed in range(4):
        transform = draw_seggen_transform(reference, np.random.default_rng(seed), spacing, params)
        positions = np.array(np.meshgrid(*[np.arange(n, dtype=float) for n in reference.shape], indexing='ij'))
        if transform.elastic_coefficients is not None:
            # cubic B-spline of the coefficients, evaluated by scipy (order 3 without prefilter)
            control = positions / transform.elastic_control_spacing[:, None, None, None] + 1
            positions = positions + np.stack([
                map_coordinates(c, control, order=3, prefilter=False, mode='nearest')
                for c in transform.elastic_coefficients])
            assert np.all(np.abs(positions - np.indices(reference.shape))
                          <= transform.elastic_max_displacement[:, None, None, None] + 1e-9)
        source = np.tensordot(transform.matrix, positions, axes=1) + transform.offset[:, None, None, None]
        index = np.floor(source + .5).astype(int)
        inside = np.all((index >= 0) & (index < np.array(reference.shape)[:, None, None, None]), axis=0)
        expected = np.zeros_like(reference)
        expected[inside] = reference[tuple(i[inside] for i in index)]
        candidate = apply_seggen_transform(reference, transform)
        assert np.array_equal(candidate, expected)
        assert candidate.any() and not np.array_equal(candidate, reference)


def test_elastic_deformation_is_smooth_and_bounded():
    reference = nested_ellipsoids()
    params = SegGenParams(**{**ONLY, "elastic_p": 1.})
    transform = draw_seggen_transform(reference, np.random.default_rng(3), ISOTROPIC, params)
    from nnqc.qc_data.seggen import elastic_displacement
    field = elastic_displacement(transform, [[0, n] for n in reference.shape])
    assert np.abs(field).max() <= 20 and np.abs(field).max() > 2
    # no folding: the Jacobian of y -> y + d(y) stays positive
    gradients = np.stack([np.stack(np.gradient(component)) for component in field])
    jacobian = np.moveaxis(gradients, (0, 1), (-2, -1)) + np.eye(3)
    assert np.linalg.det(jacobian).min() > 0


def test_degradations_do_what_their_names_say(reference):
    foreground = reference != 0
    for seed in range(10):
        swapped = generate_candidate("swap_labels", reference, seed, ISOTROPIC, LABELS, REGIONS)
        assert np.array_equal(swapped != 0, foreground) and not np.array_equal(swapped, reference)
        dropped = generate_candidate("drop_component", reference, seed, ISOTROPIC, LABELS, REGIONS)
        kept = dropped != 0
        assert np.array_equal(dropped[kept], reference[kept]) and kept.sum() < foreground.sum()
        region = generate_candidate("drop_region", reference, seed, ISOTROPIC, LABELS, REGIONS)
        assert set(np.unique(region[foreground]).tolist()) < set(LABELS)
        assert not np.any(region[~foreground])
        sliced = generate_candidate("slice_errors", reference, seed, ISOTROPIC, LABELS, REGIONS)
        changed_axes = [np.flatnonzero((sliced != reference).any(axis=tuple(a for a in range(3) if a != axis)))
                        for axis in range(3)]
        assert any(c.size and c.size == c[-1] - c[0] + 1 for c in changed_axes)
        blobs = generate_candidate("false_positive_blobs", reference, seed, ISOTROPIC, LABELS, REGIONS)
        assert np.count_nonzero(blobs) > np.count_nonzero(reference) or np.any(blobs != reference)
        assert not np.array_equal(generate_candidate("erode_dilate", reference, seed, ISOTROPIC, LABELS, REGIONS),
                                  reference)


def test_a_cycled_set_populates_every_dsc_bin(reference):
    cycled = ("seggen", *CLASSIC_FAMILIES)  # the default set
    dscs = {family: [] for family in cycled}
    for seed in range(140):
        family = cycled[seed % len(cycled)]
        candidate = generate_candidate(family, reference, seed, ISOTROPIC, LABELS, REGIONS)
        dscs[family].append(multiclass_dice(reference, candidate))
    counts = np.bincount(dsc_bins(np.concatenate(list(dscs.values()))), minlength=N_BINS)
    assert np.all(counts > 0), counts
    # each classic family on its own reaches both ends of the range
    for family in CLASSIC_FAMILIES:
        assert min(dscs[family]) < .5 < max(dscs[family]), (family, dscs[family])


def test_foreground_bbox():
    label_map = np.zeros((5, 6, 7), np.uint8)
    assert foreground_bbox(label_map) is None
    label_map[1, 2, 3] = 1
    label_map[3, 4, 2] = 2
    assert foreground_bbox(label_map) == [[1, 4], [2, 5], [2, 4]]


def _skull_stripped_view(reference: np.ndarray, margin: int = 3):
    """A view whose non-zero region is a brain-like ellipsoid around the reference, its box well inside the
    image, computed by nnU-Net's functions from an image that is zero outside it."""
    shape = np.array(reference.shape)
    grid = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing='ij', sparse=True)
    brain = sum((g / a) ** 2 for g, a in zip(grid, (18., 26., 19.))) <= 1
    brain |= reference != 0
    image = np.where(brain, 100., 0.).astype(np.float32)
    image[tuple(n // 2 for n in shape)] = 0.  # a hole: nnU-Net fills it, so it is inside the region
    return view_of_images(image[None])


@pytest.mark.parametrize("family", GENERATOR_FAMILIES)
def test_with_a_view_candidates_stay_inside_it_and_stay_deterministic(reference, family):
    view = _skull_stripped_view(reference)
    assert view.nonzero[tuple(n // 2 for n in reference.shape)]
    assert all(lo > 0 and hi < n for (lo, hi), n in zip(view.box, reference.shape))
    for seed in range(8):
        candidate = generate_candidate(family, reference, seed, ISOTROPIC, LABELS, REGIONS, view)
        assert fraction_outside(candidate, view) == 0.0, (family, seed)
        assert np.array_equal(candidate, generate_candidate(family, reference, seed, ISOTROPIC, LABELS, REGIONS,
                                                            view))
        if family == "false_positive_blobs":
            added = (candidate != 0) & (reference == 0)
            assert not (added & ~view.nonzero).any(), seed  # every false positive lies in the non-zero region


def test_blobs_without_a_view_can_land_outside_the_subject(reference):
    """The reason for the view: unconstrained blobs put foreground where the network never looks."""
    view = _skull_stripped_view(reference)
    outside = [fraction_outside(generate_candidate("false_positive_blobs", reference, seed, ISOTROPIC, LABELS,
                                                   REGIONS), view) for seed in range(12)]
    assert max(outside) > 0.05


def _small_lesion() -> np.ndarray:
    """A phantom-size lesion (radius 6-8 voxels): where a few voxels of boundary error cost real DSC."""
    return nested_ellipsoids(shape=(28, 32, 30), radii=(6, 8, 7))


@pytest.mark.parametrize("family", BOUNDARY_FAMILIES)
def test_boundary_families_land_at_the_top_of_the_range(family):
    """Good-but-not-perfect candidates: DSC in [0.5, 1) for every seed, most of them above 0.8, and a surface
    error that a DSC-matched erosion or dilation would not have."""
    for reference in (nested_ellipsoids(), _small_lesion()):
        dscs = []
        for seed in range(16):
            candidate = generate_candidate(family, reference, seed, ISOTROPIC, LABELS, REGIONS)
            dscs.append(multiclass_dice(reference, candidate))
        dscs = np.array(dscs)
        assert dscs.min() >= .5 and np.mean(dscs > .8) >= .75, (family, dscs.round(3))
        assert np.mean(dscs < 1) >= .75, (family, dscs.round(3))


def _distance_to_boundary(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import distance_transform_edt

    return np.where(mask, distance_transform_edt(mask), distance_transform_edt(~mask))


def test_boundary_shift_changes_only_voxels_near_a_boundary():
    reference = _small_lesion()
    near = np.zeros(reference.shape, bool)
    for region in REGIONS:  # near any boundary of an evaluated region or label
        near |= _distance_to_boundary(np.isin(reference, region)) <= degradations_max_shift() + 1
    for label_value in (1, 2, 3):
        near |= _distance_to_boundary(reference == label_value) <= degradations_max_shift() + 1
    for seed in range(10):
        candidate = generate_candidate("boundary_shift", reference, seed, ISOTROPIC, LABELS, REGIONS)
        assert not np.any((candidate != reference) & ~near), seed


def degradations_max_shift() -> float:
    from nnqc.qc_data.boundary_errors import MAX_SHIFT

    return MAX_SHIFT


def test_interface_confusion_only_trades_labels_between_neighbours():
    reference = _small_lesion()
    for seed in range(10):
        candidate = generate_candidate("interface_confusion", reference, seed, ISOTROPIC, LABELS, REGIONS)
        changed = candidate != reference
        assert changed.any(), seed
        assert not np.any(changed & ((reference == 0) | (candidate == 0))), seed  # background never touched
        pairs = {(int(a), int(b)) for a, b in zip(reference[changed], candidate[changed])}
        assert len(pairs) == 1 and pairs <= {(1, 2), (2, 1), (2, 3), (3, 2)}, (seed, pairs)


def test_adjacent_islands_paint_only_background_close_to_the_structure():
    reference = _small_lesion()
    distance = _distance_to_boundary(reference != 0)
    for seed in range(10):
        candidate = generate_candidate("adjacent_islands", reference, seed, ISOTROPIC, LABELS, REGIONS)
        added = candidate != reference
        assert added.any() and not np.any(added & (reference != 0)), seed
        # islands are separate from the structure (a gap of at least one voxel) and stay within its surroundings
        assert distance[added].min() >= 1 and distance[added].max() <= 12, (seed, distance[added].max())


def test_missed_small_parts_only_remove_and_thin_parts_stay_near_the_boundary():
    reference = _small_lesion()
    near = _distance_to_boundary(reference != 0) <= 4
    for label_value in (1, 2, 3):
        near |= _distance_to_boundary(reference == label_value) <= 4
    for seed in range(10):
        missed = generate_candidate("missed_small_parts", reference, seed, ISOTROPIC, LABELS, REGIONS)
        changed = missed != reference
        assert changed.any(), seed
        assert len(np.unique(reference[changed])) == 1, seed  # one label loses voxels
        thin = generate_candidate("thin_parts", reference, seed, ISOTROPIC, LABELS, REGIONS)
        assert not np.any((thin != reference) & ~near), seed
