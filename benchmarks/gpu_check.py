"""What nnQC costs on a CUDA GPU, in one run of a few minutes: training iteration, data loading, prediction.

    python benchmarks/gpu_check.py [--iterations 20] [--workers 8 12 16] [--folds 5] [--json results.json]
    python benchmarks/gpu_check.py --dry-run      # on the CPU with tiny sizes: every step but the CUDA parts

Builds its own synthetic data in a temporary folder (nnUNet_raw/preprocessed/results point there) and prints:
a) nnQCTrainer's own train_step at the brain configuration: QCResUNet, input 4x7x160x192x160 (batch 4), a
   batch as the loader delivers it (CPU tensors, pinned on CUDA, moved to the GPU every step), the trainer's
   QCLoss, Adam (lr 2.1e-4, weight decay 1e-4), clipping at 12, its precision (fp16 autocast with nnU-Net's
   gradient scaler on CUDA; fp32 with --fp32), compiled as the trainer compiles it (nnU-Net: torch.compile on
   CUDA unless nnUNet_compile=f) and eager; median over --iterations after --warmup, the peak GPU memory of the
   timed steps (allocated and reserved by torch, counted from after the warm-up), the losses, and whether the
   weights changed;
b) data loading: BraTS-size phantom subjects (240x240x155) cropped, z-scored and stored as nnU-Net 2.8.1's
   DefaultPreprocessor stores them (blosc2), with candidates, drawn in batches of 4 by nnQCDataLoader with the
   trainer's augmentation through nnU-Net's NonDetMultiThreadedAugmenter with N workers, each N bounded by the
   cores and the free shared and host memory as nnQCTrainer bounds it: samples per second for each N, against
   the samples per second the GPU consumes in a), and whether the loader keeps up;
c) nnQC_predict on BraTS-size cases (4x240x240x155), untrained QCResUNet folds: seconds per case for 1 and
   --folds folds, with nnQC_predict's GPU defaults (pipelined: -npp 1 -nps 2) and case by case.
Without a CUDA device it says so and exits with status 2 (unless --dry-run). A part that fails is reported and
the others still run; the run then ends with a COULD NOT list (also under "could_not" in --json) and status 1.
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
# the dry run predicts without test-time mirroring: its 8 passes would only multiply the time (the test suite checks
# mirrored prediction)
DRY_RUN = {"patch": (64, 64, 64), "phantom": (64, 72, 64), "batch": 2, "iterations": 2, "warmup": 1,
           "subjects": 2, "workers": [1], "batches": 2, "cases": 1, "folds": 2, "mirroring": False,
           "network": {"features_per_stage": (8, 16, 32, 64), "decoder_features": (32, 16, 16, 8),
                       "blocks_per_stage": (1, 1, 1, 1)}}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timing_trainer(device: torch.device, network_kwargs: dict, compiled: bool, fp32: bool):
    """An nnQCTrainer whose own train_step (autocast, scaler, clipping, Adam) can be timed without plans or data on
    disk: the attributes train_step uses, set as nnQCTrainer.__init__ / initialize set them (paper defaults)."""
    from nnqc.network_architecture import QCResUNet
    from nnqc.training.cpu_bf16 import instance_norms_in_fp32
    from nnqc_trainers.nnQCTrainer import nnQCTrainer

    trainer = nnQCTrainer.__new__(nnQCTrainer)
    trainer.device, trainer.is_ddp, trainer.regions = device, False, BRATS_REGIONS
    trainer.initial_lr, trainer.weight_decay, trainer.lr_decay, trainer.min_lr = 2.1e-4, 1e-4, 0.9, 1e-6
    trainer.grad_clip, trainer.sem_loss_weight, trainer.region_loss_weight = 12.0, 1.0, 1.0
    trainer.ranking_loss, trainer.ranking_loss_weight = "none", 0.0
    trainer.cpu_bf16_autocast = trainer.cuda_mixed_precision = not fp32
    network = QCResUNet(input_channels=7, num_regions=len(BRATS_REGIONS), **network_kwargs).to(device).train()
    instance_norms_in_fp32(network)
    trainer.network = torch.compile(network) if compiled else network
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    trainer.loss = trainer._build_loss()
    trainer.grad_scaler = torch.amp.GradScaler("cuda") if trainer.step_precision().grad_scaler else None
    return trainer


def trainer_compiles(device: torch.device) -> tuple[bool, str]:
    """Whether nnQCTrainer compiles its network here (nnU-Net's _do_i_compile: on CUDA unless nnUNet_compile
    says otherwise), and why."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    probe = nnUNetTrainer.__new__(nnUNetTrainer)
    probe.device = device
    probe.print_to_log_file = lambda *args, **kwargs: None
    decision = nnUNetTrainer._do_i_compile(probe)
    reason = (f"nnUNet_compile={os.environ['nnUNet_compile']}" if "nnUNet_compile" in os.environ
              else f"nnU-Net's default on {device.type}")
    return decision, reason


def synthetic_batch(patch: tuple[int, ...], batch: int, pin: bool, seed: int) -> dict:
    """A batch as nnQCDataLoader delivers it (CPU tensors: float32 images, int16 maps), pinned as the augmenter
    pins it on CUDA; train_step moves it to the device every step, as in training."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (batch, 2, *patch), generator=generator, dtype=torch.int16)
    out = {"data": torch.randn((batch, 4, *patch), generator=generator), "reference": labels[:, :1],
           "candidate": labels[:, 1:], "quality": torch.rand((batch, 2 + 2 * len(BRATS_REGIONS)), generator=generator)}
    return {k: v.pin_memory() for k, v in out.items()} if pin else out


def training_iteration(device: torch.device, patch: tuple[int, ...], batch: int, iterations: int, warmup: int,
                       network_kwargs: dict, compiled: bool, fp32: bool, seed: int = 0) -> dict:
    """Seconds per nnQCTrainer.train_step (median over `iterations` after `warmup`; with torch.compile the first
    steps compile), the peak GPU memory of the timed steps (counter reset after the warm-up), the losses and
    whether the step changed the weights."""
    torch.manual_seed(seed)
    trainer = timing_trainer(device, network_kwargs, compiled, fp32)
    data = synthetic_batch(patch, batch, device.type == "cuda", seed)
    before = [p.detach().clone() for p in trainer.network.parameters()]
    times, losses = [], []
    for i in range(warmup + iterations):
        if i == warmup and device.type == "cuda":
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        synchronize(device)
        start = time.perf_counter()
        loss = float(trainer.train_step(data)["loss"])
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
        losses.append(loss)
        if not math.isfinite(loss) and trainer.active_grad_scaler() is None:
            raise RuntimeError(f"training step {i}: the loss is {loss}")
    changed = any(not torch.equal(b, p.detach()) for b, p in zip(before, trainer.network.parameters()))
    result = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
              "iterations": len(times), "batch": batch, "compiled": compiled,
              "precision": trainer.precision_description(), "first_loss": losses[0], "final_loss": losses[-1],
              "parameters_changed": changed}
    if device.type == "cuda":
        result["peak_allocated_GiB"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        result["peak_reserved_GiB"] = torch.cuda.max_memory_reserved(device) / 2 ** 30
    return result


def loader_samples_per_second(folder: str, samples: pd.DataFrame, patch: tuple[int, ...], batch: int,
                              workers: int, batches: int, pin_memory: bool, num_cached: int) -> float:
    """Samples per second from nnU-Net's multi-process augmenter over nnQCDataLoader with the trainer's
    augmentation, as nnQCTrainer.get_dataloaders builds it, after its workers have filled their queues once."""
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    from nnqc.training.data_loader import nnQCDataLoader
    from nnqc.training.transforms import qc_training_transforms

    dataset = nnUNetDatasetBlosc2(folder, sorted(samples["subject"].unique()))
    loader = nnQCDataLoader(dataset, samples, folder, batch, patch, qc_training_transforms(patch))
    augmenter = NonDetMultiThreadedAugmenter(loader, None, workers, num_cached=num_cached, seeds=None,
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
                       phantom_shape: tuple[int, ...] | None, base: str, seed: int,
                       use_mirroring: bool = True) -> list[dict]:
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

    from nnqc.inference.cases import find_cases
    from nnqc.inference.predictor import nnQCPredictor

    source, dataset_name = build_datasets(num_subjects, num_cases, seed, phantom_shape)
    folder = write_untrained_model(dataset_name, num_folds, None if phantom_shape else EXPECTED_INPUT_SHAPE)
    images, segmentations = os.path.join(source, "imagesTs"), os.path.join(source, "labelsTs")
    cases, _ = find_cases(images, segmentations, ".nii.gz", 4)
    folders = one_folder_per_case(images, segmentations, [c.case for c in cases], os.path.join(base, "cases"))
    rows = []
    for folds in ((0,), tuple(range(num_folds))):
        predictor = nnQCPredictor(device, allow_tqdm=False, use_mirroring=use_mirroring)
        predictor.initialize_from_trained_model_folder(folder, folds)
        output = os.path.join(base, f"predict_{len(folds)}")
        time_sequential(predictor, dict(list(folders.items())[:1]), output + "_warm_up")
        sequential = time_sequential(predictor, folders, output + "_sequential")
        pipelined = time_pipelined(predictor, images, segmentations, output + "_pipelined", len(cases))
        rows.append({"folds": len(folds), "precision": predictor.precision, "pipelined_s_per_case": pipelined,
                     "sequential_s_per_case": statistics.mean(sequential), "cases": len(cases),
                     "pipelined_settings": PIPELINED, "test_time_mirroring": list(predictor.mirror_axes)})
    return rows


def bounded_workers(requested: list[int], batch_bytes: int, pin: bool) -> tuple[list[tuple[int, int]], list[str]]:
    """(workers, queue depth) to measure: each requested count bounded by cores and, as nnQCTrainer bounds it, by
    the free shared and host memory (nnqc.training.loader_memory); and what could not be measured."""
    from nnqc.training.loader_memory import LoaderMemoryError, memory_available_bytes, plan_loader, shm_free_bytes

    plans, skipped = [], []
    for n in sorted(set(requested)):
        cores = min(n, os.cpu_count() or 1)
        try:
            plan = plan_loader(batch_bytes, cores, shm_free_bytes(), memory_available_bytes(), pin,
                               validation_workers=0)
        except LoaderMemoryError as e:
            skipped.append(f"data loading with {n} workers: {e}")
            continue
        if (plan.train_workers, plan.train_cached) not in plans:
            plans.append((plan.train_workers, plan.train_cached))
        if plan.train_workers != n:
            skipped.append(f"data loading with {n} workers: bounded to {plan.train_workers} by cores and memory")
    return plans, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check every step but CUDA")
    parser.add_argument("--iterations", type=int, default=20, help="timed training iterations (>= 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed training iterations first")
    parser.add_argument("--fp32", action="store_true",
                        help="time training as nnQC_train --fp32 runs it (no autocast or gradient scaler)")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="data-loading worker counts to measure (default: nnU-Net's default for this machine "
                             "and every core), each bounded by cores and memory as nnQCTrainer bounds it")
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
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)",
               "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_cores": os.cpu_count(),
               "could_not": []}
    could_not = results["could_not"]
    print(f"device {results['device']}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"{os.cpu_count()} CPU cores" + ("; DRY RUN: tiny sizes, figures mean nothing" if args.dry_run else ""))
    if device.type == "cuda":
        from nnqc.run.threads import set_thread_counts

        set_thread_counts("cuda")  # as nnQC_train sets them
        torch.backends.cudnn.benchmark = True  # as nnQC_train sets it

    with tempfile.TemporaryDirectory() as base:
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # before nnunetv2 is imported
            os.environ[name] = os.path.join(base, name)
            os.makedirs(os.environ[name])

        compiles, why = trainer_compiles(device)
        print(f"\na) nnQCTrainer.train_step: QCResUNet, input {(batch, 7, *patch)}, "
              f"{'fp32 (--fp32)' if args.fp32 else 'the trainer precision'}; median of {iterations} after {warmup} "
              f"warm-up; the trainer {'compiles' if compiles else 'does not compile'} the network ({why})",
              flush=True)
        results["training_variants"] = {}
        for compiled in ((True, False) if compiles else (False,)):
            name = "compiled" if compiled else "eager"
            try:
                row = training_iteration(device, patch, batch, iterations, warmup, dry.get("network", {}),
                                         compiled, args.fp32, args.seed)
            except Exception as e:  # noqa: BLE001 - report and go on with the other parts
                could_not.append(f"training step ({name}): {type(e).__name__}: {e}")
                print(f"   {name}: FAILED: {could_not[-1]}", flush=True)
                continue
            results["training_variants"][name] = row
            print(f"   {name}: median {row['median_s']:.3f} s (min {row['min_s']:.3f}, max {row['max_s']:.3f}), "
                  f"{batch / row['median_s']:.1f} samples/s, {row['precision']}, loss {row['first_loss']:.4f} -> "
                  f"{row['final_loss']:.4f}" + (f"; peak GPU memory {row['peak_allocated_GiB']:.1f} GiB allocated, "
                                                f"{row['peak_reserved_GiB']:.1f} GiB reserved"
                                                if "peak_allocated_GiB" in row else ""), flush=True)
        if not compiles:
            print(f"   compiled: not run (the trainer does not compile on {device.type})")
        variants = results["training_variants"]
        # what nnQC_train runs here
        training = variants.get("compiled" if compiles else "eager") or next(iter(variants.values()), None)
        results["training_iteration"] = training
        gpu_rate = batch / training["median_s"] if training else None

        from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

        from nnqc.training.loader_memory import batch_bytes

        one_batch = batch_bytes(batch, patch, 4)
        requested = dry.get("workers") or args.workers or [get_allowed_n_proc_DA(), os.cpu_count() or 1]
        workers, skipped = bounded_workers(requested, one_batch, device.type == "cuda")
        for line in skipped:
            print(f"   note: {line}")
        could_not.extend(line for line in skipped if "cannot" in line)
        subjects = dry.get("subjects", args.subjects)
        print(f"\nb) data loading: {subjects} phantom subjects "
              f"{dry.get('phantom', '240x240x155')} as nnU-Net stores them, batches of {batch} ({one_batch / 1e9:.2f} "
              f"GB) at {patch} with the trainer's augmentation", flush=True)
        results["data_loading"] = []
        try:
            folder = os.path.join(base, "loading")
            os.makedirs(folder)
            from benchmark_training import write_preprocessed_subjects  # phantoms stored as nnU-Net stores them

            samples = write_preprocessed_subjects(folder, subjects, args.seed, dry.get("phantom"), patch)
            print(f"   {'workers':>8}{'queue':>7}{'samples/s':>11}{'keeps up with a)':>18}")
            for n, cached in workers:
                rate = loader_samples_per_second(folder, samples, patch, batch, n, dry.get("batches", args.batches),
                                                 device.type == "cuda", cached)
                keeps_up = None if gpu_rate is None else rate >= gpu_rate
                results["data_loading"].append({"workers": n, "num_cached": cached, "samples_per_s": rate,
                                                "keeps_up": keeps_up})
                verdict = "?" if keeps_up is None else "yes" if keeps_up else "no"
                print(f"   {n:>8}{cached:>7}{rate:>11.1f}{verdict:>18}", flush=True)
        except Exception as e:  # noqa: BLE001
            could_not.append(f"data loading: {type(e).__name__}: {e}")
            print(f"   FAILED: {could_not[-1]}", flush=True)
        if results["data_loading"] and gpu_rate is not None:
            best = max(results["data_loading"], key=lambda r: r["samples_per_s"])
            per_worker = best["samples_per_s"] / best["workers"]
            print(f"   the GPU takes {gpu_rate:.1f} samples/s: about {math.ceil(gpu_rate / per_worker)} workers at "
                  f"{per_worker:.2f} samples/s each would keep up")

        cases, folds = dry.get("cases", args.cases), dry.get("folds", args.folds)
        mirroring = dry.get("mirroring", True)
        print(f"\nc) nnQC_predict: {cases} case(s) of 4 x {dry.get('phantom', '240x240x155')}, untrained folds, "
              + ("test-time mirroring (the default)" if mirroring else "no test-time mirroring"), flush=True)
        start = time.perf_counter()
        try:
            results["predict"] = prediction_seconds(device, cases, folds, 3, dry.get("phantom"),
                                                    os.path.join(base, "predict"), args.seed, mirroring)
            print(f"   (set-up and runs {time.perf_counter() - start:.0f} s)")
            print(f"   {'folds':>6}{'precision':>15}{'s/case (defaults)':>19}{'s/case (one by one)':>21}")
            for row in results["predict"]:
                print(f"   {row['folds']:>6}{row['precision']:>15}{row['pipelined_s_per_case']:>19.2f}"
                      f"{row['sequential_s_per_case']:>21.2f}")
        except Exception as e:  # noqa: BLE001
            could_not.append(f"prediction: {type(e).__name__}: {e}")
            print(f"   FAILED: {could_not[-1]}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nfigures: {args.json}")
    if could_not:
        print("\nCOULD NOT:\n" + "\n".join(f"  - {line}" for line in could_not), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
