"""How a change writes new values into a parameter (core/change.py, ``replace_values``): a
resized parameter keeps its Python object and its ``requires_grad``, and every autograd graph
built before the resize that still holds it, even only through its gradient accumulator, refuses
to backpropagate instead of writing a gradient of the old shape nobody reads."""

from __future__ import annotations

import pytest
import torch

import isoplastic as ip
from isoplastic.testing import random_isotropic_mlp


def _net() -> ip.IsotropicMLP:
    return random_isotropic_mlp([4, 5, 3], "trainable", "trainable", seed=2)


def test_a_frozen_parameter_stays_frozen_through_a_resize():
    net = _net()
    w = net.linears[0].weight
    w.requires_grad_(False)
    ip.neurogenesis(net, 0, 2)
    ip.neurodegeneration(net, 0, 1)
    assert net.linears[0].weight is w and w.shape == (6, 4)
    assert not w.requires_grad
    assert net.linears[1].weight.requires_grad


def test_a_graph_holding_a_parameter_only_through_its_accumulator_is_stale_after_a_resize():
    # w.sum() saves nothing: the graph reaches w only through w's gradient accumulator
    net = _net()
    stale = net.linears[0].weight.sum()
    ip.neurogenesis(net, 0, 2)
    with pytest.raises(RuntimeError, match="built before a structural change resized"):
        stale.backward()
    net(torch.randn(3, 4, dtype=torch.float64)).sum().backward()  # a new graph trains on
    assert net.linears[0].weight.grad.shape == (7, 4)
