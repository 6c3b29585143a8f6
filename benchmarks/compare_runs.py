"""Two or more QC runs on the same cases side by side: DSC and NSD Pearson r and MAE, Spearman, DSC_SEM, interval
coverage, AURC and the mean error above true DSC 0.85, each with a 95 % bootstrap interval over subjects and the
paired difference to the first run (the same draws for every run).

    python benchmarks/compare_runs.py RUN [RUN ...] [--subject_pattern REGEX] [--names NAME ...]
                                      [--groups GROUP ...]

Each RUN is an nnQC_predict output folder evaluated by nnQC_evaluate (its qc_evaluation.csv). A case's subject is
the first group of --subject_pattern matched against its name (default: the name without its last "_part", as
benchmark_learning.py names its candidates), so that a subject's candidates are drawn together. --groups gives
each run a group (e.g. before before before after after after, from benchmark_learning.py --repeats 3): per group
the mean of every figure over its runs and their standard deviation, the run-to-run spread of training, and the
difference of the groups' means.
"""
import argparse
import os
import re
import sys

import pandas as pd
from realistic_figures import REPEATS, bootstrap_draws, group_figures, paired_figures


def read_runs(runs: list[str], names: list[str], subject_pattern: str) -> dict[str, pd.DataFrame]:
    """The runs' evaluation tables on their common cases in one order, with a subject column; a run that lacks a
    case another has is refused, naming both."""
    tables = {}
    for name, run in zip(names, runs):
        file = os.path.join(run, "qc_evaluation.csv")
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{file} does not exist: run nnQC_evaluate on {run} first")
        tables[name] = pd.read_csv(file).set_index("case")
    first_name, first = next(iter(tables.items()))
    for name, table in tables.items():
        missing = sorted(set(first.index) ^ set(table.index))
        if missing:
            raise ValueError(f"{name} and {first_name} assessed different cases, e.g. {missing[:3]}")
    pattern = re.compile(subject_pattern)
    cases = sorted(first.index)
    subjects = []
    for case in cases:
        match = pattern.fullmatch(case)
        if match is None:
            raise ValueError(f"case {case} does not match --subject_pattern {subject_pattern!r}")
        subjects.append(match.group(1))
    return {name: table.loc[cases].assign(subject=subjects) for name, table in tables.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="nnQC_predict output folders with qc_evaluation.csv")
    parser.add_argument("--names", nargs="+", default=None, help="a name per run (default: the folder names)")
    parser.add_argument("--subject_pattern", default=r"(.+)_[^_]+",
                        help="regular expression whose first group is a case's subject (default %(default)s)")
    parser.add_argument("--groups", nargs="+", default=None, help="a group per run: figures per group over its runs")
    args = parser.parse_args()
    names = args.names or [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(names) != len(args.runs) or len(set(names)) != len(names):
        parser.error("--names needs one distinct name per run")
    if args.groups is not None and len(args.groups) != len(args.runs):
        parser.error("--groups needs one group per run")
    tables = read_runs(args.runs, names, args.subject_pattern)
    first = next(iter(tables.values()))
    print(f"{len(first)} cases of {first['subject'].nunique()} subjects; 95 % intervals from {REPEATS} bootstrap "
          f"draws of the subjects; 'vs {names[0]}': paired difference")
    draws = bootstrap_draws(first["subject"].to_numpy())
    lines, _ = paired_figures(tables, draws)
    if args.groups is not None:
        lines += group_figures(tables, args.groups, draws)
    for line in lines:
        print(line)


if __name__ == "__main__":
    sys.exit(main())
