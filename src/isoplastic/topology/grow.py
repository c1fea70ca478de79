r"""Neurogenesis: adding scaffold neurons to a hidden layer, exactly (paper-notes §9).

Append ``n`` neurons with a zero incoming row, zero bias and zero ψ entry, and outgoing columns
``c ~ init_scale · N(0, 1)``:

.. math::
    W_k ← \begin{bmatrix} W_k \\ 0_{n×n_{k-1}} \end{bmatrix}, \quad
    b_k ← \begin{bmatrix} b_k \\ 0 \end{bmatrix}, \quad
    W_{k+1} ← [\, W_{k+1} \;\; C \,], \quad C ∈ ℝ^{n_{k+1} × n}.

The new pre-activation coordinates are 0 for every input, so ``‖z_k‖`` (hence the gain) is
unchanged and their outputs ``g·0 = 0`` contribute nothing downstream, whatever ``c`` is: the
function is unchanged exactly, in any basis. So by default no decomposition is made and the
existing entries are kept bit for bit (float32 too); the cost is copying the touched tensors
once (for a 500 × 3072 layer with AdamW state about 5 ms, against about 150 ms with the
paper's left diagonalisation first, ``diagonalise=True``, which only re-orders the neurons by
singular value). ``c ≠ 0`` is what lets the new neurons learn: the gradient of their incoming row
is proportional to ``cᵀ ∂L/∂z_{k+1}`` (zero if ``c = 0``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..core.change import Change, operation, positive_int
from ..core.model import resolve
from ..errors import TopologyError
from ..linalg import left_singular_basis
from . import spectra
from .record import StructuralChange


@operation
def neurogenesis(net: nn.Module, k: int | str, n: int = 1,
                 optimizer: torch.optim.Optimizer | None = None, *, init_scale: float = 0.01,
                 generator: torch.Generator | None = None,
                 diagonalise: bool = False, newborn: str = "zero") -> StructuralChange:
    """Add ``n`` neurons to hidden layer ``k`` without changing the function.

    Args:
        net: an isoplastic block, or any module holding blocks.
        k: hidden layer ``0 ≤ k < n_hidden`` of a bare block, or a name from
            :func:`~isoplastic.hidden_spaces`.
        n: number of neurons to add.
        optimizer: its state gets zeros for the new coordinates.
        init_scale: standard deviation of the new outgoing weights (0 allowed; then the new
            neurons receive no gradient).
        generator: RNG for the outgoing weights.
        diagonalise: rotate into the left singular basis first (the paper's procedure: one SVD
            of ``W_k``, then ``W_k``, ``W_{k+1}`` and their optimizer state are rotated; keeps
            the neurons ordered by singular value). Off by default: exactness does not depend
            on it, and it costs a decomposition (~30× the decomposition-free growth of a
            500 × 3072 layer) and the rotation's rounding.
        newborn: the new coordinates' second-moment optimizer state: ``"zero"`` (default, the
            paper's) or ``"population"`` (the median of the existing neurons', so their first
            Adam updates are not oversized); first moments start at zero either way.

    Returns:
        a :class:`StructuralChange` record.
    """
    positive_int(n, "neurogenesis")
    if not (math.isfinite(init_scale) and init_scale >= 0):
        raise TopologyError(f"neurogenesis: init_scale={init_scale} must be finite and >= 0 "
                            "(the standard deviation of the new outgoing weights, e.g. 0.01)")
    block, k, name = resolve(net, k, "neurogenesis")
    layer = block.hidden_layer(k)
    space = layer.space
    change = Change(f"neurogenesis(net, k={name})", optimizer).validate_space(space)
    width = space.size
    w = layer.incoming_matrix()

    def outgoing(shape: torch.Size) -> torch.Tensor:
        t = torch.randn(shape, generator=generator, dtype=torch.float64)
        return (init_scale * t).to(dtype=w.dtype, device=w.device)

    if diagonalise:
        u, _ = left_singular_basis(w)
        change.rotate(space, u, check_orthogonal=False)
    change.insert(space, n, init={"outgoing": outgoing}, newborn=newborn).apply()
    spectra.grown(block, k, n)  # the tracked spectra gain exact zeros; no recount needed
    return StructuralChange(op="neurogenesis", layer=k, n=n, width_before=width,
                            width_after=width + n, space=name)
