r"""Radial profiles ``s(r)`` of isotropic activations, as gains ``g = s(r)/r`` of ``q = r²``.

An isotropic activation is ``φ(z) = s(ρ) z / ρ = g(ρ²) z``. Writing the gain as a function of
``q = ρ²`` rather than ``ρ`` is what makes it smooth at the origin: for ``s = tanh``,

.. math::  g(q) = \tanh(\sqrt q)/\sqrt q = 1 - q/3 + 2q^2/15 - 17q^3/315 + 62q^4/2835 - \dots

is analytic in ``q``, so ``φ`` has finite derivatives of every order at ``z = 0``. Near ``q = 0`` the
closed form loses precision (and its autograd graph divides by ``√q``); below ``q_switch`` the series
is used instead, which agrees with the closed form to far below float64 round-off there.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor


class AbstractRadialProfile(ABC):
    """A radial profile: maps ``q = ρ²`` (shape ``(..., 1)``, ``q ≥ 0``) to the gain ``s(ρ)/ρ``."""

    #: Human-readable name, used in reprs and configs.
    name: str = "abstract"

    @abstractmethod
    def gain(self, q: Tensor, q_switch: float) -> Tensor:
        """Gain ``g(q)`` with the same shape as ``q``; finite value and gradient at ``q = 0``."""

    def gain_at_radius(self, rho: Tensor) -> Tensor:
        """``s(ρ)/ρ`` from the radius itself, for radii whose square overflows (``ρ > 0``).

        The default squares ``ρ``; profiles that know ``s`` override it.
        """
        return self.gain(rho * rho, 0.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class TanhProfile(AbstractRadialProfile):
    """``s(r) = tanh(r)``: isotropic tanh, the profile used throughout the paper."""

    name = "tanh"
    # Taylor coefficients of tanh(√q)/√q in powers of q.
    _SERIES = (1.0, -1.0 / 3.0, 2.0 / 15.0, -17.0 / 315.0, 62.0 / 2835.0)

    def gain(self, q: Tensor, q_switch: float) -> Tensor:
        small = q < q_switch
        # Closed form on a clamped copy so the unused branch never produces 0/0 in backward.
        rho = torch.sqrt(torch.clamp(q, min=q_switch))
        closed = torch.tanh(rho) / rho
        # the series on a clamped copy too: unclamped, a large q overflows its powers and the
        # unused branch's backward would turn 0 · inf into NaN
        series = _horner(torch.clamp(q, max=q_switch), self._SERIES)
        return torch.where(small, series, closed)

    def gain_at_radius(self, rho: Tensor) -> Tensor:
        return torch.tanh(rho) / rho


class CallableProfile(AbstractRadialProfile):
    """Any user profile ``s``: ``g = s(r)/r`` for ``r² ≥ q_switch`` and ``s'(0)`` inside that ball.

    Args:
        s: element-wise torch function with ``s(0) = 0``.
        slope_at_zero: ``s'(0)``, the gain at the origin (1 for tanh-like profiles).
        name: label for reprs and configs.
    """

    def __init__(self, s: Callable[[Tensor], Tensor], slope_at_zero: float = 1.0,
                 name: str = "custom") -> None:
        self.s = s
        self.slope_at_zero = float(slope_at_zero)
        self.name = name

    def gain(self, q: Tensor, q_switch: float) -> Tensor:
        # clamped above too: at q = ∞ (an overflowed ‖z‖², replaced by the caller) s(r)/r could
        # be ∞/∞, whose NaN derivative would survive torch.where's zero gradient
        r = torch.sqrt(torch.clamp(q, min=q_switch, max=torch.finfo(q.dtype).max))
        return torch.where(q < q_switch, torch.full_like(q, self.slope_at_zero), self.s(r) / r)

    def gain_at_radius(self, rho: Tensor) -> Tensor:
        return self.s(rho) / rho

    def __repr__(self) -> str:
        return f"CallableProfile(name={self.name!r}, slope_at_zero={self.slope_at_zero})"


def _horner(q: Tensor, coeffs: tuple[float, ...]) -> Tensor:
    out = torch.full_like(q, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out * q + c
    return out


# d/dq of the series: coefficients (k+1) a_{k+1}.
_SERIES_SLOPE = tuple((i + 1) * c for i, c in enumerate(TanhProfile._SERIES[1:]))


def tanh_gain_fast(q: Tensor, q_switch: float) -> Tensor:
    """:meth:`TanhProfile.gain` without autograd bookkeeping, bit-identical in value.

    Branch-free (no Python test of tensor values, so it traces under ``torch.compile``): the
    series on ``min(q, q_switch)`` where ``q < q_switch``, ``tanh(ρ)/ρ`` with
    ``ρ = √max(q, q_switch)`` elsewhere — the same clamped operands as :meth:`TanhProfile.gain`.
    Callers that know no ``q`` lies in the small ball use ``tanh(√q)/√q`` directly.
    """
    rho = torch.sqrt(torch.clamp(q, min=q_switch))
    series = _horner(torch.clamp(q, max=q_switch), TanhProfile._SERIES)
    return torch.where(q < q_switch, series, torch.tanh(rho) / rho)


def tanh_gain_slope(q: Tensor, q_switch: float) -> Tensor:
    """``dg/dq`` of :meth:`TanhProfile.gain`: ``(sech²√q − g)/(2q)`` outside, series inside.

    The same expression autograd evaluates through ``tanh(ρ)/ρ`` and ``ρ = √q`` (zero slope of
    the closed form inside the ball, where the series takes over). Branch-free like
    :func:`tanh_gain_fast`; finite for every ``q ≥ 0`` including ``q = ∞`` (slope 0 there).
    """
    rho = torch.sqrt(torch.clamp(q, min=q_switch))
    t = torch.tanh(rho)
    closed = ((1.0 - t * t) / rho - t / rho / rho) / (2.0 * rho)
    return torch.where(q < q_switch, _horner(torch.clamp(q, max=q_switch), _SERIES_SLOPE), closed)


def log1p_profile() -> CallableProfile:
    """``s(r) = log(1 + r)`` (unbounded, slowly growing); first-order gain 1 inside the small ball."""
    return CallableProfile(torch.log1p, slope_at_zero=1.0, name="log1p")


PROFILES: dict[str, Callable[[], AbstractRadialProfile]] = {
    "tanh": TanhProfile,
    "log1p": log1p_profile,
}


def tanh_gain_at(o: float) -> float:
    """``tanh(√|o|)/√|o|``: the gain of isotropic tanh at ``z = 0`` for intrinsic length ``o``."""
    r = math.sqrt(abs(o))
    return 1.0 if r == 0 else math.tanh(r) / r
