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

Hidden spaces (:func:`~isoplastic.hidden_spaces`): ``"blocks.l.ffn.0"``, the inner space of block
``l``'s FFN. The residual stream and the attention spaces are not declared; docs/transformers.md
derives what their symmetries allow (stream rotations and zero-coordinate growth are exact with
this normaliser, query/key rotations per head are exact, value/output pruning is bounded by the
dropped singular values of ``W_O W_V``).

Causality: position ``t``'s logits depend on tokens ``1..t`` only (``is_causal`` attention; every
other map acts per position).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..activations import AbstractRadialProfile
from ..core.space import Axis, HiddenSpace
from ..errors import TopologyError
from .residual import IsotropicFFN, IsotropicNorm

__all__ = ["CausalSelfAttention", "IsotropicTransformer", "TransformerBlock"]

#: Standard deviation of the embeddings, attention maps and read-out at initialisation (GPT-2's).
INIT_STD = 0.02


class CausalSelfAttention(nn.Module):
    r"""Residual causal multi-head attention branch: ``y = x + W_O\, \mathrm{attn}(n(x)) + b_O``.

    Per head ``h``: ``q = W_Q^h u``, ``k = W_K^h u``, ``v = W_V^h u`` (``u = n(x)``), weights
    ``softmax(q_t · k_s / √head_dim)`` over ``s ≤ t``; the heads' outputs are concatenated and
    mapped back by ``W_O`` ``(d, H·head_dim)``.

    Args:
        d_model: stream width ``d``.
        n_heads: ``H``.
        head_dim: width of each head (default ``d // H``; ``d`` need not be a multiple then).
        norm_gain: initial gain of the normaliser (default ``√d``: RMS 1 inputs).
        out_scale: ``W_O``'s initial standard deviation is ``INIT_STD · out_scale``.
        generator: RNG for the initial weights.

    Shapes:
        input ``(batch, T, d)``; output the same.
    """

    def __init__(self, d_model: int, n_heads: int, head_dim: int | None = None,
                 norm_gain: float | None = None, out_scale: float = 1.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        d, h = int(d_model), int(n_heads)
        hd = d // h if head_dim is None and h >= 1 else int(head_dim or 0)
        if d < 1 or h < 1 or hd < 1:
            raise ValueError(f"CausalSelfAttention(d_model={d_model}, n_heads={n_heads}, "
                             f"head_dim={head_dim}): need d_model >= 1, n_heads >= 1 and a head "
                             "width >= 1 (n_heads <= d_model, or pass head_dim)")
        self.n_heads, self.head_dim = h, hd
        self.norm = IsotropicNorm(math.sqrt(d) if norm_gain is None else norm_gain)
        self.query = nn.Linear(d, h * hd)
        self.key = nn.Linear(d, h * hd)
        self.value = nn.Linear(d, h * hd)
        self.out = nn.Linear(h * hd, d)
        with torch.no_grad():
            for lin, std in ((self.query, INIT_STD), (self.key, INIT_STD), (self.value, INIT_STD),
                             (self.out, INIT_STD * out_scale)):
                nn.init.normal_(lin.weight, std=std, generator=generator)
                lin.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        u = self.norm(x)  # (B, T, d)

        def heads(lin: nn.Linear) -> Tensor:
            return lin(u).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)

        a = F.scaled_dot_product_attention(heads(self.query), heads(self.key), heads(self.value),
                                           is_causal=True)  # (B, H, T, hd)
        return x + self.out(a.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


class TransformerBlock(nn.Module):
    """One pre-norm block: ``x ← attn(x)`` then ``x ← ffn(x)`` (both residual branches)."""

    def __init__(self, attn: CausalSelfAttention, ffn: IsotropicFFN) -> None:
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
        d_ff: FFN inner width, one for every block or a list of ``L`` (the current widths, as
            :meth:`config` returns them).
        context_length: the longest sequence (size of the position embedding).
        head_dim: width of each attention head (default ``d_model // n_heads``).
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
        d_ff: int | Sequence[int],
        context_length: int,
        *,
        head_dim: int | None = None,
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
        widths = [int(d_ff)] * n_layers if isinstance(d_ff, (int, float)) else [int(w) for w in d_ff]
        if len(widths) != n_layers:
            raise ValueError(f"IsotropicTransformer: d_ff={list(widths)} gives {len(widths)} FFN "
                             f"widths for n_layers={n_layers}; give one width or one per block")
        self.vocab_size, self.context_length = v, t
        self.tok_emb = nn.Embedding(v, d)
        self.pos_emb = nn.Embedding(t, d)
        scale = 1.0 / math.sqrt(2 * n_layers)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                CausalSelfAttention(d, n_heads, head_dim, out_scale=scale, generator=generator),
                IsotropicFFN(d, w, intrinsic_length, psi, init, eps, profile, psi_decay,
                             small_ball, out_scale=scale, generator=generator))
            for w in widths)
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
    def ffn_widths(self) -> list[int]:
        """The current inner width of every block's FFN."""
        return [int(b.ffn.widths[1]) for b in self.blocks]

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
        * ``space.insert(n, optimizer)`` is exact: the new coordinates are written zero by every
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
            attn, ffn = block.attn, block.ffn
            axes += [Axis(attn.query, "weight", 1, "outgoing"),
                     Axis(attn.key, "weight", 1, "outgoing"),
                     Axis(attn.value, "weight", 1, "outgoing"),
                     Axis(attn.out, "weight", 0, "incoming"), Axis(attn.out, "bias", 0, "bias")]
            axes += ffn.stream_space().axes
        axes.append(Axis(self.unembed, "weight", 1, "outgoing"))
        return HiddenSpace("residual stream", axes, block=self)

    def sync_shapes(self) -> None:
        """Refresh the size attributes of every layer after a change of the stream's width."""
        self.tok_emb.embedding_dim = self.pos_emb.embedding_dim = self.d_model
        for block in self.blocks:
            for lin in (block.attn.query, block.attn.key, block.attn.value, block.attn.out):
                lin.out_features, lin.in_features = lin.weight.shape
            block.ffn.sync_shapes()
        self.unembed.out_features, self.unembed.in_features = self.unembed.weight.shape

    def check_invariants(self) -> None:
        """Raise :class:`~isoplastic.TopologyError` unless every map agrees on the stream width."""
        self.sync_shapes()
        d = self.d_model
        widths = {"pos_emb": self.pos_emb.weight.shape[1],
                  "unembed": self.unembed.weight.shape[1]}
        for i, block in enumerate(self.blocks):
            block.ffn.check_invariants()
            widths[f"blocks.{i}.ffn"] = block.ffn.widths[0]
            for name in ("query", "key", "value"):
                widths[f"blocks.{i}.attn.{name}"] = getattr(block.attn, name).weight.shape[1]
            widths[f"blocks.{i}.attn.out"] = block.attn.out.weight.shape[0]
        bad = {k: v for k, v in widths.items() if v != d}
        if bad:
            raise TopologyError(f"IsotropicTransformer: the residual stream has width {d} "
                                f"(tok_emb) but {bad}")

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
            "intrinsic_length": first["intrinsic_length"],
            "psi": first["psi"],
            "eps": first["eps"],
            "psi_decay": first["psi_decay"],
            "small_ball": first["small_ball"],
        }
