"""DSC-bin balancing of QC samples (QCResUNet paper §2.2, after Robinson et al. 2018).

Candidates from real segmenters are mostly good, so a QC regressor trained on them as they come learns to
predict "good" for everything. The DSC range [0, 1] is cut into 10 equal bins: training draws every batch
evenly over the non-empty bins, afresh at each iteration, so the model sees as many samples as possible
without being skewed towards low or high quality; evaluation sets are resampled once, deterministically,
to the smallest non-empty bin count so that every quality level weighs the same in the reported metrics.

Training may use other bins (nnQCTrainer.dsc_bin_edges): TOP_WEIGHTED_EDGES halves the bins above DSC 0.6,
where real segmenters' candidates lie, so that more of every batch tells nearly good from good apart.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_BINS = 10
# interior edges: 6 bins of 0.1 up to 0.6, then 8 of 0.05 (57 % of the draws above 0.6 instead of 40 %)
TOP_WEIGHTED_EDGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def _checked_dsc(dsc: np.ndarray) -> np.ndarray:
    values = np.asarray(dsc, dtype=np.float64)
    if np.any(~np.isfinite(values)) or np.any((values < 0) | (values > 1)):
        bad = values[~(np.isfinite(values) & (values >= 0) & (values <= 1))]
        raise ValueError(f"DSC values must lie in [0, 1]; got {bad[:5].tolist()}")
    return values


def dsc_bins(dsc: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin index of each DSC: bin k holds [k / n_bins, (k + 1) / n_bins), and 1.0 falls in the last bin.

    The edges are the floats k / n_bins, so 0.3 lands in bin 3 although 0.3 * 10 is not exactly 3.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    values = _checked_dsc(dsc)
    bins = np.clip(np.floor(values * n_bins).astype(np.int64), 0, n_bins - 1)
    # floating-point products can miss an edge by one ulp; settle against the edges themselves
    bins += (bins < n_bins - 1) & ((bins + 1) / n_bins <= values)
    bins -= (bins > 0) & (bins / n_bins > values)
    return bins


def bins_by_edges(dsc: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin index of each DSC for interior edges e_1 < ... < e_{K-1} in (0, 1): bin k holds [e_k, e_{k+1}) with
    e_0 = 0, and 1.0 falls in the last bin (the equal bins of dsc_bins are the edges k / n_bins)."""
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or np.any(np.diff(edges) <= 0) or np.any((edges <= 0) | (edges >= 1)):
        raise ValueError(f"DSC bin edges must increase strictly inside (0, 1); got {edges.tolist()}")
    return np.searchsorted(edges, _checked_dsc(dsc), side="right").astype(np.int64)


def _members_per_bin(dscs: Sequence[float], n_bins: int, edges: Sequence[float] | None = None) -> list[np.ndarray]:
    """Indices of the samples of every non-empty bin, bins in ascending order (equal bins unless `edges`)."""
    values = np.asarray(dscs, dtype=np.float64).reshape(-1)
    bins = dsc_bins(values, n_bins) if edges is None else bins_by_edges(values, edges)
    return [members for b in np.unique(bins) if (members := np.flatnonzero(bins == b)).size]


class BalancedBatchSampler:
    """Draws training batches spread evenly over the non-empty DSC bins, stochastically at every call.

    Per batch, the bins are chosen uniformly at random without repeats while the batch is no larger than
    the number of non-empty bins (so a batch of 4 over 10 bins covers 4 different quality levels); larger
    batches take every bin the same number of times (round robin) plus distinct random bins for the rest.
    Inside a chosen bin one sample is drawn uniformly; a bin chosen several times gives distinct samples
    while it has enough. `edges` (interior bin edges) replaces the n_bins equal bins.
    """

    def __init__(self, dscs: Sequence[float], batch_size: int, seed: int | None = None,
                 n_bins: int = N_BINS, edges: Sequence[float] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.members = _members_per_bin(dscs, n_bins, edges)
        if not self.members:
            raise ValueError("BalancedBatchSampler needs at least one sample")
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)

    def sample_batch(self) -> np.ndarray:
        """Indices into `dscs` for one batch (int64, length batch_size)."""
        n_nonempty = len(self.members)
        full_rounds, remainder = divmod(self.batch_size, n_nonempty)
        chosen = np.concatenate([np.repeat(np.arange(n_nonempty), full_rounds),
                                 self.rng.choice(n_nonempty, remainder, replace=False)]).astype(np.int64)
        bins, counts = np.unique(chosen, return_counts=True)
        batch = np.concatenate([self.rng.choice(self.members[b], c, replace=c > len(self.members[b]))
                                for b, c in zip(bins, counts)])
        return self.rng.permutation(batch).astype(np.int64)


def balanced_subset(dscs: Sequence[float], n_bins: int = N_BINS, seed: int = 0) -> np.ndarray:
    """Deterministic evaluation subset: every non-empty bin resampled to the smallest non-empty bin count.

    Same input, same output (the draw is seeded); returns sorted indices into `dscs`.
    """
    members = _members_per_bin(dscs, n_bins)
    if not members:
        return np.zeros(0, dtype=np.int64)
    smallest = min(len(m) for m in members)
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(m, smallest, replace=False) for m in members])).astype(np.int64)
