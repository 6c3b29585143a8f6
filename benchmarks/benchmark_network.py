"""Size, FLOPs, CPU forward time and peak memory of QCResUNet and the baselines, brain configuration, in fp32
and bf16 side by side; with --agreement, how far bf16 outputs lie from fp32 and what the fp32 parts buy.

    python benchmarks/benchmark_network.py [--runs 3] [--threads 2] [--models QCResUNet ResNet34Regressor ...]
    python benchmarks/benchmark_network.py --agreement [--threads 2]

Input 1x7x160x192x160 (4 smoothed noise image channels, 3 nested-sphere region masks), inference mode; bf16 is
`torch.autocast("cpu", dtype=torch.bfloat16)` as nnQC_predict uses it, run only where the CPU computes bf16
natively (nnqc.cpu_features; NNQC_CPU_BF16=1 forces it). Each model and precision runs in a fresh process so that
its peak resident memory (VmHWM) is its own; the figure includes the Python/torch baseline of that process.

--agreement (QCResUNet, random weights): max |regression difference| and the share of SEM logits of equal sign,
bf16 against fp32, for the shipped network (regression head and attention means in fp32) and for variants with
those parts in bf16 too, or with the instance norms in fp32 as well.
"""
import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from nnqc.cpu_features import cpu_has_native_bf16
from nnqc.network_architecture.blocks import ECA
from nnqc.network_architecture.qcresunet import AttentionSEMAggregation, RegressionHead
from nnqc.trusted_classes import import_object

MODELS = ("QCResUNet", "QCResUNetNoAttention", "QCResUNetNoRegression", "ResNet34Regressor", "ResNet50Regressor",
          "UNetRegressor")
SHAPE = (1, 7, 160, 192, 160)
TARGET_BF16_SECONDS = 1.0  # QCResUNet on 2 cores


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def phantom_input(shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    """Smoothed noise for the 4 image channels and nested spheres (whole tumour > core > enhancing) for the 3
    masks: a random-weight network sees inputs with the structure of real ones."""
    generator = torch.Generator().manual_seed(0)
    images = F.avg_pool3d(torch.randn((shape[0], 4, *shape[2:]), generator=generator), 5, 1, 2) * 3
    axes = torch.meshgrid(*[torch.linspace(-1, 1, n) for n in shape[2:]], indexing="ij")
    radius = sum(a ** 2 for a in axes).sqrt()
    masks = torch.stack([radius < 0.5, radius < 0.3, radius < 0.15]).float()[None].expand(shape[0], -1, -1, -1, -1)
    return torch.cat([images, masks], 1)


def precision_context(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def measure(name: str, precision: str, runs: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    cls = import_object(f"nnqc.network_architecture.{name}")
    with torch.device("meta"):
        meta_model = cls(input_channels=7, num_regions=3).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_model(torch.empty(SHAPE, device="meta"))
    torch.manual_seed(0)
    model = cls(input_channels=7, num_regions=3).eval()
    x = phantom_input()
    times = []
    with torch.inference_mode(), precision_context(precision):
        model(x)  # warm-up
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return {"model": name, "precision": precision, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "GFLOPs": counter.get_total_flops() / 1e9, "median_s": statistics.median(times),
            "min_s": min(times), "peak_rss_MB": peak_rss_mb()}


# ---- --agreement: the parts nnQC keeps in fp32, switched back to bf16 (the code before they were kept) ---------
def _head_in_bf16(self, x):
    return self.fc(x.mean(dim=(2, 3, 4)))


def _eca_in_bf16(self, x):
    return x * torch.sigmoid(self.conv(x.mean(dim=(2, 3, 4)).unsqueeze(1))).squeeze(1)[:, :, None, None, None]


def _mixes_in_bf16(self, attention, projected, query):
    means = torch.cat((projected.mean(dim=(2, 3, 4)), query.mean(dim=(2, 3, 4))), dim=1)
    weights = torch.sigmoid(attention.conv(means.unsqueeze(1))).squeeze(1).float()
    c = self.aggregate.out_channels
    mix = self.aggregate.weight.view(c, 2 * c)[None].float() * weights[:, None, :]
    return mix[..., :c], mix[..., c:]


_norm_forward = nn.InstanceNorm3d.forward


def _norm_in_fp32(self, x):
    with torch.autocast("cpu", enabled=False):
        return _norm_forward(self, x.float())


PATCHES = {"head in bf16": [(RegressionHead, "forward", _head_in_bf16)],
           "attention means in bf16": [(ECA, "forward", _eca_in_bf16),
                                       (AttentionSEMAggregation, "_mixes", _mixes_in_bf16)],
           "instance norms in fp32": [(nn.InstanceNorm3d, "forward", _norm_in_fp32)]}
VARIANTS = {"shipped: head + attention means fp32": (),
            "everything bf16": ("head in bf16", "attention means in bf16"),
            "only the head fp32": ("attention means in bf16",),
            "only the attention means fp32": ("head in bf16",),
            "shipped + instance norms fp32": ("instance norms in fp32",)}


@contextlib.contextmanager
def patched(names: tuple[str, ...]):
    saved = []
    try:
        for name in names:
            for owner, attribute, replacement in PATCHES[name]:
                saved.append((owner, attribute, owner.__dict__.get(attribute)))  # None: inherited
                setattr(owner, attribute, replacement)
        yield
    finally:
        for owner, attribute, original in reversed(saved):
            if original is None:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, original)


def agreement(threads: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = import_object("nnqc.network_architecture.QCResUNet")(input_channels=7, num_regions=3).eval()
    x = phantom_input()
    with torch.inference_mode():
        start = time.perf_counter()
        reference_regression, reference_sem = model(x)
        seconds = time.perf_counter() - start
        print(f"QCResUNet, random weights, {SHAPE}, {threads} threads; fp32 forward {seconds:.2f} s, "
              f"regression {[round(v, 4) for v in reference_regression[0].tolist()]}, "
              f"{(reference_sem > 0).float().mean().item():.1%} of SEM logits positive", flush=True)
        print(f"{'bf16 variant':<40}{'max |Δ regression|':>20}{'SEM signs equal':>17}{'max |Δ logit|':>15}{'s':>7}")
        for label, names in VARIANTS.items():
            with patched(names), torch.autocast("cpu", dtype=torch.bfloat16):
                model(x)  # warm-up
                start = time.perf_counter()
                regression, sem = model(x)
                seconds = time.perf_counter() - start
            difference = (regression.float() - reference_regression).abs().max().item()
            equal = ((sem > 0) == (reference_sem > 0)).float().mean().item()
            logit = (sem.float() - reference_sem).abs().max().item()
            print(f"{label:<40}{difference:>20.4f}{equal:>17.3%}{logit:>15.3f}{seconds:>7.2f}", flush=True)


def run_one(name: str, precision: str, runs: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", name, "--precision", precision, "--runs", str(runs),
                          "--threads", str(threads)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{name} ({precision}) failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--agreement", action="store_true", help="bf16 against fp32 outputs, per fp32 part")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.precision, args.runs, args.threads)))
        return
    bf16 = cpu_has_native_bf16()
    if args.agreement:
        if not bf16:
            sys.exit("this CPU has no native bf16 (AMX or AVX-512 BF16): nothing to compare (NNQC_CPU_BF16=1 forces "
                     "the emulated, slow bf16)")
        agreement(args.threads)
        return
    print(f"input {SHAPE}, inference mode, {args.threads} threads, median of {args.runs} runs after a warm-up; "
          + ("bf16: CPU autocast" if bf16 else "bf16 not run: this CPU has no native bf16 (AMX or AVX-512 BF16)"))
    print(f"{'model':<24}{'params (M)':>11}{'GFLOPs':>8}{'fp32 s':>8}{'bf16 s':>8}{'speed-up':>9}"
          f"{'fp32 min s':>11}{'bf16 min s':>11}{'fp32 RSS MB':>12}{'bf16 RSS MB':>12}")
    for name in args.models:
        r32 = run_one(name, "fp32", args.runs, args.threads)
        r16 = run_one(name, "bf16", args.runs, args.threads) if bf16 else None
        median16, min16, rss16, speed_up = (
            (f"{r16['median_s']:.2f}", f"{r16['min_s']:.2f}", f"{r16['peak_rss_MB']:.0f}",
             f"{r32['median_s'] / r16['median_s']:.2f}x") if r16 else ("-",) * 4)
        print(f"{name:<24}{r32['params_M']:>11.3f}{r32['GFLOPs']:>8.1f}{r32['median_s']:>8.2f}{median16:>8}"
              f"{speed_up:>9}{r32['min_s']:>11.2f}{min16:>11}{r32['peak_rss_MB']:>12.0f}{rss16:>12}", flush=True)
    if bf16 and "QCResUNet" in args.models:
        print(f"target: QCResUNet bf16 <= {TARGET_BF16_SECONDS:.1f} s on 2 cores")


if __name__ == "__main__":
    main()
