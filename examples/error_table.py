"""Print a markdown table of the max relative logit change of each exact operation.

For ~20 random isotropic MLPs per operation (random biases, ψ and intrinsic lengths), in float64,
float32, bfloat16 and float16: ``max |Δ logit| / max |logit|`` on 64 probe inputs, the network
evaluated in its own dtype before and after the operation. Half-precision networks are
decomposed and rotated in float32 inside the operations and written back in their own dtype, so
their column is the rounding of the new weights to 8 (bfloat16) or 11 (float16) significant bits.

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


DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


def operations(dtype: torch.dtype, seed: int):
    gen = torch.Generator().manual_seed(seed)
    # a user rotating a half-precision network passes a float32 R (a half R is orthogonal to ~3
    # digits only); the rotation is computed in float32 and written back in the network's dtype
    r_dtype = dtype if dtype in (torch.float64, torch.float32) else torch.float32
    return {
        "reparameterise": (None, lambda n: ip.reparameterise(
            n, 1, ip.random_orthogonal(WIDTHS[2], generator=gen, dtype=r_dtype))),
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
    print("| operation | " + " | ".join(str(d).removeprefix("torch.") for d in DTYPES) + " |")
    print("|---|" + "---|" * len(DTYPES))
    for name in names:
        cells = [f"{worst_change(name, dtype):.2e}" for dtype in DTYPES]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
