r"""Neurodegeneration: removing the weakest neurons of a hidden layer (paper-notes §6).

In the left singular basis of ``W_k`` neuron ``i`` has incoming row ``σ_i v_iᵀ``, bias ``b_i``
and outgoing column ``w_i``. Removing the set ``D`` of the ``n`` weakest neurons:

.. math::
    o_k ← o_k + \sum_{i∈D} b_i^2, \qquad ψ_{k+1} ← ψ_{k+1} + \sum_{i∈D} b_i w_i

(for ``psi="expectation"``: ``b_{k+1} ← b_{k+1} + \bar g_k \sum_{i∈D} b_i w_i`` with the mean gain
of the last training forward pass). If every ``σ_i = 0`` (and the removed ψ entries are 0), the
removed coordinates hold the constants ``b_i`` for every input: their contribution to ``‖z_k‖²`` is
``Σ b_i²`` (restored by ``o``) and to the next layer ``g_k Σ b_i w_i`` (restored by ψ), so the
function is unchanged exactly. Otherwise the change of the next pre-activation is bounded by
``Σσ_i ‖h_{k-1}‖ (‖W_D‖ + ‖W_{k+1}‖)`` (isotropic tanh is 1-Lipschitz), which vanishes as σ → 0,
plus an input-independent offset when an assumption fails (removed ψ entries non-zero, no
intrinsic length, no ψ vectors): the record's ``predicted_bound`` and ``predicted_offset``.

One SVD serves all ``n`` removals: deleting rows of ``Σ Vᵀ`` leaves the remaining rows in
their own singular basis, so this equals ``n`` one-at-a-time removals (tested against that loop).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..activations.isotropic import IntrinsicLength
from ..core.space import HiddenSpaceModel, transaction
from ..errors import TopologyError
from ..linalg import left_singular_basis
from ..ops._common import prepare, require_count
from ..ops.diagonalise import neuron_strengths
from .record import StructuralChange

CRITERIA = ("singular_value", "impact")


@torch.no_grad()
def neurodegeneration(net: HiddenSpaceModel, k: int, n: int = 1,
                      optimizer: torch.optim.Optimizer | None = None, *,
                      criterion: str = "singular_value") -> StructuralChange:
    """Remove the ``n`` weakest neurons of hidden layer ``k``, compensating through ``o`` and ψ.

    Args:
        net: network with hidden spaces.
        k: hidden layer, ``0 ≤ k < n_hidden``.
        n: neurons to remove, ``1 ≤ n < n_k``.
        optimizer: transported; the removed coordinates' state is dropped.
        criterion: ``"singular_value"`` (the paper's: smallest ``σ_i``) or ``"impact"``
            (smallest ``σ_i · ‖w_i‖``, the singular value times the outgoing column's norm).

    Returns:
        a :class:`StructuralChange` with the removed singular values, biases and the bound.

    Raises:
        TopologyError: bad ``k`` or ``n`` (removing every neuron), unknown criterion, or
            ``psi="expectation"`` before any training forward pass recorded a mean gain.
    """
    return remove_weakest(net, k, n, optimizer, criterion=criterion)


def remove_weakest(net: HiddenSpaceModel, k: int, n: int,
                   optimizer: torch.optim.Optimizer | None, *, criterion: str = "singular_value",
                   gram: Tensor | None = None, next_norm: float | None = None
                   ) -> StructuralChange:
    """:func:`neurodegeneration` for callers that already hold parts of the computation.

    Args:
        gram: ``W_k W_kᵀ`` in float64 (``(n_k, n_k)``) of the current incoming matrix, for
            float32 and narrower weights: the basis is then its eigenvectors, as in
            :func:`~isoplastic.linalg.left_singular_basis`, without forming it again.
        next_norm: an upper bound of ``‖W_{k+1}‖₂`` for the predicted bound (default: computed).
    """
    require_count(n, "neurodegeneration")
    if criterion not in CRITERIA:
        raise TopologyError(f"neurodegeneration: criterion={criterion!r}; choose one of {CRITERIA}")
    (space,) = prepare(net, "neurodegeneration", k, optimizer)
    width = space.size
    if n >= width:
        raise TopologyError(
            f"neurodegeneration(net, k={k}, n={n}): hidden layer {k} has {width} neurons, and "
            f"removing {n} would disconnect the network; use n <= {width - 1}"
        )
    layer = net.hidden_layer(k)
    psi_mode = getattr(net, "psi_mode", None)
    expectation = psi_mode is not None and psi_mode.value == "expectation"
    if expectation and layer.mean_gain is None:
        raise TopologyError(
            f"neurodegeneration(net, k={k}): psi='expectation' folds mean(g)·b*·w* into the next "
            "bias, but no training-mode forward pass has recorded the mean gain yet; run one "
            "batch through net.train() first"
        )
    w = layer.incoming_matrix()
    u, s = left_singular_basis(w, gram=gram)
    strengths = neuron_strengths(s, width)

    with transaction(net, optimizer):  # type: ignore[arg-type]
        space.rotate(u, optimizer)
        layer = net.hidden_layer(k)
        out = layer.outgoing.detach()  # (n_next, n_k)
        if criterion == "singular_value":
            drop = torch.arange(width - n, width)
        else:
            impact = strengths.to(out.dtype) * out.norm(dim=0)
            drop = torch.sort(torch.argsort(impact, stable=True)[:n]).values
        b_star = layer.bias.detach()[drop]  # (n,)
        psi_axes = [a for a in space.axes if a.role == "psi"]
        psi_star = psi_axes[0].param.detach()[drop] if psi_axes else b_star.new_zeros(0)
        w_star = out[:, drop]  # (n_next, n)
        carried = w_star @ b_star  # (n_next,)
        act = layer.activation
        if act.mode is not IntrinsicLength.NONE:
            act.o = act.o + float((b_star * b_star).sum())
        if layer.next_psi is not None:
            layer.next_psi.data.add_(carried.to(layer.next_psi.dtype))
        elif expectation:
            layer.next_bias.data.add_(layer.mean_gain * carried.to(layer.next_bias.dtype))
        space.remove(drop, optimizer)
        net.check_invariants()

    removed_s = strengths[drop]
    if next_norm is None:
        next_norm = float(torch.linalg.matrix_norm(out, ord=2))
    factor = float(torch.linalg.matrix_norm(w_star, ord=2)) + next_norm  # ‖W_D‖ + ‖W_{k+1}‖
    bound = float(removed_s.sum()) * factor
    # Input-independent part: the removed ψ entries enter as ψ*·g_{k-1} with g ≤ 1; a bias not
    # folded into o shifts the norm by at most ‖b*‖ (φ is 1-Lipschitz); without ψ vectors the
    # carried term g_k·W_D b* is lost (psi="none") or replaced by its mean (g_k ∈ (0, 1]).
    offset = float(psi_star.abs().sum()) * factor
    if act.mode is IntrinsicLength.NONE:
        offset += float(b_star.norm()) * factor
    if layer.next_psi is None:
        offset += float(carried.norm())
    return StructuralChange(
        op="neurodegeneration", layer=k, n=n, width_before=width, width_after=width - n,
        removed_singular_values=[float(x) for x in removed_s],
        removed_bias=[float(x) for x in b_star],
        predicted_bound=bound if math.isfinite(bound) else float("inf"),
        predicted_offset=offset if math.isfinite(offset) else float("inf"),
    )
