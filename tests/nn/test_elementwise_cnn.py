"""ElementwiseCNN, the CNN benchmark's baseline: the same layers and initial weights as the
isotropic CNN, element-wise tanh, and refused by every structural operation."""

from __future__ import annotations

import pytest
import torch

import isoplastic as ip


def test_same_layers_and_initial_weights_as_the_isotropic_cnn():
    kw = dict(kernel_sizes=3, head=[12], n_classes=4)
    iso = ip.IsotropicCNN((2, 9, 9), [5, 7], generator=torch.Generator().manual_seed(3), **kw)
    el = ip.ElementwiseCNN((2, 9, 9), [5, 7], generator=torch.Generator().manual_seed(3), **kw)
    for a, b in zip(iso.convs, el.convs, strict=True):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert torch.equal(iso.head_in.weight.squeeze(-1), el.linears[0].weight)
    x = torch.randn(3, 2, 9, 9)
    h = torch.tanh(el.convs[1](torch.tanh(el.convs[0](x)))).mean(dim=(2, 3))
    expect = el.linears[1](torch.tanh(el.linears[0](h)))
    assert torch.allclose(el(x), expect, atol=1e-6)
    assert float(el.psi_penalty()) == 0.0


def test_bad_arguments_and_structural_operations_are_refused():
    with pytest.raises(ValueError, match="odd size"):
        ip.ElementwiseCNN((1, 8, 8), [4], kernel_sizes=2)
    with pytest.raises(ValueError, match="activation"):
        ip.ElementwiseCNN((1, 8, 8), [4], activation="gelu")
    with pytest.raises(ip.TopologyError):
        ip.neurogenesis(ip.ElementwiseCNN((1, 8, 8), [4], head=[6]), 0, 1)
