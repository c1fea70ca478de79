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

Only the span of the removed singular vectors ``U_D`` (``(n_k, n)``) matters: the compensations,
the bound and the function after the removal are unchanged by any rotation inside ``span(U_D)``
or inside its complement. So instead of rotating the layer into the whole basis ``U`` (a dense
``n_k × n_k`` product with every tensor on the layer and its optimizer state, ``O(n_k² m)``; the
default, ``diagonalise=True``), ``diagonalise=False`` applies ``n`` Householder reflectors that
put ``span(U_D)`` on ``n`` coordinates (``O(n n_k m)``,
:class:`~isoplastic.core.optim_state.Reflectors`); the kept neurons are then not diagonalised,
which changes how an Adam-type optimizer trains them afterwards.
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
from ..linalg import decomposable, left_singular_basis, spectral_norm_bound
from ..ops.diagonalise import neuron_strengths
from .record import StructuralChange

CRITERIA = ("singular_value", "impact")


def _compensation(drop: Tensor, mean_gain: float | None):
    """The fold of a removal: ``o += Σ_{i∈D} b_i²`` and ``ψ_{k+1} += W_D b*`` (or, for ψ mode
    ``"expectation"``, ``b_{k+1} += ḡ W_D b*``), read from the layer's tensors when the step runs
    (after the rotation that puts the removed directions on the coordinates ``drop``), so a
    mirrored copy folds its own values. Both sums are invariant under rotations among the
    removed coordinates.
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
                      criterion: str = "singular_value", diagonalise: bool = True
                      ) -> StructuralChange:
    """Remove the ``n`` weakest neurons of hidden layer ``k``, compensating through ``o`` and ψ.

    Args:
        net: an isoplastic block, or any module holding blocks.
        k: hidden layer ``0 ≤ k < n_hidden`` of a bare block, or a name from
            :func:`~isoplastic.hidden_spaces`.
        n: neurons to remove, ``1 ≤ n < n_k``.
        optimizer: transported; the removed coordinates' state is dropped.
        criterion: ``"singular_value"`` (the paper's: smallest ``σ_i``) or ``"impact"``
            (smallest ``σ_i · ‖w_i‖``, the singular value times the outgoing column's norm).
        diagonalise: leave the kept neurons in the left singular basis of ``W_k`` (ordered by
            singular value; the paper's procedure, default), at the cost of a dense rotation of
            every tensor on the layer and its optimizer state (``O(n_k² m)``). ``False`` rotates
            only the removed directions out, by ``n`` Householder reflectors (``O(n n_k m)``):
            the kept neurons stay close to their current basis (not diagonalised); the
            function, the removed singular values and biases and the bound are the same. An
            optimizer with per-coordinate state (Adam, RMSprop…) is not rotation-equivariant,
            so training goes on differently from the two bases (SGD with momentum does not).

    Returns:
        a :class:`StructuralChange` with the removed singular values, biases and the bound.

    Raises:
        TopologyError: bad ``k`` or ``n`` (removing every neuron), unknown criterion, or
            ``psi="expectation"`` before any training forward pass recorded a mean gain.
    """
    return remove_weakest(net, k, n, optimizer, criterion=criterion, diagonalise=diagonalise)


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
    return remove_weakest(net, k, None, optimizer, indices=indices)


def _pivots(q: Tensor) -> list[int]:
    """The ``k`` coordinates where the orthonormal columns ``q`` (``(n, k)``) are largest:
    QR with column pivoting of ``qᵀ`` (Gram-Schmidt on the rows of ``q``, always taking the row
    of largest residual norm), sorted. Put on these coordinates, ``span(q)`` is reached by
    reflectors that move the other coordinates least (``O(n k²)``)."""
    r = q.to(torch.float64).clone()
    chosen: list[int] = []
    for _ in range(q.shape[1]):
        norms = (r * r).sum(1)
        if chosen:
            norms[chosen] = -1.0
        i = int(torch.argmax(norms))
        chosen.append(i)
        d = r[i] / norms[i].sqrt()
        r -= (r @ d)[:, None] * d
    return sorted(chosen)


def remove_weakest(net: nn.Module, k: int | str, n: int | None,
                   optimizer: torch.optim.Optimizer | None, *, criterion: str = "singular_value",
                   gram: Tensor | None = None, next_norm: float | None = None,
                   indices: Sequence[int] | Tensor | None = None, diagonalise: bool = True
                   ) -> StructuralChange:
    r""":func:`neurodegeneration` for callers that already hold parts of the computation.

    The whole removal is planned from the current weights before anything is written: with
    ``W_k = U Σ Vᵀ`` and ``U_D`` (``(n_k, n)``) the columns of the removed directions, the
    removed biases ``U_Dᵀ b``, ψ entries ``U_Dᵀ ψ`` and outgoing columns ``W_D = W_{k+1} U_D``
    give the compensations and the bound, and one :class:`~isoplastic.core.Change` rotates,
    compensates and removes, all-or-nothing. The rotation puts ``span(U_D)`` on ``n``
    coordinates (:func:`_pivots` of ``U_D``) by ``n`` Householder reflectors
    (:class:`~isoplastic.core.optim_state.Reflectors`), or, with ``diagonalise`` (default),
    rotates by the whole ``U`` and removes the last ``n`` coordinates. The compensations ``o += ‖U_Dᵀb‖²`` and
    ``ψ_{k+1} += W_{k+1} U_D U_Dᵀ b`` and the function after the removal depend only on
    ``span(U_D)``, so both give the same result up to round-off.

    Args:
        gram: ``W_k W_kᵀ`` in float64 (``(n_k, n_k)``) of the current incoming matrix, for
            float32 and narrower weights: the basis is then its eigenvectors, as in
            :func:`~isoplastic.linalg.left_singular_basis`, without forming it again.
        next_norm: an upper bound of ``‖W_{k+1}‖₂`` for the predicted bound (default: the
            certified :func:`~isoplastic.linalg.spectral_norm_bound`, no SVD).
        indices: remove these positions of the current basis instead of the ``n`` weakest
            directions (``n`` is then ignored); the strengths are then the incoming rows' norms
            and nothing is rotated.
        diagonalise: see :func:`neurodegeneration`.
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
    outgoing = layer.outgoing.detach()  # (n_next, n_k)
    if chosen is not None:  # the current basis; a row's norm bounds its part of ‖W_D‖₂
        drop = torch.tensor(chosen, dtype=torch.long)
        q = torch.eye(width, dtype=w.dtype, device=w.device)[:, drop]
        removed_s = w.detach()[drop].norm(dim=1).to(torch.float64)
    else:
        u, s = left_singular_basis(w, gram=gram)
        strengths = neuron_strengths(s, width)
        if criterion == "singular_value":
            drop = torch.arange(width - n, width)
        else:
            impact = strengths.to(u.dtype) * ostate.Rotation(u).apply(outgoing, 1, ostate.FIRST
                                                                       ).norm(dim=0)
            drop = torch.sort(torch.argsort(impact, stable=True)[:n]).values
        q = u[:, drop]  # (n_k, n): U_D
        removed_s = strengths[drop].to(torch.float64)
    basis = ostate.Rotation(q)  # contracting with U_D: the removed directions' coordinates
    b_star = basis.apply(layer.bias.detach(), 0, ostate.FIRST)  # (n,) = U_Dᵀ b
    psi_axes = [a for a in space.axes if a.role == "psi"]
    psi_star = (basis.apply(psi_axes[0].param.detach(), 0, ostate.FIRST) if psi_axes
                else b_star.new_zeros(0))
    w_star = basis.apply(outgoing, 1, ostate.FIRST)  # (n_next, n) = W_{k+1} U_D

    act = layer.activation
    if next_norm is None:
        next_norm = spectral_norm_bound(outgoing)
    w64 = w_star.to(torch.float64)
    factor = spectral_norm_bound(w64) + next_norm  # ≥ ‖W_D‖₂ + ‖W_{k+1}‖₂
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

    if chosen is not None:
        positions = chosen
    elif diagonalise:
        change.rotate(space, u, check_orthogonal=False)
        positions = drop.tolist()
    else:
        positions = _pivots(q)
        change.rotate(space, ostate.Reflectors.spanning(q, positions), check_orthogonal=False)
    change.fold(space, _compensation(torch.tensor(positions), layer.mean_gain))
    change.remove(space, positions).apply()

    return StructuralChange(
        op=op, layer=k, n=n, width_before=width, width_after=width - n,
        removed_singular_values=[float(x) for x in removed_s],
        removed_bias=[float(x) for x in b_star],
        predicted_bound=bound if math.isfinite(bound) else float("inf"),
        predicted_offset=offset if math.isfinite(offset) else float("inf"),
        space=name,
    )
