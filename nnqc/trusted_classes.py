"""Classes named in files (plans, checkpoints) resolved only from an allow-list, so a shared model runs no code.

A plans file names its network class and the operations it is built with (norm, non-linearity) by dotted path,
and a checkpoint names its trainer. Importing whatever a file names would let a crafted model run code (a "class"
`os.system` with a `command` keyword runs a shell command). nnQC therefore accepts only its own networks and
trainers, torch's norms, non-linearities, dropouts and convolutions, and the classes the user names explicitly:
with `--trust_class` on the command line or in the environment variable nnQC_trusted_classes (comma-separated
dotted paths). Nothing outside the list is imported.
"""
from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Iterable
from typing import Any

from torch import nn

TRUSTED_CLASSES_ENV = "nnQC_trusted_classes"

_TORCH_OPS = (
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.GroupNorm, nn.LayerNorm, nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
    nn.Sigmoid, nn.Hardswish, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Conv1d, nn.Conv2d,
    nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Identity,
)


class UntrustedClassError(ValueError):
    """A file names a class that is not on the allow-list; the message names the file, the value and the way out."""


def _dotted_names(cls: type, *aliases: str) -> set[str]:
    return {f"{cls.__module__}.{cls.__qualname__}", *(f"{alias}.{cls.__name__}" for alias in aliases)}


@functools.cache
def _builtin_trusted() -> frozenset[str]:
    import nnqc.network_architecture as networks
    import nnqc_trainers

    names: set[str] = set()
    for op in _TORCH_OPS:
        names |= _dotted_names(op, "torch.nn")
    for name in networks.__all__:
        names |= _dotted_names(getattr(networks, name), "nnqc.network_architecture")
    for name in nnqc_trainers.__all__:
        names |= _dotted_names(getattr(nnqc_trainers, name), "nnqc_trainers")
    return frozenset(names)


def user_trusted_classes() -> list[str]:
    """The dotted paths the user trusts: nnQC_trusted_classes (set by --trust_class, inherited by workers)."""
    return [name.strip() for name in os.environ.get(TRUSTED_CLASSES_ENV, "").split(",") if name.strip()]


def trust_classes(names: Iterable[str]) -> None:
    """Add classes the user named on the command line to the allow-list of this process and its children."""
    names = [n for n in names if n]
    for name in names:
        module, _, attribute = name.rpartition(".")
        if not module or not attribute:
            raise ValueError(f"--trust_class {name!r} is not a dotted path (package.module.ClassName)")
    if names:
        os.environ[TRUSTED_CLASSES_ENV] = ",".join(dict.fromkeys([*user_trusted_classes(), *names]))


def is_trusted(dotted_path: str) -> bool:
    return dotted_path in _builtin_trusted() or dotted_path in user_trusted_classes()


def import_object(dotted_path: str) -> Any:
    """Import `package.module.Name` (no allow-list: for names the user typed, never for names read from files)."""
    module_name, _, attribute = dotted_path.rpartition(".")
    if not module_name:
        raise ValueError(f"'{dotted_path}' is not a dotted path (package.module.Name)")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"cannot import '{dotted_path}': {e}") from e


def trusted_class(dotted_path: Any, what: str, source: str) -> type:
    """The class `dotted_path` names, imported only when it is on the allow-list; `what` (e.g. "network class")
    and `source` (the file it was read from) go into the error."""
    if not isinstance(dotted_path, str) or not is_trusted(dotted_path):
        raise UntrustedClassError(
            f"{source}: {what} {dotted_path!r} is not one nnQC trusts (nnQC's networks and trainers, torch's norms, "
            f"non-linearities, dropouts and convolutions), so it was not imported. If you trust the model it came "
            f"with, name the class with --trust_class {dotted_path} or in the environment variable "
            f"{TRUSTED_CLASSES_ENV}")
    found = import_object(dotted_path)
    if not isinstance(found, type):
        raise UntrustedClassError(f"{source}: {what} {dotted_path!r} is not a class")
    return found
