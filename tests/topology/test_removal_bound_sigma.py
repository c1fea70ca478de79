r"""The removal bound for neurons with σ > 0, on hand-built networks.

Every other deterministic bound test removes a σ = 0 neuron, where the σ-proportional part of
the bound is multiplied by zero. Here the removed neuron has a known singular value ``s``, the
outgoing map is chosen so that ``‖W_D‖₂`` and ``‖W_{k+1}‖₂`` are known by hand, and the test
checks three things:

* the record's ``predicted_bound`` and ``predicted_offset`` equal the hand-computed
  ``s·(‖W_D‖₂ + ‖W_{k+1}‖₂)`` and ``Σ|ψ*|·(‖W_D‖₂ + ‖W_{k+1}‖₂)``;
* for every probe input, the measured change of the next pre-activation is at most
  ``predicted_bound·‖h_{k-1}(x)‖ + predicted_offset`` (+ 1e-12 round-off);
* the bound is not vacuous: on the probe along the removed direction the change reaches at least
  ``1/TIGHTNESS`` of it (so a bound 10× too small, or one that ignores σ, fails).
"""

from __future__ import annotations

import math

import pytest
import torch

import isoplastic as ip

# The change of the removed coordinate is ≈ g·s·t·w_D (g the gain, t the input along v_D), the
# bound s·t·(‖W_D‖ + ‖W_{k+1}‖) = 2·s·t·‖W_D‖ here; with the gains of these nets (≥ 0.4 at the
# probes) the ratio is ≥ 0.2: the bound must hold and be within a factor 5 of what it bounds.
TIGHTNESS = 5.0
ROUNDOFF = 1e-12
# W_{k+1} with orthogonal columns of norm √1.25: ‖W_{k+1}‖₂ = ‖w_i‖ = √1.25
W_NEXT = [[1.0, 0.5], [-0.5, 1.0]]


def _net(depth: int, s: float, psi_removed: float) -> ip.IsotropicMLP:
    """widths [2, 2, …, 2]: layer ``depth-1`` has W = diag(2, s) (σ = (2, s), basis = identity),
    biases ≠ 0, o = 0.5, every later map W_NEXT; the ψ entry of the removed neuron is
    ``psi_removed`` (only for depth ≥ 2, where ψ feeds that layer)."""
    net = ip.IsotropicMLP([2] * (depth + 2), intrinsic_length="constant", psi="trainable").double()
    with torch.no_grad():
        for i, lin in enumerate(net.linears):
            if i == depth - 1:
                lin.weight.copy_(torch.diag(torch.tensor([2.0, s], dtype=torch.float64)))
            elif i < depth - 1:
                lin.weight.copy_(torch.tensor([[0.9, 0.3], [-0.2, 1.1]], dtype=torch.float64))
            else:
                lin.weight.copy_(torch.tensor(W_NEXT, dtype=torch.float64))
            lin.bias.copy_(torch.tensor([0.2, 0.3], dtype=torch.float64))
        for p in net.psi:
            p.copy_(torch.tensor([0.1, -0.15], dtype=torch.float64))
        if depth >= 2:
            net.psi[depth - 2][1] = psi_removed
    for act in net.activations:
        act.o = 0.5
    return net.eval()


def _next_pre(net: ip.IsotropicMLP, k: int, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        t = net.trace(x)
    return t["logits"] if k + 1 >= net.n_hidden else t["pre"][k + 1]


def _h_prev(net: ip.IsotropicMLP, k: int, x: torch.Tensor) -> torch.Tensor:
    if k == 0:
        return x
    with torch.no_grad():
        return net.trace(x)["post"][k - 1]


@pytest.mark.parametrize("depth,psi_removed", [(1, 0.0), (2, 0.0), (2, 0.25)])
@pytest.mark.parametrize("s", [0.05, 0.3, 1.0])
def test_removal_with_nonzero_sigma_is_within_a_tight_bound(depth, s, psi_removed):
    net = _net(depth, s, psi_removed)
    k = depth - 1
    # probes: along the removed direction (through the earlier layers for depth 2), and others
    t = torch.linspace(-3.0, 3.0, 13, dtype=torch.float64)
    x = torch.cat([torch.stack([0.1 * t, t], dim=1),
                   torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.7, -0.4]], dtype=torch.float64)])
    before = _next_pre(net, k, x)
    h = _h_prev(net, k, x).norm(dim=1)
    change = ip.neurodegeneration(net, k, 1)
    after = _next_pre(net, k, x)

    factor = 2 * math.sqrt(1.25)  # ‖W_D‖₂ + ‖W_{k+1}‖₂, both √1.25
    assert change.removed_singular_values == pytest.approx([s], rel=1e-12)
    assert change.predicted_bound == pytest.approx(s * factor, rel=1e-12)
    # the norms are certified upper bounds, a few units of round-off above the exact values
    assert change.predicted_offset == pytest.approx(abs(psi_removed) * factor, rel=1e-12,
                                                    abs=1e-15)

    allowed = change.predicted_bound * h + change.predicted_offset
    observed = (after - before).norm(dim=1)
    assert bool((observed <= allowed + ROUNDOFF).all()), (observed, allowed)
    live = allowed > 0  # the zero input with no offset: nothing to compare
    ratio = float((observed[live] / allowed[live]).max())
    assert ratio >= 1.0 / TIGHTNESS, f"bound is vacuous here: best observed/bound {ratio:.3f}"
