"""How a change writes new values into a parameter (core/change.py, ``replace_values``): a
resized parameter keeps its Python object and its ``requires_grad``, and every autograd graph
built before the resize that still holds it, even only through its gradient accumulator, refuses
to backpropagate instead of writing a gradient of the old shape nobody reads."""

from __future__ import annotations

import threading
import weakref

import pytest
import torch

import isoplastic as ip
from isoplastic.core import Change
from isoplastic.testing import random_isotropic_mlp


def _net() -> ip.IsotropicMLP:
    return random_isotropic_mlp([4, 5, 3], "trainable", "trainable", seed=2)


def _net2() -> ip.IsotropicMLP:
    return random_isotropic_mlp([4, 5, 5, 3], "trainable", "trainable", seed=4)


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


def test_a_weakly_referenced_parameter_held_by_a_graph_is_refused_whole_by_name():
    # only the first of two resized spaces holds the stuck parameter: every resized space counts
    net = _net2()
    w0 = net.linears[0].weight
    ref = weakref.ref(w0)
    loss = net(torch.randn(3, 4, dtype=torch.float64)).sum()  # holds w0; not backpropagated
    before = [p.detach().clone() for p in net.parameters()]
    spaces = ip.hidden_spaces(net)
    with pytest.raises(ip.TopologyError) as info:
        Change("grow both").insert(spaces["0"], 1).insert(spaces["1"], 1).apply()
    assert str(info.value) == (
        "grow both: a parameter it resizes is weakly referenced and still held by a live autograd "
        "graph, so its gradient accumulator cannot be renewed; drop the graph first (del loss, "
        "clear held outputs), then repeat the change")
    assert net.widths == [4, 5, 5, 3]
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))
    assert ref() is w0 and loss.grad_fn is not None


def test_another_networks_optimizer_is_refused_with_its_class_named():
    net, other = _net(), _net()
    opt = torch.optim.SGD(other.parameters(), lr=0.1)
    with pytest.raises(ip.errors.UnsupportedOptimizerError) as info:
        ip.neurogenesis(net, 0, 1, opt)
    assert str(info.value) == (
        "neurogenesis(net, k=0): the SGD passed as optimizer= holds none of the parameters this "
        "change moves; pass the optimizer that trains this model")


def test_changes_can_be_made_from_another_thread():
    # each thread keeps its own stack of open transactions, created on first use
    net = _net()
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(ip.neurogenesis(net, 0, 2)))
    thread.start()
    thread.join()
    assert len(out) == 1 and net.widths == [4, 7, 3]


def test_a_frozen_parameter_held_by_a_live_graph_can_be_resized():
    # fine-tuning with a frozen middle layer and the previous loss alive: the graph keeps the
    # frozen weight (to reach the layer below), which has no gradient accumulator to mark
    net = random_isotropic_mlp([4, 5, 5, 3], "trainable", "trainable", seed=5)
    w1 = net.linears[1].weight
    w1.requires_grad_(False)
    loss = net(torch.randn(3, 4, dtype=torch.float64)).sum()
    ip.neurogenesis(net, 0, 1)
    assert w1.shape == (5, 6) and not w1.requires_grad
    assert loss.grad_fn is not None
