"""Test-time mirroring: outputs averaged over every mirroring of the spatial axes, SEMs mirrored back."""
import contextlib

import torch
from torch import nn

from nnqc.inference.forward import mirrored_forward, mirrorings


class OrientedNetwork(nn.Module):
    """Regression that depends on orientation (a weighted sum with a ramp along every axis), and SEM logits that
    are a voxel-wise function of the input: mirroring the input mirrors them."""

    def forward(self, x):
        ramp = sum(torch.arange(n, dtype=x.dtype).view(*[n if a == d else 1 for a in range(3)])
                   for d, n in enumerate(x.shape[2:]))
        regression = torch.stack([(x[:, 0] * ramp).mean((1, 2, 3)), x[:, 1].mean((1, 2, 3))], 1)
        return regression, x[:, 1:2] * 2 - 1


def test_mirrorings_are_every_combination_identity_first():
    assert mirrorings((0, 1, 2)) == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert mirrorings(()) == [()]
    assert mirrorings((2, 0)) == [(), (0,), (2,), (0, 2)]


def test_mirrored_forward_averages_the_mirrored_passes_and_mirrors_sems_back():
    torch.manual_seed(0)
    x = torch.rand(2, 2, 4, 5, 6)
    network = OrientedNetwork()
    regression, sem = mirrored_forward(network, x, (0, 1, 2), contextlib.nullcontext)
    expected = torch.stack([network(torch.flip(x, [a + 2 for a in axes]))[0] for axes in mirrorings((0, 1, 2))])
    assert torch.allclose(regression, expected.mean(0))
    assert not torch.allclose(regression, network(x)[0])  # the network does depend on orientation
    assert torch.allclose(sem, network(x)[1])  # a voxel-wise map comes back where it was
    plain = mirrored_forward(network, x, (), contextlib.nullcontext)
    assert torch.equal(plain[0], network(x)[0]) and torch.equal(plain[1], network(x)[1])
