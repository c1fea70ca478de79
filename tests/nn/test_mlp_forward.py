"""IsotropicMLP's forward, computed as ``g ⊙ (z Wᵀ + ψ) + b``, equals the paper's
``W φ(z) + b + ψ g`` layer by layer, for every ψ and intrinsic-length mode."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import AGREEMENT_TOLERANCE

import isoplastic as ip
from isoplastic.testing import random_isotropic_mlp
from isoplastic.testing.strategies import seeds, widths_lists


def _textbook(net: ip.IsotropicMLP, x: torch.Tensor) -> tuple[list, list, torch.Tensor]:
    z = net.linears[0](x)
    pre, post = [], []
    for k, act in enumerate(net.activations):
        h, g = act.forward_with_gain(z)
        pre.append(z)
        post.append(h)
        z = net.linears[k + 1](h)
        if len(net.psi):
            z = z + net.psi[k] * g
    return pre, post, z


@settings(max_examples=30, deadline=None)
@given(widths=widths_lists(), il=st.sampled_from(["none", "constant", "trainable"]),
       psi=st.sampled_from(["none", "constant", "trainable", "trainable+decay", "expectation"]),
       seed=seeds())
def test_forward_equals_w_phi_plus_b_plus_psi_g(float_dtype, widths, il, psi, seed):
    net = random_isotropic_mlp(widths, il, psi, seed=seed, dtype=float_dtype)
    x = torch.randn(7, widths[0], generator=torch.Generator().manual_seed(seed),
                    dtype=torch.float64).to(float_dtype)
    with torch.no_grad():
        _check_forward(net, x)


def _check_forward(net: ip.IsotropicMLP, x: torch.Tensor) -> None:
    tol = AGREEMENT_TOLERANCE[x.dtype]
    pre, post, logits = _textbook(net, x)
    scale = float(logits.abs().max()) + 1.0
    assert torch.allclose(net(x), logits, rtol=0, atol=tol * scale)
    t = net.trace(x)
    assert torch.allclose(t["logits"], logits, rtol=0, atol=tol * scale)
    for a, b in zip(t["pre"], pre):
        assert torch.allclose(a, b, rtol=0, atol=tol * (float(b.abs().max()) + 1.0))
    for a, b in zip(t["post"], post):  # unit-bounded: |φ(z)| < 1
        assert torch.allclose(a, b, rtol=0, atol=tol)
    for k, (g, z) in enumerate(zip(net.gains(x), t["pre"])):
        assert g.shape == (x.shape[0], 1)
        assert torch.equal(g, net.activations[k].gain(z))


def test_gradients_match_the_textbook_forward():
    net = random_isotropic_mlp([6, 5, 4, 3], "trainable", "trainable+decay", seed=4)
    x = torch.randn(9, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (9,))
    params = list(net.parameters())
    ours = torch.autograd.grad(torch.nn.functional.cross_entropy(net(x), y), params)
    ref = torch.autograd.grad(torch.nn.functional.cross_entropy(_textbook(net, x)[2], y), params)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-13)


def test_psi_penalty_is_lambda_times_squared_norms():
    net = random_isotropic_mlp([6, 5, 4, 3], "trainable", "trainable+decay", seed=2)
    with torch.no_grad():
        for p in net.psi:
            p.normal_()
    expected = net.psi_decay * sum(float((p.detach() ** 2).sum()) for p in net.psi)
    assert abs(float(net.psi_penalty().detach()) - expected) < 1e-12 * expected
    assert float(ip.IsotropicMLP([4, 3, 2], psi="trainable").psi_penalty()) == 0.0
