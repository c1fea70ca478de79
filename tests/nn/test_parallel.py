"""Generalised isotropic perceptron: parallel_forward and the nested class (docs/parallel.md)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import isoplastic as ip
from isoplastic.activations import log1p_profile
from isoplastic.nn.parallel import build_plan, parallel_forward
from isoplastic.testing import FLOAT_TOLERANCE

EXACT = FLOAT_TOLERANCE[torch.float64]
DT = torch.float64


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max())


def randomise(net: ip.IsotropicMLP, seed: int, scale: float = 0.5) -> ip.IsotropicMLP:
    """Perturb every weight, bias and ψ, and give every activation a non-zero o if it has one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=DT))
        for act in net.activations:
            if act.mode.value != "none":
                act.o = 0.1 + float(torch.rand((), generator=g, dtype=DT))
    return net


@settings(max_examples=25, deadline=None)
@given(
    widths=st.lists(st.integers(1, 9), min_size=2, max_size=7),
    psi=st.sampled_from(["none", "constant", "trainable", "trainable+decay", "expectation"]),
    intrinsic=st.sampled_from(["none", "constant", "trainable"]),
    batch=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_parallel_forward_equals_forward(float_dtype, widths, psi, intrinsic, batch, seed):
    net = randomise(ip.IsotropicMLP(widths, intrinsic_length=intrinsic, psi=psi).to(DT), seed)
    net = net.to(float_dtype)
    x = 2.0 * torch.randn(batch, widths[0], generator=torch.Generator().manual_seed(seed), dtype=DT)
    x = x.to(float_dtype)
    assert rel(parallel_forward(net, x), net(x)) <= FLOAT_TOLERANCE[float_dtype]


@pytest.mark.parametrize("variant", ["log1p profile", "paper small ball", "tiny inputs"])
def test_parallel_forward_other_profiles_and_small_ball(variant):
    kwargs = {"log1p profile": {"profile": log1p_profile()},
              "paper small ball": {"small_ball": "paper"}, "tiny inputs": {}}[variant]
    net = randomise(ip.IsotropicMLP([6, 7, 5, 4], psi="trainable", **kwargs).to(DT), 1)
    scale = 1e-6 if variant == "tiny inputs" else 1.0
    x = scale * torch.randn(4, 6, generator=torch.Generator().manual_seed(2), dtype=DT)
    assert rel(parallel_forward(net, x), net(x)) <= EXACT


def test_plan_reuse_and_gradients():
    net = randomise(ip.IsotropicMLP([8, 6, 6, 6, 3], psi="trainable").to(DT), 3)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(4), dtype=DT)
    plan = build_plan(net)
    assert len(plan.sizes) == 4 and plan.paths.shape == (6 + 6 + 6 + 3, 8)
    assert torch.equal(parallel_forward(net, x, plan), parallel_forward(net, x))
    params = list(net.parameters())
    g_seq = torch.autograd.grad(net(x).pow(2).sum(), params)
    g_par = torch.autograd.grad(parallel_forward(net, x).pow(2).sum(), params)
    for a, b in zip(g_par, g_seq, strict=True):
        assert float((a - b).abs().max()) <= EXACT * max(1.0, float(b.abs().max()))


def test_refuses_elementwise_networks():
    with pytest.raises(TypeError, match="IsotropicMLP"):
        parallel_forward(ip.ElementwiseMLP([3, 4, 2]), torch.zeros(1, 3))


# -- the nested functional class ------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_plain_mlp_is_the_zero_psi_zero_o_member(seed):
    """psi='none', intrinsic_length='none' equals the generalised net with ψ = 0 and o = 0."""
    plain = randomise(ip.IsotropicMLP([7, 6, 5, 4, 3], intrinsic_length="none", psi="none")
                      .to(DT), seed)
    general = ip.IsotropicMLP([7, 6, 5, 4, 3], intrinsic_length="constant",
                              psi="trainable").to(DT)
    general.load_state_dict(plain.state_dict(), strict=False)
    for act in general.activations:
        act.o = 0.0
    x = torch.randn(6, 7, generator=torch.Generator().manual_seed(seed), dtype=DT)
    assert all(not p.detach().any() for p in general.psi)
    assert torch.equal(general(x), plain(x))
    assert rel(parallel_forward(general, x), plain(x)) <= EXACT


@pytest.mark.parametrize("k", [0, 1, 2])
def test_width_n_with_silent_neuron_is_a_width_n_minus_1_generalised_net(k):
    """A plain width-n net whose neuron has σ = 0 (bias b* ≠ 0) equals, exactly, a generalised
    width-(n-1) net with o ← b*² and ψ ← b* w* (built by neurodegeneration)."""
    widths = [7, 6, 5, 4, 3]
    plain = randomise(ip.IsotropicMLP(widths, intrinsic_length="none", psi="none").to(DT), 10 + k)
    ip.left_diagonalise(plain, k)
    with torch.no_grad():
        plain.linears[k].weight[-1] = 0.0
        plain.linears[k].bias[-1] = 0.9
    general = ip.IsotropicMLP(widths, intrinsic_length="constant", psi="constant").to(DT)
    general.load_state_dict(plain.state_dict(), strict=False)
    for act in general.activations:
        act.o = 0.0
    rec = ip.neurodegeneration(general, k, 1)
    assert rec.removed_singular_values == [0.0]
    assert general.widths[k + 1] == widths[k + 1] - 1
    assert general.activations[k].o == pytest.approx(0.81)
    x = torch.randn(9, 7, generator=torch.Generator().manual_seed(k), dtype=DT)
    y = plain(x)
    assert rel(general(x), y) <= EXACT
    assert rel(parallel_forward(general, x), y) <= EXACT
