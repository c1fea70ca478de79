"""Hidden spaces as objects (core/space.py) and the names that address them (core/model.py):
the three primitives on a space, its size and finiteness checks, space names and every refusal
of a name, index or mirror, with the whole message."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from reference import assert_identical, snapshot

import isoplastic as ip
from isoplastic.core.space import Axis, HiddenSpace
from isoplastic.errors import NonFiniteError, TopologyError
from isoplastic.testing import random_isotropic_mlp

DT = torch.float64


def _trained():
    net = random_isotropic_mlp([4, 3, 3, 2], "trainable", "trainable", seed=4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(4), dtype=DT)
    for _ in range(2):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
    return net, opt, x


# -- the primitives on a space ----------------------------------------------------------------

def test_space_rotate_moves_every_axis_and_its_state_and_keeps_the_function():
    net, opt, x = _trained()
    y = net(x).detach()
    space = ip.hidden_spaces(net)["1"]
    r = ip.random_orthogonal(3, generator=torch.Generator().manual_seed(1))
    w1, w2 = net.linears[1].weight, net.linears[2].weight
    before = (w1.detach().clone(), w2.detach().clone(), opt.state[w1]["exp_avg"].clone())
    space.rotate(r, opt)
    assert torch.allclose(w1.detach(), r.T @ before[0], atol=1e-14)
    assert torch.allclose(w2.detach(), before[1] @ r, atol=1e-14)
    assert torch.allclose(opt.state[w1]["exp_avg"], r.T @ before[2], atol=1e-14)
    assert torch.allclose(net(x), y, atol=1e-12)


def test_space_insert_takes_initial_values_per_role_and_zeros_elsewhere():
    net, opt, x = _trained()
    space = ip.hidden_spaces(net)["1"]
    seen = []

    def outgoing(shape: torch.Size) -> torch.Tensor:
        seen.append(tuple(shape))
        return torch.full(shape, 0.5, dtype=DT)

    space.insert(2, opt, init={"outgoing": outgoing})
    assert seen == [(2, 2)]  # the new slice of W_2 (n_next, n)
    assert net.widths == [4, 3, 5, 2]
    assert bool((net.linears[2].weight[:, 3:] == 0.5).all())
    assert bool((net.linears[1].weight[3:] == 0).all()) and bool((net.linears[1].bias[3:] == 0).all())
    assert opt.state[net.linears[2].weight]["exp_avg_sq"].shape == (2, 5)


def test_space_remove_drops_the_coordinates_everywhere():
    net, opt, _ = _trained()
    space = ip.hidden_spaces(net)["0"]
    w0, w1 = net.linears[0].weight.detach().clone(), net.linears[1].weight.detach().clone()
    space.remove([1], opt)
    assert net.widths == [4, 2, 3, 2]
    assert torch.equal(net.linears[0].weight.detach(), w0[[0, 2]])
    assert torch.equal(net.linears[1].weight.detach(), w1[:, [0, 2]])
    assert [a.size for a in space.axes] == [2, 2, 2]
    assert space.size == 2 and len(space.params()) == 3


def test_a_space_whose_axes_disagree_names_them():
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)
    space = HiddenSpace("odd", [Axis(a, "weight", 0, "incoming"), Axis(b, "weight", 0, "incoming"),
                                Axis(a, "weight", 0, "incoming")])
    with pytest.raises(TopologyError) as info:
        _ = space.size
    assert str(info.value) == (
        "odd: its axes disagree on the width (Linear.weight(3, 4)[dim 0, incoming], "
        "Linear.weight(2, 3)[dim 0, incoming], Linear.weight(3, 4)[dim 0, incoming])")
    assert space.params() == [a.weight, b.weight]  # each parameter once, in axis order


def test_a_non_finite_tensor_in_a_space_is_named():
    net, opt, _ = _trained()
    with torch.no_grad():
        net.linears[2].weight[0, 1] = math.nan
    snap = snapshot(net, opt)
    with pytest.raises(NonFiniteError) as info:
        ip.hidden_spaces(net)["1"].insert(1, opt)
    assert str(info.value) == (
        "hidden layer 1: Linear.weight(2, 3)[dim 1, outgoing] holds NaN or Inf; a structural "
        "change would spread it. Restore the model from a checkpoint or lower the learning rate")
    assert_identical(snap, net, opt)


# -- names, indices and mirrors -----------------------------------------------------------------

def _composite() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(2, 4), ip.IsotropicMLP([4, 3, 5, 2]))


@pytest.mark.parametrize(("model", "key", "message"), [
    (_composite, "1.5", "neurogenesis: no hidden space named '1.5' in Sequential; its hidden "
                        "spaces are '1.0', '1.1'"),
    (_composite, "x.0", "neurogenesis: no hidden space named 'x.0' in Sequential; its hidden "
                        "spaces are '1.0', '1.1'"),
    (_composite, 0, "neurogenesis: k=0 addresses a hidden layer of a bare isoplastic block, but "
                    "Sequential is a composite model; name the space instead, one of '1.0', '1.1'"),
    (lambda: ip.IsotropicMLP([4, 3, 3, 2]), 2,
     "neurogenesis: hidden layer k=2 is out of range; this network has 2 hidden layers and "
     "neurogenesis accepts k in 0..1"),
    (lambda: ip.IsotropicMLP([4, 3, 3, 2]), True,
     "neurogenesis: hidden layer k=True is out of range; this network has 2 hidden layers and "
     "neurogenesis accepts k in 0..1"),
    (lambda: torch.nn.Linear(2, 3), 0,
     "neurogenesis: Linear does not declare hidden spaces; structural operations work on "
     "isoplastic.IsotropicMLP, isoplastic.IsotropicCNN, models that contain them, or modules "
     "subclassing isoplastic.core.IsoplasticBlock"),
])
def test_bad_names_and_indices_are_refused_with_what_exists(model, key, message):
    m = model()
    with pytest.raises(TopologyError, match=f"^{re.escape(message)}$"):
        ip.neurogenesis(m, key, 1)


def test_a_composite_name_is_checked_against_the_operations_range():
    with pytest.raises(TopologyError, match=re.escape(
            "full_diagonalise('1.0'): hidden layer k=0 is out of range; this network has 2 "
            "hidden layers and full_diagonalise('1.0') accepts k in 1..1")):
        ip.full_diagonalise(_composite(), "1.0")
    assert ip.full_diagonalise(_composite(), "1.1").shape == (3,)


def test_names_of_nested_blocks_and_of_a_bare_block():
    inner = torch.nn.Module()
    inner.block = ip.IsotropicMLP([4, 3, 3, 4])
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), inner)
    assert list(ip.hidden_spaces(model)) == ["1.block.0", "1.block.1"]
    assert list(ip.hidden_spaces(inner.block)) == ["0", "1"]
    space = ip.hidden_spaces(model)["1.block.1"]
    assert space.block is inner.block and space.index == 1


def test_blocks_of_a_non_module_is_a_topology_error():
    from isoplastic.core.model import blocks
    with pytest.raises(TopologyError, match="^expected a torch.nn.Module holding isoplastic "
                                            "blocks; got list$"):
        blocks([ip.IsotropicMLP([2, 2, 2])])


def test_full_diagonalise_needs_interior_dense_or_1x1_layers():
    mlp = ip.IsotropicMLP([4, 3, 3, 2])
    assert [mlp.can_full_diagonalise(k) for k in (0, 1, 2)] == [False, True, False]
    cnn = ip.IsotropicCNN((1, 5, 5), [3, 4, 2], [3, 3, 1], head=[], n_classes=2)
    assert [cnn.can_full_diagonalise(k) for k in (1, 2)] == [False, True]


def test_mirror_refusals_and_its_handle():
    net = random_isotropic_mlp([4, 3, 3, 2], "trainable", "trainable", seed=5)
    with pytest.raises(TopologyError, match="^mirror: a model cannot mirror itself$"):
        ip.mirror(net, net)
    with pytest.raises(TopologyError, match=re.escape(
            "mirror: IsotropicMLP does not have IsotropicMLP's blocks (blocks and hidden widths "
            "[('IsotropicMLP', [3])] against [('IsotropicMLP', [3, 3])]); mirror a copy made "
            "with copy.deepcopy(model) or AveragedModel(model)")):
        ip.mirror(net, ip.IsotropicMLP([4, 3, 2]))
    with pytest.raises(TopologyError, match="^mirror: Linear does not declare hidden spaces"):
        ip.mirror(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    twin, other = copy.deepcopy(net), copy.deepcopy(net)
    handle = ip.mirror(net, twin, other)
    assert [(a is net, b is c) for (a, b), c in zip(handle.pairs, (twin, other), strict=True)] \
        == [(True, True), (True, True)]
    ip.neurogenesis(net, 0, 1)
    assert twin.widths == other.widths == [4, 4, 3, 2]
    handle.remove()
    assert handle.pairs == []
    ip.neurogenesis(net, 0, 1)
    assert net.widths == [4, 5, 3, 2] and twin.widths == [4, 4, 3, 2]  # no longer replayed


def test_the_primitives_name_themselves_in_their_refusals():
    net = random_isotropic_mlp([4, 3, 3, 2], "trainable", "trainable", seed=4)
    space = ip.hidden_spaces(net)["1"]
    cases = [
        (lambda: space.rotate(torch.eye(2, dtype=DT)),
         "rotate: R has shape (2, 2); hidden layer 1 has 3 coordinates, so pass an orthogonal "
         "matrix of shape (3, 3)"),
        (lambda: space.insert(0), "insert: n=0 must be a positive integer"),
        (lambda: space.remove([9]), "remove: hidden layer 1: indices [9] must lie in 0..2"),
    ]
    for call, message in cases:
        with pytest.raises(TopologyError, match=f"^{re.escape(message)}$"):
            call()
    assert net.widths == [4, 3, 3, 2]


def test_initial_values_of_another_dtype_do_not_change_the_parameters_dtype():
    net = random_isotropic_mlp([4, 3, 3, 2], "trainable", "trainable", seed=4).float()
    space = ip.hidden_spaces(net)["0"]
    space.insert(1, init={"outgoing": lambda shape: torch.full(shape, 0.25, dtype=DT)})
    w = net.linears[1].weight
    assert w.dtype == torch.float32 and bool((w[:, 3] == 0.25).all())
