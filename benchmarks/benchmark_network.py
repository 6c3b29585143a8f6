"""Size, FLOPs, CPU forward time and peak memory of QCResUNet and the baselines, brain configuration.

    python benchmarks/benchmark_network.py [--runs 3] [--threads 2] [--models QCResUNet ResNet34Regressor ...]

Input 1x7x160x192x160 fp32, inference mode. Each model runs in a fresh process so that its peak resident
memory (VmHWM) is its own; the figure includes the Python/torch baseline of that process.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from nnqc.network_architecture import import_object

MODELS = ("QCResUNet", "QCResUNetNoAttention", "QCResUNetNoRegression", "ResNet34Regressor", "ResNet50Regressor",
          "UNetRegressor")
SHAPE = (1, 7, 160, 192, 160)


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(name: str, runs: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    cls = import_object(f"nnqc.network_architecture.{name}")
    with torch.device("meta"):
        meta_model = cls(input_channels=7, num_regions=3).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_model(torch.empty(SHAPE, device="meta"))
    torch.manual_seed(0)
    model = cls(input_channels=7, num_regions=3).eval()
    x = torch.randn(SHAPE)
    times = []
    with torch.inference_mode():
        model(x)  # warm-up
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return {"model": name, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "GFLOPs": counter.get_total_flops() / 1e9, "median_s": statistics.median(times),
            "min_s": min(times), "peak_rss_MB": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.runs, args.threads)))
        return
    print(f"input {SHAPE}, fp32, inference mode, {args.threads} threads, median of {args.runs} runs after a warm-up")
    print(f"{'model':<24}{'params (M)':>12}{'GFLOPs':>10}{'median s':>10}{'min s':>8}{'peak RSS MB':>13}")
    for name in args.models:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--runs", str(args.runs),
                              "--threads", str(args.threads)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['model']:<24}{r['params_M']:>12.3f}{r['GFLOPs']:>10.1f}{r['median_s']:>10.2f}{r['min_s']:>8.2f}"
              f"{r['peak_rss_MB']:>13.0f}", flush=True)


if __name__ == "__main__":
    main()
