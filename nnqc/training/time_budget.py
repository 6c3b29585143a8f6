"""Sizing a short training to a wall-clock budget from a timing of its own steps.

A schedule of fixed iterations takes twice as long on a CPU without native bf16 as on one with it; the demo's
training instead fixes its minutes and derives the iterations per epoch from the measured cost of a step, so that
it fits on either. The choice is written next to the checkpoints, so that resuming keeps it.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from nnqc.atomic_files import write_json_atomically

SCHEDULE_FILE = "training_schedule.json"


@dataclass(frozen=True)
class BudgetedSchedule:
    budget_seconds: float
    num_epochs: int
    num_iterations_per_epoch: int
    seconds_per_iteration: float
    seconds_per_validation_batch: float
    projected_seconds: float
    precision: str

    def describe(self) -> str:
        return (f"training budget {self.budget_seconds / 60:.1f} min ({self.precision}): a training iteration "
                f"takes {self.seconds_per_iteration:.2f} s, a validation batch "
                f"{self.seconds_per_validation_batch:.2f} s, so {self.num_epochs} epochs x "
                f"{self.num_iterations_per_epoch} iterations (about {self.projected_seconds / 60:.1f} min)")


def median_seconds(call: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median wall time of `call` over `repeats` runs after `warmup` untimed ones (the first steps allocate)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def iterations_for_budget(budget_seconds: float, num_epochs: int, seconds_per_iteration: float,
                          validation_batches: int, seconds_per_validation_batch: float,
                          minimum: int, maximum: int) -> int:
    """Training iterations per epoch that fit `budget_seconds` together with the validation batches (every
    epoch's and the final validation's: `validation_batches` in all), within [minimum, maximum]."""
    if seconds_per_iteration <= 0 or num_epochs <= 0:
        raise ValueError(f"cannot size a training from {seconds_per_iteration} s per iteration and {num_epochs} "
                         f"epochs")
    training_seconds = budget_seconds - validation_batches * seconds_per_validation_batch
    fitting = math.floor(training_seconds / (num_epochs * seconds_per_iteration))
    return int(min(maximum, max(minimum, fitting)))


def projected_seconds(num_epochs: int, iterations: int, seconds_per_iteration: float, validation_batches: int,
                      seconds_per_validation_batch: float) -> float:
    return num_epochs * iterations * seconds_per_iteration + validation_batches * seconds_per_validation_batch


def write_schedule(folder: str, schedule: BudgetedSchedule) -> None:
    write_json_atomically(os.path.join(folder, SCHEDULE_FILE), asdict(schedule))


def read_schedule(folder: str) -> BudgetedSchedule | None:
    """The schedule a training in `folder` chose before (None when it chose none); a damaged file is an error
    naming it, since guessing would change the schedule of a resumed training."""
    path = os.path.join(folder, SCHEDULE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return BudgetedSchedule(**json.load(f))
    except (ValueError, TypeError) as e:
        raise RuntimeError(f"{path} cannot be read as a training schedule ({e}); delete it to time the training "
                           f"again") from e
