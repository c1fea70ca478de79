"""Test helpers for isotropic networks (torch only; shipped with the package).

* :data:`FLOAT_TOLERANCE`: the relative tolerance this project holds each dtype to when it calls an
  operation exact (max |Δ logit| / max |logit|).
* :func:`assert_rotation_equivariant`: ``φ(z Rᵀ) == φ(z) Rᵀ`` for random orthogonal ``R`` (rows of
  ``z`` are samples, so this is ``φ(R z) = R φ(z)`` for every sample).
* :func:`assert_function_preserved`: run an operation on a network and check its logits and its
  optimizer's bookkeeping.
* :func:`random_isotropic_mlp`: a network with random weights, non-zero biases, ψ vectors and
  intrinsic lengths, so that exactness checks are not trivially satisfied.

The hypothesis strategies live in :mod:`isoplastic.testing.strategies` (which imports hypothesis).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..linalg import random_orthogonal
from ..nn import IsotropicMLP
from ..ops.diagonalise import left_diagonalise
from ..verify import function_change

__all__ = [
    "FLOAT_TOLERANCE",
    "assert_function_preserved",
    "assert_optimizer_consistent",
    "assert_rotation_equivariant",
    "random_isotropic_mlp",
    "relative_change",
    "silence_last_neuron",
]

#: Relative tolerance (max |Δ| / max |reference|) for operations that are exact in exact arithmetic.
FLOAT_TOLERANCE: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
}

# Scales of the test inputs: inside the small ball, at its edge, and in the saturated regime.
_SCALES = (0.0, 1e-8, 1e-4, 1e-3, 1e-2, 0.3, 1.0, 3.0, 30.0)


def _tolerance(dtype: torch.dtype, tol: float | None) -> float:
    if tol is not None:
        return float(tol)
    return FLOAT_TOLERANCE.get(dtype, 1e-5)


def relative_change(before: Tensor, after: Tensor) -> float:
    """``max |after - before| / max |before|`` (the denominator floored at the smallest normal)."""
    b = before.detach().to(torch.float64)
    a = after.detach().to(torch.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {tuple(b.shape)} before, {tuple(a.shape)} after")
    if b.numel() == 0:
        return 0.0
    denom = max(float(b.abs().max()), torch.finfo(torch.float64).tiny)
    return float((a - b).abs().max()) / denom


def assert_rotation_equivariant(
    activation: Callable[[Tensor], Tensor],
    n: int = 6,
    batch: int = 8,
    dtype: torch.dtype = torch.float64,
    generator: torch.Generator | None = None,
    trials: int = 9,
    tol: float | None = None,
) -> float:
    """Assert ``activation(z @ R.T) == activation(z) @ R.T`` for random orthogonal ``R``.

    ``z`` has shape ``(batch, n)``: each row is one layer vector, so ``z @ R.T`` applies ``R`` to
    every sample. Trial ``t`` scales ``z`` by one of ``0, 1e-8, …, 30`` (cycling), covering the
    small ball, its edge and saturation. The error is relative: ``max |Δ| / max(1, max |φ|)``.

    Returns:
        the worst relative error over all trials.

    Raises:
        AssertionError: naming the worst error, its trial, the scale and the tolerance.
    """
    tol_ = _tolerance(dtype, tol)
    worst, worst_case = 0.0, ""
    for t in range(trials):
        scale = _SCALES[t % len(_SCALES)]
        r = random_orthogonal(n, generator=generator, dtype=dtype)
        z = (torch.randn(batch, n, generator=generator, dtype=torch.float64) * scale).to(dtype)
        with torch.no_grad():
            lhs = activation(z @ r.T)
            rhs = activation(z) @ r.T
        ref = max(1.0, float(rhs.detach().abs().max()) if rhs.numel() else 0.0)
        err = float((lhs - rhs).detach().abs().max()) / ref if lhs.numel() else 0.0
        if not math.isfinite(err):
            err = math.inf
        if err > worst or (err == math.inf and worst != math.inf):
            worst = err
            worst_case = f"trial {t}, |z| scale {scale:g}, n={n}, batch={batch}, dtype={dtype}"
    if worst > tol_:
        raise AssertionError(
            f"activation is not rotation equivariant: worst relative error {worst:.3e} > "
            f"tolerance {tol_:.1e} ({worst_case})"
        )
    return worst


def assert_optimizer_consistent(net: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Every optimizer parameter is a live parameter of ``net``, and every per-element state tensor
    has the shape of its parameter."""
    if optimizer is None:
        return
    live = {id(p) for p in net.parameters()}
    group_ids = set()
    for g, group in enumerate(optimizer.param_groups):
        for i, p in enumerate(group["params"]):
            if id(p) not in live:
                raise AssertionError(
                    f"optimizer.param_groups[{g}]['params'][{i}] (shape {tuple(p.shape)}) is not a "
                    "live parameter of the network"
                )
            group_ids.add(id(p))
    for p, state in optimizer.state.items():
        if id(p) not in group_ids:
            raise AssertionError(f"optimizer holds state for a parameter {tuple(p.shape)} that is "
                                 "in none of its param_groups")
        for key, value in state.items():
            if isinstance(value, Tensor) and value.dim() > 0 and value.shape != p.shape:
                raise AssertionError(
                    f"optimizer state {key!r} has shape {tuple(value.shape)} but its parameter has "
                    f"shape {tuple(p.shape)}"
                )


def assert_function_preserved(
    op: Callable[[nn.Module], Any],
    net: nn.Module,
    x: Tensor,
    optimizer: torch.optim.Optimizer | None = None,
    tol: float | None = None,
) -> Any:
    """Run ``op(net)`` and assert the logits on ``x`` did not change beyond ``tol`` (relative).

    A deep copy of ``net`` taken before the call is the reference; the relative change is
    ``max |Δ logit| / max |logit|`` computed through :func:`isoplastic.function_change`. The
    default tolerance is :data:`FLOAT_TOLERANCE` of the network's dtype. When an optimizer is
    given, its ``param_groups`` must hold the same live Parameter objects as before and every state
    tensor must have its parameter's shape afterwards.

    Returns:
        whatever ``op`` returned.
    """
    first = next(iter(net.parameters()), None)
    dtype = first.dtype if first is not None else x.dtype
    tol_ = _tolerance(dtype, tol)
    before = copy.deepcopy(net)
    groups_before = None
    if optimizer is not None:
        groups_before = [[id(p) for p in g["params"]] for g in optimizer.param_groups]
    result = op(net)
    was_training = before.training
    before.eval()
    with torch.no_grad():
        ref = before(x)
    if was_training:
        before.train()
    change = function_change(ref, net, x)
    denom = max(float(ref.detach().abs().max()) if ref.numel() else 0.0,
                torch.finfo(torch.float64).tiny)
    rel = change.max_abs / denom
    if not rel <= tol_:
        raise AssertionError(
            f"function changed: worst logit error {change.max_abs:.3e} (relative {rel:.3e}) > "
            f"tolerance {tol_:.1e}; eps_scaled={change.eps_scaled:.3e}%, "
            f"agreement={change.agreement:.3f}"
        )
    if optimizer is not None:
        groups_after = [[id(p) for p in g["params"]] for g in optimizer.param_groups]
        if groups_after != groups_before:
            raise AssertionError("optimizer.param_groups no longer hold the same Parameter objects")
        assert_optimizer_consistent(net, optimizer)
    return result


def random_isotropic_mlp(
    widths: Sequence[int],
    intrinsic_length: str = "trainable",
    psi: str = "trainable",
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    weight_scale: float = 1.5,
    bias_scale: float = 0.5,
    psi_scale: float = 0.5,
    o_range: tuple[float, float] = (0.05, 1.0),
) -> IsotropicMLP:
    """An :class:`~isoplastic.IsotropicMLP` with Gaussian weights (std ``weight_scale/√fan_in``),
    non-zero Gaussian biases and ψ entries, and intrinsic lengths drawn from ``o_range`` (for the
    modes that have one). Deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    net = IsotropicMLP(list(widths), intrinsic_length=intrinsic_length, psi=psi)
    with torch.no_grad():
        for lin in net.linears:
            fan_in = lin.weight.shape[1]
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen, dtype=torch.float64)
                             * (weight_scale / math.sqrt(fan_in)))
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=gen, dtype=torch.float64)
                           * bias_scale)
        for p in net.psi:
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * psi_scale)
    net = net.to(dtype)
    if intrinsic_length != "none":
        lo, hi = o_range
        for act in net.activations:
            act.o = lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))
    return net


def silence_last_neuron(net: IsotropicMLP, k: int, row_scale: float = 0.0,
                        bias: float = 0.7, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Prepare an exact-removal case in hidden layer ``k``: left-diagonalise it, scale its weakest
    row (``σ → row_scale·σ``), give that neuron bias ``bias`` and a zero ψ entry (and zero the ψ
    entries of every zero row). This changes the function: take reference logits afterwards.
    ``optimizer`` (if the network has one with state) is transported by the diagonalisation."""
    left_diagonalise(net, k, optimizer)
    with torch.no_grad():
        w = net.linears[k].weight
        w[-1] *= row_scale
        net.linears[k].bias[-1] = bias
        if len(net.psi) and k >= 1:
            net.psi[k - 1][w.norm(dim=1) == 0] = 0.0
            net.psi[k - 1][-1] = 0.0
