"""Throughput, candidate size and memory of nnQC_convert.

Part 1 (default): BraTS-size phantoms (155 x 240 x 240, 1 mm). Every sample is timed as a worker does it
(generate or read the candidate, write it, compute DSC/NSD for the 3 regions); reports samples/s per process,
per generator family, and the median bytes of a candidate file. Targets: >= 2 samples/s, <= 100 kB.
Part 2 (--scale, run on its own so that its memory figures are its own): 10 000 samples from 100 small
phantom subjects with -np 2, the real nnQC_convert path; reports wall time, peak memory (VmHWM of the main
process and of each worker) and disk use.

    python benchmarks/benchmark_convert.py [--subjects 2] [--keep DIR]
    python benchmarks/benchmark_convert.py --scale [-np 2]
"""
import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections import defaultdict

import numpy as np


def _peak_rss_mb(status_file: str = "/proc/self/status") -> float:
    with open(status_file) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class WorkerPeakMemory(threading.Thread):
    """Polls the VmHWM (peak resident memory) of this process's multiprocessing children while they live."""

    def __init__(self, interval_s: float = 0.5):
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak_mb: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval_s):
            for child in multiprocessing.active_children():
                try:
                    self.peak_mb[child.pid] = _peak_rss_mb(f"/proc/{child.pid}/status")
                except OSError:
                    pass


def _folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(r, n)) for r, _, names in os.walk(folder) for n in names)


def brats_throughput(work: str, num_subjects: int, per_family: int) -> dict:
    from dataset_conversion.phantoms import write_phantom_dataset
    from nnqc.metrics import allowed_labels, get_regions, nsd_tolerance_mm
    from nnqc.qc_data.dataset_io import open_source_dataset
    from nnqc.qc_data.layout import CANDIDATE_FILE_ENDING, CANDIDATES_FOLDER
    from nnqc.qc_data.progress import start_or_resume
    from nnqc.qc_data.sample_making import WorkerContext, init_worker, process_sample
    from nnqc.qc_data.sample_plan import degradation_families, plan_samples

    t0 = time.perf_counter()
    source = write_phantom_dataset(801, "BenchBraTS", num_subjects, "brats", (155, 240, 240), (1.0, 1.0, 1.0),
                                   seed=0, num_processes=min(2, num_subjects))
    phantom_s = time.perf_counter() - t0
    dataset = open_source_dataset(source)
    names, regions = get_regions(dataset.dataset_json)
    target = os.path.join(work, "raw", "Dataset802_BenchBraTSQC")
    start_or_resume(target, {})
    context = WorkerContext(target_folder=target, cases=dataset.cases, file_ending=dataset.file_ending,
                            region_names=tuple(names), regions=tuple(regions),
                            labels=allowed_labels(dataset.dataset_json),
                            tolerance_mm=nsd_tolerance_mm(dataset.dataset_json))
    num_degradations = per_family * len(degradation_families())
    plan = plan_samples(dataset.subjects, [], per_family, num_degradations, 0)
    init_worker(context)
    # warm-up (imports, the one-off image copy per subject) untimed; the reference read per subject stays in
    # the timing, as in a worker
    for subject in dataset.subjects:
        process_sample(next(s for s in plan if s.subject == subject))

    seconds, by_family, sizes, dscs = [], defaultdict(list), [], []
    for spec in plan:
        t = time.perf_counter()
        record = process_sample(spec)
        elapsed = time.perf_counter() - t
        seconds.append(elapsed)
        by_family[spec.generator].append(elapsed)
        sizes.append(os.path.getsize(os.path.join(target, CANDIDATES_FOLDER, spec.sample + CANDIDATE_FILE_ENDING)))
        dscs.append(record["dsc"])
    return {
        "shape": [155, 240, 240], "subjects": num_subjects, "samples": len(plan),
        "phantom_generation_s": round(phantom_s, 1),
        "samples_per_s_per_process": round(len(plan) / sum(seconds), 2),
        "median_s_per_sample": round(statistics.median(seconds), 3),
        "max_s_per_sample": round(max(seconds), 3),
        "s_per_sample_by_family": {f: round(statistics.mean(v), 3) for f, v in sorted(by_family.items())},
        "median_candidate_kB": round(statistics.median(sizes) / 1000, 1),
        "max_candidate_kB": round(max(sizes) / 1000, 1),
        "dsc_histogram_10_bins": np.histogram(dscs, bins=np.linspace(0, 1, 11))[0].tolist(),
        "peak_rss_main_MB": round(_peak_rss_mb(), 0),
    }


def scale_run(work: str, num_subjects: int, samples_per_subject: int, num_processes: int) -> dict:
    from dataset_conversion.phantoms import write_phantom_dataset
    from nnqc.qc_data.conversion import convert_dataset

    write_phantom_dataset(811, "BenchScale", num_subjects, "brats", (48, 64, 48), (1.0, 1.0, 1.0), seed=0,
                          num_processes=num_processes)
    num_seggen = 3
    monitor = WorkerPeakMemory()
    monitor.start()
    t0 = time.perf_counter()
    result = convert_dataset(811, 812, num_seggen=num_seggen, num_degradations=samples_per_subject - num_seggen,
                             seed=0, num_processes=num_processes, verbose=True)
    wall = time.perf_counter() - t0
    monitor.stop.set()
    return {
        "subjects": num_subjects, "shape": [48, 64, 48], "samples": result.num_samples, "np": num_processes,
        "wall_s": round(wall, 1), "samples_per_s": round(result.num_samples / wall, 1),
        "peak_rss_main_MB": round(_peak_rss_mb(), 0),
        "peak_rss_workers_MB": sorted(round(v) for v in monitor.peak_mb.values()),
        "dataset_MB": round(_folder_bytes(result.folder) / 1e6, 1),
        "candidates_MB": round(_folder_bytes(os.path.join(result.folder, "candidatesTr")) / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=2, help="BraTS-size phantom subjects (part 1)")
    parser.add_argument("--per_family", type=int, default=2,
                        help="samples per generator family and subject (part 1)")
    parser.add_argument("--scale", action="store_true", help="run part 2 instead (10 000 samples, minutes)")
    parser.add_argument("--scale_subjects", type=int, default=100)
    parser.add_argument("--scale_samples_per_subject", type=int, default=100)
    parser.add_argument("-np", type=int, default=2, help="worker processes of part 2")
    parser.add_argument("--keep", type=str, default=None, help="work in this folder and keep it")
    args = parser.parse_args()

    work = args.keep or tempfile.mkdtemp(prefix="nnqc_bench_convert_")
    os.makedirs(os.path.join(work, "raw"), exist_ok=True)
    os.environ["nnUNet_raw"] = os.path.join(work, "raw")
    for variable in ("nnUNet_preprocessed", "nnUNet_results"):
        os.environ.pop(variable, None)
    try:
        if args.scale:
            results = {"scale": scale_run(work, args.scale_subjects, args.scale_samples_per_subject, args.np)}
        else:
            results = {"brats_size": brats_throughput(work, args.subjects, args.per_family)}
        print(json.dumps(results, indent=2))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
