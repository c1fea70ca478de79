"""How exact is each operation on an isotropic transformer, in float32 and float64?

Builds one :class:`~isoplastic.IsotropicTransformer` (vocabulary 96, ``d = 64``, 2 blocks of 4
heads, FFN width 256, context 32; library initialisation, then every bias, ψ and ``o`` made
non-zero), runs each operation on a fresh copy in each dtype and prints one markdown row per
operation: the relative logit error ``max|Δ|/max|z|``, ``ε_scaled`` (percent, per token) and the
KL divergence per token, on 8 sequences of 32 random tokens. The removal rows also give the
largest measured change of the FFN's output against the library's predicted bound (per token).
The value-space rows use the same model with ``value_dims=16`` (every head's value space a
hidden space). Usage: ``python scripts/transformer_errors.py`` (a few seconds on one thread).
"""

from __future__ import annotations

import copy

import torch

import isoplastic as ip
from isoplastic.export import compile_sparse
from isoplastic.testing import relative_change

NAMES = ("blocks.0.ffn.0", "blocks.1.ffn.0")


def build(dtype: torch.dtype, value_dims: int | None = None) -> ip.IsotropicTransformer:
    gen = torch.Generator().manual_seed(0)
    net = ip.IsotropicTransformer(96, 64, 2, 4, 256, 32, intrinsic_length="constant",
                                  psi="trainable", value_dims=value_dims, dtype=torch.float64,
                                  generator=gen)
    with torch.no_grad():
        for block in net.blocks:
            for lin in block.ffn.linears:
                lin.bias.copy_(0.2 * torch.randn(lin.bias.shape, generator=gen,
                                                 dtype=torch.float64))
            for p in block.ffn.psi:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            block.ffn.activations[0].o = 0.5
    return net.to(dtype).eval()


def shrink_live(net: ip.IsotropicTransformer) -> list[float]:
    """Make the FFN narrower than the stream (48 < 64: every σ > 0), then remove its 4 weakest
    neurons; returns, per space, max over tokens of ‖Δ FFN output‖ / (bound·‖n(x)‖ + offset)."""
    ratios = []
    tokens = probe()
    for name, block in zip(NAMES, net.blocks, strict=True):
        ip.set_width(net, name, 48)
        ffn = block.ffn
        seen: list[torch.Tensor] = []
        hook = ffn.register_forward_pre_hook(lambda m, a, seen=seen: seen.append(a[0].detach()))
        with torch.no_grad():
            net(tokens)
        hook.remove()
        a = seen[0].reshape(-1, seen[0].shape[-1])
        before = copy.deepcopy(ffn)
        change = ip.neurodegeneration(net, name, 4)
        with torch.no_grad():
            t0, t1 = before.trace(a), ffn.trace(a)
        measured = (t1["branch"] - t0["branch"]).double().norm(dim=1)
        allowed = change.predicted_bound * t0["input"].double().norm(dim=1) \
            + change.predicted_offset
        ratios.append(float((measured / allowed).max()))
    return ratios


def rotate(net: ip.IsotropicTransformer) -> None:
    gen = torch.Generator().manual_seed(1)
    dtype = net.tok_emb.weight.dtype
    for name in NAMES:
        ip.reparameterise(net, name, ip.random_orthogonal(256, generator=gen, dtype=dtype))


def value_spaces(net: ip.IsotropicTransformer) -> list[str]:
    return [name for name in ip.hidden_spaces(net) if ".attn." in name]


def rotate_values(net: ip.IsotropicTransformer) -> None:
    gen = torch.Generator().manual_seed(5)
    for name in value_spaces(net):
        size = ip.hidden_spaces(net)[name].size
        ip.reparameterise(net, name, ip.random_orthogonal(size, generator=gen,
                                                          dtype=net.tok_emb.weight.dtype))


OPERATIONS = {
    "reparameterise (random R, every FFN)": rotate,
    "left_diagonalise (every FFN)": lambda n: [ip.left_diagonalise(n, k) for k in NAMES],
    "neurogenesis (+16, every FFN)": lambda n: [ip.neurogenesis(n, k, 16) for k in NAMES],
    "neurodegeneration (-16 with σ = 0, every FFN)": lambda n: [ip.neurodegeneration(n, k, 16)
                                                               for k in NAMES],
    "neuroadapt (S = 4, τ = 0.1)": lambda n: ip.neuroadapt(n, 4, 0.1),
    "stream rotation (random R)": lambda n: n.stream_space().rotate(
        ip.random_orthogonal(64, generator=torch.Generator().manual_seed(2),
                             dtype=n.tok_emb.weight.dtype)),
    "stream growth (+16 coordinates)": lambda n: n.grow_stream(
        16, generator=torch.Generator().manual_seed(4)),
    "value spaces: reparameterise (every head)": rotate_values,
    "value spaces: neurogenesis (+4, every head)": lambda n: [
        ip.neurogenesis(n, k, 4) for k in value_spaces(n)],
}
VALUE_OPS = {k for k in OPERATIONS if k.startswith("value spaces")}


def probe() -> torch.Tensor:
    return torch.randint(0, 96, (8, 32), generator=torch.Generator().manual_seed(3))


def main() -> None:
    torch.set_num_threads(1)
    tokens = probe()
    print("| operation | dtype | max abs/max abs | ε_scaled (%) | KL per token (nats) |")
    print("|---|---|---|---|---|")
    for what, op in OPERATIONS.items():
        for dtype in (torch.float32, torch.float64):
            net = build(dtype, 16 if what in VALUE_OPS else None)
            with torch.no_grad():
                before = net(tokens)
            op(net)
            with torch.no_grad():
                after = net(tokens)
            fc = ip.function_change(before, after)
            rel = relative_change(before, after)
            print(f"| {what} | {str(dtype).removeprefix('torch.')} | {rel:.1e} | "
                  f"{fc.eps_scaled:.1e} | {fc.kl:.1e} |")
    for dtype in (torch.float32, torch.float64):
        net = build(dtype)
        ip.sparsify(net)
        sparse = compile_sparse(net)
        with torch.no_grad():
            rel = relative_change(net(tokens), sparse(tokens))
        print(f"| compile_sparse | {str(dtype).removeprefix('torch.')} | {rel:.1e} | | |")
    for dtype in (torch.float32, torch.float64):
        ratios = shrink_live(build(dtype))
        print(f"| neurodegeneration of live neurons (48 → 44): measured / predicted bound, per "
              f"FFN | {str(dtype).removeprefix('torch.')} | "
              + ", ".join(f"{r:.2f}" for r in ratios) + " | | |")


if __name__ == "__main__":
    main()
