"""Schedules other than the paper's (nnQCTrainer: 100 epochs of one pass over the balanced training samples).

nnQCTrainer_250it keeps nnU-Net's fixed 250-iteration epochs; the short ones are for tests, the demo and quick
experiments on CPU, with explicit iteration counts.
"""
from nnqc_trainers.nnQCTrainer import nnQCTrainer


class nnQCTrainer_250it(nnQCTrainer):
    """nnU-Net's epochs of 250 iterations (1000 balanced examples at batch 4), 100 of them, lr × 0.9 per epoch
    (at its 1e-6 floor from epoch 51 on, counting from 0)."""
    hyperparameters = {"num_iterations_per_epoch": 250}


class nnQCTrainer_2epochs(nnQCTrainer):
    """2 epochs of 4 iterations (tests)."""
    hyperparameters = {"num_epochs": 2, "num_iterations_per_epoch": 4, "num_val_samples_per_epoch": 8}


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
