"""CPU cost of QCResUNet training at the brain configuration: one iteration, and one augmentation worker.

    python benchmarks/benchmark_training.py [--threads 2] [--runs 3] [--batches 20] [--subjects 2]

a) One training iteration, batch 1, input 1x7x160x192x160 fp32, on --threads cores: forward, QCLoss with
   random quality targets and SEM targets, backward, gradient clipping and an Adam step (lr 2.1e-4, wd 1e-4),
   the steps of nnQCTrainer.train_step; median of --runs after a warm-up, and the process's peak resident
   memory (VmHWM, including the Python/torch baseline).
b) Samples per second of ONE data-loading + augmentation worker (one core): synthetic BraTS-like subjects,
   cropped and z-scored, are stored exactly as nnU-Net 2.8.1's DefaultPreprocessor stores them (blosc2 with
   its chunk and block sizes), with candidates as compressed npz; nnQCDataLoader draws batches of 1 at the
   fixed input shape with the training augmentation, once as configured and once with the spatial transform
   (rotation and scaling) always on, the worst case. Also how many workers keep a GPU fed that consumes a
   batch of 4 every 0.5 s.
"""
import argparse
import math
import os
import statistics
import tempfile
import time

import numpy as np
import pandas as pd
import torch

PATCH_SIZE = (160, 192, 160)
INPUT_SHAPE = (1, 7, *PATCH_SIZE)
BRATS_REGIONS = ((1, 2, 3), (2, 3), (3,))
GPU_SAMPLES_PER_SECOND = 4 / 0.5


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def time_training_iteration(runs: int, seed: int = 0) -> list[float]:
    """Seconds per training iteration (forward + loss + backward + clip + Adam), `runs` times after a warm-up."""
    from nnqc.network_architecture import QCResUNet
    from nnqc.training.loss import QCLoss

    torch.manual_seed(seed)
    network = QCResUNet(input_channels=7, num_regions=3).train()
    optimizer = torch.optim.Adam(network.parameters(), 2.1e-4, weight_decay=1e-4)
    loss = QCLoss()
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(INPUT_SHAPE, generator=generator)
    x[:, 4:] = (torch.rand((1, 3, *PATCH_SIZE), generator=generator) < 0.02).float()
    quality = torch.rand((1, 2 + 2 * 3), generator=generator)  # subject level, then per region
    sem_target = torch.rand((1, 3, *PATCH_SIZE), generator=generator) < 0.01

    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        regression, sem_logits = network(x)
        loss(regression, sem_logits, quality, sem_target)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12.0)
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times[1:]


def shifted_candidate(seg: np.ndarray, shift: int, axis: int) -> np.ndarray:
    """A candidate of a subject: its reference labels (1, z, y, x) moved by `shift` voxels along spatial `axis`
    (0-2; lower DSC for larger shifts)."""
    return np.roll(np.clip(seg, 0, None), shift, axis=1 + axis).astype(np.uint8)


def write_preprocessed_subjects(folder: str, num_subjects: int, seed: int, phantom_shape: tuple[int, ...] | None = None,
                                patch: tuple[int, ...] = PATCH_SIZE) -> pd.DataFrame:
    """Synthetic subjects in nnU-Net 2.8.1's preprocessed format plus candidates/SAMPLE.npz; the samples table."""
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2

    from dataset_conversion.phantoms import make_brats_phantom
    from nnqc.metrics.dice import multiclass_dice
    from nnqc.training.data_loader import CANDIDATES_FOLDER

    os.makedirs(os.path.join(folder, CANDIDATES_FOLDER))
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_subjects):
        subject = f"BraTS_{i:05d}"
        images, label = make_brats_phantom(**({"shape": phantom_shape} if phantom_shape else {}), rng=rng)
        shape_before_cropping = images.shape[1:]
        data, seg, bbox = crop_to_nonzero(images, label[None].astype(np.int16))
        for c in range(len(data)):
            data[c] = ZScoreNormalization(use_mask_for_norm=True, intensityproperties={}).run(data[c], seg[0])
        data, seg = data.astype(np.float32), seg.astype(np.int16)
        properties = {"spacing": [1.0, 1.0, 1.0], "shape_before_cropping": shape_before_cropping,
                      "bbox_used_for_cropping": bbox, "shape_after_cropping_and_before_resampling": data.shape[1:],
                      "class_locations": DefaultPreprocessor._sample_foreground_locations(seg, list(BRATS_REGIONS))}
        blocks, chunks = comp_blosc2_params(data.shape, patch, data.itemsize)
        blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, patch, seg.itemsize)
        nnUNetDatasetBlosc2.save_case(data, seg, properties, os.path.join(folder, subject), chunks=chunks,
                                      blocks=blocks, chunks_seg=chunks_seg, blocks_seg=blocks_seg)
        for k, shift in enumerate((0, 3, 8, 15)):
            sample = f"{subject}__shift__{k}"
            candidate = shifted_candidate(seg, shift, axis=k % 3)
            np.savez_compressed(os.path.join(folder, CANDIDATES_FOLDER, sample + ".npz"), seg=candidate)
            dsc = multiclass_dice(np.clip(seg[0], 0, None), candidate[0])
            # NSD only feeds the regression target; its value does not change the loading cost
            rows.append({"sample": sample, "subject": subject, "dsc": dsc, "nsd": dsc})
        print(f"  {subject}: preprocessed shape {data.shape}", flush=True)
    return pd.DataFrame(rows)


def samples_per_second(folder: str, samples: pd.DataFrame, transforms, num_batches: int, seed: int) -> float:
    """Batches of one sample from nnQCDataLoader on one thread, after one warm-up batch."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    from nnqc.training.data_loader import nnQCDataLoader

    dataset = nnUNetDatasetBlosc2(folder, sorted(samples["subject"].unique()))
    loader = nnQCDataLoader(dataset, samples, folder, 1, PATCH_SIZE, transforms, seed=seed)
    batch = loader.generate_train_batch()
    assert tuple(batch["data"].shape) == (1, 4, *PATCH_SIZE), batch["data"].shape
    start = time.perf_counter()
    for _ in range(num_batches):
        loader.generate_train_batch()
    return num_batches / (time.perf_counter() - start)


def spatial_always_on(transforms):
    """The same pipeline with rotation and scaling applied to every sample."""
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

    spatial = [t for t in transforms.transforms if isinstance(t, SpatialTransform)]
    if len(spatial) != 1:
        raise RuntimeError(f"expected one SpatialTransform in the QC training transforms, found {len(spatial)}")
    spatial[0].p_rotation = spatial[0].p_scaling = 1
    return transforms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the training iteration")
    parser.add_argument("--runs", type=int, default=3, help="timed training iterations after a warm-up")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per data-loading setting")
    parser.add_argument("--subjects", type=int, default=2, help="synthetic subjects for data loading")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip_iteration", action="store_true", help="only measure data loading")
    args = parser.parse_args()

    from nnqc.training.transforms import qc_training_transforms

    if not args.skip_iteration:
        torch.set_num_threads(args.threads)
        print(f"a) training iteration, input {INPUT_SHAPE} fp32, batch 1, {args.threads} threads, "
              f"median of {args.runs} after a warm-up", flush=True)
        times = time_training_iteration(args.runs, args.seed)
        print(f"   {'median s':>10}{'min s':>8}{'max s':>8}{'peak RSS MB':>13}")
        print(f"   {statistics.median(times):>10.2f}{min(times):>8.2f}{max(times):>8.2f}{peak_rss_mb():>13.0f}\n",
              flush=True)

    torch.set_num_threads(1)
    print(f"b) data loading + augmentation, one worker (1 thread), batch 1, input {PATCH_SIZE}, "
          f"{args.batches} batches per setting", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        samples = write_preprocessed_subjects(folder, args.subjects, args.seed)
        settings = {"load only (no augmentation)": None,
                    "load + augmentation": qc_training_transforms(PATCH_SIZE),
                    "load + augmentation, spatial always on": spatial_always_on(qc_training_transforms(PATCH_SIZE))}
        print(f"   {'setting':<42}{'samples/s':>10}{'s/sample':>10}{'workers for 8 samples/s':>25}")
        for name, transforms in settings.items():
            rate = samples_per_second(folder, samples, transforms, args.batches, args.seed)
            print(f"   {name:<42}{rate:>10.2f}{1 / rate:>10.2f}{math.ceil(GPU_SAMPLES_PER_SECOND / rate):>25d}",
                  flush=True)
    print(f"   (a GPU consuming a batch of 4 every 0.5 s takes {GPU_SAMPLES_PER_SECOND:.0f} samples/s)")


if __name__ == "__main__":
    main()
