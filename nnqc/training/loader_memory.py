"""Memory that nnU-Net's background data loading needs for whole-case QC batches, checked before it starts.

nnQC's batches are whole cases (BraTS: 4 × (4 float32 images + 2 int16 label maps) × 160×192×160 = 0.39 GB), not
nnU-Net's patches, so the augmenter's queues hold gigabytes. NonDetMultiThreadedAugmenter has one shared
multiprocessing queue of `num_cached` batches; torch moves every tensor put on it into shared memory (/dev/shm).
In the main process a thread moves the batches into a second queue of `num_cached` (+1 in its hand): pinned copies
on CUDA (host memory, the shared originals freed), still shared memory otherwise. Each worker also holds the batch
it is assembling and the per-sample pieces it is built from (about two batches). So, per augmenter:

    shared memory = batch × (num_cached + (1 if pinned else num_cached + 2))
    host memory   = shared memory + batch × (num_cached + 2 if pinned else 0) + workers × 2 × batch

(the second queue, the batch in the thread's hand and the one the trainer is using). Where this does not fit, the
queues are made shorter and then the workers fewer; where one worker with a queue of one batch does not fit either,
training stops at once with one line saying what it needs and how to get it.
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

SHM_FOLDER = "/dev/shm"
WORKER_BATCHES = 2  # a worker's own working set, in batches (see above)


class LoaderMemoryError(RuntimeError):
    """Not even one background worker fits in the shared or host memory."""


@dataclass(frozen=True)
class LoaderPlan:
    """Workers and queue depths of the training and validation augmenters, and what they need (bytes)."""
    train_workers: int
    train_cached: int
    val_workers: int
    val_cached: int
    shm_bytes: int
    host_bytes: int


def batch_bytes(batch_size: int, patch_size: Sequence[int], num_images: int, image_itemsize: int = 4,
                num_label_maps: int = 2, label_itemsize: int = 2) -> int:
    """Bytes of one QC batch: float32 images and the int16 reference and candidate maps (nnqc.training.data_loader)."""
    voxels = int(np.prod(patch_size))
    return batch_size * voxels * (num_images * image_itemsize + num_label_maps * label_itemsize)


def nnunet_defaults(workers: int) -> tuple[int, int, int]:
    """(train cache, validation workers, validation cache) that nnU-Net's get_dataloaders uses for `workers`."""
    return max(6, workers // 2), max(1, workers // 2), max(3, workers // 4)


def augmenter_need(batch: int, workers: int, cached: int, pinned: bool) -> tuple[int, int]:
    """(shared, host) bytes of one NonDetMultiThreadedAugmenter (formula in the module docstring)."""
    shm = batch * (cached + (1 if pinned else cached + 2))
    host = shm + batch * (cached + 2 if pinned else 0) + workers * WORKER_BATCHES * batch
    return shm, host


def plan_need(batch: int, train_workers: int, train_cached: int, val_workers: int, val_cached: int,
              pinned: bool) -> tuple[int, int]:
    """(shared, host) bytes of both augmenters together (both run during training)."""
    shm_t, host_t = augmenter_need(batch, train_workers, train_cached, pinned)
    shm_v, host_v = augmenter_need(batch, val_workers, val_cached, pinned) if val_workers else (0, 0)
    return shm_t + shm_v, host_t + host_v


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def plan_loader(batch: int, allowed_workers: int, shm_free: int | None, memory_available: int | None,
                pinned: bool, validation_workers: int = 1) -> LoaderPlan:
    """The largest plan, at most nnU-Net's queue depths for `allowed_workers` training workers (and
    `validation_workers`, 0 for none), that fits: queues shortened first (they decide the shared memory), then
    training workers dropped (they add host memory). None for a limit: unknown, not checked. Raises
    LoaderMemoryError when one training worker with a queue of one batch does not fit."""
    if allowed_workers < 1:
        raise ValueError("background loading needs at least one worker (0 workers load in the main process)")
    shm_limit = math.inf if shm_free is None else shm_free
    host_limit = math.inf if memory_available is None else memory_available
    for workers in range(allowed_workers, 0, -1):
        train_cached, _, val_cached = nnunet_defaults(workers)
        val_workers = min(validation_workers, workers)
        if not val_workers:
            val_cached = 0
        while True:
            shm, host = plan_need(batch, workers, train_cached, val_workers, val_cached, pinned)
            if shm <= shm_limit and host <= host_limit:
                return LoaderPlan(workers, train_cached, val_workers, val_cached, shm, host)
            if train_cached == 1 and val_cached <= 1:
                break
            train_cached, val_cached = max(1, train_cached - 1), max(min(1, val_workers), val_cached - 1)
    shm, host = plan_need(batch, 1, 1, min(1, validation_workers), min(1, validation_workers), pinned)
    short = []
    if shm > shm_limit:
        full_speed = default_need(batch, allowed_workers, pinned, validation_workers)[0]
        short.append(f"{_gb(shm)} of shared memory ({SHM_FOLDER} has {_gb(shm_limit)} free; in docker: "
                     f"--shm-size={max(1, math.ceil(full_speed / 1e9))}g for full speed)")
    if host > host_limit:
        short.append(f"{_gb(host)} of memory ({_gb(host_limit)} available)")
    raise LoaderMemoryError(
        f"the data loader cannot start even one background worker for batches of {_gb(batch)}: it needs "
        f"{' and '.join(short)}; give it that, or load in the main process with nnUNet_n_proc_DA=0")


def default_need(batch: int, workers: int, pinned: bool, validation_workers: int = 1) -> tuple[int, int]:
    """(shared, host) bytes at nnU-Net's queue depths for `workers`, unbounded (loading at full speed)."""
    train_cached, _, val_cached = nnunet_defaults(workers)
    val_workers = min(validation_workers, workers)
    if not val_workers:
        val_cached = 0
    return plan_need(batch, workers, train_cached, val_workers, val_cached, pinned)


def shm_free_bytes(folder: str = SHM_FOLDER) -> int | None:
    """Free bytes of the shared-memory file system, None where there is none (not Linux)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def memory_available_bytes() -> int | None:
    """Memory the kernel can give without swapping (MemAvailable), else free pages; None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def plan_data_loading(batch_size: int, patch_size: Sequence[int], num_images: int, pinned: bool
                      ) -> tuple[LoaderPlan | None, list[str]]:
    """(plan, lines for the training log) of the background workers and queue depths for whole-case batches,
    bounded by cores (nnU-Net's get_allowed_n_proc_DA) and by the shared and host memory they need; no plan for
    loading in the main process (nnUNet_n_proc_DA=0). Raises LoaderMemoryError, before any worker starts, where
    not even one fits."""
    n_proc = get_allowed_n_proc_DA()
    if n_proc == 0:
        return None, []
    batch = batch_bytes(batch_size, patch_size, num_images)
    full = nnunet_defaults(n_proc)
    plan = plan_loader(batch, n_proc, shm_free_bytes(), memory_available_bytes(), pinned, validation_workers=1)
    lines = [f"data loading: batches of {batch / 1e9:.3f} GB; {plan.train_workers} training workers (queue "
             f"{plan.train_cached}) and {plan.val_workers} validation worker(s) (queue {plan.val_cached}) need "
             f"{plan.shm_bytes / 1e9:.2f} GB of shared memory and {plan.host_bytes / 1e9:.2f} GB of host memory"]
    if (plan.train_workers, plan.train_cached) != (n_proc, full[0]):
        lines.append(f"data loading: fewer workers or shorter queues than the {n_proc} workers (queue "
                     f"{full[0]}) the cores allow, to fit in the free shared and host memory")
    return plan, lines
