r"""The input-independent part of the removal bound (``predicted_offset``) without ψ vectors and
without an intrinsic length, checked against values computed by hand.

With ``W_k = U Σ Vᵀ`` and the weakest direction ``u`` (smallest σ), the removed bias is
``b* = uᵀb``, the removed outgoing column ``w* = W_{k+1} u`` and ``F = ‖w*‖ + ‖W_{k+1}‖₂``:

* ``predicted_bound = σ_min · F``;
* ``predicted_offset = ‖b*‖·F`` (no intrinsic length: the bias is not folded into ``o``)
  ``+ ‖w* b*‖`` (no ψ vectors: the carried term ``g·w* b*`` is lost).

Written for the survivors of ``make mutate`` in ``topology/shrink.py``: every other bound test
has ψ vectors or an intrinsic length, so both terms could be dropped or negated unnoticed.
"""
from __future__ import annotations

import math

import pytest
import torch

import isoplastic as ip
from isoplastic.testing import random_isotropic_mlp


@pytest.mark.parametrize("length", ["none", "constant"])
def test_offset_and_bound_by_hand_without_psi(length):
    net = random_isotropic_mlp([4, 3, 3, 2], intrinsic_length=length, psi="none", seed=1)
    w = net.linears[0].weight.detach()
    b = net.linears[0].bias.detach()
    w_next = net.linears[1].weight.detach()
    u, s, _ = torch.linalg.svd(w)  # W_k is (3, 4): three σ > 0
    b_star = float(u[:, -1] @ b)
    w_star = w_next @ u[:, -1]
    factor = float(w_star.norm()) + float(torch.linalg.matrix_norm(w_next, ord=2))
    offset = float((w_star * b_star).norm())
    if length == "none":
        offset += abs(b_star) * factor
    rec = ip.neurodegeneration(net, 0, 1)
    assert math.isclose(rec.predicted_bound, float(s[-1]) * factor, rel_tol=1e-9)
    assert math.isclose(rec.predicted_offset, offset, rel_tol=1e-9)
    assert (rec.op, rec.layer, rec.n, rec.width_before, rec.width_after) == (
        "neurodegeneration", 0, 1, 3, 2)
