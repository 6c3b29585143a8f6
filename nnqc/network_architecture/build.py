"""Instantiate a network from a plans "architecture" entry, importing only allow-listed classes.

nnU-Net's own look-up searches packages by class name and walks into modules that need timm, and imports whatever
the plans name; nnQC imports the named class only when it is trusted (see nnqc.trusted_classes).
"""
from __future__ import annotations

from torch import nn

from nnqc.trusted_classes import trusted_class


def build_network(network_class: str | type, arch_kwargs: dict, kw_requires_import: list[str] | tuple = (),
                  source: str = "plans.json", **overrides) -> nn.Module:
    """`network_class(**arch_kwargs, **overrides)`, with the kwargs named in `kw_requires_import` (e.g. norm_op
    "torch.nn.InstanceNorm3d") turned from dotted paths into classes. A class given by name comes from a file and
    must be trusted; `source` names that file for the error."""
    kwargs = dict(arch_kwargs)
    for key in kw_requires_import:
        if kwargs.get(key) is not None:
            kwargs[key] = trusted_class(kwargs[key], f"operation {key}", source)
    kwargs.update(overrides)
    if not isinstance(network_class, type):
        network_class = trusted_class(network_class, "network class", source)
    return network_class(**kwargs)
