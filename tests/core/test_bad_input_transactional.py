"""Bad input raises the library's clear error and leaves model and optimizer bit-identical."""

from __future__ import annotations

import pytest
import torch
from reference import assert_identical, probe, snapshot, train

import isoplastic as ip
from isoplastic.testing import random_isotropic_mlp

WIDTHS = [4, 5, 6, 3]  # two hidden layers (k = 0, 1)


def make(psi: str = "trainable"):
    net = random_isotropic_mlp(WIDTHS, "trainable", psi, seed=8)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, amsgrad=True)
    train(net, opt, probe(net), 2)
    net(probe(net))  # leaves gradients in place: they must survive a refused change too
    loss = net(probe(net)).sum()
    loss.backward()
    return net, opt


def eye(n):
    return torch.eye(n, dtype=torch.float64)


BAD_INDEX = [-1, 2, 7, 1.0, True]
# A string is a space name (ip.hidden_spaces): "0" is valid for a bare chain; these are not.
BAD_NAME = ["2", "x.0", "", "0.0"]


@pytest.mark.parametrize("k", BAD_INDEX + BAD_NAME, ids=repr)
@pytest.mark.parametrize("op", ["reparameterise", "left_diagonalise", "singular_values",
                                "neurogenesis", "neurodegeneration"])
def test_invalid_hidden_index_or_name_raises_and_changes_nothing(op, k):
    net, opt = make()
    snap = snapshot(net, opt)
    call = {
        "reparameterise": lambda: ip.reparameterise(net, k, eye(5), opt),
        "left_diagonalise": lambda: ip.left_diagonalise(net, k, opt),
        "singular_values": lambda: ip.singular_values(net, k),
        "neurogenesis": lambda: ip.neurogenesis(net, k, 1, opt),
        "neurodegeneration": lambda: ip.neurodegeneration(net, k, 1, opt),
    }[op]
    match = (rf"{op}: no hidden space named {k!r}.*its hidden spaces are '0', '1'"
             if isinstance(k, str) else
             rf"{op}: hidden layer k=.* is out of range; this network has 2 hidden layers")
    with pytest.raises(ip.TopologyError, match=match):
        call()
    assert_identical(snap, net, opt)


# Regression: k=None used to escape as a TypeError from ModuleList indexing.
@pytest.mark.parametrize("op", ["reparameterise", "left_diagonalise", "singular_values",
                                "neurogenesis", "neurodegeneration", "full_diagonalise"])
def test_hidden_index_none_raises_topology_error(op):
    net, opt = make()
    call = {
        "reparameterise": lambda: ip.reparameterise(net, None, eye(5), opt),
        "left_diagonalise": lambda: ip.left_diagonalise(net, None, opt),
        "singular_values": lambda: ip.singular_values(net, None),
        "neurogenesis": lambda: ip.neurogenesis(net, None, 1, opt),
        "neurodegeneration": lambda: ip.neurodegeneration(net, None, 1, opt),
        "full_diagonalise": lambda: ip.full_diagonalise(net, None, opt),
    }[op]
    with pytest.raises(ip.TopologyError, match="hidden layer k=None is out of range"):
        call()


@pytest.mark.parametrize("k", [0, 2, -1, 1.5], ids=repr)
def test_full_diagonalise_outside_interior_raises_and_changes_nothing(k):
    net, opt = make()
    snap = snapshot(net, opt)
    with pytest.raises(ip.TopologyError, match=r"full_diagonalise: hidden layer k=.* out of range.* "
                                               r"accepts k in 1\.\.1"):
        ip.full_diagonalise(net, k, opt)
    assert_identical(snap, net, opt)


def test_full_diagonalise_on_single_hidden_layer_network_names_the_problem():
    net = random_isotropic_mlp([4, 5, 3], "none", "none", seed=1)
    snap = snapshot(net)
    with pytest.raises(ip.TopologyError, match="the network is too shallow"):
        ip.full_diagonalise(net, 1)
    assert_identical(snap, net)


@pytest.mark.parametrize("n", [6, 7])
def test_removing_all_neurons_raises_and_changes_nothing(n):
    net, opt = make()
    snap = snapshot(net, opt)
    with pytest.raises(ip.TopologyError, match="would disconnect the network; use n <= 5"):
        ip.neurodegeneration(net, 1, n, opt)
    assert_identical(snap, net, opt)


@pytest.mark.parametrize("n", [0, -1, 1.0, True], ids=repr)
def test_bad_counts_raise_and_change_nothing(n):
    net, opt = make()
    snap = snapshot(net, opt)
    for op in (ip.neurogenesis, ip.neurodegeneration):
        with pytest.raises(ip.TopologyError, match=f"n={n!r} must be a positive integer"):
            op(net, 0, n, opt)
    assert_identical(snap, net, opt)


@pytest.mark.parametrize("indices", [[0, 1, 2], [3], [-1], []], ids=repr)
def test_removing_bad_output_sets_raises_and_changes_nothing(indices):
    net, opt = make()
    snap = snapshot(net, opt)
    with pytest.raises(ip.TopologyError, match="remove_outputs: "):
        ip.remove_outputs(net, indices, opt)
    assert_identical(snap, net, opt)


@pytest.mark.parametrize("bad,match", [
    (lambda: eye(5) * 1.01, "R is not orthogonal"),
    (lambda: eye(5) + 1e-3 * torch.ones(5, 5, dtype=torch.float64), "R is not orthogonal"),
    (lambda: torch.zeros(5, 5, dtype=torch.float64), "R is not orthogonal"),
    (lambda: eye(6), r"R has shape \(6, 6\); hidden layer 0 has 5 coordinates"),
    (lambda: eye(5)[:, :4], r"R has shape \(5, 4\)"),
    (lambda: eye(5).reshape(1, 5, 5), r"R has shape \(1, 5, 5\)"),
    (lambda: [[1.0]], "R has shape list"),
    (lambda: torch.full((5, 5), float("nan"), dtype=torch.float64), "R holds NaN or Inf"),
], ids=["scaled", "perturbed", "zeros", "too-big", "rectangular", "3d", "list", "nan"])
def test_bad_rotation_raises_and_changes_nothing(bad, match):
    net, opt = make()
    snap = snapshot(net, opt)
    with pytest.raises(ip.TopologyError, match=match):
        ip.reparameterise(net, 0, bad(), opt)
    assert_identical(snap, net, opt)


@pytest.mark.parametrize("where,value", [("incoming", float("nan")), ("outgoing", float("inf")),
                                         ("bias", float("-inf")), ("psi", float("nan"))],
                         ids=["incoming-nan", "outgoing-inf", "bias-neginf", "psi-nan"])
@pytest.mark.parametrize("op", ["reparameterise", "left_diagonalise", "full_diagonalise",
                                "neurogenesis", "neurodegeneration", "sparsify", "neuroadapt"])
def test_non_finite_weights_raise_and_change_nothing(op, where, value):
    net, opt = make()
    with torch.no_grad():
        target = {"incoming": net.linears[1].weight, "outgoing": net.linears[2].weight,
                  "bias": net.linears[1].bias, "psi": net.psi[0]}[where]
        target.view(-1)[0] = value
    snap = snapshot(net, opt)
    call = {
        "reparameterise": lambda: ip.reparameterise(net, 1, eye(6), opt),
        "left_diagonalise": lambda: ip.left_diagonalise(net, 1, opt),
        "full_diagonalise": lambda: ip.full_diagonalise(net, 1, opt),
        "neurogenesis": lambda: ip.neurogenesis(net, 1, 1, opt),
        "neurodegeneration": lambda: ip.neurodegeneration(net, 1, 1, opt),
        "sparsify": lambda: ip.sparsify(net, opt),
        "neuroadapt": lambda: ip.neuroadapt(net, 2, 0.1, opt),
    }[op]
    with pytest.raises(ip.NonFiniteError, match="holds NaN or Inf; a structural change would "
                                                "spread it"):
        call()
    assert_identical(snap, net, opt)


def test_transaction_rolls_back_a_failure_midway():
    net, opt = make()
    snap = snapshot(net, opt)
    x = probe(net)
    with torch.no_grad():
        before = net(x)
    with pytest.raises(RuntimeError, match="boom"), ip.transaction(net, opt):
        space = net.hidden_space(1)
        space.rotate(ip.random_orthogonal(6), opt)
        space.insert(2, opt)
        net.hidden_space(0).remove([0, 1], opt)
        raise RuntimeError("boom")
    assert_identical(snap, net, opt)
    assert [lin.in_features for lin in net.linears] == WIDTHS[:-1]
    assert [lin.out_features for lin in net.linears] == WIDTHS[1:]
    with torch.no_grad():
        assert torch.equal(net(x), before)


@pytest.mark.parametrize("op", ["reparameterise", "left_diagonalise", "full_diagonalise",
                                "sparsify", "singular_values", "neurogenesis",
                                "neurodegeneration", "neuroadapt"])
def test_elementwise_mlp_refuses_structural_operations(op):
    net = ip.ElementwiseMLP([4, 5, 6, 3]).double()
    snap = snapshot(net)
    call = {
        "reparameterise": lambda: ip.reparameterise(net, 0, eye(5)),
        "left_diagonalise": lambda: ip.left_diagonalise(net, 0),
        "full_diagonalise": lambda: ip.full_diagonalise(net, 1),
        "sparsify": lambda: ip.sparsify(net),
        "singular_values": lambda: ip.singular_values(net, 0),
        "neurogenesis": lambda: ip.neurogenesis(net, 0, 1),
        "neurodegeneration": lambda: ip.neurodegeneration(net, 0, 1),
        "neuroadapt": lambda: ip.neuroadapt(net),
    }[op]
    with pytest.raises(ip.TopologyError, match="ElementwiseMLP"):
        call()
    assert_identical(snap, net)


# Regression: resizing an ElementwiseMLP used to escape as an AttributeError.
@pytest.mark.parametrize("op", ["add_inputs", "remove_inputs", "add_outputs", "remove_outputs"])
def test_elementwise_mlp_refuses_input_output_resizing(op):
    net = ip.ElementwiseMLP([4, 5, 6, 3]).double()
    call = {
        "add_inputs": lambda: ip.add_inputs(net, 1),
        "remove_inputs": lambda: ip.remove_inputs(net, [0]),
        "add_outputs": lambda: ip.add_outputs(net, 1),
        "remove_outputs": lambda: ip.remove_outputs(net, [0]),
    }[op]
    with pytest.raises(ip.TopologyError, match="ElementwiseMLP"):
        call()
