r"""Causal multi-head self-attention as a residual branch, fixed or with value spaces declared.

Per head ``h``, with ``u = n(x)`` (:class:`~isoplastic.nn.residual.IsotropicNorm`):
``q = W_Q^h u + b_Q^h``, ``k = W_K^h u + b_K^h``, ``v = W_V^h u + b_V^h``, weights
``p_ts = softmax_{s ≤ t}(q_t·k_s/√d_h)``, and the branch returns
``y_t = x_t + Σ_h W_O^h Σ_s p_ts v_s + b_O``.

:class:`CausalSelfAttention` is the fused, fixed layout (one ``query``/``key``/``value``/``out``
``nn.Linear`` each). :class:`ValueSpaceAttention` declares each head's **value space** as a
hidden space of the :class:`~isoplastic.core.IsoplasticBlock` contract (``"<module>.h"``): the
rows of ``W_V^h`` and ``b_V^h``, the columns of ``W_O^h``. Nothing non-linear acts between
``W_V^h`` and ``W_O^h`` (the weights ``p_ts`` are scalars per position pair and sum to 1), so
(docs/transformers.md §3):

* rotations, left diagonalisation and growth (zero rows of ``W_V^h``, zero bias, any new columns
  of ``W_O^h``) are **exact**;
* removing value coordinates ``D`` in the left singular basis of ``W_V^h`` changes the head's
  output by ``W_O^D (Σ_D V_Dᵀ ū_t)`` with ``ū_t = Σ_s p_ts u_s``, ``‖ū_t‖ ≤ |γ|``: **bounded** by
  ``Σ_{i∈D} σ_i ‖W_O^h e_i‖ ‖ū_t‖`` (criterion ``"impact"`` orders by exactly this), and the
  removed coordinates' bias part ``W_O^D b_V^D`` is a constant (the weights sum to 1) that the
  removal folds into ``b_O`` **exactly** — ψ mode ``"expectation"`` with a mean gain that is
  identically 1. The record's ``predicted_offset`` stays the library's conservative one (it
  assumes a gain in ``(0, 1]``).

Heads may then have different value widths; they are padded with zeros to the widest for the
fused attention kernel (zero value coordinates contribute nothing), and each head's output map
reads its own width. The query/key spaces are not declared (a change of one head's qk width
would need per-head query/key tensors as well; their rotations are exact, docs/transformers.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..activations import IsotropicActivation
from ..core.model import HiddenLayer, IsoplasticBlock
from ..core.space import Axis, HiddenSpace
from ..errors import TopologyError
from .chain import PsiMode
from .residual import IsotropicNorm

__all__ = ["INIT_STD", "CausalSelfAttention", "ValueSpaceAttention"]

#: Standard deviation of the embeddings, attention maps and read-out at initialisation (GPT-2's).
INIT_STD = 0.02


def _head_sizes(d_model: int, n_heads: int, head_dim: int | None, what: str) -> tuple[int, int, int]:
    d, h = int(d_model), int(n_heads)
    hd = d // h if head_dim is None and h >= 1 else int(head_dim or 0)
    if d < 1 or h < 1 or hd < 1:
        raise ValueError(f"{what}(d_model={d_model}, n_heads={n_heads}, head_dim={head_dim}): "
                         "need d_model >= 1, n_heads >= 1 and a head width >= 1 (n_heads <= "
                         "d_model, or pass head_dim)")
    return d, h, hd


def _normal_(lin: nn.Linear, std: float, generator: torch.Generator | None) -> None:
    with torch.no_grad():
        nn.init.normal_(lin.weight, std=std, generator=generator)
        if lin.bias is not None:
            lin.bias.zero_()


class CausalSelfAttention(nn.Module):
    r"""Residual causal multi-head attention branch: ``y = x + W_O\, \mathrm{attn}(n(x)) + b_O``
    (fused layout, see the module docstring).

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
        d, h, hd = _head_sizes(d_model, n_heads, head_dim, "CausalSelfAttention")
        self.n_heads, self.head_dim = h, hd
        self.norm = IsotropicNorm(math.sqrt(d) if norm_gain is None else norm_gain)
        self.query = nn.Linear(d, h * hd)
        self.key = nn.Linear(d, h * hd)
        self.value = nn.Linear(d, h * hd)
        self.out = nn.Linear(h * hd, d)
        for lin, std in ((self.query, INIT_STD), (self.key, INIT_STD), (self.value, INIT_STD),
                         (self.out, INIT_STD * out_scale)):
            _normal_(lin, std, generator)

    @property
    def value_dims(self) -> None:
        """``None``: the fused layout has no adaptive value spaces."""
        return None

    def stream_axes(self) -> list[Axis]:
        """Axes indexed by the residual stream: the readers' columns, ``W_O``'s rows, ``b_O``."""
        return [Axis(self.query, "weight", 1, "outgoing"), Axis(self.key, "weight", 1, "outgoing"),
                Axis(self.value, "weight", 1, "outgoing"), Axis(self.out, "weight", 0, "incoming"),
                Axis(self.out, "bias", 0, "bias")]

    def sync_shapes(self) -> None:
        for lin in (self.query, self.key, self.value, self.out):
            lin.out_features, lin.in_features = lin.weight.shape

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        u = self.norm(x)  # (B, T, d)

        def heads(lin: nn.Linear) -> Tensor:
            return lin(u).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)

        a = F.scaled_dot_product_attention(heads(self.query), heads(self.key), heads(self.value),
                                           is_causal=True)  # (B, H, T, hd)
        return x + self.out(a.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


class ValueSpaceAttention(IsoplasticBlock):
    r"""Causal multi-head attention whose per-head value spaces are hidden spaces.

    Args:
        d_model, n_heads, head_dim, norm_gain, out_scale, generator: as for
            :class:`CausalSelfAttention` (``head_dim`` is the query/key width).
        value_dims: the value width of every head (default ``head_dim``), or one width for all.

    Attributes:
        query, key: ``nn.Linear(d, H·head_dim)``.
        values: ``H`` maps ``nn.Linear(d, dv_h)``; ``outs``: ``H`` maps
            ``nn.Linear(dv_h, d, bias=False)``; ``out_bias``: ``b_O`` ``(d,)``.

    Shapes:
        input ``(batch, T, d)``; output the same.

    Example:
        >>> import torch, isoplastic as ip
        >>> from isoplastic.nn.attention import ValueSpaceAttention
        >>> attn = ValueSpaceAttention(8, 2, value_dims=[4, 3])
        >>> attn(torch.randn(2, 5, 8)).shape, list(ip.hidden_spaces(attn))
        (torch.Size([2, 5, 8]), ['0', '1'])
    """

    #: The bias fold of a removal goes into ``b_O`` with a gain that is identically 1.
    psi_mode = PsiMode.EXPECTATION

    def __init__(self, d_model: int, n_heads: int, head_dim: int | None = None,
                 norm_gain: float | None = None, out_scale: float = 1.0,
                 value_dims: int | Sequence[int] | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        d, h, hd = _head_sizes(d_model, n_heads, head_dim, "ValueSpaceAttention")
        dims = ([hd] * h if value_dims is None else [int(value_dims)] * h
                if isinstance(value_dims, int) else [int(v) for v in value_dims])
        if len(dims) != h or any(v < 1 for v in dims):
            raise ValueError(f"ValueSpaceAttention: value_dims={value_dims} must give {h} widths "
                             ">= 1 (one per head) or one width for all")
        self.n_heads, self.head_dim = h, hd
        self.norm = IsotropicNorm(math.sqrt(d) if norm_gain is None else norm_gain)
        self.query = nn.Linear(d, h * hd)
        self.key = nn.Linear(d, h * hd)
        self.values = nn.ModuleList(nn.Linear(d, v) for v in dims)
        self.outs = nn.ModuleList(nn.Linear(v, d, bias=False) for v in dims)
        self.out_bias = nn.Parameter(torch.zeros(d))
        # the value spaces are linear: an activation with no intrinsic length stands for "none"
        self.value_activation = IsotropicActivation(intrinsic_length="none")
        for lin in (self.query, self.key, *self.values):
            _normal_(lin, INIT_STD, generator)
        for lin in self.outs:
            _normal_(lin, INIT_STD * out_scale, generator)
        self.check_invariants()

    @property
    def value_dims(self) -> list[int]:
        """The current value width of every head."""
        return [int(v.weight.shape[0]) for v in self.values]

    # -- the contract -----------------------------------------------------------------------------
    @property
    def n_hidden(self) -> int:
        return self.n_heads

    def hidden_space(self, k: int) -> HiddenSpace:
        v, o = self.values[k], self.outs[k]
        return HiddenSpace(f"value space of head {k}",
                           [Axis(v, "weight", 0, "incoming"), Axis(v, "bias", 0, "bias"),
                            Axis(o, "weight", 1, "outgoing")],
                           block=self, index=k, activation=self.value_activation)

    def hidden_layer(self, k: int) -> HiddenLayer:
        return HiddenLayer(space=self.hidden_space(k), incoming=self.values[k].weight,
                           bias=self.values[k].bias, outgoing=self.outs[k].weight.detach(),
                           activation=self.value_activation, next_psi=None, next_bias=self.out_bias,
                           mean_gain=1.0, fold_into_bias=True)

    def can_full_diagonalise(self, k: int) -> bool:
        return False  # a value space's incoming map reads the stream, not another value space

    def stream_axes(self) -> list[Axis]:
        """Axes indexed by the residual stream: the readers' columns, the ``W_O^h`` rows, ``b_O``."""
        axes = [Axis(self.query, "weight", 1, "outgoing"), Axis(self.key, "weight", 1, "outgoing")]
        axes += [Axis(v, "weight", 1, "outgoing") for v in self.values]
        axes += [Axis(o, "weight", 0, "incoming") for o in self.outs]
        return axes + [Axis(self, "out_bias", 0, "bias")]

    def input_space(self) -> HiddenSpace:
        return HiddenSpace("residual stream", self.stream_axes(), block=self)

    def output_space(self) -> HiddenSpace:
        return self.input_space()

    def sync_shapes(self) -> None:
        for lin in (self.query, self.key, *self.values, *self.outs):
            lin.out_features, lin.in_features = lin.weight.shape

    def check_invariants(self) -> None:
        self.sync_shapes()
        d = int(self.query.weight.shape[1])
        for h, (v, o) in enumerate(zip(self.values, self.outs, strict=True)):
            if (v.weight.shape[1] != d or v.bias.shape != (v.weight.shape[0],)
                    or tuple(o.weight.shape) != (d, v.weight.shape[0])):
                raise TopologyError(f"head {h}: value map {tuple(v.weight.shape)} and output map "
                                    f"{tuple(o.weight.shape)} disagree (stream width {d})")
        if self.out_bias.shape != (d,) or self.key.weight.shape[1] != d:
            raise TopologyError(f"ValueSpaceAttention: b_O {tuple(self.out_bias.shape)} or the "
                                f"key map {tuple(self.key.weight.shape)} disagree with d = {d}")

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        u = self.norm(x)  # (B, T, d)

        def heads(lin: nn.Linear) -> Tensor:
            return lin(u).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)

        dims = self.value_dims
        width = max(dims)
        v = torch.stack([F.pad(val(u), (0, width - dv)) for val, dv in zip(self.values, dims,
                                                                               strict=True)],
                        dim=1)  # (B, H, T, dv_max), zero padded
        a = F.scaled_dot_product_attention(heads(self.query), heads(self.key), v,
                                           is_causal=True)  # (B, H, T, dv_max)
        y = x + self.out_bias
        for h, (out, dv) in enumerate(zip(self.outs, dims, strict=True)):
            y = y + out(a[:, h, :, :dv])
        return y

    def config(self) -> dict:
        return {"d_model": int(self.query.weight.shape[1]), "n_heads": self.n_heads,
                "head_dim": self.head_dim, "norm_gain": float(self.norm.gain.detach()),
                "value_dims": self.value_dims}
