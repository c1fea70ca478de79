r"""The textbook isotropic tanh, evaluated with mpmath (60 digits) from the exact float64 inputs.

For a row ``z`` and intrinsic length ``o``: ``sq = ‖z‖² + o``, ``q = |sq|``,
``g(q) = tanh(√q)/√q`` (``1`` at ``q = 0``), ``g'(q) = (sech²√q − g(q))/(2q)`` (``−1/3`` at 0),
``φ(z) = g z``. For a loss ``L`` with ``∂L/∂h`` and ``∂L/∂g`` per row, ``S = ⟨∂L/∂h, z⟩ + ∂L/∂g``:

.. math:: ∂L/∂z = g\,∂L/∂h + 2\,\mathrm{sign}(sq)\,g'(q)\,S\,z, \qquad
          ∂L/∂o = Σ_{rows} \mathrm{sign}(sq)\,g'(q)\,S.

Rounded once to float64 at the end, so a float64 result of the library can be compared with a
tolerance of a few of its own roundings.
"""

from __future__ import annotations

import mpmath
import torch
from torch import Tensor

DPS = 60


def gain(q: mpmath.mpf) -> mpmath.mpf:
    """``tanh(√q)/√q`` for ``q ≥ 0`` (its limit 1 at 0)."""
    if q == 0:
        return mpmath.mpf(1)
    r = mpmath.sqrt(q)
    return mpmath.tanh(r) / r


def slope(q: mpmath.mpf) -> mpmath.mpf:
    """``dg/dq = (sech²√q − g)/(2q)`` (its limit −1/3 at 0)."""
    if q == 0:
        return mpmath.mpf(-1) / 3
    r = mpmath.sqrt(q)
    return (mpmath.sech(r) ** 2 - gain(q)) / (2 * q)


def _rows(z: Tensor) -> list[list[mpmath.mpf]]:
    return [[mpmath.mpf(float(v)) for v in row] for row in z.detach().double().tolist()]


def isotropic_tanh(z: Tensor, o: float = 0.0, grad_h: Tensor | None = None,
                   grad_g: Tensor | None = None, gain_of=gain, slope_of=slope):
    """``(h, g, ∂L/∂z, ∂L/∂o)`` of isotropic tanh over the last axis of a 2-D ``z``, in float64.

    ``gain_of``/``slope_of`` replace ``g``/``g'`` as functions of ``q`` (another profile).
    Without ``grad_h`` and ``grad_g`` the two gradients are ``None``.
    """
    with mpmath.workdps(DPS):
        rows = _rows(z)
        gh = _rows(grad_h) if grad_h is not None else None
        gg = _rows(grad_g) if grad_g is not None else None
        h, g, dz, do = [], [], [], mpmath.mpf(0)
        for i, row in enumerate(rows):
            sq = sum(v * v for v in row) + mpmath.mpf(o)
            sign = 1 if sq >= 0 else -1
            q = abs(sq)
            gi = gain_of(q)
            h.append([gi * v for v in row])
            g.append([gi])
            if gh is None and gg is None:
                continue
            s = mpmath.mpf(0)
            if gh is not None:
                s += sum(a * b for a, b in zip(gh[i], row))
            if gg is not None:
                s += gg[i][0]
            c = sign * slope_of(q) * s
            dz.append([gi * (gh[i][j] if gh is not None else 0) + 2 * c * v
                       for j, v in enumerate(row)])
            do += c

        def t(x):
            return torch.tensor([[float(v) for v in r] for r in x], dtype=torch.float64)

        if gh is None and gg is None:
            return t(h), t(g), None, None
        return t(h), t(g), t(dz), float(do)
