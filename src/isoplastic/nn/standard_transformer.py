r"""The baseline of the language-modelling comparison: a standard pre-LayerNorm GELU transformer.

.. math::
    x^{(0)}_t = E[t_t] + P_t, \qquad
    a^{(l)} = x^{(l)} + W_O\,\mathrm{attn}(\mathrm{LN}(x^{(l)})) + b_O, \qquad
    x^{(l+1)} = a^{(l)} + W_2\,\mathrm{GELU}(W_1\,\mathrm{LN}(a^{(l)}) + b_1) + b_2,

    \mathrm{logits}_t = U\,\mathrm{LN}(x^{(L)}_t) + c,

with LayerNorm (mean subtraction, per-coordinate gain and bias), the element-wise GELU, and
otherwise the layout of :class:`~isoplastic.IsotropicTransformer`: learned token and position
embeddings, causal multi-head softmax attention, an untied read-out, GPT-2's initialisation
(standard deviation 0.02, the residual branches' output maps scaled by ``1/√(2L)``).

It declares no hidden spaces (an element-wise activation and LayerNorm commute only with
permutations, so no rotation, growth or pruning of it is exact): it is the fixed-width
reference of ``isoplastic reproduce transformer``, sized by :func:`matching_d_ff` to the
parameter count of the isotropic model it is compared with.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["StandardTransformer", "matching_d_ff", "standard_parameter_count"]

INIT_STD = 0.02


class _Block(nn.Module):
    """One pre-LayerNorm block: causal attention, then a GELU FFN (both residual)."""

    def __init__(self, d: int, n_heads: int, d_ff: int, out_std: float,
                 generator: torch.Generator | None) -> None:
        super().__init__()
        if d % n_heads:
            raise ValueError(f"StandardTransformer: n_heads={n_heads} must divide "
                             f"d_model={d}")
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d_ff)
        self.fc_out = nn.Linear(d_ff, d)
        with torch.no_grad():
            for lin, std in ((self.qkv, INIT_STD), (self.proj, out_std), (self.fc, INIT_STD),
                             (self.fc_out, out_std)):
                nn.init.normal_(lin.weight, std=std, generator=generator)
                lin.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)  # (B, T, d) each
        q, k, v = (z.view(b, t, h, d // h).transpose(1, 2) for z in (q, k, v))  # (B, H, T, hd)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hd)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class StandardTransformer(nn.Module):
    r"""Decoder-only causal pre-LayerNorm GELU transformer (see the module docstring).

    Args:
        vocab_size, d_model, n_layers, n_heads, d_ff, context_length: as for
            :class:`~isoplastic.IsotropicTransformer` (one FFN width for every block).
        generator: RNG for the initial weights.

    Shapes:
        ``forward(tokens)``: ``(batch, T)`` long, ``1 ≤ T ≤ context_length`` → logits
        ``(batch, T, vocab_size)``.

    Example:
        >>> import torch
        >>> from isoplastic.nn.standard_transformer import StandardTransformer
        >>> net = StandardTransformer(50, 16, 2, 4, 32, 12)
        >>> net(torch.randint(0, 50, (3, 10))).shape
        torch.Size([3, 10, 50])
        >>> sum(p.numel() for p in net.parameters()) == standard_parameter_count(50, 16, 2, 32, 12)
        True
    """

    kind = "standard-transformer"

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, d_ff: int,
                 context_length: int, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        sizes = (vocab_size, d_model, n_layers, n_heads, d_ff, context_length)
        if any(int(s) < 1 for s in sizes):
            raise ValueError(f"StandardTransformer{sizes}: every size must be >= 1")
        v, d, n_layers, t = int(vocab_size), int(d_model), int(n_layers), int(context_length)
        self.vocab_size, self.context_length = v, t
        self.tok_emb = nn.Embedding(v, d)
        self.pos_emb = nn.Embedding(t, d)
        out_std = INIT_STD / math.sqrt(2 * n_layers)
        self.blocks = nn.ModuleList(_Block(d, int(n_heads), int(d_ff), out_std, generator)
                                    for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.unembed = nn.Linear(d, v)
        with torch.no_grad():
            for w in (self.tok_emb.weight, self.pos_emb.weight, self.unembed.weight):
                nn.init.normal_(w, std=INIT_STD, generator=generator)
            self.unembed.bias.zero_()
        self._config = {"vocab_size": v, "d_model": d, "n_layers": n_layers,
                        "n_heads": int(n_heads), "d_ff": int(d_ff), "context_length": t}

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise TypeError(f"StandardTransformer expects (batch, T) torch.long tokens; got "
                            f"{tokens.dtype} of shape {tuple(tokens.shape)}")
        t = tokens.shape[1]
        if not 1 <= t <= self.context_length:
            raise ValueError(f"StandardTransformer: T={t} must be in 1..{self.context_length}")
        x = self.tok_emb(tokens) + self.pos_emb(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x)  # (B, T, d)
        return self.unembed(self.ln_f(x))  # (B, T, V)

    def config(self) -> dict:
        """Constructor arguments: ``StandardTransformer(**net.config())`` rebuilds it."""
        return dict(self._config)


def standard_parameter_count(vocab_size: int, d_model: int, n_layers: int, d_ff: int,
                             context_length: int) -> int:
    """Parameters of :class:`StandardTransformer`: embeddings ``(V + T) d``; per block two
    LayerNorms ``4d``, attention ``4d² + 4d``, FFN ``2 d d_ff + d_ff + d``; final LayerNorm ``2d``
    and read-out ``d V + V``."""
    v, d, f, t = vocab_size, d_model, d_ff, context_length
    block = 4 * d + 4 * d * d + 4 * d + 2 * d * f + f + d
    return (v + t) * d + n_layers * block + 2 * d + d * v + v


def matching_d_ff(parameters: int, vocab_size: int, d_model: int, n_layers: int,
                  context_length: int) -> int:
    """The FFN width (``>= 1``) whose :class:`StandardTransformer` has the parameter count
    closest to ``parameters`` (the count grows by ``L (2d + 1)`` per unit of ``d_ff``)."""
    base = standard_parameter_count(vocab_size, d_model, n_layers, 0, context_length)
    per_unit = n_layers * (2 * d_model + 1)
    return max(1, round((parameters - base) / per_unit))
