"""What nnQC costs on a CUDA GPU, in one run of a few minutes: training iteration, data loading, prediction.

    python benchmarks/gpu_check.py [--iterations 20] [--workers 8 12 16] [--folds 5] [--json results.json]
    python benchmarks/gpu_check.py --dry-run      # on the CPU with tiny sizes: every step but the CUDA parts

Builds its own synthetic data in a temporary folder (nnUNet_raw/preprocessed/results point there) and prints:
a) one training iteration at the brain configuration: QCResUNet, input 4x7x160x192x160 (batch 4), the trainer's
   QCLoss with random quality and SEM targets, Adam (lr 2.1e-4, weight decay 1e-4), gradient clipping at 12 and
   mixed precision as nnQCTrainer runs it on a GPU (autocast, fp16 by default, with a gradient scaler); median
   over --iterations after --warmup, and the peak GPU memory (allocated and reserved by torch);
b) data loading: BraTS-size phantom subjects (240x240x155) cropped, z-scored and stored as nnU-Net 2.8.1's
   DefaultPreprocessor stores them (blosc2), with candidates, drawn in batches of 4 by nnQCDataLoader with the
   trainer's augmentation through nnU-Net's NonDetMultiThreadedAugmenter with N workers: samples per second
   for each N, against the samples per second the GPU consumes in a), and whether the loader keeps up;
c) nnQC_predict on BraTS-size cases (4x240x240x155), untrained QCResUNet folds: seconds per case for 1 and
   --folds folds, with nnQC_predict's GPU defaults (pipelined: -npp 1 -nps 2) and case by case.
Without a CUDA device it says so and exits with status 2 (unless --dry-run).
"""
import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time

import pandas as pd
import torch

BRAIN_PATCH = (160, 192, 160)
BATCH_SIZE = 4
BRATS_REGIONS = ((1, 2, 3), (2, 3), (3,))
DRY_RUN = {"patch": (64, 64, 64), "phantom": (64, 72, 64), "batch": 2, "iterations": 2, "warmup": 1,
           "subjects": 2, "workers": [1], "batches": 2, "cases": 1, "folds": 2,
           "network": {"features_per_stage": (8, 16, 32, 64), "decoder_features": (32, 16, 16, 8),
                       "blocks_per_stage": (1, 1, 1, 1)}}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_iteration(device: torch.device, patch: tuple[int, ...], batch: int, iterations: int, warmup: int,
                       amp_dtype: torch.dtype, network_kwargs: dict, seed: int = 0) -> dict:
    """Seconds per training step as nnQCTrainer.train_step takes it (forward and loss under autocast on CUDA,
    scaled backward, unscale, clip, step), and the peak GPU memory."""
    from nnqc.network_architecture import QCResUNet
    from nnqc.training.loss import QCLoss

    torch.manual_seed(seed)
    network = QCResUNet(input_channels=7, num_regions=3, **network_kwargs).to(device).train()
    optimizer = torch.optim.Adam(network.parameters(), 2.1e-4, weight_decay=1e-4)
    loss_function = QCLoss()
    on_cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if on_cuda and amp_dtype == torch.float16 else None
    x = torch.randn((batch, 7, *patch), device=device)
    x[:, 4:] = (torch.rand((batch, 3, *patch), device=device) < 0.05).float()
    quality = torch.rand((batch, 2), device=device)
    sem_target = torch.rand((batch, 3, *patch), device=device) < 0.02
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + iterations):
        synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=on_cuda):
            regression, sem_logits = network(x)
            loss = loss_function(regression, sem_logits, quality, sem_target)["loss"]
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
            optimizer.step()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
        if not torch.isfinite(loss):
            raise RuntimeError(f"training iteration {i}: the loss is {loss.item()}")
    result = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
              "iterations": len(times), "batch": batch}
    if on_cuda:
        result["peak_allocated_GiB"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        result["peak_reserved_GiB"] = torch.cuda.max_memory_reserved(device) / 2 ** 30
    return result


def loader_samples_per_second(folder: str, samples: pd.DataFrame, patch: tuple[int, ...], batch: int,
                              workers: int, batches: int, pin_memory: bool) -> float:
    """Samples per second from nnU-Net's multi-process augmenter over nnQCDataLoader with the trainer's
    augmentation, as nnQCTrainer.get_dataloaders builds it, after its workers have filled their queues once."""
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    from nnqc.training.data_loader import nnQCDataLoader
    from nnqc.training.transforms import qc_training_transforms

    dataset = nnUNetDatasetBlosc2(folder, sorted(samples["subject"].unique()))
    loader = nnQCDataLoader(dataset, samples, folder, batch, patch, qc_training_transforms(patch))
    augmenter = NonDetMultiThreadedAugmenter(loader, None, workers, num_cached=max(6, workers // 2), seeds=None,
                                             pin_memory=pin_memory, wait_time=0.002)
    try:
        for _ in range(workers):  # warm-up: every worker started and delivered
            first = next(augmenter)
        if tuple(first["data"].shape) != (batch, 4, *patch):
            raise RuntimeError(f"the loader gave batches of shape {tuple(first['data'].shape)}")
        start = time.perf_counter()
        for _ in range(batches):
            next(augmenter)
        return batches * batch / (time.perf_counter() - start)
    finally:
        augmenter._finish()


def prediction_seconds(device: torch.device, num_cases: int, num_folds: int, num_subjects: int,
                       phantom_shape: tuple[int, ...] | None, base: str, seed: int) -> list[dict]:
    """nnQC_predict's seconds per case with untrained folds, 1 and num_folds folds, pipelined and sequential."""
    from benchmark_predict import (
        EXPECTED_INPUT_SHAPE,
        PIPELINED,
        build_datasets,
        one_folder_per_case,
        time_pipelined,
        time_sequential,
        write_untrained_model,
    )

    from nnqc.inference.predictor import find_cases, nnQCPredictor

    source, dataset_name = build_datasets(num_subjects, num_cases, seed, phantom_shape)
    folder = write_untrained_model(dataset_name, num_folds, None if phantom_shape else EXPECTED_INPUT_SHAPE)
    images, segmentations = os.path.join(source, "imagesTs"), os.path.join(source, "labelsTs")
    cases, _ = find_cases(images, segmentations, ".nii.gz", 4)
    folders = one_folder_per_case(images, segmentations, [c.case for c in cases], os.path.join(base, "cases"))
    rows = []
    for folds in ((0,), tuple(range(num_folds))):
        predictor = nnQCPredictor(device, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(folder, folds)
        output = os.path.join(base, f"predict_{len(folds)}")
        time_sequential(predictor, dict(list(folders.items())[:1]), output + "_warm_up")
        sequential = time_sequential(predictor, folders, output + "_sequential")
        pipelined = time_pipelined(predictor, images, segmentations, output + "_pipelined", len(cases))
        rows.append({"folds": len(folds), "precision": predictor.precision, "pipelined_s_per_case": pipelined,
                     "sequential_s_per_case": statistics.mean(sequential), "cases": len(cases),
                     "pipelined_settings": PIPELINED})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check every step but CUDA")
    parser.add_argument("--iterations", type=int, default=20, help="timed training iterations (>= 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed training iterations first")
    parser.add_argument("--amp", choices=("fp16", "bf16"), default="fp16",
                        help="autocast dtype of the training iteration (nnQCTrainer: fp16 with a gradient scaler)")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="data-loading worker counts to measure (default: nnU-Net's default for this machine "
                             "and every core)")
    parser.add_argument("--subjects", type=int, default=4, help="phantom subjects for data loading")
    parser.add_argument("--batches", type=int, default=30, help="timed batches of 4 per worker count")
    parser.add_argument("--cases", type=int, default=3, help="cases to predict")
    parser.add_argument("--folds", type=int, default=5, help="folds of the prediction ensemble")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    if not args.dry_run and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, built with CUDA "
              f"{torch.version.cuda or 'none'}): run it on a machine with an NVIDIA GPU and a CUDA build of "
              "torch, or with --dry-run to check the script on the CPU", file=sys.stderr)
        sys.exit(2)
    dry = DRY_RUN if args.dry_run else {}
    device = torch.device("cpu") if args.dry_run else torch.device("cuda")
    patch = dry.get("patch", BRAIN_PATCH)
    batch = dry.get("batch", BATCH_SIZE)
    iterations, warmup = dry.get("iterations", max(args.iterations, 20)), dry.get("warmup", args.warmup)
    amp_dtype = torch.float16 if args.amp == "fp16" else torch.bfloat16
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)",
               "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_cores": os.cpu_count()}
    print(f"device {results['device']}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"{os.cpu_count()} CPU cores" + ("; DRY RUN: tiny sizes, figures mean nothing" if args.dry_run else ""))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as nnU-Net's trainer sets it

    with tempfile.TemporaryDirectory() as base:
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # before nnunetv2 is imported
            os.environ[name] = os.path.join(base, name)
            os.makedirs(os.environ[name])

        print(f"\na) training iteration: QCResUNet, input {(batch, 7, *patch)}, QCLoss, Adam, "
              f"{'autocast ' + args.amp if device.type == 'cuda' else 'fp32'}; median of {iterations} after "
              f"{warmup} warm-up", flush=True)
        training = training_iteration(device, patch, batch, iterations, warmup, amp_dtype, dry.get("network", {}),
                                      args.seed)
        results["training_iteration"] = training
        gpu_rate = batch / training["median_s"]
        print(f"   median {training['median_s']:.3f} s (min {training['min_s']:.3f}, max {training['max_s']:.3f}), "
              f"{gpu_rate:.1f} samples/s" + (f"; peak GPU memory {training['peak_allocated_GiB']:.1f} GiB allocated, "
                                             f"{training['peak_reserved_GiB']:.1f} GiB reserved"
                                             if "peak_allocated_GiB" in training else ""), flush=True)

        from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

        workers = dry.get("workers") or args.workers or sorted({get_allowed_n_proc_DA(), os.cpu_count() or 1})
        subjects = dry.get("subjects", args.subjects)
        print(f"\nb) data loading: {subjects} phantom subjects "
              f"{dry.get('phantom', '240x240x155')} as nnU-Net stores them, batches of {batch} at {patch} with the "
              f"trainer's augmentation", flush=True)
        folder = os.path.join(base, "loading")
        os.makedirs(folder)
        from benchmark_training import write_preprocessed_subjects  # phantoms stored as nnU-Net stores them

        samples = write_preprocessed_subjects(folder, subjects, args.seed, dry.get("phantom"), patch)
        results["data_loading"] = []
        print(f"   {'workers':>8}{'samples/s':>11}{'keeps up with a)':>18}")
        for n in workers:
            rate = loader_samples_per_second(folder, samples, patch, batch, n, dry.get("batches", args.batches),
                                             device.type == "cuda")
            results["data_loading"].append({"workers": n, "samples_per_s": rate, "keeps_up": rate >= gpu_rate})
            print(f"   {n:>8}{rate:>11.1f}{'yes' if rate >= gpu_rate else 'no':>18}", flush=True)
        best = max(results["data_loading"], key=lambda r: r["samples_per_s"])
        per_worker = best["samples_per_s"] / best["workers"]
        print(f"   the GPU takes {gpu_rate:.1f} samples/s: about {math.ceil(gpu_rate / per_worker)} workers at "
              f"{per_worker:.2f} samples/s each would keep up")

        cases, folds = dry.get("cases", args.cases), dry.get("folds", args.folds)
        print(f"\nc) nnQC_predict: {cases} case(s) of 4 x {dry.get('phantom', '240x240x155')}, untrained folds",
              flush=True)
        start = time.perf_counter()
        results["predict"] = prediction_seconds(device, cases, folds, 3, dry.get("phantom"),
                                                os.path.join(base, "predict"), args.seed)
        print(f"   (set-up and runs {time.perf_counter() - start:.0f} s)")
        print(f"   {'folds':>6}{'precision':>15}{'s/case (defaults)':>19}{'s/case (one by one)':>21}")
        for row in results["predict"]:
            print(f"   {row['folds']:>6}{row['precision']:>15}{row['pipelined_s_per_case']:>19.2f}"
                  f"{row['sequential_s_per_case']:>21.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nfigures: {args.json}")


if __name__ == "__main__":
    main()
