"""Neurogenesis's promises beyond exactness: its defaults, its record, reproducible draws, and
the messages of its refusals (tests/topology/test_growth_and_adapt.py holds the exactness)."""

from __future__ import annotations

import pytest
import torch

import isoplastic as ip
from isoplastic.testing import random_isotropic_mlp
from isoplastic.topology.record import StructuralChange


def _snapshot(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in net.named_parameters()}


def test_defaults_add_one_neuron_with_outgoing_std_001_drawn_in_float64_and_keep_every_entry():
    """``neurogenesis(net, k)``: n = 1, outgoing column ``0.01 · N(0, 1)`` drawn in float64 from
    the generator, no diagonalisation (every existing entry kept bit for bit), and a record
    naming the layer and its space."""
    net = random_isotropic_mlp([6, 5, 40], "trainable", "trainable", seed=3)
    before = _snapshot(net)
    change = ip.neurogenesis(net, 0, generator=torch.Generator().manual_seed(7))
    assert change == StructuralChange(op="neurogenesis", layer=0, n=1, width_before=5,
                                      width_after=6, space="0")
    expected = 0.01 * torch.randn((40, 1), generator=torch.Generator().manual_seed(7),
                                  dtype=torch.float64)
    assert torch.equal(net.linears[1].weight.detach()[:, 5:], expected)
    assert torch.equal(net.linears[0].weight.detach()[:5], before["linears.0.weight"])
    assert torch.equal(net.linears[0].bias.detach()[:5], before["linears.0.bias"])
    assert torch.equal(net.linears[1].weight.detach()[:, :5], before["linears.1.weight"])


def test_float32_and_float64_networks_grown_from_one_seed_get_the_same_new_weights():
    """The draws are made in float64 and cast once, so the weights a seed gives do not depend on
    the network's dtype (a float32 draw is another stream of numbers)."""
    cols = {}
    for dtype in (torch.float32, torch.float64):
        net = random_isotropic_mlp([6, 5, 40], "trainable", "trainable", seed=3).to(dtype)
        ip.neurogenesis(net, 0, 2, init_scale=0.5, generator=torch.Generator().manual_seed(11))
        cols[dtype] = net.linears[1].weight.detach()[:, 5:]
    assert cols[torch.float32].dtype == torch.float32
    assert torch.equal(cols[torch.float32], cols[torch.float64].to(torch.float32))


def test_a_record_names_the_layer_by_its_space_on_a_composite_model():
    model = torch.nn.Sequential(torch.nn.Linear(3, 6), ip.IsotropicMLP([6, 5, 4]))
    change = ip.neurogenesis(model, "1.0", 2)
    assert change == StructuralChange(op="neurogenesis", layer=0, n=2, width_before=5,
                                      width_after=7, space="1.0")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": 0}, "neurogenesis: n=0 must be a positive integer"),
    ({"n": 2.0}, "neurogenesis: n=2.0 must be a positive integer"),
    ({"init_scale": -1.0}, "neurogenesis: init_scale=-1.0 must be finite and >= 0 (the standard "
                           "deviation of the new outgoing weights, e.g. 0.01)"),
    ({"init_scale": float("nan")}, "neurogenesis: init_scale=nan must be finite and >= 0 (the "
                                   "standard deviation of the new outgoing weights, e.g. 0.01)"),
])
def test_bad_arguments_are_refused_with_the_whole_message_and_nothing_changes(kwargs, message):
    net = random_isotropic_mlp([6, 5, 4], "trainable", "trainable", seed=3)
    before = _snapshot(net)
    with pytest.raises(ip.TopologyError) as info:
        ip.neurogenesis(net, 0, **kwargs)
    assert str(info.value) == message
    after = _snapshot(net)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_reparameterise_refusal_names_the_operation_and_the_layer():
    net = random_isotropic_mlp([6, 5, 4], "trainable", "trainable", seed=3)
    r = torch.eye(5, dtype=torch.float64)
    r[0, 0] = 2.0
    with pytest.raises(ip.TopologyError, match=r"^reparameterise\(net, k=0\): hidden layer 0: R is "
                                               r"not orthogonal"):
        ip.reparameterise(net, 0, r)
