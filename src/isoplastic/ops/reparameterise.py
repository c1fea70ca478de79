"""Orthogonal reparameterisation of one hidden space (paper-notes §4.1)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.space import HiddenSpaceModel, transaction
from ..errors import TopologyError
from ..linalg import ortho_tolerance, orthogonality_error
from ._common import prepare


def reparameterise(net: HiddenSpaceModel, k: int, R: Tensor,
                   optimizer: torch.optim.Optimizer | None = None) -> None:
    r"""Change the basis of hidden layer ``k`` by an orthogonal ``R``; the function is unchanged.

    .. math::  W_k ← Rᵀ W_k,\quad b_k ← Rᵀ b_k,\quad ψ_{k-1} ← Rᵀ ψ_{k-1},\quad W_{k+1} ← W_{k+1} R

    Because ``‖Rᵀz‖ = ‖z‖`` the gain is unchanged, ``h_k ← Rᵀ h_k`` and ``W_{k+1} R Rᵀ h_k =
    W_{k+1} h_k``: exact up to round-off (float64: relative logit change below 1e-12). Optimizer
    state moves with the parameters (first moments exactly, second moments by ``R∘R``).

    Args:
        net: a network with hidden spaces (e.g. :class:`~isoplastic.IsotropicMLP`).
        k: hidden layer, ``0 ≤ k < n_hidden``.
        R: orthogonal matrix ``(n_k, n_k)``; checked to ``max|RᵀR − I|`` within
            :data:`~isoplastic.linalg.ORTHO_TOL` for its dtype.
        optimizer: optimizer whose state is transported (optional).

    Raises:
        TopologyError: bad ``k``, wrong shape or non-orthogonal ``R``; nothing is changed.
    """
    (space,) = prepare(net, "reparameterise", k, optimizer)
    n = space.size
    if not isinstance(R, Tensor) or R.shape != (n, n):
        shape = tuple(R.shape) if isinstance(R, Tensor) else type(R).__name__
        raise TopologyError(
            f"reparameterise(net, k={k}): R has shape {shape}; hidden layer {k} has {n} neurons, "
            f"so pass an orthogonal matrix of shape ({n}, {n})"
        )
    if not torch.isfinite(R).all():
        raise TopologyError(f"reparameterise(net, k={k}): R holds NaN or Inf")
    err, tol = orthogonality_error(R.to(torch.float64)), ortho_tolerance(R)
    if err > tol:
        raise TopologyError(
            f"reparameterise(net, k={k}): R is not orthogonal (max |RᵀR − I| = {err:.3g} > "
            f"{tol:.3g}); build one with isoplastic.random_orthogonal or torch.linalg.qr"
        )
    dtype = space.axes[0].param.dtype
    with transaction(net, optimizer):  # type: ignore[arg-type]
        space.rotate(R.to(dtype), optimizer)
        net.check_invariants()
