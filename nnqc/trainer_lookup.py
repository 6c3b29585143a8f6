"""Trainer classes by name: nnQC's trainers, or a user's own trainer the user names (see nnqc.trusted_classes).

An explicit look-up instead of nnU-Net's package walk, which would import modules that need timm and would import
whatever a checkpoint names.
"""
from __future__ import annotations

from nnqc.trusted_classes import UntrustedClassError, import_object, trusted_class, user_trusted_classes


def get_trainer_class(name: str, source: str = "command line") -> type:
    """The trainer `name`: an nnQC trainer, a dotted path the user trusts, or (from the command line, where the user
    typed it) any dotted path. `source` is where the name was read; names read from files are never imported
    unless trusted. A checkpoint stores its trainer's bare class name, which also matches a trusted dotted path."""
    import nnqc_trainers

    if not isinstance(name, str):
        raise UntrustedClassError(f"{source}: the trainer name {name!r} is not a string")
    if "." in name:
        return import_object(name) if source == "command line" else trusted_class(name, "trainer", source)
    if name in nnqc_trainers.__all__:
        return getattr(nnqc_trainers, name)
    matches = [path for path in user_trusted_classes() if path.rpartition(".")[2] == name]
    if len(matches) == 1:
        return trusted_class(matches[0], "trainer", source)
    raise ValueError(f"{source}: unknown trainer {name!r}. nnQC trainers: {', '.join(nnqc_trainers.__all__)}; your "
                     f"own trainer can be given as a dotted path (package.module.ClassName)"
                     + ("" if source == "command line" else " with --trust_class"))
