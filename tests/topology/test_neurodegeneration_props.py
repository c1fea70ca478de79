"""Neurodegeneration: exact at σ = 0 with o and ψ updates, approximate otherwise, batched = loop."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import forward, neurodegeneration_loop, params_of, probe

import isoplastic as ip
from isoplastic.testing import (
    FLOAT_TOLERANCE,
    random_isotropic_mlp,
    relative_change,
    silence_last_neuron,
)
from isoplastic.testing.strategies import seeds, widths_lists

BIAS = 0.7


def removal_error(net: ip.IsotropicMLP, k: int, x: torch.Tensor, **kw) -> float:
    net.train()
    net(x)  # records the mean gain (psi='expectation')
    net.eval()
    with torch.no_grad():
        before = net(x)
    ip.neurodegeneration(net, k, 1, **kw)
    with torch.no_grad():
        return relative_change(before, net(x))


NARROW = widths_lists(min_hidden=1, max_hidden=3, min_width=2, max_width=6)


@settings(max_examples=40)
@given(widths=NARROW, seed=seeds(), data=st.data(),
       il=st.sampled_from(["constant", "trainable"]),
       psi=st.sampled_from(["constant", "trainable", "trainable+decay"]))
def test_removing_zero_sigma_neuron_is_exact_with_o_and_psi(widths, seed, data, il, psi,
                                                            float_dtype):
    net = random_isotropic_mlp(widths, il, psi, seed=seed, dtype=float_dtype)
    k = data.draw(st.integers(0, net.n_hidden - 1))
    silence_last_neuron(net, k)
    # The diagonalisation leaves round-off rows (~eps·‖W‖, 7e-9 in float32) where W_k has other
    # null directions; their ψ entries are not zeroed by the helper, so the σ = 0 direction the
    # removal picks may carry a ψ entry and the premise of exactness fails. Make them exact zeros.
    with torch.no_grad():
        w = net.linears[k].weight
        tiny = w.norm(dim=1) <= 100 * torch.finfo(float_dtype).eps * float(w.norm(dim=1).max())
        w[tiny] = 0.0
        if len(net.psi) and k >= 1:
            net.psi[k - 1][tiny] = 0.0
    o_before = net.activations[k].o
    x = probe(net)
    net.train()
    net(x)  # records the mean gain (psi='expectation')
    net.eval()
    with torch.no_grad():
        before = net(x)
    change = ip.neurodegeneration(net, k, 1)
    with torch.no_grad():
        assert relative_change(before, net(x)) <= FLOAT_TOLERANCE[float_dtype]
    # o += b*² for the removed coordinate's bias b*, to o's own rounding (1e-12 rel. in float64).
    # b* = BIAS when the silenced row is the only zero singular value; when the layer has
    # several (a rank-deficient W_k, e.g. 3×1), round-off picks the removed null direction and
    # b* is that direction's bias: the removal is exact either way.
    b_star = change.removed_bias[0]
    assert change.removed_singular_values[0] <= FLOAT_TOLERANCE[float_dtype]
    assert net.activations[k].o == pytest.approx(o_before + b_star**2,
                                                 rel=FLOAT_TOLERANCE[float_dtype] / 100)
    if torch.linalg.matrix_rank(net.linears[k].weight.detach().double()) == net.widths[k + 1]:
        assert abs(b_star) == pytest.approx(BIAS, rel=FLOAT_TOLERANCE[float_dtype])


@pytest.mark.parametrize("il,psi", [("none", "trainable"), ("none", "constant"),
                                    ("constant", "none"), ("trainable", "none"),
                                    ("none", "none")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_removal_is_not_exact_without_o_or_psi(il, psi, seed):
    net = random_isotropic_mlp([5, 6, 4, 3], il, psi, seed=seed)
    for k in (0, 1):
        trial = copy.deepcopy(net)
        silence_last_neuron(trial, k)
        assert removal_error(trial, k, probe(trial)) > 1e-4


@pytest.mark.parametrize("il", ["constant", "trainable"])
def test_expectation_mode_folds_mean_gain_into_next_bias(il):
    net = random_isotropic_mlp([5, 6, 4, 3], il, "expectation", seed=11)
    x = probe(net)
    k = net.n_hidden - 1  # the last hidden layer feeds the logits linearly
    silence_last_neuron(net, k)
    net.train()
    net(x)
    with torch.no_grad():
        mean_gain = float(net.gains(x)[k].mean())
    net.eval()
    with torch.no_grad():
        before = net(x)
    ip.left_diagonalise(net, k)  # the same basis the removal uses
    w_star = net.linears[k + 1].weight.detach()[:, -1].clone()
    b_star = float(net.linears[k].bias.detach()[-1])
    bias_before = net.linears[k + 1].bias.detach().clone()
    ip.neurodegeneration(net, k, 1)
    expected = bias_before + mean_gain * b_star * w_star
    assert torch.allclose(net.linears[k + 1].bias.detach(), expected, atol=1e-12)
    with torch.no_grad():
        delta = net(x) - before
    # per input the change is (mean g - g(x)) b* w*: non-zero, but zero on average over the batch
    assert float(delta.abs().max()) > 1e-4
    assert float(delta.mean(0).abs().max()) <= 1e-12


def test_expectation_mode_refuses_before_any_training_forward():
    net = random_isotropic_mlp([5, 6, 3], "constant", "expectation", seed=1)
    with pytest.raises(ip.TopologyError, match="no training-mode forward pass"):
        ip.neurodegeneration(net, 0, 1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_removal_error_falls_roughly_linearly_as_sigma_goes_to_zero(seed):
    base = random_isotropic_mlp([6, 6, 5, 3], "trainable", "trainable", seed=seed)
    errors = []
    for scale in (1e-1, 1e-2, 1e-3, 1e-4):
        net = copy.deepcopy(base)
        silence_last_neuron(net, 1, row_scale=scale)
        errors.append(removal_error(net, 1, probe(net)))
    assert all(e > 0 for e in errors)
    assert all(b < a for a, b in zip(errors, errors[1:]))
    for a, b in zip(errors[1:], errors[2:]):  # in the small-σ regime each decade gives ~10x
        assert 0.05 <= b / a <= 0.2


@settings(max_examples=30)
@given(seed=seeds(), data=st.data(), il=st.sampled_from(["none", "constant", "trainable"]),
       psi=st.sampled_from(["none", "constant", "trainable", "trainable+decay"]))
def test_batched_removal_equals_one_at_a_time_reference_loop(seed, data, il, psi):
    # hidden widths never exceed their fan-in, so singular vectors are unique (up to sign)
    n0 = data.draw(st.integers(3, 7))
    hidden = [data.draw(st.integers(2, n0))]
    if data.draw(st.booleans()):
        hidden.append(data.draw(st.integers(2, hidden[0])))
    widths = [n0, *hidden, data.draw(st.integers(1, 4))]
    net = random_isotropic_mlp(widths, il, psi, seed=seed)
    k = data.draw(st.integers(0, net.n_hidden - 1))
    n = data.draw(st.integers(1, net.widths[k + 1] - 1))
    x = probe(net)
    ref = neurodegeneration_loop(params_of(net), k, n)
    change = ip.neurodegeneration(net, k, n)
    assert net.widths[k + 1] == widths[k + 1] - n == change.width_after
    with torch.no_grad():
        assert relative_change(forward(ref, x), net(x)) <= 1e-10
    if il != "none":
        assert net.activations[k].o == pytest.approx(ref.o[k], rel=1e-10)
    # the plain reference forward agrees with the library's forward
    with torch.no_grad():
        assert relative_change(forward(params_of(net), x), net(x)) <= 1e-12


def test_impact_criterion_removes_smallest_sigma_times_outgoing_norm():
    net = random_isotropic_mlp([6, 6, 5, 3], "trainable", "trainable", seed=21)
    ip.left_diagonalise(net, 0)
    with torch.no_grad():  # make the weakest-σ neuron very influential downstream
        net.linears[1].weight[:, -1] *= 1e3
        net.linears[1].weight[:, 2] *= 1e-4  # and neuron 2 nearly silent downstream
    strengths = ip.singular_values(net, 0)
    ip.left_diagonalise(net, 0)
    out = net.linears[1].weight.detach()
    impact = strengths * out.norm(dim=0)
    target = int(torch.argmin(impact))
    kept_cols = torch.cat([out[:, :target], out[:, target + 1:]], dim=1)
    by_impact = copy.deepcopy(net)
    change = ip.neurodegeneration(by_impact, 0, 1, criterion="impact")
    assert change.removed_singular_values == [pytest.approx(float(strengths[target]))]
    assert torch.allclose(by_impact.linears[1].weight.detach(), kept_cols, atol=1e-12)
    by_sigma = copy.deepcopy(net)
    change_s = ip.neurodegeneration(by_sigma, 0, 1)
    assert change_s.removed_singular_values == [pytest.approx(float(strengths[-1]))]
    x = probe(net)
    with torch.no_grad():
        ref = net(x)
        assert relative_change(ref, by_impact(x)) < relative_change(ref, by_sigma(x))
    with pytest.raises(ip.TopologyError, match="criterion='bogus'"):
        ip.neurodegeneration(net, 0, 1, criterion="bogus")
