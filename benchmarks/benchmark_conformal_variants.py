"""Coverage and width of three conformal variants on synthetic QC predictions, to choose nnQC's calibration.

The simulation mimics nnQC's situation: 5 fold models; a sample's prediction = its true DSC, plus a bias
(pessimistic for good segmentations), plus an error shared by all models (what is hard about the sample), plus
a model's own error, heteroscedastic (largest mid-range). Calibration data are out-of-fold: each sample has the
prediction of the one model that did not train on it. New cases get the ensemble mean and the spread (sd) of
the 5 models. Variants, all after isotonic recalibration as nnQC does it (calibration residuals cross-fitted: each
after a map fitted without its group of samples):

- plain: split conformal on the out-of-fold absolute residuals, one quantile for all cases;
- Mondrian: the same per equal-count bin of predicted DSC (nnQC's choice);
- normalised, in-training spread: residuals divided by max(spread, floor), where a calibration sample's spread
  is the sd over the 5 models of which 4 trained on it (the only spread nnQC's calibration data could carry:
  models fit their training samples, so it is too small);
- normalised, held-out spread: the same with the spread of 5 models none of which saw the sample — valid, but
  it needs calibration subjects that no fold trained on, which cross-validation does not leave.

Prints coverage (overall, for true DSC > 0.85, and in the worst predicted-DSC decile) and mean width at
α = 0.1 and 0.2, averaged over repetitions. numpy only; a few seconds.

    python benchmarks/benchmark_conformal_variants.py [--repetitions 50] [--calibration 1000] [--seed 0]
"""
from __future__ import annotations

import argparse

import numpy as np

from nnqc.calibration.conformal import MondrianBins, MondrianConformal
from nnqc.calibration.recalibration import IsotonicMap, cross_fitted, subject_groups

FOLDS = 5
SPREAD_FLOOR = 0.01
IN_TRAINING_SHRINK = 0.3  # a model's own error on a sample it trained on, relative to a new sample's


def simulate(rng: np.random.Generator, n: int) -> dict:
    """True DSC, per-model predictions on held-out samples and on training samples (n, FOLDS)."""
    true = np.clip(rng.beta(5, 1.3, n), 0, 1)
    scale = 0.03 + 0.25 * true * (1 - true)
    bias = -0.08 * np.clip((true - 0.6) / 0.4, 0, 1)
    shared = rng.normal(0, 1, n) * scale
    own = rng.normal(0, 1, (n, FOLDS)) * scale[:, None] * 0.8
    held_out = np.clip(true[:, None] + bias[:, None] + shared[:, None] + own, 0, 1)
    in_training = np.clip(true[:, None] + bias[:, None] + shared[:, None] + IN_TRAINING_SHRINK * own, 0, 1)
    return {"true": true, "held_out": held_out, "in_training": in_training}


def evaluate(intervals, true: np.ndarray, predicted: np.ndarray) -> dict:
    inside = (intervals.lower <= true) & (true <= intervals.upper)
    worst_decile = predicted <= np.quantile(predicted, 0.1)
    return {"coverage": inside.mean(), "coverage_high": inside[true > 0.85].mean(),
            "coverage_low_decile": inside[worst_decile].mean(), "width": intervals.width.mean()}


def one_repetition(rng: np.random.Generator, n_calibration: int, n_test: int, alpha: float) -> dict:
    calibration, test = simulate(rng, n_calibration), simulate(rng, n_test)
    fold = np.arange(n_calibration) % FOLDS
    oof = calibration["held_out"][np.arange(n_calibration), fold]  # one model, the one that held it out
    # the spread the calibration samples could carry: 4 models trained on them, the fold's model did not
    mixed = calibration["in_training"].copy()
    mixed[np.arange(n_calibration), fold] = oof
    in_training_spread = mixed.std(axis=1, ddof=1)
    held_out_mean, held_out_spread = calibration["held_out"].mean(axis=1), calibration["held_out"].std(1, ddof=1)
    test_mean, test_spread = test["held_out"].mean(axis=1), test["held_out"].std(axis=1, ddof=1)
    # as build_calibration does: calibration residuals after a map fitted without the sample's group, new cases
    # after the map fitted on all calibration samples
    groups = subject_groups([str(i) for i in range(n_calibration)])
    mapping = IsotonicMap.fit(oof, calibration["true"])
    oof_point = cross_fitted(oof, calibration["true"], groups)
    results = {}
    variants = {
        "plain": dict(bins=MondrianBins(())),
        "Mondrian": dict(),
        "normalised, in-training spread": dict(bins=MondrianBins(()), spread=in_training_spread),
    }
    for name, options in variants.items():
        conformal = MondrianConformal.fit(oof, calibration["true"], oof_point, spread_floor=SPREAD_FLOOR,
                                          **options)
        spread = test_spread if "spread" in options else None
        results[name] = evaluate(conformal.intervals(test_mean, mapping(test_mean), alpha, spread=spread),
                                 test["true"], test_mean)
    held_out_map = IsotonicMap.fit(held_out_mean, calibration["true"])
    conformal = MondrianConformal.fit(held_out_mean, calibration["true"],
                                      cross_fitted(held_out_mean, calibration["true"], groups),
                                      bins=MondrianBins(()), spread=held_out_spread, spread_floor=SPREAD_FLOOR)
    results["normalised, held-out spread"] = evaluate(
        conformal.intervals(test_mean, held_out_map(test_mean), alpha, spread=test_spread), test["true"], test_mean)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=50)
    parser.add_argument("--calibration", type=int, default=1000, help="out-of-fold calibration samples")
    parser.add_argument("--test", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for alpha in (0.1, 0.2):
        runs = [one_repetition(rng, args.calibration, args.test, alpha) for _ in range(args.repetitions)]
        print(f"\nalpha = {alpha} (target coverage {1 - alpha:.2f}), {args.calibration} calibration samples, "
              f"mean over {args.repetitions} repetitions")
        print(f"{'variant':34s} {'coverage':>9s} {'DSC>0.85':>9s} {'worst 10%':>10s} {'width':>7s}")
        for name in runs[0]:
            mean = {k: np.mean([r[name][k] for r in runs]) for k in runs[0][name]}
            print(f"{name:34s} {mean['coverage']:9.3f} {mean['coverage_high']:9.3f} "
                  f"{mean['coverage_low_decile']:10.3f} {mean['width']:7.3f}")


if __name__ == "__main__":
    main()
