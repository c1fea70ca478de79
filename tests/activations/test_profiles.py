"""Radial profiles as gains of q = ρ²: TanhProfile (series inside the small ball, closed form
outside, and its branch-free fast value and slope), CallableProfile and log1p_profile, the
default gain_at_radius and repr of a user's profile, and tanh_gain_at."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
from activation_textbook import DPS, gain, slope

import isoplastic as ip
from isoplastic.activations.profiles import (
    PROFILES,
    AbstractRadialProfile,
    CallableProfile,
    TanhProfile,
    log1p_profile,
    tanh_gain_at,
    tanh_gain_fast,
    tanh_gain_slope,
)

EPS64 = torch.finfo(torch.float64).eps


def textbook(fn, q: torch.Tensor) -> torch.Tensor:
    with mpmath.workdps(DPS):
        return torch.tensor([float(fn(mpmath.mpf(v))) for v in q.tolist()], dtype=torch.float64)


@pytest.mark.parametrize("q_switch", [1e-6, 1e-2])
def test_tanh_gain_fast_is_bit_identical_to_the_profile_and_both_switch_at_q_switch(q_switch):
    """tanh_gain_fast = TanhProfile.gain bit for bit, at q = q_switch too, where both take the
    closed form (the series only for q < q_switch)."""
    q = torch.tensor([0.0, 1e-12, q_switch / 2, q_switch, q_switch * (1 + 1e-12), 0.3, 50.0],
                     dtype=torch.float64)
    fast = tanh_gain_fast(q, q_switch)
    assert torch.equal(fast, TanhProfile().gain(q, q_switch))
    at = q == q_switch
    rho = math.sqrt(q_switch)
    assert float(fast[at]) == math.tanh(rho) / rho


def test_tanh_profile_value_and_slope_match_the_textbook():
    """g(q) = tanh(√q)/√q and g'(q) = (sech²√q − g)/(2q), from the series below q_switch (whose
    truncation error at 1e-6 is ~1e-33) and from the closed form above; tanh_gain_slope is the
    derivative autograd takes of TanhProfile.gain."""
    q_switch = 1e-6
    q = torch.tensor([0.0, 1e-10, 5e-7, 1e-6, 0.04, 0.3, 2.0, 50.0], dtype=torch.float64)
    torch.testing.assert_close(TanhProfile().gain(q, q_switch), textbook(gain, q),
                               rtol=4 * EPS64, atol=0)
    s = tanh_gain_slope(q, q_switch)
    # outside the ball the closed-form slope cancels two terms of size 1/√q to one of size 1/3:
    # relative error ~ε/q below q = 1 (2e-10 at q = 1e-6), a few ε above; inside, the series is
    # exact to round-off
    expected = textbook(slope, q)
    rtol = 4 * EPS64 / q.clamp(min=q_switch, max=1.0)
    rtol = torch.where(q < q_switch, torch.full_like(q, 4 * EPS64), rtol)
    assert ((s - expected).abs() <= rtol * expected.abs()).all(), (s, expected)
    qq = q.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(TanhProfile().gain(qq, q_switch).sum(), qq)
    torch.testing.assert_close(s, auto, rtol=0, atol=1e-12 * 0.34)


def test_tanh_slope_with_a_wide_ball_switches_at_q_switch():
    """With q_switch = 0.01 the truncated series' slope is off by ~1e-9 at the switch: the closed
    form is used there (from q = q_switch on), the series only below."""
    q = torch.tensor([0.01, 0.011], dtype=torch.float64)
    torch.testing.assert_close(tanh_gain_slope(q, 0.01), textbook(slope, q), rtol=1e-13, atol=0)


def test_tanh_profile_is_finite_with_finite_gradient_at_zero_and_at_overflow():
    q = torch.tensor([0.0, 1e300, math.inf], dtype=torch.float64, requires_grad=True)
    g = TanhProfile().gain(q, 1e-6)
    assert g.tolist() == [1.0, float(1 / math.sqrt(1e300)), 0.0]
    (d,) = torch.autograd.grad(g.sum(), q)
    assert torch.isfinite(d).all() and float(d[0]) == -1 / 3
    assert tanh_gain_slope(q.detach(), 1e-6)[2] == 0.0
    rho = torch.tensor([3e30], dtype=torch.float32)
    assert float(TanhProfile().gain_at_radius(rho)) == pytest.approx(1 / 3e30, rel=1e-7)
    assert repr(TanhProfile()) == "TanhProfile()" and TanhProfile.name == "tanh"


def _atan_profile(**kw) -> CallableProfile:
    return CallableProfile(torch.atan, **kw)


def test_callable_profile_defaults():
    """slope_at_zero defaults to 1 (tanh-like profiles) and name to "custom"."""
    prof = _atan_profile()
    assert prof.s is torch.atan
    assert prof.slope_at_zero == 1.0 and type(prof.slope_at_zero) is float
    assert prof.name == "custom"
    assert repr(prof) == "CallableProfile(name='custom', slope_at_zero=1.0)"


@pytest.mark.parametrize("slope_at_zero", [1.0, 2.0])
def test_callable_profile_gain_is_s_over_r_outside_and_the_slope_at_zero_inside(slope_at_zero):
    """g = s(r)/r for q = r² ≥ q_switch (q_switch itself included), s'(0) inside; finite gradient
    at 0 and at an overflowed q = ∞ (where s(r)/r is replaced by the caller)."""
    c = slope_at_zero

    def s(r):
        return c * torch.atan(r)

    prof = CallableProfile(s, slope_at_zero=c, name="atan")
    assert prof.name == "atan" and prof.slope_at_zero == c
    q_switch = 0.01
    q = torch.tensor([0.0, 0.005, q_switch, 0.3, 40.0, math.inf], dtype=torch.float64,
                     requires_grad=True)
    g = prof.gain(q, q_switch)
    with mpmath.workdps(DPS):
        expected = [c if v < q_switch else float(c * mpmath.atan(mpmath.sqrt(v)) / mpmath.sqrt(v))
                    for v in q.tolist()[:-1]]
    torch.testing.assert_close(g[:-1].detach(), torch.tensor(expected, dtype=torch.float64),
                               rtol=4 * EPS64, atol=0)
    (d,) = torch.autograd.grad(g.sum(), q)
    assert torch.isfinite(d).all()
    assert d[:2].tolist() == [0.0, 0.0]  # a constant inside the ball
    rho = torch.tensor([0.5, 3.0, 1e200], dtype=torch.float64)
    torch.testing.assert_close(prof.gain_at_radius(rho), s(rho) / rho, rtol=0, atol=0)
    assert float(prof.gain_at_radius(torch.tensor(0.5, dtype=torch.float64))) == pytest.approx(
        c * math.atan(0.5) / 0.5, rel=2 * EPS64)


def test_log1p_profile():
    """s(r) = log(1 + r), gain 1 inside the small ball, named "log1p" (also in PROFILES)."""
    prof = log1p_profile()
    assert prof.s is torch.log1p and prof.slope_at_zero == 1.0 and prof.name == "log1p"
    assert repr(prof) == "CallableProfile(name='log1p', slope_at_zero=1.0)"
    assert PROFILES["log1p"]().name == "log1p" and PROFILES["tanh"]().name == "tanh"
    q = torch.tensor([0.0, 4.0], dtype=torch.float64)
    two = torch.tensor(2.0, dtype=torch.float64)
    assert prof.gain(q, 1e-6).tolist() == [1.0, float(torch.log1p(two) / two)]
    act = ip.IsotropicActivation(prof).double()
    assert repr(act) == "IsotropicActivation(profile=log1p, intrinsic_length=none, eps=0.001, dim=-1)"


class _Rational(AbstractRadialProfile):
    """s(r) = r/(1 + r²), a profile that defines only its gain 1/(1 + q) (slope 1 inside)."""

    def gain(self, q, q_switch):
        return torch.where(q < q_switch, torch.ones_like(q), 1 / (1 + q))


def test_default_gain_at_radius_and_repr_of_a_user_profile():
    """Without an override, gain_at_radius(ρ) = s(ρ)/ρ from gain(ρ², 0): the closed form for
    every ρ > 0; the repr names the class."""
    prof = _Rational()
    rho = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    torch.testing.assert_close(prof.gain_at_radius(rho), 1 / (1 + rho * rho), rtol=0, atol=0)
    assert repr(prof) == "_Rational()"
    act = ip.IsotropicActivation(prof).double()
    z = torch.tensor([[0.3, 0.4]], dtype=torch.float64)
    assert float(act.gain(z)) == 1 / (1 + 0.25)


@pytest.mark.parametrize("o", [0.0, 1e-12, 0.25, -0.25, 1.0, -1.0, 4.0])
def test_tanh_gain_at_is_the_gain_at_the_origin(o):
    """tanh_gain_at(o) = tanh(√|o|)/√|o| (1 at o = 0): the gain of isotropic tanh at z = 0."""
    r = math.sqrt(abs(o))
    assert tanh_gain_at(o) == (1.0 if o == 0 else math.tanh(r) / r)
    act = ip.IsotropicTanh(intrinsic_length="constant").double()
    act.o = o
    assert float(act.gain(torch.zeros(1, 3, dtype=torch.float64))) == pytest.approx(
        tanh_gain_at(o), rel=4 * EPS64)
