"""What a segmenter fold has done: its settings, its snapshot epochs, which are written, whether training ended.

One small JSON file per (channel subset, fold), written atomically, read by the orchestrating process to skip
finished work without starting nnU-Net, and by the training process to skip finished snapshots on resume.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from nnqc.atomic_files import write_json_atomically


def resolve_snapshot_epochs(snapshots: Sequence[str], num_epochs: int) -> list[int]:
    """'20' is epoch 20 (after 20 completed epochs), '20%' is 20 % of the schedule (at least epoch 1)."""
    epochs = set()
    for text in snapshots:
        text = str(text).strip()
        try:
            if text.endswith("%"):
                percent = float(text[:-1])
                if not 0 < percent <= 100:
                    raise ValueError
                epochs.add(max(1, round(percent / 100 * num_epochs)))
            else:
                epoch = int(text)
                if not 1 <= epoch <= num_epochs:
                    raise ValueError
                epochs.add(epoch)
        except ValueError:
            raise ValueError(f"snapshot {text!r}: give an epoch in 1..{num_epochs} or a percentage in (0, 100] of "
                             f"the trainer's {num_epochs} epochs") from None
    return sorted(epochs)


@dataclass
class SnapshotState:
    trainer: str | None = None
    configuration: str | None = None
    initial_lr: float | None = None
    num_epochs: int | None = None
    snapshot_epochs: list[int] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    training_finished: bool = False
    training_cases: list[str] = field(default_factory=list)        # the fold's training split, as nnU-Net used it
    written: dict[str, list[str]] = field(default_factory=dict)    # epoch -> cases segmented at that snapshot

    @classmethod
    def load(cls, path: str) -> SnapshotState:
        if not os.path.isfile(path):
            return cls()
        with open(path, encoding="utf-8") as f:
            return cls(**json.load(f))

    def save(self, path: str) -> None:
        write_json_atomically(path, asdict(self))

    def start(self, trainer: str, configuration: str, initial_lr: float, num_epochs: int,
              snapshot_epochs: Sequence[int]) -> None:
        """Record this run's settings; a fold already begun with other settings is refused (it would mix)."""
        settings = {"trainer": trainer, "configuration": configuration, "initial_lr": initial_lr,
                    "num_epochs": num_epochs}
        if self.trainer is not None:
            differing = {k: (getattr(self, k), v) for k, v in settings.items() if getattr(self, k) != v}
            if differing:
                described = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in differing.items())
                raise RuntimeError(f"this fold was begun with other settings ({described}); use the same settings "
                                   f"or another output folder")
        for key, value in settings.items():
            setattr(self, key, value)
        self.snapshot_epochs = sorted(int(e) for e in snapshot_epochs)

    def is_complete(self, snapshot_epochs: Sequence[int]) -> bool:
        return self.training_finished and set(snapshot_epochs) <= set(self.done)

    def mark_done(self, epoch: int, training_cases: Sequence[str], cases: Sequence[str]) -> None:
        self.done = sorted(set(self.done) | {int(epoch)})
        self.training_cases = sorted(training_cases)
        self.written[str(int(epoch))] = sorted(cases)
