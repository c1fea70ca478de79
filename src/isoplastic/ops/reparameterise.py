"""Orthogonal reparameterisation of one hidden space."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.change import Change, operation
from ..core.model import resolve


@operation
def reparameterise(net: nn.Module, k: int | str, R: Tensor,
                   optimizer: torch.optim.Optimizer | None = None) -> None:
    r"""Change the basis of hidden space ``k`` by an orthogonal ``R``; the function is unchanged.

    .. math::  W_k ← Rᵀ W_k,\quad b_k ← Rᵀ b_k,\quad ψ_{k-1} ← Rᵀ ψ_{k-1},\quad W_{k+1} ← W_{k+1} R

    Because ``‖Rᵀz‖ = ‖z‖`` the gain is unchanged, ``h_k ← Rᵀ h_k`` and ``W_{k+1} R Rᵀ h_k =
    W_{k+1} h_k``: exact up to round-off (float64: relative logit change below 1e-12). Optimizer
    state moves with the parameters (first moments exactly, second moments by ``R∘R``).

    Args:
        net: an isoplastic block (e.g. :class:`~isoplastic.IsotropicMLP`) or any module holding
            blocks.
        k: hidden layer ``0 ≤ k < n_hidden`` of a bare block, or a name from
            :func:`~isoplastic.hidden_spaces`.
        R: orthogonal matrix ``(n_k, n_k)``; checked to ``max|RᵀR − I|`` within
            :data:`~isoplastic.linalg.ORTHO_TOL` for its dtype.
        optimizer: optimizer whose state is transported (optional).

    Raises:
        TopologyError: bad ``k``, wrong shape or non-orthogonal ``R``; nothing is changed.
    """
    block, k, name = resolve(net, k, "reparameterise")
    Change(f"reparameterise(net, k={name})", optimizer).rotate(block.hidden_space(k), R).apply()
