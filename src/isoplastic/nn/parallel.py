r"""The generalised isotropic perceptron: all matrix-vector products first, then a scalar recursion.

Derivation (docs/parallel.md). The forward of :class:`~isoplastic.IsotropicMLP` with ``L`` affine
maps is ``z_0 = W_0 x + b_0`` and, for hidden layers ``l = 0..L-2``,

.. math::
    z_{l+1} = W_{l+1} (g_l z_l) + b_{l+1} + ψ_l g_l = g_l (W_{l+1} z_l + ψ_l) + b_{l+1},

because every isotropic layer multiplies its whole input by one scalar gain
``g_l = s(ρ_l)/ρ_l``, ``ρ_l² = |‖z_l‖² + o_l|``. Unrolling,

.. math::
    z_l = \sum_{j=0}^{l} c_{l,j}\, a_{l,j}, \qquad c_{l,j} = \prod_{i=j}^{l-1} g_i
    \quad (c_{l,l} = 1),

with fixed vectors ``a_{l,0} = P_l x + f_l`` (``P_l = W_l ⋯ W_0``), and, data-independent,
``a_{l,l} = b_l``, ``a_{l,j} = W_l a_{l-1,j} + [j = l-1] ψ_{l-1}`` (``f_l`` likewise from
``f_0 = b_0``): bias ``b_j`` and ``ψ_j`` share the coefficient ``c_{·,j}`` because ``ψ_j`` enters
``z_{j+1}`` multiplied by ``g_j``. So

1. one matrix product ``x ↦ [P_0 x, …, P_{L-1} x]`` and the inner products
   ``s_l = ‖a_{l,0}‖²``, ``r_{l,j} = ⟨a_{l,0}, a_{l,j}⟩`` give everything data-dependent; the
   Gram matrices ``K_l = [⟨a_{l,i}, a_{l,j}⟩]_{i,j ≥ 1}`` and the ``P_l`` depend only on the weights
   (a :class:`ParallelPlan`, reusable across batches);
2. the scalar recursion ``‖z_l‖² = c_lᵀ G_l c_l`` → ``g_l`` → ``c_{l+1} = (g_l c_l, 1)`` runs on
   ``(batch, l)`` numbers only;
3. the logits are ``z_{L-1} = c_{L-1,0} a_{L-1,0} + Σ_{j≥1} c_{L-1,j} a_{L-1,j}``.

The plain isotropic MLP is the ``ψ = 0, o = 0`` member of this class (the terms vanish), and a
width-``n`` network whose removed neuron has zero singular value *is* a width-``(n-1)`` member
with ``o ← o + b*²`` and ``ψ ← ψ + b* w*`` (paper-notes §8.2; tests/nn/test_parallel.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .mlp import IsotropicMLP


@dataclass
class ParallelPlan:
    """The weight-only part of :func:`parallel_forward` for one network (a snapshot of its
    weights: rebuild it after any parameter change or structural operation).

    Attributes:
        paths: ``(Σ_l n_{l+1}, n_0)``: the stacked products ``P_l = W_l ⋯ W_0``, ``l = 0..L-1``.
        sizes: ``[n_1, …, n_L]``, to split the stacked rows.
        vectors: ``A_l`` of shape ``(n_{l+1}, l + 1)``: column 0 is ``f_l`` (the data-independent
            part of ``a_{l,0}``), column ``j ≥ 1`` is ``a_{l,j}``.
        grams: ``K_l = A_{l,1:}ᵀ A_{l,1:}``, shape ``(l, l)``, for the hidden layers.
    """

    paths: Tensor
    sizes: list[int]
    vectors: list[Tensor]
    grams: list[Tensor]


def build_plan(net: IsotropicMLP) -> ParallelPlan:
    """Precompute the products ``P_l``, the fixed vectors ``a_{l,j}`` and their Gram matrices.

    Cost ``Σ_l n_{l+1} n_l n_0`` for the chain ``P_l = W_l P_{l-1}`` plus ``O(Σ_l n_{l+1} n_l l)``.
    """
    _check_net(net)
    lins = net.linears
    has_psi = len(net.psi) > 0
    p = lins[0].weight  # P_0 = W_0: (n_1, n_0)
    a = lins[0].bias.unsqueeze(1)  # A_0 = [f_0] = [b_0]: (n_1, 1)
    paths, vectors, grams = [p], [a], [a.new_zeros(0, 0)]
    for l in range(1, len(lins)):
        w = lins[l].weight  # (n_{l+1}, n_l)
        p = w @ p  # (n_{l+1}, n_0)
        a = torch.cat([w @ a, lins[l].bias.unsqueeze(1)], dim=1)  # (n_{l+1}, l + 1)
        if has_psi:  # ψ_{l-1} enters z_l with coefficient g_{l-1} = c_{l,l-1}
            a = a + torch.nn.functional.pad(net.psi[l - 1].unsqueeze(1), (l - 1, 1))
        paths.append(p)
        vectors.append(a)
        rest = a[:, 1:]
        grams.append(rest.T @ rest)  # (l, l)
    return ParallelPlan(paths=torch.cat(paths, dim=0),
                        sizes=[int(t.shape[0]) for t in paths], vectors=vectors, grams=grams)


def _check_net(net: object) -> None:
    if not isinstance(net, IsotropicMLP):
        raise TypeError(
            f"parallel_forward needs an isoplastic.IsotropicMLP (every hidden layer a scalar gain); "
            f"got {type(net).__name__}. Element-wise activations do not factor this way"
        )


def _gain_from_square(act: torch.nn.Module, sq: Tensor) -> Tensor:
    """The activation's gain for squared norms ``sq`` (``(batch, 1)``): evaluated on a
    one-coordinate vector of that length, so every profile and small-ball rule is honoured."""
    return act.gain(torch.sqrt(sq.clamp_min(0.0)))


def parallel_forward(net: IsotropicMLP, x: Tensor, plan: ParallelPlan | None = None) -> Tensor:
    """Logits of ``net`` on ``x`` computed as the generalised isotropic perceptron.

    All matrix-vector products are done first (one GEMM ``x ↦ [P_l x]_l`` and the inner products
    with the fixed vectors), then the gains follow from the scalar recursion on the Gram
    quadratic forms, and the logits are assembled; see the module docstring. Equal to ``net(x)``
    up to round-off (float64: relative difference below 1e-12 in the tests). Differentiable.
    Does not record the mean gains that ``psi="expectation"`` uses (run ``net`` for that).

    Args:
        net: an :class:`~isoplastic.IsotropicMLP` (any ψ mode, intrinsic length and profile).
        x: inputs ``(batch, n_0)`` (or images flattening to ``n_0``).
        plan: a :class:`ParallelPlan` from :func:`build_plan` for the current weights, to reuse
            the weight-only products across batches; built on the fly when omitted.

    Returns:
        logits ``(batch, n_L)``.
    """
    _check_net(net)
    x = net._flatten(x)  # (batch, n_0)
    plan = build_plan(net) if plan is None else plan
    n_layers = len(plan.sizes)
    # Phase 1: every data-dependent product, none of which depends on a gain.
    xs = torch.split(x @ plan.paths.T, plan.sizes, dim=1)  # [(batch, n_{l+1})]
    heads = [xs[l] + plan.vectors[l][:, 0] for l in range(n_layers)]  # a_{l,0}: (batch, n_{l+1})
    sq_norms = [(h * h).sum(dim=1, keepdim=True) for h in heads[:-1]]  # s_l: (batch, 1)
    cross = [heads[l] @ plan.vectors[l][:, 1:] for l in range(n_layers - 1)]  # r_l: (batch, l)
    # Phase 2: the scalar gain recursion, c_l = (c_{l,0}, c_{l,1:}).
    c0 = x.new_ones(x.shape[0], 1)  # (batch, 1)
    rest = x.new_zeros(x.shape[0], 0)  # (batch, l)
    for l, act in enumerate(net.activations):
        quad = c0 * c0 * sq_norms[l]
        if l > 0:
            quad = (quad + 2.0 * c0 * (cross[l] * rest).sum(dim=1, keepdim=True)
                    + ((rest @ plan.grams[l]) * rest).sum(dim=1, keepdim=True))
        g = _gain_from_square(act, quad)  # (batch, 1)
        c0 = c0 * g
        rest = torch.cat([rest * g, torch.ones_like(g)], dim=1)
    # Phase 3: assemble the logits.
    return c0 * heads[-1] + rest @ plan.vectors[-1][:, 1:].T
