r"""A decoder-only causal transformer whose feed-forward inner spaces are hidden spaces.

With tokens ``t_1 … t_T`` (``T ≤`` ``context_length``), stream width ``d`` and ``L`` blocks:

.. math::
    x^{(0)}_t = E[t_t] + P_t, \qquad
    a^{(l)} = x^{(l)} + \mathrm{Attn}_l(n_l(x^{(l)})), \qquad
    x^{(l+1)} = \mathrm{FFN}_l(a^{(l)}) = a^{(l)} + \mathrm{MLP}_l(n'_l(a^{(l)})),

    \mathrm{logits}_t = U\, n_f(x^{(L)}_t) + c,

with learned token and position embeddings ``E`` ``(V, d)`` and ``P`` ``(context_length, d)``,
causal multi-head softmax attention (``H`` heads of width ``head_dim``, no rotary embedding), the
isotropic normaliser :class:`~isoplastic.nn.residual.IsotropicNorm` in front of every branch and
of the read-out, each FFN an :class:`~isoplastic.nn.residual.IsotropicFFN` (isotropic tanh on its
inner space), and an untied read-out ``U`` ``(V, d)`` with bias ``c``.

Hidden spaces (:func:`~isoplastic.hidden_spaces`): ``"blocks.l.ffn.k"``, the inner spaces of
block ``l``'s FFN, and with ``value_dims`` given, ``"blocks.l.attn.h"``, the value space of head
``h`` (:class:`~isoplastic.nn.attention.ValueSpaceAttention`). The residual stream is a
free-standing space (:meth:`IsotropicTransformer.stream_space`: exact rotations and growth); the
query/key spaces are not declared. docs/transformers.md derives what each symmetry allows.

Causality: position ``t``'s logits depend on tokens ``1..t`` only (``is_causal`` attention; every
other map acts per position).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..activations import AbstractRadialProfile
from ..core.space import Axis, HiddenSpace
from .attention import INIT_STD, CausalSelfAttention, ValueSpaceAttention
from .residual import IsotropicFFN, IsotropicNorm

__all__ = ["CausalSelfAttention", "IsotropicTransformer", "TransformerBlock"]

class TransformerBlock(nn.Module):
    """One pre-norm block: ``x ← attn(x)`` then ``x ← ffn(x)`` (both residual branches)."""

    def __init__(self, attn: CausalSelfAttention | ValueSpaceAttention, ffn: IsotropicFFN
                 ) -> None:
        super().__init__()
        self.attn = attn
        self.ffn = ffn

    def forward(self, x: Tensor) -> Tensor:
        return self.ffn(self.attn(x))


class IsotropicTransformer(nn.Module):
    r"""Decoder-only causal transformer with isotropic FFNs (see the module docstring).

    Args:
        vocab_size: ``V``.
        d_model: residual-stream width ``d``.
        n_layers: number of blocks ``L``.
        n_heads: attention heads per block.
        d_ff: FFN inner width: one for every block, or a list of ``L`` entries (the current
            widths, as :meth:`config` returns them), each an inner width or a list of inner
            widths (an FFN with several inner layers: ``x + MLP(n(x))``, one hidden space each).
            One inner layer computes ``g(u)·(M u + c) + b`` with a scalar gain ``g``, whatever
            its width (docs/transformers.md); deeper FFNs are more expressive.
        context_length: the longest sequence (size of the position embedding).
        head_dim: width of each attention head (default ``d_model // n_heads``).
        value_dims: ``None`` (default): fused attention, no attention spaces declared; an int or
            a list per block of per-head widths: every head's value space is a hidden space
            (``"blocks.l.attn.h"``, :class:`~isoplastic.nn.attention.ValueSpaceAttention`).
        intrinsic_length, psi, init, eps, profile, psi_decay, small_ball: passed to every
            :class:`~isoplastic.nn.residual.IsotropicFFN`.
        dtype: parameter dtype (default: torch's default).
        generator: RNG for every initial weight (reproducible construction).

    Attributes:
        tok_emb, pos_emb: ``nn.Embedding`` ``(V, d)`` and ``(context_length, d)``.
        blocks: ``nn.ModuleList`` of :class:`TransformerBlock` (``.attn``, ``.ffn``).
        norm: the read-out's :class:`~isoplastic.nn.residual.IsotropicNorm`.
        unembed: ``nn.Linear(d, V)`` (untied from ``tok_emb``).

    Shapes:
        ``forward(tokens)``: ``tokens`` ``(batch, T)`` long, ``1 ≤ T ≤ context_length`` →
        logits ``(batch, T, V)``.

    Example:
        >>> import torch, isoplastic as ip
        >>> net = ip.IsotropicTransformer(50, 16, 2, 4, 32, 12)
        >>> net(torch.randint(0, 50, (3, 10))).shape
        torch.Size([3, 10, 50])
        >>> list(ip.hidden_spaces(net))
        ['blocks.0.ffn.0', 'blocks.1.ffn.0']
        >>> twin = ip.IsotropicTransformer(**net.config())
        >>> twin.config() == net.config()
        True
    """

    kind = "transformer"

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        d_ff: int | Sequence[int | Sequence[int]],
        context_length: int,
        *,
        head_dim: int | None = None,
        value_dims: int | Sequence[Sequence[int]] | None = None,
        intrinsic_length: str = "trainable",
        psi: str = "trainable+decay",
        init: str = "orthogonal",
        eps: float = 1e-3,
        profile: AbstractRadialProfile | None = None,
        psi_decay: float = 0.1,
        small_ball: str = "series",
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        v, d, n_layers, t = int(vocab_size), int(d_model), int(n_layers), int(context_length)
        if v < 1 or d < 1 or n_layers < 1 or t < 1:
            raise ValueError(
                f"IsotropicTransformer(vocab_size={vocab_size}, d_model={d_model}, n_layers="
                f"{n_layers}, context_length={context_length}): every size must be >= 1")
        widths = [int(d_ff)] * n_layers if isinstance(d_ff, numbers.Integral) else list(d_ff)
        if len(widths) != n_layers:
            raise ValueError(f"IsotropicTransformer: d_ff={list(widths)} gives {len(widths)} FFN "
                             f"widths for n_layers={n_layers}; give one width or one per block")
        if value_dims is None or isinstance(value_dims, numbers.Integral):
            per_block = [value_dims] * n_layers
        else:
            per_block = [list(h) for h in value_dims]
        if len(per_block) != n_layers:
            raise ValueError(f"IsotropicTransformer: value_dims={value_dims} gives "
                             f"{len(per_block)} blocks for n_layers={n_layers}; give one width "
                             "or one list of head widths per block")

        def attention(vd: int | list[int] | None) -> nn.Module:
            if vd is None:
                return CausalSelfAttention(d, n_heads, head_dim, out_scale=scale,
                                           generator=generator)
            return ValueSpaceAttention(d, n_heads, head_dim, out_scale=scale, value_dims=vd,
                                       generator=generator)

        self.vocab_size, self.context_length = v, t
        self.tok_emb = nn.Embedding(v, d)
        self.pos_emb = nn.Embedding(t, d)
        scale = 1.0 / math.sqrt(2 * n_layers)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                attention(vd),
                IsotropicFFN(d, w, intrinsic_length, psi, init, eps, profile, psi_decay,
                             small_ball, out_scale=scale, generator=generator))
            for w, vd in zip(widths, per_block, strict=True))
        self.norm = IsotropicNorm(math.sqrt(d))
        self.unembed = nn.Linear(d, v)
        with torch.no_grad():
            for w in (self.tok_emb.weight, self.pos_emb.weight, self.unembed.weight):
                nn.init.normal_(w, std=INIT_STD, generator=generator)
            self.unembed.bias.zero_()
        if dtype is not None:
            self.to(dtype)
        self.check_invariants()

    @property
    def d_model(self) -> int:
        return int(self.tok_emb.weight.shape[1])

    @property
    def ffn_widths(self) -> list[int | list[int]]:
        """The current inner width of every block's FFN (a list of widths for an FFN with
        several inner layers)."""
        return [b.ffn.widths[1] if b.ffn.n_hidden == 1 else b.ffn.widths[1:-1]
                for b in self.blocks]

    def forward(self, tokens: Tensor) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype != torch.long:
            got = (f"{tokens.dtype} tensor of shape {tuple(tokens.shape)}"
                   if isinstance(tokens, Tensor) else type(tokens).__name__)
            raise TypeError(f"IsotropicTransformer expects tokens as a (batch, T) torch.long "
                            f"tensor; got {got}")
        b, t = tokens.shape
        if not 1 <= t <= self.context_length:
            raise ValueError(f"IsotropicTransformer: sequence length T={t} must be in "
                             f"1..{self.context_length} (context_length); crop the sequence")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"IsotropicTransformer: token ids must be in 0..{self.vocab_size - 1}"
                             f"; got ids from {int(tokens.min())} to {int(tokens.max())}")
        pos = torch.arange(t, device=tokens.device)
        x = self.tok_emb(tokens) + self.pos_emb(pos)  # (B, T, d)
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.norm(x))  # (B, T, V)

    # -- the residual stream ---------------------------------------------------------------------
    def stream_space(self) -> HiddenSpace:
        r"""The residual stream as a free-standing :class:`~isoplastic.core.HiddenSpace` (width
        ``d``; not listed by :func:`~isoplastic.hidden_spaces`, so model-wide operations such as
        :func:`~isoplastic.neuroadapt` leave it alone).

        Its axes: the columns of ``tok_emb``, ``pos_emb`` (written), of every attention and FFN
        output map with their biases and the FFN's last ψ (written), and of every map reading the
        stream (queries, keys, values, each FFN's first map, ``unembed``). Every normaliser is
        isotropic, so (docs/transformers.md):

        * ``space.rotate(R, optimizer)`` is exact for every orthogonal ``R``;
        * ``space.insert(n, optimizer)`` is exact (:meth:`grow_stream` draws the readers'
          new columns at random): the new coordinates are written zero by every
          writer, stay zero, and leave every norm unchanged (whatever the readers' new columns
          hold: ``init={"outgoing": ...}`` may set them);
        * ``space.remove(indices)`` is *not* compensated: the removed coordinates' values are
          lost, in every later block and in the norms. It is exact only for coordinates that no
          writer touches (zero embedding columns, output rows, biases and ψ entries).

        Example:
            >>> import torch, isoplastic as ip
            >>> net = ip.IsotropicTransformer(20, 8, 2, 2, 16, 6).eval()
            >>> tokens = torch.randint(0, 20, (2, 6))
            >>> before = net(tokens)
            >>> net.stream_space().insert(4)
            >>> net.d_model, bool((net(tokens) - before).abs().max() < 1e-6)
            (12, True)
        """
        axes = [Axis(self.tok_emb, "weight", 1, "incoming"),
                Axis(self.pos_emb, "weight", 1, "incoming")]
        for block in self.blocks:
            axes += block.attn.stream_axes() + block.ffn.stream_space().axes
        axes.append(Axis(self.unembed, "weight", 1, "outgoing"))
        return HiddenSpace("residual stream", axes, block=self)

    def grow_stream(self, n: int, optimizer: torch.optim.Optimizer | None = None,
                    generator: torch.Generator | None = None, std: float = INIT_STD) -> None:
        """Append ``n`` residual-stream coordinates, exactly: zero in every writer (embeddings,
        output maps, biases, ψ), ``N(0, std²)`` in every reader (so that gradients reach the
        writers and the coordinates can come alive). The values are drawn on the CPU generator
        (reproducible across devices). One all-or-nothing change; ``optimizer`` is transported
        (zero state for the new coordinates)."""
        def draw(shape: torch.Size) -> Tensor:
            w = self.tok_emb.weight
            return (std * torch.randn(shape, generator=generator, dtype=torch.float64)).to(
                dtype=w.dtype, device=w.device)

        self.stream_space().insert(n, optimizer, init={"outgoing": draw})

    def sync_shapes(self) -> None:
        """Refresh the size attributes of every layer after a change of the stream's width."""
        self.tok_emb.embedding_dim = self.pos_emb.embedding_dim = self.d_model
        for block in self.blocks:
            block.attn.sync_shapes()
            block.ffn.sync_shapes()
        self.unembed.out_features, self.unembed.in_features = self.unembed.weight.shape

    def check_invariants(self) -> None:
        """Raise :class:`~isoplastic.TopologyError` unless every map agrees on the stream width."""
        self.sync_shapes()
        for block in self.blocks:
            block.ffn.check_invariants()
            if isinstance(block.attn, ValueSpaceAttention):
                block.attn.check_invariants()
        self.stream_space().size  # noqa: B018 - raises TopologyError naming disagreeing axes

    def psi_penalty(self) -> Tensor:
        """Sum of the FFNs' ψ penalties (add it to the training loss)."""
        total = torch.zeros((), device=self.tok_emb.weight.device)
        for block in self.blocks:
            total = total + block.ffn.psi_penalty()
        return total

    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture at its current FFN widths:
        ``IsotropicTransformer(**net.config())`` (dtype and generator are not part of it)."""
        first = self.blocks[0].ffn.config()
        attn = self.blocks[0].attn
        return {
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "n_layers": len(self.blocks),
            "n_heads": attn.n_heads,
            "d_ff": self.ffn_widths,
            "context_length": self.context_length,
            "head_dim": attn.head_dim,
            "value_dims": (None if attn.value_dims is None
                           else [b.attn.value_dims for b in self.blocks]),
            "intrinsic_length": first["intrinsic_length"],
            "psi": first["psi"],
            "eps": first["eps"],
            "psi_decay": first["psi_decay"],
            "small_ball": first["small_ball"],
        }
