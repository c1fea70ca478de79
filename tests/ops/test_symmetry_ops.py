"""Reparameterisation and diagonalisation: exact function preservation, diagonal form, group laws."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_identical, probe, snapshot, train

import isoplastic as ip
from isoplastic.testing import FLOAT_TOLERANCE, assert_function_preserved, random_isotropic_mlp
from isoplastic.testing.strategies import isotropic_mlps, seeds, widths_lists

TOL = 1e-10


def adamw(net: ip.IsotropicMLP, x: torch.Tensor, steps: int = 2) -> torch.optim.Optimizer:
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, amsgrad=True)
    train(net, opt, x, steps)
    return opt


@settings(max_examples=30)
@given(net=isotropic_mlps(), data=st.data())
def test_reparameterise_preserves_logits_within_float_tolerance(net, data, float_dtype):
    net = net.to(float_dtype)
    k = data.draw(st.integers(0, net.n_hidden - 1))
    r = ip.random_orthogonal(net.widths[k + 1], dtype=float_dtype,
                             generator=torch.Generator().manual_seed(data.draw(seeds())))
    x = probe(net)
    opt = adamw(net, x)
    assert_function_preserved(lambda n: ip.reparameterise(n, k, r, optimizer=opt), net, x, opt,
                              FLOAT_TOLERANCE[float_dtype])


@settings(max_examples=30)
@given(net=isotropic_mlps(), data=st.data())
def test_left_diagonalise_preserves_logits_and_orders_rows(net, data, float_dtype):
    net = net.to(float_dtype)
    tol = FLOAT_TOLERANCE[float_dtype]
    k = data.draw(st.integers(0, net.n_hidden - 1))
    x = probe(net)
    opt = adamw(net, x)
    s_before = torch.linalg.svdvals(net.linears[k].weight.detach().double())
    s = assert_function_preserved(lambda n: ip.left_diagonalise(n, k, optimizer=opt), net, x,
                                  opt, tol)
    w = net.linears[k].weight.detach().double()
    m = s_before.shape[0]
    # singular values to tol/100 relative to max(1, σ_max) (1e-12 in float64: an SVD's error
    # scales with ‖W‖), the rows' Gram matrix to tol relative to max(1, σ_max²)
    scale = max(1.0, float(s_before[0])) if m else 1.0
    assert torch.allclose(s[:m].double(), s_before, atol=tol / 100 * scale, rtol=0)
    assert bool((s[m:] == 0).all())
    # rows are orthogonal with norms equal to the (padded) singular values, descending
    gram = w @ w.T
    assert torch.allclose(gram, torch.diag(s.double() ** 2), atol=tol * scale**2, rtol=0)
    assert bool((s[:-1] >= s[1:]).all())


@settings(max_examples=30)
@given(net=isotropic_mlps(widths=widths_lists(min_hidden=2, max_hidden=4)), data=st.data())
def test_full_diagonalise_preserves_logits_and_is_rectangular_diagonal(net, data, float_dtype):
    net = net.to(float_dtype)
    tol = FLOAT_TOLERANCE[float_dtype]
    k = data.draw(st.integers(1, net.n_hidden - 1))
    x = probe(net)
    opt = adamw(net, x)
    s_before = torch.linalg.svdvals(net.linears[k].weight.detach().double())
    s = assert_function_preserved(lambda n: ip.full_diagonalise(n, k, optimizer=opt), net, x,
                                  opt, tol)
    w = net.linears[k].weight.detach()
    m = min(w.shape)
    diag = torch.zeros_like(w)
    idx = torch.arange(m)
    diag[idx, idx] = w[idx, idx]
    assert torch.equal(w, diag), "off-diagonal entries must be exact zeros"
    d = w[idx, idx]
    assert bool((d >= 0).all()) and bool((d[:-1] >= d[1:]).all())
    # the diagonal is the singular values to tol/10 relative to max(1, σ_max) (1e-11 in float64;
    # in float32 tol/100 would be one ulp, and the two SVDs differ by a few)
    scale = max(1.0, float(s_before[0]))
    assert torch.allclose(d.double(), s_before, atol=tol / 10 * scale, rtol=0)
    assert torch.allclose(s.double(), s_before, atol=tol / 10 * scale, rtol=0)


@settings(max_examples=30)
@given(net=isotropic_mlps(), data=st.data())
def test_neurogenesis_preserves_logits_within_float_tolerance(net, data, float_dtype):
    net = net.to(float_dtype)
    k = data.draw(st.integers(0, net.n_hidden - 1))
    n = data.draw(st.integers(1, 3))
    diagonalise = data.draw(st.booleans())
    x = probe(net)
    opt = adamw(net, x)
    width = net.widths[k + 1]
    assert_function_preserved(
        lambda m: ip.neurogenesis(m, k, n, optimizer=opt, init_scale=0.3, diagonalise=diagonalise),
        net, x, opt, FLOAT_TOLERANCE[float_dtype])
    assert net.widths[k + 1] == width + n


@settings(max_examples=20)
@given(net=isotropic_mlps(), data=st.data())
def test_rotation_group_law_r1_then_r2_equals_r1_at_r2(net, data):
    k = data.draw(st.integers(0, net.n_hidden - 1))
    gen = torch.Generator().manual_seed(data.draw(seeds()))
    n = net.widths[k + 1]
    r1, r2 = ip.random_orthogonal(n, generator=gen), ip.random_orthogonal(n, generator=gen)
    x = probe(net)
    two, one = net, __import__("copy").deepcopy(net)
    opt_two = torch.optim.SGD(two.parameters(), lr=0.05, momentum=0.9)
    opt_one = torch.optim.SGD(one.parameters(), lr=0.05, momentum=0.9)
    train(two, opt_two, x, 2)
    train(one, opt_one, x, 2)
    ip.reparameterise(two, k, r1, opt_two)
    ip.reparameterise(two, k, r2, opt_two)
    ip.reparameterise(one, k, r1 @ r2, opt_one)  # c' = R2ᵀ R1ᵀ c = (R1 R2)ᵀ c
    for p, q in zip(two.parameters(), one.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-12, rtol=0)
        if p in opt_two.state:
            assert torch.allclose(opt_two.state[p]["momentum_buffer"],
                                  opt_one.state[q]["momentum_buffer"], atol=1e-12, rtol=0)


@settings(max_examples=20)
@given(net=isotropic_mlps(), data=st.data())
def test_rotation_then_transpose_restores_parameters_and_first_moments(net, data):
    k = data.draw(st.integers(0, net.n_hidden - 1))
    r = ip.random_orthogonal(net.widths[k + 1],
                             generator=torch.Generator().manual_seed(data.draw(seeds())))
    x = probe(net)
    opt = adamw(net, x)
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    before = [(p.detach().clone(), p.grad.clone()) for p in net.parameters()]
    state = {p: {key: v.clone() for key, v in opt.state[p].items()} for p in opt.state}
    ip.reparameterise(net, k, r, opt)
    ip.reparameterise(net, k, r.T.contiguous(), opt)
    for p, (d, g) in zip(net.parameters(), before, strict=True):
        assert torch.allclose(p, d, atol=1e-13, rtol=0) and torch.allclose(p.grad, g, atol=1e-13)
        if p in state:
            assert torch.equal(opt.state[p]["step"], state[p]["step"])
            assert torch.allclose(opt.state[p]["exp_avg"], state[p]["exp_avg"], atol=1e-15)


def test_rotation_then_transpose_restores_every_sgd_slot():
    net = random_isotropic_mlp([4, 5, 3, 2], "trainable", "trainable+decay", seed=3)
    x = probe(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    train(net, opt, x, 3)
    before = [p.detach().clone() for p in net.parameters()]
    state = {p: opt.state[p]["momentum_buffer"].clone() for p in opt.state}
    r = ip.random_orthogonal(5, generator=torch.Generator().manual_seed(1))
    ip.reparameterise(net, 0, r, opt)
    ip.reparameterise(net, 0, r.T.contiguous(), opt)
    for p, d in zip(net.parameters(), before, strict=True):
        assert torch.allclose(p, d, atol=1e-14, rtol=0)
        assert torch.allclose(opt.state[p]["momentum_buffer"], state[p], atol=1e-14, rtol=0)


def test_second_moments_are_not_restored_by_r_then_rt_diagonal_approximation():
    """Documents the paper's approximation: (R∘R)(Rᵀ∘Rᵀ) ≠ I, so exp_avg_sq only mixes."""
    net = random_isotropic_mlp([4, 5, 3], "constant", "none", seed=4)
    x = probe(net)
    opt = adamw(net, x)
    w = net.linears[0].weight
    v0 = opt.state[w]["exp_avg_sq"].clone()
    r = ip.random_orthogonal(5, generator=torch.Generator().manual_seed(2))
    ip.reparameterise(net, 0, r, opt)
    ip.reparameterise(net, 0, r.T.contiguous(), opt)
    v1 = opt.state[w]["exp_avg_sq"]
    assert not torch.allclose(v1, v0)
    # but the row sums (R∘R is doubly stochastic) are preserved and nothing turns negative
    assert torch.allclose(v1.sum(0), v0.sum(0), atol=1e-14) and bool((v1 >= 0).all())


def _wrong_reparameterise(net: ip.IsotropicMLP, k: int, r: torch.Tensor) -> None:
    with torch.no_grad():
        net.linears[k].weight.copy_(r.T @ net.linears[k].weight)
        net.linears[k].bias.copy_(r.T @ net.linears[k].bias)
        if len(net.psi) and k >= 1:
            net.psi[k - 1].copy_(r.T @ net.psi[k - 1])
        net.linears[k + 1].weight.copy_(net.linears[k + 1].weight @ r.T)  # wrong: should be @ r


def test_wrong_reparameterisation_fails_assert_function_preserved():
    net = random_isotropic_mlp([4, 6, 5, 3], "trainable", "trainable", seed=5)
    r = ip.random_orthogonal(5, generator=torch.Generator().manual_seed(3))
    x = probe(net)
    with pytest.raises(AssertionError, match="function changed: worst logit error"):
        assert_function_preserved(lambda n: _wrong_reparameterise(n, 1, r), net, x)


def test_assert_function_preserved_catches_stale_optimizer_state():
    net = random_isotropic_mlp([4, 6, 3], "none", "none", seed=6)
    x = probe(net)
    opt = adamw(net, x)

    def grow_with_stale_state(n):
        ip.neurogenesis(n, 0, 1, optimizer=opt)
        w = n.linears[0].weight  # then one state tensor keeps the old shape
        opt.state[w]["exp_avg"] = opt.state[w]["exp_avg"][:-1].clone()

    with pytest.raises(AssertionError, match="optimizer state .* has shape"):
        assert_function_preserved(grow_with_stale_state, net, x, opt)


def test_change_without_the_optimizer_that_holds_state_is_refused():
    net = random_isotropic_mlp([4, 6, 3], "none", "none", seed=6)
    x = probe(net)
    opt = adamw(net, x)
    snap = snapshot(net, opt)
    with pytest.raises(ip.UnsupportedOptimizerError, match=r"neurogenesis.*state in a AdamW "
                                                          r"optimizer, but no optimizer was passed"):
        ip.neurogenesis(net, 0, 1)
    assert_identical(snap, net, opt)
    other = torch.optim.SGD(random_isotropic_mlp([4, 6, 3], "none", "none", seed=7).parameters(),
                            lr=0.1)
    with pytest.raises(ip.UnsupportedOptimizerError, match="holds none of the parameters"):
        ip.neurogenesis(net, 0, 1, optimizer=other)
    assert_identical(snap, net, opt)
