"""How many mutated inputs nnQC's input checks get right: the fuzzing of tests/test_fuzz_inputs.py, run long.

    python benchmarks/benchmark_fuzz_inputs.py [--examples 5000] [--seed 0] [--layouts 2000] [--model_folder DIR]

Each example is a small case (four image channels, a reference, a segmentation; NIfTI .nii.gz/.nii or NRRD
gzip/raw) with one to three mutations (headers, bodies, voxel values, shapes, grids; see fuzz_inputs.py), fed to
what nnQC_predict checks per case (nnQCPredictor.preprocess_files) and to nnQC_convert's subject checks. Printed:
how many were tried and, per check, how many were accepted (and verified valid by an independent re-read), refused
(by reason), crashed (an exception other than the check's own error type, or a message naming no file), passed
silently (accepted although invalid) and refused although valid; then the same for random input folder layouts
(check_input_folders, find_cases). Examples run in forked worker processes, a chunk each, so that a crash of the
process itself (a segmentation fault in a reader) is counted and the run goes on with the next chunk.

The predictor is a model folder's (--model_folder) or, by default, an untrained one on a tiny phantom dataset built
in a temporary folder (planning only; preprocessing does not depend on the weights). Exit status 1 when anything
crashed or passed silently.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter

PHANTOM_SHAPE = (24, 28, 24)


def build_model(base: str, seed: int) -> str:
    """An untrained model folder on a tiny phantom QC dataset under `base` (nnU-Net's folders pointed there)."""
    from benchmark_predict import build_datasets, point_nnunet_folders_to, write_untrained_model

    point_nnunet_folders_to(base)
    _, dataset_name = build_datasets(3, 1, seed, shape=PHANTOM_SHAPE)
    return write_untrained_model(dataset_name, 1, None)


_MODEL: tuple | None = None  # (predictor, number of channels, labels), inherited by the forked workers


def _run_chunk(connection, seed: int, count: int, skip: int, folder: str) -> None:
    """Worker: `count` examples drawn with `seed` (the same ones for the same seed), the first `skip` of them drawn
    but not run (a restart after a dead process); sends ("start", description) before and ("done", outcomes)
    after each run, so that the parent knows which example a dead process was running."""
    import fuzz_inputs as fuzz
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    predictor, num_channels, labels = _MODEL
    drawn = [0]

    @hypothesis_seed(seed)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(fuzz.examples(num_channels))
    def one(example):
        drawn[0] += 1
        if drawn[0] <= skip:
            return
        connection.send(("start", example.describe()))
        outcomes = fuzz.run_example(example, folder, predictor, num_channels, labels)
        connection.send(("done", [(o.check, o.outcome, o.message) for o in outcomes]))

    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # the readers' C libraries and nnU-Net print about odd files, at every example
    os.dup2(null, 2)
    with fuzz.quiet_readers():
        one()
    connection.send(("end", None))


def fuzz_cases(num_examples: int, seed: int, chunk: int, folder: str) -> tuple[Counter, Counter, list[str], int]:
    """Counts of (check, outcome), of (check, refusal reason), up to 20 failure reports, number of examples."""
    import fuzz_inputs as fuzz

    outcomes, reasons, failures, tried = Counter(), Counter(), [], 0
    context = multiprocessing.get_context("fork")
    for i, start in enumerate(range(0, num_examples, chunk)):
        count, done = min(chunk, num_examples - start), 0
        while done < count:  # a dead worker is counted and replaced; its successor goes on after the example
            receiver, sender = context.Pipe(duplex=False)
            worker = context.Process(target=_run_chunk, args=(sender, seed * 1_000_003 + i, count, done,
                                                              os.path.join(folder, "case")))
            worker.start()
            sender.close()
            current, ended = None, False
            while True:
                try:
                    kind, payload = receiver.recv()
                except EOFError:
                    break
                if kind == "start":
                    current = payload
                    tried += 1
                    done += 1
                elif kind == "done":
                    for check, outcome, message in payload:
                        outcomes[(check, outcome)] += 1
                        if outcome == "refused":
                            reasons[(check, fuzz.reason_kind(message))] += 1
                        elif outcome != "accepted" and len(failures) < 20:
                            failures.append(f"{current}: {check} {outcome}: {message.strip()[-600:]}")
                    current = None
                else:
                    ended = True
            worker.join()
            if ended:
                break
            outcomes[("process", "crash")] += 1
            if len(failures) < 20:
                failures.append(f"the worker process died (exit status {worker.exitcode}) running: {current}")
            if current is None:  # died outside an example: do not loop on it
                break
        bad = sum(n for (_, outcome), n in outcomes.items() if outcome in ("crash", "silent acceptance"))
        print(f"  {tried}/{num_examples} cases tried, {bad} crashes or silent acceptances so far", file=sys.stderr,
              flush=True)
    return outcomes, reasons, failures, tried


def fuzz_layouts(num_examples: int, seed: int, folder: str) -> tuple[Counter, list[str]]:
    """Counts of outcomes of random input folder layouts, and up to 10 failure reports."""
    import fuzz_inputs as fuzz
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    counts, failures = Counter(), []
    if not num_examples:
        return counts, failures

    @hypothesis_seed(seed)
    @settings(max_examples=num_examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(fuzz.layouts(4))
    def one(layout):
        outcome = fuzz.run_layout(layout, os.path.join(folder, "layout"), 4)
        counts[outcome.outcome] += 1
        if outcome.outcome not in ("accepted", "refused") and len(failures) < 10:
            failures.append(f"{layout}: {outcome.outcome}: {outcome.message[-600:]}")

    one()
    return counts, failures


def _line(counts: Counter, check: str) -> str:
    return (f"accepted {counts[(check, 'accepted')]} (verified valid), refused {counts[(check, 'refused')]}, "
            f"crashed {counts[(check, 'crash')]}, passed silently {counts[(check, 'silent acceptance')]}, "
            f"refused although valid {counts[(check, 'refused although valid')]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=5000, help="mutated cases to try (default 5000)")
    parser.add_argument("--layouts", type=int, default=2000, help="input folder layouts to try (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the example generation (default 0)")
    parser.add_argument("--chunk", type=int, default=250, help="examples per worker process (default 250)")
    parser.add_argument("--model_folder", default=None,
                        help="a trained nnQC model folder (default: an untrained one on a tiny phantom dataset)")
    args = parser.parse_args()
    global _MODEL
    with tempfile.TemporaryDirectory(prefix="nnqc_fuzz_") as base:
        model_folder = args.model_folder or build_model(os.path.join(base, "nnunet"), args.seed)
        import fuzz_inputs as fuzz

        from nnqc.metrics.regions import allowed_labels

        with fuzz.quiet_readers():
            predictor = fuzz.preprocessing_predictor(model_folder)
        _MODEL = (predictor, len(predictor.dataset_json["channel_names"]),
                  tuple(allowed_labels(predictor.dataset_json)))
        start = time.perf_counter()
        outcomes, reasons, failures, tried = fuzz_cases(args.examples, args.seed, args.chunk, base)
        case_seconds = time.perf_counter() - start
        start = time.perf_counter()
        layouts, layout_failures = fuzz_layouts(args.layouts, args.seed, base)
        layout_seconds = time.perf_counter() - start
    print(f"fuzzed cases: {tried} tried (seed {args.seed}, {case_seconds:.0f} s, "
          f"{1000 * case_seconds / max(tried, 1):.0f} ms each; formats {', '.join(fuzz.FORMATS)})")
    for check, what in (("predict", "nnQC_predict's per-case checks (nnQCPredictor.preprocess_files)"),
                        ("convert", "nnQC_convert's subject checks (geometry, labels, external candidate)")):
        print(f"  {what}:\n    {_line(outcomes, check)}")
        kinds = sorted(((n, kind) for (c, kind), n in reasons.items() if c == check), reverse=True)
        print("    refusals by reason: " + ", ".join(f"{kind} {n}" for n, kind in kinds))
    print(f"  worker processes that died (segmentation fault, abort): {outcomes[('process', 'crash')]}")
    print(f"folder layouts: {sum(layouts.values())} tried ({layout_seconds:.0f} s): accepted {layouts['accepted']}, "
          f"refused {layouts['refused']}, crashed {layouts['crash']}, passed silently "
          f"{layouts['silent acceptance']}, refused although valid {layouts['refused although valid']}")
    crashes = sum(n for (_, outcome), n in outcomes.items() if outcome == "crash") + layouts["crash"]
    silent = outcomes[("predict", "silent acceptance")] + outcomes[("convert", "silent acceptance")] \
        + layouts["silent acceptance"]
    print(f"total: {tried + sum(layouts.values())} inputs tried, {crashes} crashes, {silent} silent acceptances")
    for failure in failures + layout_failures:
        print(f"  - {failure}")
    return 1 if crashes or silent else 0


if __name__ == "__main__":
    sys.exit(main())
