r"""The function class of an isotropic MLP: a gated linear map (docs/quality.md).

An isotropic activation only rescales its input, ``φ(z) = g(z) z`` with a scalar ``g > 0``, so
``z_{k+1} = g_k (W_{k+1} z_k + ψ_k) + b_{k+1}``. Unrolled over ``L`` affine layers (``L - 1``
hidden spaces), with ``G_j = Π_{i=j}^{L-2} g_i`` (``G_{L-1} = 1``):

.. math::
    z_{L-1}(x) = G_0 (A x + v_0) + Σ_{j=1}^{L-1} G_j v_j,\qquad
    A = W_{L-1} ⋯ W_0,\quad v_j = W_{L-1} ⋯ W_{j+1} b_j + W_{L-1} ⋯ W_{j+2} ψ_j

(``v_{L-1} = b_{L-1}``; ``ψ_{L-2}`` enters unmultiplied). Every logit vector is one fixed linear
map of ``x`` plus ``L - 1`` fixed vectors, weighted by ``L`` positive scalars. Dividing by
``G_0 > 0`` leaves the argmax unchanged: the classifier is linear in ``x`` augmented with the
``L - 1`` scalar features ``G_j / G_0``, whatever the widths. These tests check the identity in
float64 on random networks, with random ψ and intrinsic lengths.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import isoplastic as ip


def _randomise(net: ip.IsotropicMLP, gen: torch.Generator) -> None:
    """Random weights, biases, ψ and intrinsic lengths: nothing in the identity may rest on the
    orthogonal initialisation or on zero biases."""
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
        for act in net.activations:
            if act.mode.value != "none":
                act.o = float(torch.rand((), generator=gen, dtype=torch.float64)) + 1e-3


def gated_linear_form(net: ip.IsotropicMLP, x: torch.Tensor) -> torch.Tensor:
    """``G_0 (A x + v_0) + Σ_j G_j v_j``, computed from the weights and the gains alone."""
    lin = list(net.linears)
    n_layers = len(lin)
    gains = [g[:, 0] for g in net.gains(x)]  # L - 1 tensors of shape (batch,)
    ones = torch.ones(x.shape[0], dtype=x.dtype)
    big_g = [ones] * n_layers
    for j in range(n_layers - 2, -1, -1):
        big_g[j] = gains[j] * big_g[j + 1]

    def through(vec: torch.Tensor, first: int) -> torch.Tensor:
        for layer in lin[first:]:
            vec = layer.weight @ vec
        return vec

    psi = list(net.psi) if len(net.psi) else [None] * (n_layers - 1)
    a_x = through(x.T, 0).T  # (batch, n_out)
    out = big_g[0][:, None] * a_x
    for j in range(n_layers):
        v = through(lin[j].bias, j + 1)
        if j < n_layers - 1 and psi[j] is not None:
            v = v + through(psi[j], j + 2)
        out = out + big_g[j][:, None] * v
    return out


@settings(max_examples=25, deadline=None)
@given(
    widths=st.lists(st.integers(1, 9), min_size=2, max_size=6),
    psi=st.sampled_from(["none", "trainable"]),
    length=st.sampled_from(["none", "trainable"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_logits_are_a_gated_linear_map(widths, psi, length, seed):
    gen = torch.Generator().manual_seed(seed)
    net = ip.IsotropicMLP(widths, psi=psi, intrinsic_length=length).double()
    _randomise(net, gen)
    x = torch.randn(7, widths[0], generator=gen, dtype=torch.float64)
    with torch.no_grad():
        want = net(x)
        got = gated_linear_form(net, x)
    scale = want.abs().max().clamp_min(1.0)
    assert torch.allclose(got, want, rtol=0, atol=1e-12 * float(scale))


@settings(max_examples=15, deadline=None)
@given(depth=st.integers(1, 4), width=st.integers(2, 12), seed=st.integers(0, 2**31 - 1))
def test_argmax_is_a_linear_classifier_on_x_and_depth_features(depth, width, seed):
    """The decision rule equals that of one linear map applied to ``[x, G_1/G_0, …, 1/G_0]``:
    ``L - 1`` learned scalar features per sample, independent of the width."""
    gen = torch.Generator().manual_seed(seed)
    net = ip.IsotropicMLP([5] + [width] * depth + [4], psi="none").double()
    _randomise(net, gen)
    x = torch.randn(50, 5, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        logits = net(x)
        lin = list(net.linears)
        gains = [g[:, 0] for g in net.gains(x)]
        big_g = [torch.ones(50, dtype=torch.float64)] * len(lin)
        for j in range(len(lin) - 2, -1, -1):
            big_g[j] = gains[j] * big_g[j + 1]
        a = lin[0].weight
        for layer in lin[1:]:
            a = layer.weight @ a
        columns = [a]
        for j in range(len(lin)):
            v = lin[j].bias
            for layer in lin[j + 1:]:
                v = layer.weight @ v
            columns.append(v[:, None])
        m = torch.cat(columns, dim=1)  # (4, 5 + L): one fixed linear map
        feats = torch.cat([x] + [(big_g[j] / big_g[0])[:, None] for j in range(len(lin))], dim=1)
        scaled = feats @ m.T
    assert torch.allclose(scaled * big_g[0][:, None], logits, atol=1e-10, rtol=1e-10)
    assert torch.equal(scaled.argmax(1), logits.argmax(1))
