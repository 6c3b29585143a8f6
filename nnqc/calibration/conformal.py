"""Conformal prediction intervals for predicted quality, Mondrian per bin of predicted DSC.

Split conformal on absolute residuals: with n calibration residuals s_i = |y_i - f(x_i)| of a model that never
saw the calibration samples, the interval f(x) ± q, with q the ceil((n + 1)(1 - α))-th smallest s_i, holds the
true value with probability at least 1 - α for a new exchangeable sample (Vovk et al. 2005; Lei et al. 2018).
When ceil((n + 1)(1 - α)) > n no finite q gives that guarantee: the interval is then the whole range [0, 1],
and it says so (`finite` False).

Mondrian: the guarantee is made to hold within each bin of the predicted DSC separately (calibrating each bin
on its own residuals), so that the high-quality range, where most real segmentations lie and where a wrong
"pass" is costly, gets its own coverage rather than borrowing it from easy failures. Bins are chosen on the
calibration predictions only (never on their errors): equal-count bins (quantiles of the predicted DSC, so
that dense ranges get finer bins), as many as allow at least `min_samples_per_bin` samples each, at most
`max_bins`, and a bin left sparser than that by tied predictions is merged with its sparser neighbour.
At the default 40 samples a bin supports α down to 1/41 with a finite interval, and the coverage conditional on
the calibration set has a standard deviation of about sqrt(α(1 - α)/n) ≈ 0.05 at α = 0.1.

Normalised variant: residuals divided by max(spread, floor), the interval f(x) ± q · max(spread, floor). It is
valid only when the calibration samples carry a spread of the same kind as the test cases; see
benchmarks/benchmark_conformal_variants.py for why nnQC's calibration does not use it.

Intervals are clipped to [0, 1], the range of DSC and NSD; clipping never loses coverage.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_SAMPLES_PER_BIN = 40
MAX_BINS = 10
DEFAULT_ALPHA = 0.1
DEFAULT_SPREAD_FLOOR = 0.01


def check_alpha(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1 (coverage 1 - alpha), got {alpha}")
    return float(alpha)


def conformal_rank(n: int, alpha: float) -> int:
    """ceil((n + 1)(1 - α)): the rank of the calibration score that bounds the interval (may exceed n)."""
    # the small tolerance keeps e.g. (9 + 1) * 0.9 = 9.000000000000002 from rounding up to 10
    return int(math.ceil((n + 1) * (1 - check_alpha(alpha)) - 1e-9))


def minimum_calibration_samples(alpha: float) -> int:
    """The fewest calibration samples that give a finite interval at coverage 1 - α."""
    return int(math.ceil((1 - check_alpha(alpha)) / alpha - 1e-9))


def conformal_quantile(scores: Sequence[float], alpha: float) -> float:
    """The finite-sample conformal quantile of `scores`: its ceil((n + 1)(1 - α))-th smallest value, inf when
    there are too few scores for that rank."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    rank = conformal_rank(scores.size, alpha)
    if rank > scores.size:
        return float("inf")
    return float(np.partition(scores, rank - 1)[rank - 1])


@dataclass(frozen=True)
class MondrianBins:
    """Bins of the predicted DSC: bin i holds values in [edges[i - 1], edges[i]) (the first from -inf, the last
    to +inf), so every prediction falls in exactly one bin."""
    edges: tuple[float, ...]

    @property
    def num_bins(self) -> int:
        return len(self.edges) + 1

    def assign(self, predicted: Sequence[float] | float) -> np.ndarray:
        return np.searchsorted(np.asarray(self.edges, dtype=np.float64),
                               np.asarray(predicted, dtype=np.float64), side="right")

    def ranges(self) -> list[tuple[float, float]]:
        bounds = [-math.inf, *self.edges, math.inf]
        return list(zip(bounds[:-1], bounds[1:]))


def choose_bins(predicted: Sequence[float], min_samples_per_bin: int = MIN_SAMPLES_PER_BIN,
                max_bins: int = MAX_BINS) -> MondrianBins:
    """Equal-count bins of the calibration predictions with at least `min_samples_per_bin` samples each
    (one bin when there are fewer than twice that many)."""
    predicted = np.sort(np.asarray(predicted, dtype=np.float64).ravel())
    num_bins = int(min(max_bins, predicted.size // max(min_samples_per_bin, 1)))
    if num_bins <= 1:
        return MondrianBins(())
    # edges halfway between neighbouring order statistics, so that no calibration value sits on an edge
    positions = [int(round(j * predicted.size / num_bins)) for j in range(1, num_bins)]
    edges = sorted({float((predicted[p - 1] + predicted[p]) / 2) for p in positions
                    if predicted[p - 1] < predicted[p]})
    while edges:
        counts = np.bincount(MondrianBins(tuple(edges)).assign(predicted), minlength=len(edges) + 1)
        sparsest = int(np.argmin(counts))
        if counts[sparsest] >= min_samples_per_bin:
            break
        # merge with the sparser neighbour: drop the edge between them
        if sparsest == 0:
            edges.pop(0)
        elif sparsest == len(counts) - 1:
            edges.pop()
        else:
            edges.pop(sparsest - 1 if counts[sparsest - 1] <= counts[sparsest + 1] else sparsest)
    return MondrianBins(tuple(edges))


def nonconformity_scores(true: Sequence[float], point: Sequence[float], spread: Sequence[float] | None = None,
                         spread_floor: float = DEFAULT_SPREAD_FLOOR) -> np.ndarray:
    """|true - point|, divided by max(spread, floor) for the normalised variant."""
    scores = np.abs(np.asarray(true, dtype=np.float64) - np.asarray(point, dtype=np.float64))
    if spread is not None:
        scores = scores / np.maximum(np.asarray(spread, dtype=np.float64), spread_floor)
    return scores


@dataclass
class Intervals:
    """Per case: the interval [lower, upper] around `point`, its Mondrian bin, how many calibration samples
    that bin has and whether they sufficed for a finite interval at the requested coverage."""
    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    bin: np.ndarray
    num_calibration: np.ndarray
    finite: np.ndarray
    alpha: float

    @property
    def width(self) -> np.ndarray:
        return self.upper - self.lower


class MondrianConformal:
    """Calibrated residual quantiles per bin; `intervals` turns point predictions into intervals."""

    def __init__(self, bins: MondrianBins, scores_per_bin: Sequence[Sequence[float]], normalised: bool = False,
                 spread_floor: float = DEFAULT_SPREAD_FLOOR):
        if len(scores_per_bin) != bins.num_bins:
            raise ValueError(f"{len(scores_per_bin)} score lists for {bins.num_bins} bins")
        self.bins = bins
        self.scores_per_bin = [np.sort(np.asarray(s, dtype=np.float64).ravel()) for s in scores_per_bin]
        self.normalised, self.spread_floor = normalised, float(spread_floor)

    @classmethod
    def fit(cls, bin_values: Sequence[float], true: Sequence[float], point: Sequence[float],
            bins: MondrianBins | None = None, spread: Sequence[float] | None = None,
            spread_floor: float = DEFAULT_SPREAD_FLOOR, min_samples_per_bin: int = MIN_SAMPLES_PER_BIN
            ) -> MondrianConformal:
        """Calibrate on samples that the model never saw. bin_values: what the bins are of (the network's
        predicted DSC); point: the prediction the interval is centred on (after recalibration); spread: per
        sample, for the normalised variant. bins=MondrianBins(()) gives plain split conformal."""
        bin_values = np.asarray(bin_values, dtype=np.float64)
        if bins is None:
            bins = choose_bins(bin_values, min_samples_per_bin)
        scores = nonconformity_scores(true, point, spread, spread_floor)
        which = bins.assign(bin_values)
        return cls(bins, [scores[which == b] for b in range(bins.num_bins)], spread is not None, spread_floor)

    def quantiles(self, alpha: float) -> np.ndarray:
        return np.array([conformal_quantile(s, alpha) for s in self.scores_per_bin])

    def intervals(self, bin_values: Sequence[float], point: Sequence[float], alpha: float = DEFAULT_ALPHA,
                  spread: Sequence[float] | None = None) -> Intervals:
        """Intervals at coverage 1 - α, clipped to [0, 1]; [0, 1] where the bin has too few samples."""
        if self.normalised and spread is None:
            raise ValueError("this calibration is normalised by the spread: give the cases' spread")
        point = np.atleast_1d(np.asarray(point, dtype=np.float64))
        which = np.atleast_1d(self.bins.assign(bin_values))
        half_width = self.quantiles(alpha)[which]
        if self.normalised:
            half_width = half_width * np.maximum(np.atleast_1d(np.asarray(spread, dtype=np.float64)),
                                                 self.spread_floor)
        finite = np.isfinite(half_width)
        lower = np.where(finite, np.clip(point - half_width, 0, 1), 0.0)
        upper = np.where(finite, np.clip(point + half_width, 0, 1), 1.0)
        counts = np.array([s.size for s in self.scores_per_bin])[which]
        return Intervals(point, lower, upper, which, counts, finite, float(alpha))
