"""Print a markdown table of the max relative logit change of each exact operation.

For ~20 random isotropic MLPs per operation (random biases, ψ and intrinsic lengths), in float64
and float32: ``max |Δ logit| / max |logit|`` on 64 probe inputs.

    python examples/error_table.py
"""

from __future__ import annotations

import copy

import torch

import isoplastic as ip
from isoplastic.testing import random_isotropic_mlp, relative_change, silence_last_neuron

N_NETS = 20
WIDTHS = [12, 10, 9, 8, 6, 4]  # four hidden layers


def silence_and_remove(net: ip.IsotropicMLP) -> None:
    """Make neuron 'last' of hidden layer 2 a σ = 0 neuron (zero row, bias 0.7, ψ 0), then remove it.
    The reference logits are taken after silencing (see main)."""
    ip.neurodegeneration(net, 2, 1)


def silence(net: ip.IsotropicMLP) -> None:
    silence_last_neuron(net, 2)


def operations(dtype: torch.dtype, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return {
        "reparameterise": (None, lambda n: ip.reparameterise(
            n, 1, ip.random_orthogonal(WIDTHS[2], generator=gen, dtype=dtype))),
        "left_diagonalise": (None, lambda n: ip.left_diagonalise(n, 2)),
        "full_diagonalise": (None, lambda n: ip.full_diagonalise(n, 2)),
        "neurogenesis": (None, lambda n: ip.neurogenesis(n, 1, 3, generator=gen, init_scale=0.1)),
        "sparsify": (None, ip.sparsify),
        "neurodegeneration (σ = 0)": (silence, silence_and_remove),
    }


def worst_change(name: str, dtype: torch.dtype) -> float:
    worst = 0.0
    for seed in range(N_NETS):
        net = random_isotropic_mlp(WIDTHS, "trainable", "trainable+decay", seed=seed, dtype=dtype)
        prep, op = operations(dtype, seed)[name]
        if prep is not None:
            prep(net)
        x = torch.randn(64, WIDTHS[0], generator=torch.Generator().manual_seed(10_000 + seed),
                        dtype=torch.float64).to(dtype)
        before = copy.deepcopy(net)
        op(net)
        with torch.no_grad():
            worst = max(worst, relative_change(before(x), net(x)))
    return worst


def main() -> None:
    names = list(operations(torch.float64, 0))
    print(f"Max relative logit change over {N_NETS} random {'-'.join(map(str, WIDTHS))} nets")
    print()
    print("| operation | float64 | float32 |")
    print("|---|---|---|")
    for name in names:
        f64 = worst_change(name, torch.float64)
        f32 = worst_change(name, torch.float32)
        print(f"| {name} | {f64:.2e} | {f32:.2e} |")


if __name__ == "__main__":
    main()
