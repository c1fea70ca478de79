"""float32: each exact operation changes the logits by less than 1e-5 (relative)."""

from __future__ import annotations

import copy

import pytest
import torch

import isoplastic as ip
from isoplastic.testing import (
    FLOAT_TOLERANCE,
    random_isotropic_mlp,
    relative_change,
    silence_last_neuron,
)

OPS = {
    "reparameterise": lambda n: ip.reparameterise(
        n, 1, ip.random_orthogonal(6, generator=torch.Generator().manual_seed(0),
                                   dtype=torch.float32)),
    "left_diagonalise": lambda n: ip.left_diagonalise(n, 0),
    "full_diagonalise": lambda n: ip.full_diagonalise(n, 1),
    "neurogenesis": lambda n: ip.neurogenesis(n, 1, 2),
    "sparsify": lambda n: ip.sparsify(n),
}


def zero_sigma_removal(net: ip.IsotropicMLP) -> None:
    ip.neurodegeneration(net, 1, 1)


@pytest.mark.parametrize("op", [*OPS, "neurodegeneration(sigma=0)"])
def test_float32_relative_logit_change_below_1e5(op):
    worst = 0.0
    for seed in range(5):
        net = random_isotropic_mlp([7, 5, 6, 4, 3], "trainable", "trainable", seed=seed,
                                   dtype=torch.float32)
        if op.startswith("neurodegeneration"):
            silence_last_neuron(net, 1)
            fn = zero_sigma_removal
        else:
            fn = OPS[op]
        x = torch.randn(32, 7, generator=torch.Generator().manual_seed(seed))
        before = copy.deepcopy(net)
        fn(net)
        with torch.no_grad():
            worst = max(worst, relative_change(before(x), net(x)))
    assert worst < FLOAT_TOLERANCE[torch.float32] == 1e-5
