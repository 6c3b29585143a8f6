"""DSC-bin balancing: bin edges, balanced stochastic batches, deterministic evaluation subsets."""
import numpy as np
import pytest

from nnqc.sampling import N_BINS, TOP_WEIGHTED_EDGES, BalancedBatchSampler, balanced_subset, bins_by_edges, dsc_bins

# a skewed set as real segmenters produce it: mostly good, few bad; bin 2 empty
BIN_COUNTS = [3, 5, 0, 8, 12, 20, 40, 90, 200, 600]


def skewed_dscs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dscs = np.concatenate([rng.uniform(b / 10, (b + 1) / 10, n) for b, n in enumerate(BIN_COUNTS)])
    return rng.permutation(dscs)


def test_dsc_bins_edges():
    assert dsc_bins(np.array([0., .05, .1, .3, .7, .99999, 1.])).tolist() == [0, 0, 1, 3, 7, 9, 9]
    assert dsc_bins(np.arange(11) / 10).tolist() == list(range(10)) + [9]
    # float products miss exact edges for some bin counts (15/22 * 22 < 15): the edges still hold
    for n_bins in (7, 22, 43):
        edges = np.arange(n_bins + 1) / n_bins
        assert dsc_bins(edges, n_bins).tolist() == list(range(n_bins)) + [n_bins - 1]
        below = np.nextafter(edges[1:-1], 0)
        assert dsc_bins(below, n_bins).tolist() == list(range(n_bins - 1))
    for bad in ([1.2], [-.1], [np.nan]):
        with pytest.raises(ValueError):
            dsc_bins(np.array(bad))


def test_batches_are_balanced_over_non_empty_bins():
    dscs = skewed_dscs()
    bins = dsc_bins(dscs)
    sampler = BalancedBatchSampler(dscs, batch_size=4, seed=1)
    counts = np.zeros(N_BINS)
    n_batches = 4000
    for _ in range(n_batches):
        batch = sampler.sample_batch()
        assert batch.shape == (4,) and batch.dtype == np.int64
        assert len(set(bins[batch].tolist())) == 4, "a bin repeated within a batch"
        counts += np.bincount(bins[batch], minlength=N_BINS)
    assert counts[2] == 0
    non_empty = counts[np.array(BIN_COUNTS) > 0]
    expected = 4 * n_batches / len(non_empty)
    chi_square = np.sum((non_empty - expected) ** 2 / expected)
    assert chi_square < 30, (chi_square, counts)   # 8 degrees of freedom: p < 1e-3 for 30
    # natural frequencies would give chi-square in the thousands: the check can fail
    natural = np.array([n for n in BIN_COUNTS if n]) / sum(BIN_COUNTS) * 4 * n_batches
    assert np.sum((natural - expected) ** 2 / expected) > 1000


def test_samples_inside_a_bin_are_uniform():
    dscs = skewed_dscs()
    small_bin = np.flatnonzero(dsc_bins(dscs) == 1)
    sampler = BalancedBatchSampler(dscs, batch_size=9, seed=2)
    drawn = np.concatenate([sampler.sample_batch() for _ in range(3000)])
    hits = np.array([np.count_nonzero(drawn == i) for i in small_bin])
    assert hits.min() > .8 * hits.mean() and hits.max() < 1.2 * hits.mean()


def test_large_batches_cycle_over_bins():
    dscs = skewed_dscs()
    bins = dsc_bins(dscs)
    sampler = BalancedBatchSampler(dscs, batch_size=20, seed=3)
    for _ in range(50):
        batch = sampler.sample_batch()
        per_bin = np.bincount(bins[batch], minlength=N_BINS)[np.array(BIN_COUNTS) > 0]
        assert per_bin.min() == 2 and per_bin.max() == 3 and per_bin.sum() == 20
        # the three samples of bin 0 are distinct when a bin is drawn at most as often as it has members
        assert len(set(batch[bins[batch] == 0].tolist())) == np.count_nonzero(bins[batch] == 0)


def test_sampler_is_seeded_and_stochastic():
    dscs = skewed_dscs()
    first = [BalancedBatchSampler(dscs, 4, seed=5).sample_batch() for _ in range(2)]
    assert np.array_equal(first[0], first[1])
    sampler = BalancedBatchSampler(dscs, 4, seed=5)
    batches = [sampler.sample_batch() for _ in range(20)]
    assert len({tuple(b) for b in batches}) > 15
    with pytest.raises(ValueError):
        BalancedBatchSampler([], 4)


def test_balanced_subset_is_equal_per_bin_and_deterministic():
    dscs = skewed_dscs()
    subset = balanced_subset(dscs)
    counts = np.bincount(dsc_bins(dscs[subset]), minlength=N_BINS)
    smallest = min(n for n in BIN_COUNTS if n)
    assert counts.tolist() == [smallest if n else 0 for n in BIN_COUNTS]
    assert np.array_equal(subset, np.sort(subset)) and len(set(subset.tolist())) == len(subset)
    assert np.array_equal(subset, balanced_subset(dscs.copy()))
    assert not np.array_equal(subset, balanced_subset(dscs, seed=1))
    assert balanced_subset([]).size == 0


def test_bins_by_edges_hold_their_left_edge_and_one_in_the_last_bin():
    edges = [0.25, 0.6, 0.9]
    values = np.array([0.0, np.nextafter(0.25, 0), 0.25, 0.59, 0.6, 0.899, 0.9, 1.0])
    assert bins_by_edges(values, edges).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # equal edges k / n are dsc_bins' bins, on the edges themselves and one ulp below them
    for n_bins in (10, 22):
        equal = np.arange(1, n_bins) / n_bins
        probe = np.concatenate([np.arange(n_bins + 1) / n_bins, np.nextafter(equal, 0), skewed_dscs()])
        assert np.array_equal(bins_by_edges(probe, equal), dsc_bins(probe, n_bins))
    for bad in ([0.5, 0.5], [0.0, 0.5], [0.5, 1.0], [0.7, 0.3]):
        with pytest.raises(ValueError, match="edges"):
            bins_by_edges(values, bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bins_by_edges(np.array([1.5]), edges)


def test_top_weighted_bins_draw_more_of_every_batch_above_0_6():
    """Candidates spread evenly over [0, 1]: the equal bins put 4 of 10 draws above DSC 0.6, the top-weighted ones
    8 of 14 (binomial standard error over 16000 draws: 0.004)."""
    dscs = np.random.default_rng(7).uniform(0, 1, 5000)
    share_above = {}
    for name, edges in (("equal", None), ("top", TOP_WEIGHTED_EDGES)):
        sampler = BalancedBatchSampler(dscs, batch_size=4, seed=11, edges=edges)
        drawn = np.concatenate([sampler.sample_batch() for _ in range(4000)])
        share_above[name] = float(np.mean(dscs[drawn] >= 0.6))
        # every batch still spreads over distinct bins
        batch = sampler.sample_batch()
        bins = dsc_bins(dscs[batch]) if edges is None else bins_by_edges(dscs[batch], edges)
        assert len(set(bins.tolist())) == 4
    assert abs(share_above["equal"] - 4 / 10) < 0.015
    assert abs(share_above["top"] - 8 / 14) < 0.015
