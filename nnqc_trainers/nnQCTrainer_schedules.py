"""Schedules other than the paper's (nnQCTrainer: 100 epochs of one pass over the balanced training samples).

nnQCTrainer_250it keeps nnU-Net's fixed 250-iteration epochs; the short ones are for tests, the demo and quick
experiments on CPU, with explicit iteration counts.
"""
import copy
import math
import os
import random

import numpy as np
import torch

from nnqc.training.time_budget import (
    SCHEDULE_FILE,
    BudgetedSchedule,
    iterations_for_budget,
    median_seconds,
    projected_seconds,
    read_schedule,
    write_schedule,
)
from nnqc_trainers.nnQCTrainer import nnQCTrainer

BUDGET_VARIABLE = "nnQC_training_minutes"


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
    emulated bf16 and ATEN_CPU_CAPABILITY=default). Its models allow no test-time mirroring (it still mirrors in
    augmentation): the tests' many final validations and predictions run one forward pass each, not eight."""
    hyperparameters = {"num_epochs": 2, "num_iterations_per_epoch": 4, "num_val_samples_per_epoch": 8,
                       "initial_lr": 2.1e-5}
    seed = 1234

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        configuration = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return configuration

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
    """The paper's recipe (QCResUNet, dropout 0.3, Adam at lr 2.1e-4) on a short CPU schedule sized to a time
    budget: 32 epochs, validation on 40 samples per epoch, checkpoint_latest every 6 epochs (a checkpoint with
    Adam's state is about 200 MB), the decay of x 0.9 per 250 iterations. Before the first epoch it times its own
    training step (in this CPU's precision: bf16 autocast where the CPU has native bf16, fp32 otherwise) and
    takes as many iterations per epoch, 20 to 100, as fit `training_minutes` together with the validations
    (nnQC_training_minutes overrides the 12 minutes); the choice is written to the fold's
    training_schedule.json and kept when training resumes. training_minutes = None keeps 100 iterations (the
    benchmarks, which limit the time themselves).

    On CPU, learning rates above the paper's made the regression collapse to a near-constant output within
    such a schedule (measured with benchmarks/benchmark_learning.py)."""
    hyperparameters = {"num_epochs": 32, "num_iterations_per_epoch": 100, "num_val_samples_per_epoch": 40,
                       "lr_decay": 0.9 ** (100 / 250), "save_every": 6}
    training_minutes: float | None = 12.0
    min_iterations_per_epoch = 20

    def budget_seconds(self) -> float:
        value = os.environ.get(BUDGET_VARIABLE, "").strip()
        try:
            minutes = float(value) if value else self.training_minutes
        except ValueError:
            raise ValueError(f"{BUDGET_VARIABLE}={value!r} is not a number of minutes") from None
        if not minutes > 0:
            raise ValueError(f"the training budget must be positive minutes, not {minutes} ({BUDGET_VARIABLE})")
        return 60 * minutes

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.training_minutes is None:
            return
        schedule = read_schedule(self.output_folder)
        if schedule is None:
            schedule = self.timed_schedule(self.budget_seconds())
            if self.local_rank == 0:
                write_schedule(self.output_folder, schedule)
        else:
            self.print_to_log_file(f"keeping the schedule of {SCHEDULE_FILE} (written when this training started)")
        self.num_iterations_per_epoch = schedule.num_iterations_per_epoch
        self.lr_decay = self.lr_scheduler.gamma = 0.9 ** (schedule.num_iterations_per_epoch / 250)
        self.print_to_log_file(schedule.describe())

    def timed_schedule(self, budget_seconds: float) -> BudgetedSchedule:
        """Times training steps on real batches and a forward pass (validation's cost), then puts the weights and
        the optimizer's state back as they were: the timing trains nothing."""
        network = self._unwrapped_network()
        weights = copy.deepcopy(network.state_dict())
        optimizer_state = copy.deepcopy(self.optimizer.state_dict())
        synchronize = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        network.train()
        seconds_per_iteration = median_seconds(
            lambda: (self.train_step(next(self.dataloader_train)), synchronize()), 2, 5)
        x, _, _ = self._inputs(next(self.dataloader_train), train=False)
        network.eval()
        with torch.no_grad():
            seconds_per_validation_batch = median_seconds(lambda: (self._run_network(network, x), synchronize()), 1, 3)
        network.load_state_dict(weights)
        self.optimizer.load_state_dict(optimizer_state)
        self.optimizer.zero_grad(set_to_none=True)
        final_batches = math.ceil(len(self.validation_samples()) / self._validation_batch_size())
        validation_batches = self.num_epochs * self.num_val_iterations_per_epoch + final_batches
        iterations = iterations_for_budget(budget_seconds, self.num_epochs, seconds_per_iteration,
                                           validation_batches, seconds_per_validation_batch,
                                           self.min_iterations_per_epoch, self.num_iterations_per_epoch)
        return BudgetedSchedule(
            budget_seconds, self.num_epochs, iterations, seconds_per_iteration, seconds_per_validation_batch,
            projected_seconds(self.num_epochs, iterations, seconds_per_iteration, validation_batches,
                              seconds_per_validation_batch),
            "bf16 autocast (native)" if self.uses_cpu_bf16() else "fp32")

    def on_train_end(self) -> None:
        super().on_train_end()
        starts = self.logger.local_logger.my_fantastic_logging["epoch_start_timestamps"]
        ends = self.logger.local_logger.my_fantastic_logging["epoch_end_timestamps"]
        if self.training_minutes is not None and starts and ends:
            self.print_to_log_file(f"{len(ends)} epochs took {(ends[-1] - starts[0]) / 60:.1f} min (pauses of a "
                                   f"resumed training included)")
