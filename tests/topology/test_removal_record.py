"""The record a removal returns (topology/shrink.py), beyond its bound: the removed strengths and
biases it reports, the names, the refusals, and a bound that cannot be computed reported as
``inf`` (never NaN, which every ``<=`` comparison would pass)."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch

import isoplastic as ip
from isoplastic.testing import random_isotropic_mlp

DT = torch.float64


def test_chosen_neurons_report_their_row_norms_and_biases_in_the_current_basis():
    net = random_isotropic_mlp([4, 5, 3], "trainable", "trainable", seed=3)
    w, b = net.linears[0].weight.detach().clone(), net.linears[0].bias.detach().clone()
    rec = ip.remove_neurons(net, 0, torch.tensor([3, 1]))
    assert (rec.op, rec.layer, rec.n, rec.width_before, rec.width_after, rec.space) == \
        ("remove_neurons", 0, 2, 5, 3, "0")
    assert rec.removed_singular_values == pytest.approx([float(w[1].norm()), float(w[3].norm())],
                                                        rel=1e-15)
    assert rec.removed_bias == pytest.approx([float(b[1]), float(b[3])], rel=0, abs=0)
    assert rec.as_dict()["removed_bias"] == rec.removed_bias
    assert torch.equal(net.linears[0].weight.detach(), w[[0, 2, 4]])


def test_the_weakest_are_the_smallest_singular_values_and_their_biases_in_that_basis():
    net = random_isotropic_mlp([6, 4, 3], "trainable", "trainable", seed=4)
    w, b = net.linears[0].weight.detach(), net.linears[0].bias.detach()
    u, s, _ = torch.linalg.svd(w)
    rec = ip.neurodegeneration(net, 0, 2)
    assert rec.removed_singular_values == pytest.approx(s[2:].tolist(), rel=1e-12)
    expected = (u[:, 2:].T @ b).abs().tolist()  # up to the sign of each singular vector
    assert [abs(x) for x in rec.removed_bias] == pytest.approx(expected, rel=1e-12)


def test_a_bound_that_overflows_is_reported_as_inf_never_nan():
    net = random_isotropic_mlp([3, 3, 2], "trainable", "trainable", seed=5)
    with torch.no_grad():
        net.linears[0].weight[2].zero_()  # a silent neuron: σ = 0 ...
        net.linears[0].bias[2] = 0.0
        net.linears[1].weight.mul_(1e308)  # ... read by weights whose norm overflows
    rec = ip.remove_neurons(net, 0, [2])
    assert rec.removed_singular_values == [0.0]
    assert rec.predicted_bound == math.inf  # 0 · inf would be NaN
    assert rec.predicted_offset == math.inf


@pytest.mark.parametrize(("call", "message"), [
    (lambda n: ip.neurodegeneration(n, 0, 1, criterion="largest"),
     "neurodegeneration: criterion='largest'; choose one of ('singular_value', 'impact')"),
    (lambda n: ip.remove_neurons(n, 0, []),
     "remove_neurons(net, k=0): no indices given; pass at least one"),
    (lambda n: ip.remove_neurons(n, 0, [0, 1, 2, 3]),
     "remove_neurons(net, k=0, n=4): hidden layer 0 has 4 neurons, and removing 4 would "
     "disconnect the network; use n <= 3"),
])
def test_bad_removals_are_refused_whole(call, message):
    net = random_isotropic_mlp([3, 4, 2], "trainable", "trainable", seed=6)
    with pytest.raises(ip.TopologyError, match=f"^{re.escape(message)}$"):
        call(net)
    assert net.widths == [3, 4, 2]


def test_expectation_mode_without_a_recorded_gain_names_the_fix():
    net = random_isotropic_mlp([3, 4, 2], "constant", "expectation", seed=7)
    with pytest.raises(ip.TopologyError) as info:
        ip.remove_neurons(net, 0, [1])
    assert str(info.value) == (
        "remove_neurons(net, k=0): psi='expectation' folds mean(g)·b*·w* into the next bias, but "
        "no training-mode forward pass has recorded the mean gain yet; run one batch through "
        "net.train() first")


def test_bound_and_offset_of_a_two_neuron_removal_by_hand():
    """n = 2 (so ‖W_D‖ is a matrix norm: spectral, not Frobenius), removed ψ entries non-zero and
    no intrinsic length (so the offset has both its ψ and its bias term)."""
    net = random_isotropic_mlp([4, 5, 5, 5, 3], "none", "trainable", seed=8)
    k = 1
    w, b = net.linears[k].weight.detach(), net.linears[k].bias.detach()
    psi, w_next = net.psi[k - 1].detach(), net.linears[k + 1].weight.detach()
    u, s, _ = torch.linalg.svd(w)
    d = u[:, 3:]  # the two weakest directions
    w_d = w_next @ d
    factor = float(torch.linalg.matrix_norm(w_d, ord=2)) + float(
        torch.linalg.matrix_norm(w_next, ord=2))
    assert float(w_d.norm()) > float(torch.linalg.matrix_norm(w_d, ord=2)) * (1 + 1e-6)
    bound = float(s[3:].sum()) * factor
    offset = float((d.T @ psi).abs().sum()) * factor + float((d.T @ b).norm()) * factor
    rec = ip.neurodegeneration(net, k, 2)
    assert math.isclose(rec.predicted_bound, bound, rel_tol=1e-9)
    assert math.isclose(rec.predicted_offset, offset, rel_tol=1e-9)


def test_a_copy_with_its_own_mean_gain_folds_with_its_own():
    """ψ mode "expectation": the fold uses each copy's own recorded mean gain when it has one."""
    net = random_isotropic_mlp([3, 4, 3], "constant", "expectation", seed=9)
    with torch.no_grad():
        net.linears[0].weight[1].zero_()
    twin = copy.deepcopy(net)
    net.train()
    twin.train()
    net(torch.randn(6, 3, dtype=DT))
    twin(3.0 * torch.randn(6, 3, dtype=DT))  # another batch: another mean gain
    g_twin = twin.hidden_layer(0).mean_gain
    assert g_twin != net.hidden_layer(0).mean_gain
    b1, w1 = twin.linears[0].bias.detach()[1], twin.linears[1].weight.detach()[:, 1]
    expected = twin.linears[1].bias.detach() + g_twin * w1 * b1
    ip.mirror(net, twin)
    ip.remove_neurons(net, 0, [1])
    assert torch.allclose(twin.linears[1].bias.detach(), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize(("call", "message"), [
    (lambda n: ip.neurodegeneration(n, 0, 0), "neurodegeneration: n=0 must be a positive integer"),
    (lambda n: ip.remove_neurons(n, 0, [9]),
     "remove_neurons(net, k=0): indices [9] must lie in 0..3"),
])
def test_count_and_index_refusals_name_the_operation(call, message):
    net = random_isotropic_mlp([3, 4, 2], "trainable", "trainable", seed=6)
    with pytest.raises(ip.TopologyError, match=f"^{re.escape(message)}$"):
        call(net)


def test_a_removal_without_the_optimizer_that_holds_state_is_refused_by_name():
    net = random_isotropic_mlp([3, 4, 2], "trainable", "trainable", seed=6)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net(torch.randn(5, 3, dtype=DT)).square().sum().backward()
    opt.step()
    with pytest.raises(ip.UnsupportedOptimizerError, match=re.escape(
            "neurodegeneration(net, k=0): the parameters it changes have state in a Adam "
            "optimizer, but no optimizer was passed; ")):
        ip.neurodegeneration(net, 0, 1)
    assert net.widths == [3, 4, 2]


def test_neurodegeneration_removes_one_neuron_by_default():
    net = random_isotropic_mlp([4, 5, 3], "trainable", "trainable", seed=3)
    rec = ip.neurodegeneration(net, 0)
    assert (rec.op, rec.n, rec.width_before, rec.width_after) == ("neurodegeneration", 1, 5, 4)


def test_remove_neurons_transports_the_optimizer_state_of_the_kept_neurons_unrotated():
    # in the current basis, without a rotation: the kept neurons' state rows are the old ones
    net = random_isotropic_mlp([4, 5, 3], "trainable", "trainable", seed=3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(6, 4, dtype=DT)).square().sum().backward()
    opt.step()
    w = net.linears[0].weight
    old = {key: value.clone() for key, value in opt.state[w].items() if value.dim() == 2}
    ip.remove_neurons(net, 0, [1, 3], opt)
    assert set(old) == {"exp_avg", "exp_avg_sq"}
    for key, value in old.items():
        assert torch.equal(opt.state[w][key], value[[0, 2, 4]])
