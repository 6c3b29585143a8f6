"""Instantiate a network from a plans "architecture" entry by importing its dotted path.

nnU-Net's own look-up searches packages by class name and walks into modules that need timm; an explicit
import of the named module cannot.
"""
from __future__ import annotations

import importlib
from typing import Any

from torch import nn


def import_object(dotted_path: str) -> Any:
    module_name, _, attribute = dotted_path.rpartition(".")
    if not module_name:
        raise ValueError(f"'{dotted_path}' is not a dotted path (package.module.Name)")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"cannot import '{dotted_path}' named in the plans: {e}") from e


def build_network(network_class_name: str, arch_kwargs: dict, kw_requires_import: list[str] | tuple = (),
                  **overrides) -> nn.Module:
    """`network_class_name(**arch_kwargs, **overrides)`, with the kwargs named in `kw_requires_import`
    (e.g. norm_op "torch.nn.InstanceNorm3d") turned from dotted paths into objects."""
    kwargs = dict(arch_kwargs)
    for key in kw_requires_import:
        if isinstance(kwargs.get(key), str):
            kwargs[key] = import_object(kwargs[key])
    kwargs.update(overrides)
    return import_object(network_class_name)(**kwargs)
