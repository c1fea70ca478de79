"""Isotropic tanh: equivariance, the small-ball series, derivatives at the origin, o semantics."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.func import functional_call

import isoplastic as ip
from isoplastic.activations.profiles import TanhProfile
from isoplastic.testing import assert_rotation_equivariant
from isoplastic.testing.strategies import seeds

MODES_AND_O = [("none", 0.0), ("constant", 1e-6), ("constant", 0.5), ("trainable", 1e-6),
               ("trainable", 0.5)]
RADII = [0.0, 1e-8, 1e-3, 1e-2]


def make_act(mode: str, o: float, dtype=torch.float64, **kw) -> ip.IsotropicTanh:
    act = ip.IsotropicTanh(intrinsic_length=mode, **kw).to(dtype)
    act.o = o
    return act


def sample_at_radius(r: float, batch: int = 3, n: int = 4) -> torch.Tensor:
    z = torch.randn(batch, n, dtype=torch.float64)
    return (z / z.norm(dim=1, keepdim=True) * r).requires_grad_(True)


@settings(max_examples=30)
@given(n=st.integers(1, 8), seed=seeds(), mode_o=st.sampled_from(MODES_AND_O),
       small_ball=st.sampled_from(["series", "paper"]))
def test_equivariance_float64_within_1e12(n, seed, mode_o, small_ball):
    act = make_act(*mode_o, small_ball=small_ball)
    gen = torch.Generator().manual_seed(seed)
    assert assert_rotation_equivariant(act, n=n, dtype=torch.float64, generator=gen,
                                       tol=1e-12) <= 1e-12


@settings(max_examples=20)
@given(n=st.integers(1, 8), seed=seeds(), mode_o=st.sampled_from(MODES_AND_O))
def test_equivariance_float32_within_1e5(n, seed, mode_o):
    act = make_act(*mode_o, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    assert assert_rotation_equivariant(act, n=n, dtype=torch.float32, generator=gen,
                                       tol=1e-5) <= 1e-5


def test_elementwise_tanh_fails_the_equivariance_check():
    with pytest.raises(AssertionError, match="not rotation equivariant: worst relative error"):
        assert_rotation_equivariant(nn.Tanh(), n=5, generator=torch.Generator().manual_seed(0))


def test_series_branch_agrees_with_closed_form_near_the_switch():
    prof = TanhProfile()
    q = torch.logspace(-12, -6, 61, dtype=torch.float64)  # the series region, up to the switch
    series = prof.gain(q, 1e-6)
    closed = torch.tensor([math.tanh(math.sqrt(v)) / math.sqrt(v) for v in q.tolist()],
                          dtype=torch.float64)
    assert float((series - closed).abs().max()) <= 1e-15
    # the series itself, used well beyond the switch, still matches to its truncation error
    q_big = torch.tensor([1e-4, 1e-3, 1e-2], dtype=torch.float64)
    far = prof.gain(q_big, 1.0)
    ref = torch.tanh(q_big.sqrt()) / q_big.sqrt()
    assert float((far - ref).abs().max()) <= 1e-11
    # and the activation's gain is continuous across |z|^2 = eps^2
    act = make_act("none", 0.0)
    for side in (1 - 1e-9, 1 + 1e-9):
        z = torch.zeros(1, 3, dtype=torch.float64)
        z[0, 0] = math.sqrt(1e-6 * side)
        assert abs(float(act.gain(z)) - math.tanh(float(z[0, 0])) / float(z[0, 0])) <= 1e-15


@pytest.mark.parametrize("mode,o", MODES_AND_O)
@pytest.mark.parametrize("radius", RADII)
def test_gradcheck_and_gradgradcheck_pass_at_origin_and_switch(mode, o, radius):
    act = make_act(mode, o)
    z = sample_at_radius(radius)
    assert gradcheck(act, (z,))
    assert gradgradcheck(act, (z,))


@pytest.mark.parametrize("radius", RADII)
@pytest.mark.parametrize("o", [1e-6, 0.5])
def test_gradcheck_and_gradgradcheck_pass_wrt_log_o(radius, o):
    act = make_act("trainable", o)
    log_o = torch.tensor(math.log(o), dtype=torch.float64, requires_grad=True)
    z = sample_at_radius(radius)

    def f(lo, zz):
        return functional_call(act, {"log_o": lo}, (zz,))

    assert gradcheck(f, (log_o, z))
    assert gradgradcheck(f, (log_o, z))


@pytest.mark.parametrize("mode,o", MODES_AND_O)
def test_gradients_at_zero_are_finite_under_anomaly_detection(mode, o):
    act = make_act(mode, o)
    z = torch.zeros(4, 5, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Anomaly Detection has been enabled")
        with torch.autograd.set_detect_anomaly(True):
            out = act(z)
            loss = out.sum() + out.pow(2).sum() + act.gain(z).sum()
            (gz,) = torch.autograd.grad(loss, z, create_graph=True)
            gz.pow(2).sum().backward()
    assert torch.isfinite(gz).all()
    assert torch.isfinite(z.grad).all()
    if mode == "trainable":
        assert act.log_o.grad is not None and torch.isfinite(act.log_o.grad).all()
    # the Jacobian at the origin is tanh(sqrt o)/sqrt o times the identity
    jac = torch.autograd.functional.jacobian(lambda v: act(v.unsqueeze(0)).squeeze(0),
                                             torch.zeros(5, dtype=torch.float64))
    g0 = 1.0 if o == 0 else math.tanh(math.sqrt(o)) / math.sqrt(o)
    assert torch.allclose(jac, g0 * torch.eye(5, dtype=torch.float64), atol=1e-15)


def test_o_setter_none_refuses_non_zero_and_accepts_zero():
    act = ip.IsotropicTanh(intrinsic_length="none")
    act.o = 0.0
    assert act.o == 0.0
    with pytest.raises(ValueError, match="intrinsic_length='none'"):
        act.o = 0.1
    assert act.o == 0.0
    assert not list(act.parameters()) and not list(act.buffers())


def test_o_setter_trainable_stores_log_o_in_place():
    act = ip.IsotropicTanh(intrinsic_length="trainable")
    param = act.log_o
    assert math.isclose(act.o, 1e-6, rel_tol=1e-6)
    act.o = 0.25
    assert act.log_o is param and param.requires_grad
    assert math.isclose(float(param.detach()), math.log(0.25), rel_tol=1e-7)
    assert [n for n, _ in act.named_parameters()] == ["log_o"]
    with pytest.raises(ValueError, match="must be > 0"):
        act.o = 0.0
    with pytest.raises(ValueError, match="must be finite"):
        act.o = float("nan")
    assert math.isclose(act.o, 0.25, rel_tol=1e-7)


def test_o_setter_constant_is_a_buffer():
    act = ip.IsotropicTanh(intrinsic_length="constant").double()
    assert not list(act.parameters())
    assert [n for n, _ in act.named_buffers()] == ["o_buffer"]
    act.o = 0.5
    assert float(act.o_buffer) == 0.5 and act.o == 0.5
    act.o = -0.1  # a constant o may be negative (|.| inside the sqrt)
    assert act.o == -0.1
    assert "o_buffer" in act.state_dict()


def test_gain_matches_closed_form_with_intrinsic_length():
    act = make_act("constant", 0.25)
    z = torch.tensor([[0.3, -0.4]], dtype=torch.float64)
    rho = math.sqrt(0.25 + 0.25)
    assert math.isclose(float(act.gain(z)), math.tanh(rho) / rho, rel_tol=1e-15)
    assert torch.allclose(act(z), math.tanh(rho) / rho * z, rtol=1e-15, atol=0)


def test_paper_small_ball_branch_values():
    eps = 1e-3
    act = make_act("none", 0.0, small_ball="paper")
    inside = torch.tensor([[0.5 * eps, 0.0, 0.0]], dtype=torch.float64)
    assert float(act.gain(inside)) == 1.0  # identity inside the ball
    outside = torch.tensor([[2 * eps, 0.0, 0.0]], dtype=torch.float64)
    assert math.isclose(float(act.gain(outside)), math.tanh(2 * eps) / (2 * eps), rel_tol=1e-15)
    # the jump at the edge of the ball is about eps^2/3
    edge = torch.tensor([[eps * (1 + 1e-9), 0.0]], dtype=torch.float64)
    assert math.isclose(1.0 - float(act.gain(edge)), eps**2 / 3, rel_tol=1e-3)
    # |o| > 0.01 inside the ball: the gain is tanh(sqrt|o|)/sqrt|o| (reachable with o < 0)
    act_o = make_act("constant", -0.02, small_ball="paper")
    z = torch.tensor([[math.sqrt(0.02), 0.0]], dtype=torch.float64)
    r = math.sqrt(0.02)
    assert math.isclose(float(act_o.gain(z)), math.tanh(r) / r, rel_tol=1e-15)
    # the series branch has no jump
    smooth = make_act("none", 0.0)
    assert abs(float(smooth.gain(edge)) - (1 - eps**2 / 3)) <= 1e-12
