"""Schedules other than the paper's (nnQCTrainer: 100 epochs of one pass over the balanced training samples).

nnQCTrainer_250it keeps nnU-Net's fixed 250-iteration epochs; the short ones are for tests, the demo and quick
experiments on CPU, with explicit iteration counts.
"""
import random

import numpy as np
import torch

from nnqc_trainers.nnQCTrainer import nnQCTrainer


class nnQCTrainer_250it(nnQCTrainer):
    """nnU-Net's epochs of 250 iterations (1000 balanced examples at batch 4), 100 of them, lr × 0.9 per epoch
    (at its 1e-6 floor from epoch 51 on, counting from 0)."""
    hyperparameters = {"num_iterations_per_epoch": 250}


class nnQCTrainer_2epochs(nnQCTrainer):
    """2 epochs of 4 iterations (tests), from a fixed start, so that the tests' tiny model is the same on every
    run and its validation r is finite: seeded weights, dropout masks and batches, the regression head's bias at
    0.5 and a tenth of the paper's lr. From the default start and at the paper's lr, eight steps move every
    prediction of a fold together far enough to leave [0, 1] (measured: one fold's NSD all clamped to 1.0), and
    predictions clamped to one value have no r. From this start they stay within 0.52-0.60 (measured in fp32,
    emulated bf16 and ATEN_CPU_CAPABILITY=default)."""
    hyperparameters = {"num_epochs": 2, "num_iterations_per_epoch": 4, "num_val_samples_per_epoch": 8,
                       "initial_lr": 2.1e-5}
    seed = 1234

    def _fold_seed(self) -> int:
        return self.seed + (self.fold if isinstance(self.fold, int) else 0)

    def initialize(self) -> None:
        random.seed(self._fold_seed())
        np.random.seed(self._fold_seed())
        torch.manual_seed(self._fold_seed())
        super().initialize()
        head = getattr(self._unwrapped_network(), "regression", None)
        if head is not None:
            with torch.no_grad():
                head.fc.bias.fill_(0.5)  # mid-range: predictions of the untrained head lie inside [0, 1]

    def get_dataloaders(self):
        """nnQCTrainer's, with the batch sampler seeded (it draws from the OS's entropy otherwise)."""
        train, validation = super().get_dataloaders()
        loader = getattr(train, "data_loader", None) or getattr(train, "generator", None)
        loader.seed = self._fold_seed()
        return train, validation


class nnQCTrainer_CPUDemo(nnQCTrainer):
    """The paper's recipe (QCResUNet, dropout 0.3, Adam at lr 2.1e-4) on a short CPU schedule: 32 epochs of 100
    iterations with the decay of × 0.9 per 250 iterations, validation on 40 samples per epoch, checkpoint_latest
    every 6 epochs (a checkpoint with Adam's state is about 200 MB). bf16 autocast where the CPU has native bf16
    (nnQCTrainer's default), which is what pays for 100 iterations per epoch (50 before bf16) in the demo's
    minutes; on a CPU without native bf16 the demo's training takes about twice as long.

    On CPU, learning rates above the paper's made the regression collapse to a near-constant output within
    such a schedule (measured with benchmarks/benchmark_learning.py)."""
    hyperparameters = {"num_epochs": 32, "num_iterations_per_epoch": 100, "num_val_samples_per_epoch": 40,
                       "lr_decay": 0.9 ** (100 / 250), "save_every": 6}
