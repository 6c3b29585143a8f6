"""Figures of benchmark_realistic.py: per variant, with 95 % bootstrap intervals over the held-out subjects
(the 18 segmentations of one subject are resampled together), paired against the first variant; and the plot of
DSC against NSD of real segmenters' candidates beside each degradation family's."""
from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from nnqc.evaluation.failure_detection import aurc, optimal_aurc, random_aurc

REPEATS = 2000
HIGH_DSC = 0.85


def _r(true: np.ndarray, predicted: np.ndarray) -> float:
    return float(pearsonr(true, predicted)[0]) if np.ptp(true) > 0 and np.ptp(predicted) > 0 else np.nan


def _rho(true: np.ndarray, predicted: np.ndarray) -> float:
    return float(spearmanr(true, predicted)[0]) if np.ptp(true) > 0 and np.ptp(predicted) > 0 else np.nan


Columns = dict[str, np.ndarray]


def _high_error(t: Columns, column: str) -> float:
    high = t["true_dsc"] > HIGH_DSC
    return float((t[column][high] - t["true_dsc"][high]).mean()) if high.any() and column in t else np.nan


def _gap_closed(t: Columns, confidence: str) -> float:
    risk = 1 - t["true_dsc"]
    best, chance = optimal_aurc(risk), random_aurc(risk)
    return float((chance - aurc(risk, t[confidence])) / (chance - best)) if chance > best else np.nan


def _coverage(t: Columns) -> float:
    if "dsc_lower" not in t:
        return np.nan
    return float(((t["dsc_lower"] <= t["true_dsc"]) & (t["true_dsc"] <= t["dsc_upper"])).mean())


# name -> function of a variant's per-case columns
FIGURES: dict[str, Callable[[Columns], float]] = {
    "DSC r": lambda t: _r(t["true_dsc"], t["predicted_dsc"]),
    "DSC rho": lambda t: _rho(t["true_dsc"], t["predicted_dsc"]),
    "DSC MAE": lambda t: float(np.abs(t["true_dsc"] - t["predicted_dsc"]).mean()),
    "NSD r": lambda t: _r(t["true_nsd"], t["predicted_nsd"]),
    "NSD MAE": lambda t: float(np.abs(t["true_nsd"] - t["predicted_nsd"]).mean()),
    "err>0.85 raw": lambda t: _high_error(t, "predicted_dsc"),
    "err>0.85 recal": lambda t: _high_error(t, "calibrated_dsc"),
    "DSC_SEM": lambda t: float(t["dsc_sem"].mean()),
    "coverage": _coverage,
    "AURC": lambda t: aurc(1 - t["true_dsc"], t["predicted_dsc"]),
    "gap closed": lambda t: _gap_closed(t, "predicted_dsc"),
}
BASELINE_FIGURES = {
    "AURC": lambda t, c: aurc(1 - t["true_dsc"], t[c]),
    "gap closed": _gap_closed,
    "DSC rho": lambda t, c: _rho(t["true_dsc"], t[c]),
}


def columns_of(table: pd.DataFrame) -> Columns:
    """The numeric columns the figures read, as arrays (bootstrap draws index them directly)."""
    names = ["true_dsc", "predicted_dsc", "true_nsd", "predicted_nsd", "calibrated_dsc", "dsc_lower", "dsc_upper"]
    columns = {n: table[n].to_numpy(dtype=np.float64) for n in names if n in table}
    columns["dsc_sem"] = table[[c for c in table.columns if c.startswith("dsc_sem_")]].mean(axis=1).to_numpy()
    return columns


def _take(columns: Columns, rows: np.ndarray) -> Columns:
    return {k: v[rows] for k, v in columns.items()}


def confidence_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Per case: nnQC's predicted DSC, the ensemble agreement, their fusion (cross-fitted by subject: never
    fitted on the case it judges) and the mean of their ranks."""
    from scipy.stats import rankdata

    from nnqc.calibration.fusion import cross_fitted_fusion

    # the assessed segmentation is one of the members here: its DSC to the members is that to the other two
    features = table.assign(dsc_to_members=table["dsc_to_other_members"])
    fused = cross_fitted_fusion(features, table["true_dsc"].to_numpy(), table["subject"].to_numpy())
    return pd.DataFrame({"nnQC": table["predicted_dsc"], "agreement": table["ensemble_agreement"], "fused": fused,
                         "rank mean": (rankdata(table["predicted_dsc"]) + rankdata(table["ensemble_agreement"]))
                         / (2 * len(table))}, index=table.index)


def variant_tables(root: str, cases: pd.DataFrame) -> dict[str, pd.DataFrame]:
    tables = {}
    for file in sorted(glob.glob(os.path.join(root, "variants", "*", "qc_evaluation.csv")),
                       key=os.path.getmtime):
        table = pd.read_csv(file).merge(cases, on="case")
        tables[os.path.basename(os.path.dirname(file))] = table.set_index("case").loc[sorted(cases["case"])]
    return tables


def bootstrap_draws(subjects: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Row indices of each bootstrap replicate: the subjects drawn with replacement, all their rows together."""
    names = np.unique(subjects)
    rows = {s: np.flatnonzero(subjects == s) for s in names}
    rng = np.random.default_rng(seed)
    return [np.concatenate([rows[s] for s in rng.choice(names, len(names))]) for _ in range(REPEATS)]


def _interval(values: list[float]) -> tuple[float, float]:
    low, high = np.nanpercentile(np.array(values, dtype=float), [2.5, 97.5])
    return float(low), float(high)


def figure_draws(tables: dict[str, pd.DataFrame], draws: list[np.ndarray]) -> dict[str, dict[str, tuple]]:
    """Per run and figure: its value on all cases and its values on every bootstrap draw (an array)."""
    result = {}
    for name, table in tables.items():
        columns = columns_of(table)
        result[name] = {figure: (function(columns), np.array([function(_take(columns, i)) for i in draws]))
                        for figure, function in FIGURES.items()}
    return result


def paired_figures(tables: dict[str, pd.DataFrame], draws: list[np.ndarray]) -> tuple[list[str], dict]:
    """Every figure of every run with its bootstrap interval and, after the first run, the paired difference to
    it over the same draws. The tables hold the same cases in the same order."""
    values = figure_draws(tables, draws)
    first_name = next(iter(values))
    lines, summary = [], {}
    for name, figures in values.items():
        lines.append(f"\n{name}:")
        summary[name] = {}
        for figure, (value, drawn) in figures.items():
            low, high = _interval(drawn)
            line = f"  {figure:<15}{value:>8.3f}  [{low:.3f}, {high:.3f}]"
            if name != first_name:
                first_value, first_drawn = values[first_name][figure]
                d_low, d_high = _interval(drawn - first_drawn)
                line += f"   vs {first_name} {value - first_value:+.3f} [{d_low:+.3f}, {d_high:+.3f}]"
            lines.append(line)
            summary[name][figure] = {"value": value, "interval": (low, high)}
    return lines, summary


def group_figures(tables: dict[str, pd.DataFrame], groups: list[str], draws: list[np.ndarray]) -> list[str]:
    """Runs grouped (e.g. repeated trainings of one code version): per group and figure the mean over its runs and
    their standard deviation (the run-to-run spread of training), and after the first group the difference of the
    means with its 95 % subject-bootstrap interval (the runs' means over the same draws)."""
    values = figure_draws(tables, draws)
    names = list(values)
    order = list(dict.fromkeys(groups))
    members = {g: [n for n, group in zip(names, groups) if group == g] for g in order}
    lines = ["\nby group: mean over runs, run-to-run standard deviation (n runs)"
             + "".join(f"; {g} - {order[0]}: difference of means [95 % interval]" for g in order[1:])]
    for figure in FIGURES:
        cells, means = [], {}
        for g in order:
            runs = np.array([values[n][figure][0] for n in members[g]], dtype=float)
            means[g] = np.mean([values[n][figure][1] for n in members[g]], axis=0)
            spread = f"{np.std(runs, ddof=1):.3f}" if len(runs) > 1 else "n/a"
            cells.append(f"{g} {np.mean(runs):.3f} sd {spread} ({len(runs)})")
        for g in order[1:]:
            difference = np.mean([values[n][figure][0] for n in members[g]]) - np.mean(
                [values[n][figure][0] for n in members[order[0]]])
            low, high = _interval(means[g] - means[order[0]])
            cells.append(f"{g} - {order[0]} {difference:+.3f} [{low:+.3f}, {high:+.3f}]")
        lines.append(f"  {figure:<15}" + "   ".join(cells))
    return lines


def report(root: str, cases: pd.DataFrame) -> list[str]:
    tables = variant_tables(root, cases)
    if not tables:
        return ["no finished variant yet"]
    first_name, first = next(iter(tables.items()))
    draws = bootstrap_draws(first["subject"].to_numpy())
    true = first["true_dsc"]
    lines = [f"{len(first)} held-out segmentations of {first['subject'].nunique()} subjects by "
             f"{first['segmenter'].nunique()} segmenters; true DSC min {true.min():.3f}, q10 {true.quantile(.1):.3f},"
             f" median {true.median():.3f}, q90 {true.quantile(.9):.3f}, max {true.max():.3f}; "
             f"{(true.between(.6, .95)).mean():.0%} in [0.6, 0.95]",
             f"optimal AURC {optimal_aurc(1 - true.to_numpy()):.3f}, random {random_aurc(1 - true.to_numpy()):.3f};"
             f" 95 % intervals: {REPEATS} bootstrap draws of the subjects; 'vs {first_name}': paired difference"]
    figure_lines, summary = paired_figures(tables, draws)
    lines += figure_lines
    lines.append("\nfailure detection by confidence (ensemble agreement: mean pairwise DSC of the 3 folds of each "
                 "segmenter and snapshot; fused: nnQC's predicted DSC, the agreement and the DSC to the other "
                 "members, least squares cross-fitted over 5 subject groups; rank mean: mean of the two ranks)")
    for name, table in tables.items():
        confidences = confidence_columns(table)
        columns = {"true_dsc": table["true_dsc"].to_numpy(), **{c: confidences[c].to_numpy() for c in confidences}}
        for confidence in confidences.columns:
            cells = []
            for figure, function in BASELINE_FIGURES.items():
                value = function(columns, confidence)
                low, high = _interval([function(_take(columns, i), confidence) for i in draws])
                cells.append(f"{figure} {value:.3f} [{low:.3f}, {high:.3f}]")
                summary.setdefault(f"{name}: {confidence}", {})[figure] = {"value": value, "interval": (low, high)}
            lines.append(f"  {name:<22}{confidence:<11}" + "  ".join(cells))
        for other in ("nnQC", "agreement"):
            value = _gap_closed(columns, "fused") - _gap_closed(columns, other)
            low, high = _interval([_gap_closed(_take(columns, i), "fused") - _gap_closed(_take(columns, i), other)
                                   for i in draws])
            lines.append(f"  {name:<22}fused - {other}: gap closed {value:+.3f} [{low:+.3f}, {high:+.3f}]")
    with open(os.path.join(root, "realistic_figures.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return lines


def family_plot(source: str, cases: pd.DataFrame, root: str, seeds_per_family: int = 12) -> None:
    """DSC against NSD: the real evaluation candidates, and every degradation family applied to the held-out
    references; printed: per family group, the median distance (in the DSC-NSD plane) from a real candidate to
    the nearest synthetic one of that group (small: the group covers what real segmenters make)."""
    import matplotlib
    import SimpleITK as sitk

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nnqc.metrics import get_regions, quality_targets
    from nnqc.qc_data.generators import BOUNDARY_FAMILIES, CLASSIC_FAMILIES, generate_candidate

    out = os.path.join(root, "dsc_vs_nsd_by_family.png")
    points_file = os.path.join(root, "dsc_vs_nsd_by_family.csv")
    with open(os.path.join(source, "dataset.json")) as f:
        region_names, regions = get_regions(json.load(f))
    if not os.path.isfile(points_file):
        def read(path):
            image = sitk.ReadImage(path)
            return sitk.GetArrayFromImage(image), image.GetSpacing()[::-1]

        rows = []
        segmentations = os.path.join(root, "evaluation", "segmentations")
        for case in cases["case"]:
            reference, spacing = read(os.path.join(root, "evaluation", "references", case + ".nii.gz"))
            t = quality_targets(reference, read(os.path.join(segmentations, case + ".nii.gz"))[0], regions,
                                spacing, 1.0)
            rows.append({"source": "real: " + case.split("__")[1].split("_ep")[0], "dsc": t["dsc"], "nsd": t["nsd"]})
        subjects = sorted(cases["subject"].unique())
        for family in CLASSIC_FAMILIES + BOUNDARY_FAMILIES:
            for k in range(seeds_per_family):
                reference, spacing = read(os.path.join(source, "labelsTs", subjects[k % len(subjects)] + ".nii.gz"))
                candidate = generate_candidate(family, reference, 1000 + k, spacing, [0, 1, 2, 3], regions)
                t = quality_targets(reference, candidate, regions, spacing, 1.0)
                rows.append({"source": family, "dsc": t["dsc"], "nsd": t["nsd"]})
        pd.DataFrame(rows).to_csv(points_file, index=False)
    points = pd.read_csv(points_file)
    real = points[points["source"].str.startswith("real")]
    figure, axis = plt.subplots(figsize=(7, 6))
    for family in CLASSIC_FAMILIES + BOUNDARY_FAMILIES:
        p = points[points["source"] == family]
        axis.scatter(p["dsc"], p["nsd"], s=14, marker="o" if family in CLASSIC_FAMILIES else "^", label=family)
    axis.scatter(real["dsc"], real["nsd"], s=10, c="k", marker="x", label="real nnU-Net candidates")
    axis.set(xlabel="true DSC", ylabel="true NSD", xlim=(0, 1.02), ylim=(0, 1.02),
             title="Real segmenters' candidates beside the degradation families")
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    for group, families in (("classic", CLASSIC_FAMILIES), ("boundary", BOUNDARY_FAMILIES)):
        synthetic = points[points["source"].isin(families)][["dsc", "nsd"]].to_numpy()
        distances = np.min(np.linalg.norm(real[["dsc", "nsd"]].to_numpy()[:, None] - synthetic[None], axis=2), 1)
        print(f"families {group:<9}: median distance from a real candidate to the nearest synthetic one "
              f"{np.median(distances):.3f} (q90 {np.quantile(distances, .9):.3f})")
    print(f"plot: {out}")
