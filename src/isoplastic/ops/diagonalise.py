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

from ..core.space import HiddenSpaceModel, transaction
from ..errors import TopologyError
from ..linalg import left_singular_basis, ordered_svd
from ..nn.mlp import IsotropicMLP
from ._common import prepare

NONZERO_THRESHOLD = 1e-4


def neuron_strengths(s: Tensor, width: int) -> Tensor:
    """Singular values ``s`` padded with zeros to one value per neuron, shape ``(width,)``."""
    if s.shape[0] >= width:
        return s[:width]
    return torch.cat([s, s.new_zeros(width - s.shape[0])])


@torch.no_grad()
def singular_values(net: HiddenSpaceModel, k: int) -> Tensor:
    """One strength per neuron of hidden layer ``k``, shape ``(n_k,)``, descending.

    These are the singular values of the incoming weight ``W_k`` (as an ``(n_k, fan_in)``
    matrix), padded with exact zeros when ``n_k > fan_in``: after :func:`left_diagonalise` neuron
    ``i``'s incoming row has norm ``σ_i``, and the extra neurons have zero rows. (The paper's code
    counts only the ``min(n_k, fan_in)`` explicit values; padding makes the scaffold count of
    :func:`~isoplastic.neuroadapt` right for layers wider than their input.)
    """
    prepare(net, "singular_values", k, None)
    w = net.hidden_layer(k).incoming_matrix()
    return neuron_strengths(torch.linalg.svdvals(w), w.shape[0])


@torch.no_grad()
def left_diagonalise(net: HiddenSpaceModel, k: int,
                     optimizer: torch.optim.Optimizer | None = None) -> Tensor:
    r"""Rotate hidden layer ``k`` into the left singular basis of ``W_k``; function unchanged.

    ``W_k ← Uᵀ W_k = Σ Vᵀ``, ``b_k ← Uᵀ b_k``, ``ψ_{k-1} ← Uᵀ ψ_{k-1}``, ``W_{k+1} ← W_{k+1} U``.

    Returns:
        the neuron strengths (singular values padded with zeros), shape ``(n_k,)``.
    """
    (space,) = prepare(net, "left_diagonalise", k, optimizer)
    w = net.hidden_layer(k).incoming_matrix()
    u, s = left_singular_basis(w)
    with transaction(net, optimizer):  # type: ignore[arg-type]
        space.rotate(u, optimizer)
        net.check_invariants()
    return neuron_strengths(s, w.shape[0])


@torch.no_grad()
def full_diagonalise(net: HiddenSpaceModel, k: int,
                     optimizer: torch.optim.Optimizer | None = None) -> Tensor:
    r"""Make ``W_k`` rectangular diagonal by rotating hidden spaces ``k`` (by ``U``) and ``k−1``
    (by ``V``); the function is unchanged.

    ``W_k ← Σ``, ``(b_k, ψ_{k-1}, W_{k+1}) ← (Uᵀb_k, Uᵀψ_{k-1}, W_{k+1}U)`` and
    ``(W_{k-1}, b_{k-1}, ψ_{k-2}, W_k) ← (VᵀW_{k-1}, Vᵀb_{k-1}, Vᵀψ_{k-2}, ·V)``. Valid for
    ``1 ≤ k ≤ n_hidden − 1`` (both sides of ``W_k`` must be isotropic hidden spaces) and, for
    convolutions, only 1×1 kernels. The round-off left off the diagonal (below float eps · ‖W‖)
    is set to exact zeros.

    Returns:
        the singular values ``Σ``, shape ``(min(n_k, n_{k-1}),)``.
    """
    spaces = prepare(net, "full_diagonalise", k, optimizer, lo=1,
                     spaces=lambda: [net.hidden_space(k), net.hidden_space(k - 1)])
    space_k, space_prev = spaces
    layer = net.hidden_layer(k)
    w = layer.incoming_matrix()
    if w.shape[1] != space_prev.size:
        raise TopologyError(
            f"full_diagonalise(net, k={k}): the weight into hidden layer {k} has fan-in "
            f"{w.shape[1]} but hidden layer {k - 1} has {space_prev.size} channels; only 1×1 "
            "kernels (or dense layers) can be fully diagonalised, use left_diagonalise instead"
        )
    u, s, v = ordered_svd(w)
    with transaction(net, optimizer):  # type: ignore[arg-type]
        space_k.rotate(u, optimizer)
        space_prev.rotate(v, optimizer)
        inc = net.hidden_layer(k).incoming
        diag = torch.zeros(w.shape, dtype=inc.dtype, device=inc.device)
        m = s.shape[0]
        diag[torch.arange(m), torch.arange(m)] = s.to(inc.dtype)
        inc.data.copy_(diag.reshape(inc.shape))
        net.check_invariants()
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


def sparsity_closed_form(widths: list[int]) -> float:
    r"""Fraction of weight entries that alternating full diagonalisation makes zero.

    .. math:: \frac{\sum_{k=1,3,5,\dots\le H} (n_k n_{k+1} - \min(n_k, n_{k+1}))}
                   {\sum_{i} n_i n_{i+1}}

    with ``widths = [n_0, …, n_L]`` and ``H = L − 2`` hidden-to-hidden maps (``linears[k]``,
    ``1 ≤ k ≤ L − 2``). Assumes the other weight entries are non-zero (true for generic weights).
    """
    total = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    n_maps = len(widths) - 1
    zeroed = sum(widths[k] * widths[k + 1] - min(widths[k], widths[k + 1])
                 for k in range(1, n_maps - 1, 2))
    return zeroed / total


@dataclass(frozen=True)
class SparsifyReport:
    """What :func:`sparsify` did: diagonalised layers and non-zero counts (|θ| > 1e-4)."""

    layers: list[int]
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


@torch.no_grad()
def sparsify(net: HiddenSpaceModel, optimizer: torch.optim.Optimizer | None = None
             ) -> SparsifyReport:
    """Alternating full diagonalisation; the function is unchanged.

    For an MLP this diagonalises ``linears[1], linears[3], …``. In general, hidden layers are
    taken in order and layer ``k`` is diagonalised when its incoming weight can be (fan-in equal
    to the width of layer ``k−1``: dense maps and 1×1 kernels) and neither layer ``k`` nor ``k−1``
    has been used by an earlier choice.

    Returns a :class:`SparsifyReport` with the non-zero parameter counts before and after, the
    measured fraction of zero weight entries and, for MLPs, the closed form of
    :func:`sparsity_closed_form`.
    """
    prepare(net, "sparsify", None, optimizer, indexed=False,
            spaces=lambda: [net.hidden_space(k) for k in range(net.n_hidden)])
    before = count_nonzero(net)  # type: ignore[arg-type]
    layers, used = [], set()
    for k in range(1, net.n_hidden):
        fan_in = net.hidden_layer(k).incoming_matrix().shape[1]
        if k not in used and k - 1 not in used and fan_in == net.hidden_space(k - 1).size:
            layers.append(k)
            used.update((k - 1, k))
    with transaction(net, optimizer):  # type: ignore[arg-type]
        for k in layers:
            full_diagonalise(net, k, optimizer)
    return SparsifyReport(
        layers=layers,
        nonzero_before=before,
        nonzero_after=count_nonzero(net),  # type: ignore[arg-type]
        weight_zero_fraction=weight_zero_fraction(net),  # type: ignore[arg-type]
        closed_form_fraction=(sparsity_closed_form(net.widths)
                              if isinstance(net, IsotropicMLP) else None),
    )
