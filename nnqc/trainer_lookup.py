"""Trainer classes by name: the nnqc_trainers package, or any dotted path for a user's own trainer.

An explicit import instead of nnU-Net's package walk, which would import modules that need timm.
"""
from __future__ import annotations

from nnqc.network_architecture.build import import_object


def get_trainer_class(name: str) -> type:
    if "." in name:
        return import_object(name)
    import nnqc_trainers

    trainer = getattr(nnqc_trainers, name, None)
    if not isinstance(trainer, type):
        raise ValueError(f"unknown trainer {name!r}. nnQC trainers: {', '.join(nnqc_trainers.__all__)}; "
                         f"your own trainer can be given as a dotted path (package.module.ClassName)")
    return trainer
