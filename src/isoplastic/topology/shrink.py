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
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..activations.isotropic import IntrinsicLength
from ..core import optim_state as ostate
from ..core.change import Change, integer_positions, operation, positive_int
from ..core.model import resolve
from ..errors import TopologyError
from ..linalg import decomposable, left_singular_basis
from ..ops.diagonalise import neuron_strengths
from .record import StructuralChange

CRITERIA = ("singular_value", "impact")


def _compensation(drop: Tensor, mean_gain: float | None):
    """The fold of a removal: ``o += Σ_{i∈D} b_i²`` and ``ψ_{k+1} += W_D b*`` (or, for ψ mode
    ``"expectation"``, ``b_{k+1} += ḡ W_D b*``), read from the layer's tensors when the step runs
    (after the rotation into the singular basis), so a mirrored copy folds its own values.
    ``mean_gain`` stands in for a copy that has recorded none (an average model in eval mode)."""

    def compute(layer) -> list[tuple[object, object]]:
        b = layer.bias.detach()[drop]  # (n,)
        w = layer.outgoing.detach()[:, drop]  # (n_next, n)
        carried = decomposable(w) @ decomposable(b)  # (n_next,), float32 for half types
        writes: list[tuple[object, object]] = []
        act = layer.activation
        if act.mode is not IntrinsicLength.NONE:
            b64 = b.to(torch.float64)
            writes.append((act, act.o + float((b64 * b64).sum())))
        if layer.next_psi is not None:
            writes.append((layer.next_psi, layer.next_psi.detach() + carried))
        elif layer.fold_into_bias:
            g = layer.mean_gain if layer.mean_gain is not None else mean_gain
            writes.append((layer.next_bias, layer.next_bias.detach() + g * carried))
        return writes

    return compute


@operation
def neurodegeneration(net: nn.Module, k: int | str, n: int = 1,
                      optimizer: torch.optim.Optimizer | None = None, *,
                      criterion: str = "singular_value") -> StructuralChange:
    """Remove the ``n`` weakest neurons of hidden layer ``k``, compensating through ``o`` and ψ.

    Args:
        net: an isoplastic block, or any module holding blocks.
        k: hidden layer ``0 ≤ k < n_hidden`` of a bare block, or a name from
            :func:`~isoplastic.hidden_spaces`.
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


@operation
def remove_neurons(net: nn.Module, k: int | str, indices: Sequence[int] | Tensor,
                   optimizer: torch.optim.Optimizer | None = None) -> StructuralChange:
    """Remove the chosen neurons ``indices`` of hidden layer ``k`` in its current basis, with
    the same compensation as :func:`neurodegeneration` (``o += Σ b_i²``, ``ψ += Σ b_i w_i``).

    The removal is exact when the removed incoming rows are zero (and their ψ entries are);
    otherwise the record's bound uses the removed rows' norms, which bound ``‖W_D‖₂`` in any
    basis. Call :func:`~isoplastic.left_diagonalise` first to remove by singular value.

    Args:
        net: an isoplastic block, or any module holding blocks.
        k: hidden layer index of a bare block, or a name from :func:`~isoplastic.hidden_spaces`.
        indices: distinct neuron positions, at least one neuron must remain.
        optimizer: transported; the removed coordinates' state is dropped.
    """
    return remove_weakest(net, k, None, optimizer, indices=indices, diagonalise=False)


def remove_weakest(net: nn.Module, k: int | str, n: int | None,
                   optimizer: torch.optim.Optimizer | None, *, criterion: str = "singular_value",
                   gram: Tensor | None = None, next_norm: float | None = None,
                   indices: Sequence[int] | Tensor | None = None, diagonalise: bool = True
                   ) -> StructuralChange:
    """:func:`neurodegeneration` for callers that already hold parts of the computation.

    The whole removal is planned from the current weights before anything is written: with
    ``W_k = U Σ Vᵀ`` the rotated bias ``Uᵀb``, ψ entries ``Uᵀψ`` and outgoing map ``W_{k+1} U``
    give the removed set ``D`` and the compensations, and one :class:`~isoplastic.core.Change`
    rotates, compensates and removes, all-or-nothing.

    Args:
        gram: ``W_k W_kᵀ`` in float64 (``(n_k, n_k)``) of the current incoming matrix, for
            float32 and narrower weights: the basis is then its eigenvectors, as in
            :func:`~isoplastic.linalg.left_singular_basis`, without forming it again.
        next_norm: an upper bound of ``‖W_{k+1}‖₂`` for the predicted bound (default: computed).
        indices: remove these positions instead of the ``n`` weakest (``n`` is then ignored).
        diagonalise: rotate into the left singular basis first (the strengths are then the
            singular values); without it the strengths are the incoming rows' norms.
    """
    op = "neurodegeneration" if indices is None else "remove_neurons"
    if indices is None:
        positive_int(n, op)
    if criterion not in CRITERIA:
        raise TopologyError(f"neurodegeneration: criterion={criterion!r}; choose one of {CRITERIA}")
    block, k, name = resolve(net, k, op)
    layer = block.hidden_layer(k)
    space = layer.space
    change = Change(f"{op}(net, k={name})", optimizer).validate_space(space)
    width = space.size
    chosen = None
    if indices is not None:
        chosen = integer_positions(indices, f"{op}(net, k={name})", width)
        if not chosen:
            raise TopologyError(f"{op}(net, k={name}): no indices given; pass at least one")
        n = len(chosen)
    if n >= width:
        raise TopologyError(
            f"{op}(net, k={name}, n={n}): hidden layer {name} has {width} neurons, "
            f"and removing {n} would disconnect the network; use n <= {width - 1}"
        )
    expectation = layer.fold_into_bias and layer.next_psi is None
    if expectation and layer.mean_gain is None:
        raise TopologyError(
            f"{op}(net, k={name}): psi='expectation' folds mean(g)·b*·w* into the "
            "next bias, but no training-mode forward pass has recorded the mean gain yet; run one "
            "batch through net.train() first"
        )
    w = layer.incoming_matrix()
    if diagonalise:
        u, s = left_singular_basis(w, gram=gram)
        strengths = neuron_strengths(s, width)
    else:  # the current basis: identity rotation; a row's norm bounds its part of ‖W_D‖₂
        u, strengths = torch.eye(width, dtype=w.dtype, device=w.device), w.norm(dim=1)
    rot = ostate.Rotation(u)
    bias = rot.apply(layer.bias.detach(), 0, ostate.FIRST)  # (n_k,) = Uᵀ b
    out = rot.apply(layer.outgoing.detach(), 1, ostate.FIRST)  # (n_next, n_k) = W_{k+1} U
    if chosen is not None:
        drop = torch.tensor(chosen, dtype=torch.long)
    elif criterion == "singular_value":
        drop = torch.arange(width - n, width)
    else:
        impact = strengths.to(out.dtype) * out.norm(dim=0)
        drop = torch.sort(torch.argsort(impact, stable=True)[:n]).values
    b_star = bias[drop]  # (n,)
    psi_axes = [a for a in space.axes if a.role == "psi"]
    psi_star = (rot.apply(psi_axes[0].param.detach(), 0, ostate.FIRST)[drop] if psi_axes
                else b_star.new_zeros(0))
    w_star = out[:, drop]  # (n_next, n)

    act = layer.activation
    removed_s = strengths[drop].to(torch.float64)
    if next_norm is None:
        next_norm = float(torch.linalg.matrix_norm(decomposable(out), ord=2))
    w64 = w_star.to(torch.float64)
    factor = float(torch.linalg.matrix_norm(w64, ord=2)) + next_norm  # ‖W_D‖ + ‖W_{k+1}‖
    bound = float(removed_s.sum()) * factor
    # Input-independent part: the removed ψ entries enter as ψ*·g_{k-1} with g ≤ 1; a bias not
    # folded into o shifts the norm by at most ‖b*‖ (φ is 1-Lipschitz); without ψ vectors the
    # carried term g_k·W_D b* is lost (psi="none") or replaced by its mean (g_k ∈ (0, 1]).
    b64, carried64 = b_star.to(torch.float64), w64 @ b_star.to(torch.float64)
    offset = float(psi_star.to(torch.float64).abs().sum()) * factor
    if act.mode is IntrinsicLength.NONE:
        offset += float(b64.norm()) * factor
    if layer.next_psi is None:
        offset += float(carried64.norm())

    if diagonalise:
        change.rotate(space, u, check_orthogonal=False)
    change.fold(space, _compensation(drop, layer.mean_gain)).remove(space, drop).apply()

    return StructuralChange(
        op=op, layer=k, n=n, width_before=width, width_after=width - n,
        removed_singular_values=[float(x) for x in removed_s],
        removed_bias=[float(x) for x in b_star],
        predicted_bound=bound if math.isfinite(bound) else float("inf"),
        predicted_offset=offset if math.isfinite(offset) else float("inf"),
        space=name,
    )
