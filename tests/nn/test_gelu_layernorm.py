"""GeluLayerNormMLP, the quality study's strongest baseline: ``Linear → LayerNorm → GELU`` per
hidden layer, drawn in the order of the equivalent ``nn.Sequential``, refused by every
structural operation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import isoplastic as ip


def _sequential(widths: list[int]) -> nn.Sequential:
    """The reference: ``Linear → LayerNorm → GELU`` per hidden layer, each ``Linear`` made and
    initialised (orthogonal weight, zero bias) before the next one."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-2], widths[1:-1]):
        lin = nn.Linear(a, b)
        nn.init.orthogonal_(lin.weight)
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.LayerNorm(b), nn.GELU()]
    out = nn.Linear(widths[-2], widths[-1])
    nn.init.orthogonal_(out.weight)
    nn.init.zeros_(out.bias)
    return nn.Sequential(*layers, out)


@pytest.mark.parametrize("widths", [[7, 5, 3], [9, 6, 4, 2], [5, 3]])
def test_same_draws_and_function_as_the_sequential_under_one_global_seed(widths):
    torch.manual_seed(11)
    ref = _sequential(widths).double()
    torch.manual_seed(11)
    net = ip.GeluLayerNormMLP(widths).double()
    refs = [m for m in ref if isinstance(m, nn.Linear)]
    for a, b in zip(net.linears, refs, strict=True):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert net.widths == widths and len(net.norms) == len(widths) - 2
    x = torch.randn(6, widths[0], dtype=torch.float64)
    assert torch.equal(net(x), ref(x))
    assert float(net.psi_penalty()) == 0.0


def test_a_generator_makes_the_initial_weights_reproducible():
    a = ip.GeluLayerNormMLP([6, 4, 3], generator=torch.Generator().manual_seed(2))
    b = ip.GeluLayerNormMLP([6, 4, 3], generator=torch.Generator().manual_seed(2))
    for la, lb in zip(a.linears, b.linears, strict=True):
        assert torch.equal(la.weight, lb.weight)
        assert torch.equal(la.bias, torch.zeros_like(la.bias))


def test_bad_arguments_and_structural_operations_are_refused():
    with pytest.raises(ValueError, match="widths"):
        ip.GeluLayerNormMLP([8])
    with pytest.raises(ValueError, match="init"):
        ip.GeluLayerNormMLP([8, 4, 2], init="kaiming")
    with pytest.raises(ip.TopologyError):
        ip.neurogenesis(ip.GeluLayerNormMLP([8, 4, 2]), 0, 1)
