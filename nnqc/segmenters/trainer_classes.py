"""nnU-Net trainer classes by name, by explicit import (nnU-Net's own look-up walks into modules needing timm)."""
from __future__ import annotations

import importlib

from nnqc.trusted_classes import import_object

# modules whose nnU-Net trainers can be named without a dotted path
_KNOWN_MODULES = ("nnunetv2.training.nnUNetTrainer.nnUNetTrainer",
                  "nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs",
                  "nnqc_trainers.segmenter_schedules")


def segmenter_trainer_class(name: str) -> type:
    """nnUNetTrainer, nnU-Net's nnUNetTrainer_Xepochs variants, nnQC's short segmenter schedules, or any class by
    dotted path (package.module.ClassName)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    if "." in name:
        found = import_object(name)
    else:
        found = next((getattr(m, name) for m in map(importlib.import_module, _KNOWN_MODULES) if hasattr(m, name)),
                     None)
        if found is None:
            raise ValueError(f"unknown nnU-Net trainer {name!r}: give nnUNetTrainer, one of nnU-Net's "
                             f"nnUNetTrainer_<N>epochs, or your trainer as a dotted path (package.module.ClassName)")
    if not (isinstance(found, type) and issubclass(found, nnUNetTrainer)):
        raise ValueError(f"{name!r} is not an nnU-Net trainer (a subclass of nnUNetTrainer)")
    return found
