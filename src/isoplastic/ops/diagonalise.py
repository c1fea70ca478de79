r"""SVD diagonalisation: left, full, and alternating full (sparsification); paper-notes §5.

With ``W_k = U Σ Vᵀ`` (full SVD, descending, canonical signs):

* **left** (any hidden ``k``): rotate hidden space ``k`` by ``U``, so ``W_k ← Σ Vᵀ``: rows are
  orthogonal, their norms are the singular values and neurons are ordered by them;
* **full** (``1 ≤ k ≤ n_hidden − 1``): also rotate hidden space ``k−1`` by ``V``, so
  ``W_k ← Σ`` (rectangular diagonal, non-negative, descending);
* **sparsify**: full diagonalisation of ``k = 1, 3, 5, …`` — each consumes the basis freedom of
  its two neighbouring spaces, so at most every other hidden-to-hidden weight can be diagonal.
  For equal widths ``n`` and ``H`` hidden-to-hidden maps the zeroed fraction of weights is
  ``⌈H/2⌉(n² − n) / (n_0 n + H n² + n n_L)``, which tends to 1/2 (:func:`sparsity_closed_form`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..core.change import Change, operation
from ..core.model import resolve, resolve_all, space_name
from ..errors import TopologyError
from ..linalg import decomposable, left_singular_basis, ordered_svd
from ..nn.mlp import sparsity_closed_form as sparsity_closed_form

NONZERO_THRESHOLD = 1e-4


def neuron_strengths(s: Tensor, width: int) -> Tensor:
    """Singular values ``s`` padded with zeros to one value per neuron, shape ``(width,)``."""
    if s.shape[0] >= width:
        return s[:width]
    return torch.cat([s, s.new_zeros(width - s.shape[0])])


@operation
def singular_values(net: nn.Module, k: int | str) -> Tensor:
    """One strength per neuron of hidden layer ``k``, shape ``(n_k,)``, descending.

    These are the singular values of the incoming weight ``W_k`` (as an ``(n_k, fan_in)``
    matrix), padded with exact zeros when ``n_k > fan_in``: after :func:`left_diagonalise` neuron
    ``i``'s incoming row has norm ``σ_i``, and the extra neurons have zero rows. (The paper's code
    counts only the ``min(n_k, fan_in)`` explicit values; padding makes the scaffold count of
    :func:`~isoplastic.neuroadapt` right for layers wider than their input.) ``k`` is an index of
    a bare block or a name from :func:`~isoplastic.hidden_spaces`.
    """
    block, k, _ = resolve(net, k, "singular_values")
    layer = block.hidden_layer(k)
    layer.space.check_finite()
    w = layer.incoming_matrix()
    return neuron_strengths(torch.linalg.svdvals(decomposable(w)), w.shape[0])


@operation
def left_diagonalise(net: nn.Module, k: int | str,
                     optimizer: torch.optim.Optimizer | None = None) -> Tensor:
    r"""Rotate hidden layer ``k`` into the left singular basis of ``W_k``; function unchanged.

    ``W_k ← Uᵀ W_k = Σ Vᵀ``, ``b_k ← Uᵀ b_k``, ``ψ_{k-1} ← Uᵀ ψ_{k-1}``, ``W_{k+1} ← W_{k+1} U``.

    Returns:
        the neuron strengths (singular values padded with zeros), shape ``(n_k,)``.
    """
    block, k, name = resolve(net, k, "left_diagonalise")
    layer = block.hidden_layer(k)
    change = Change(f"left_diagonalise(net, k={name})", optimizer)
    change.validate_space(layer.space)
    w = layer.incoming_matrix()
    u, s = left_singular_basis(w)
    change.rotate(layer.space, u, check_orthogonal=False).apply()
    return neuron_strengths(s, w.shape[0])


def _plan_full(change: Change, block, k: int, name: str) -> Tensor:
    """Add the steps of one full diagonalisation of ``block``'s layer ``k`` to ``change``."""
    space_k, space_prev = block.hidden_space(k), block.hidden_space(k - 1)
    change.validate_space(space_k)
    change.validate_space(space_prev)
    if not block.can_full_diagonalise(k):
        fan_in = block.hidden_layer(k).incoming_matrix().shape[1]
        raise TopologyError(
            f"full_diagonalise(net, k={name}): the weight into hidden layer {k} has fan-in "
            f"{fan_in} but hidden layer {k - 1} has {space_prev.size} channels; only 1×1 "
            "kernels (or dense layers) can be fully diagonalised, use left_diagonalise instead"
        )
    inc = block.hidden_layer(k).incoming
    w = inc.detach().reshape(inc.shape[0], -1)
    u, s, v = ordered_svd(w)
    diag = torch.zeros(w.shape, dtype=inc.dtype, device=inc.device)
    m = s.shape[0]
    diag[torch.arange(m), torch.arange(m)] = s.to(inc.dtype)
    change.rotate(space_k, u, check_orthogonal=False)
    change.rotate(space_prev, v, check_orthogonal=False)
    change.assign(inc, diag.reshape(inc.shape))
    return s


@operation
def full_diagonalise(net: nn.Module, k: int | str,
                     optimizer: torch.optim.Optimizer | None = None) -> Tensor:
    r"""Make ``W_k`` rectangular diagonal by rotating hidden spaces ``k`` (by ``U``) and ``k−1``
    (by ``V``); the function is unchanged.

    ``W_k ← Σ``, ``(b_k, ψ_{k-1}, W_{k+1}) ← (Uᵀb_k, Uᵀψ_{k-1}, W_{k+1}U)`` and
    ``(W_{k-1}, b_{k-1}, ψ_{k-2}, W_k) ← (VᵀW_{k-1}, Vᵀb_{k-1}, Vᵀψ_{k-2}, ·V)``. Valid for
    ``1 ≤ k ≤ n_hidden − 1`` of a block (both sides of ``W_k`` must be isotropic hidden spaces)
    and, for convolutions, only 1×1 kernels. The round-off left off the diagonal (below float
    eps · ‖W‖) is set to exact zeros.

    Returns:
        the singular values ``Σ``, shape ``(min(n_k, n_{k-1}),)``.
    """
    block, k, name = resolve(net, k, "full_diagonalise", lo=1)
    change = Change(f"full_diagonalise(net, k={name})", optimizer)
    s = _plan_full(change, block, k, name)
    change.apply()
    return s


def count_nonzero(net: nn.Module, threshold: float = NONZERO_THRESHOLD) -> int:
    """Number of parameters with ``|θ| > threshold`` (weights, biases, ψ, log o)."""
    return int(sum((p.detach().abs() > threshold).sum() for p in net.parameters()))


def _weights(net: nn.Module) -> list[torch.Tensor]:
    return [p for name, p in net.named_parameters() if name.endswith("weight") and p.dim() >= 2]


def weight_zero_fraction(net: nn.Module) -> float:
    """Fraction of exactly-zero entries over all weight matrices and kernels of ``net``."""
    weights = _weights(net)
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


@dataclass(frozen=True)
class SparsifyReport:
    """What :func:`sparsify` did: diagonalised layers and non-zero counts (|θ| > 1e-4)."""

    layers: list[int | str]
    nonzero_before: int
    nonzero_after: int
    weight_zero_fraction: float
    closed_form_fraction: float | None

    @property
    def retention(self) -> float:
        """``nonzero_after / nonzero_before``."""
        return self.nonzero_after / max(self.nonzero_before, 1)

    def as_dict(self) -> dict:
        return asdict(self) | {"retention": self.retention}


@operation
def sparsify(net: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> SparsifyReport:
    """Alternating full diagonalisation of every block; the function is unchanged.

    For an MLP this diagonalises ``linears[1], linears[3], …``. In general, each block's hidden
    layers are taken in order and layer ``k`` is diagonalised when its incoming weight can be
    (fan-in equal to the width of layer ``k−1``: dense maps and 1×1 kernels) and neither layer
    ``k`` nor ``k−1`` has been used by an earlier choice. Every choice is planned from the current
    weights (the chosen layers share no space) and applied as one all-or-nothing change.

    Returns a :class:`SparsifyReport`: the diagonalised layers (indices for a bare block, names
    from :func:`~isoplastic.hidden_spaces` otherwise), the non-zero parameter counts before and
    after, the measured fraction of zero weight entries and, for a bare MLP, the closed form of
    :func:`sparsity_closed_form`.
    """
    found = resolve_all(net, "sparsify")
    bare = len(found) == 1 and found[0][1] is net
    change = Change("sparsify", optimizer)
    for _, block in found:
        for k in range(block.n_hidden):
            change.validate_space(block.hidden_space(k))
    before = count_nonzero(net)
    layers: list[int | str] = []
    for prefix, block in found:
        used: set[int] = set()
        for k in range(1, block.n_hidden):
            if k not in used and k - 1 not in used and block.can_full_diagonalise(k):
                name = space_name(prefix, k)
                _plan_full(change, block, k, name)
                layers.append(k if bare else name)
                used.update((k - 1, k))
    change.apply()
    return SparsifyReport(
        layers=layers,
        nonzero_before=before,
        nonzero_after=count_nonzero(net),
        weight_zero_fraction=weight_zero_fraction(net),
        closed_form_fraction=found[0][1].sparsity_closed_form() if bare else None,
    )
