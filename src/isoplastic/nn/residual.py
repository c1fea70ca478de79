r"""Isotropic residual branches: the feed-forward block of transformers and residual MLPs.

A residual branch reads the *residual stream* ``x`` (width ``d``) through an isotropic normaliser
``n`` and adds an isotropic MLP of it back (docs/transformers.md):

.. math::
    y = x + W_L φ_{L-1}(\,\cdots φ_0(W_0\, n(x) + b_0) \cdots) + ψ_{L-2}\, g_{L-2} + b_L,
    \qquad n(x) = γ\, \frac{x}{\sqrt{‖x‖^2 + ε}},

with ψ terms between inner layers exactly as in :class:`~isoplastic.IsotropicMLP`. The inner
spaces (widths ``d_ff`` …) are hidden spaces of the :class:`~isoplastic.core.IsoplasticBlock`
contract, found by :func:`~isoplastic.hidden_spaces` under the branch's module name
(``"blocks.0.ffn.0"``): rotations, diagonalisation, growth and removal with ``o``/ψ compensation
act on them with no special case, because the branch output ``B(n(x))`` is the logits of an
isotropic MLP applied to ``n(x)`` and ``y = x + B``: whatever a change does to ``B`` it does to
``y``, token by token (a change is exact for ``y`` iff it is exact for ``B``, and a removal's bound
on ``‖ΔB‖`` bounds ``‖Δy‖``; the removal bound's ``‖h_{k-1}‖`` is ``‖n(x)‖ ≤ γ`` for ``k = 0``).

The residual stream itself is *not* a hidden space here: its coordinates are shared by every
branch, the embeddings and the read-out, so no single block can declare it
(docs/transformers.md derives which changes of it are exact). A branch's own view of it (the
input axis of ``W_0``, the output axis of ``W_L``, ``b_L`` and the last ψ) is what
:meth:`IsotropicFFN.input_space` and :meth:`IsotropicFFN.output_space` both return: a branch's
inputs and outputs are the same coordinates.

:class:`IsotropicNorm` has one scalar gain and divides by the Euclidean norm (not the RMS), so it
commutes with every rotation of the stream and a new coordinate holding zero changes nothing.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..activations import AbstractRadialProfile, IsotropicActivation
from ..core.space import Axis, HiddenSpace
from ..errors import TopologyError
from .chain import AffineChain, check_input_dtype, init_affine
from .mlp import AffineStack, isotropic_chain, trace_recorder

__all__ = ["IsotropicFFN", "IsotropicNorm", "IsotropicResidualMLP", "ResidualWrapper"]


class IsotropicNorm(nn.Module):
    r"""Isotropic normaliser: ``n(x) = γ x / sqrt(‖x‖² + ε)`` over the last axis, ``γ`` a scalar.

    Unlike LayerNorm (mean subtraction, per-coordinate gain and bias) and RMSNorm (per-coordinate
    gain, ``1/d`` inside the root), it commutes with every orthogonal map of the feature axis,
    ``n(x Rᵀ) = n(x) Rᵀ``, and appending a coordinate that holds zero leaves ``n`` of the others
    unchanged: ``‖x‖`` does not see it and there is no ``d`` in the formula. At ``γ = √d`` it
    equals RMSNorm without gains (up to ``ε``).

    Args:
        gain: initial ``γ`` (trained).
        eps: added to ``‖x‖²`` (keeps ``n(0) = 0`` and the gradient finite).

    Shapes:
        input ``(..., d)``; output the same.

    Example:
        >>> import torch, isoplastic as ip
        >>> n = ip.IsotropicNorm(gain=2.0)
        >>> round(float(n(torch.tensor([[3.0, 4.0]])).detach().norm()), 4)
        2.0
    """

    def __init__(self, gain: float = 1.0, eps: float = 1e-8) -> None:
        super().__init__()
        if not math.isfinite(gain) or not eps > 0:
            raise ValueError(f"IsotropicNorm(gain={gain}, eps={eps}): the gain must be finite "
                             "and eps > 0 (e.g. gain=1.0, eps=1e-8)")
        self.gain = nn.Parameter(torch.tensor(float(gain)))
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        sq = (x * x).sum(dim=-1, keepdim=True)  # (..., 1)
        return x * (self.gain.to(x.dtype) * torch.rsqrt(sq + self.eps))

    def extra_repr(self) -> str:
        return f"gain={float(self.gain.detach()):.4g}, eps={self.eps:g}"


class ResidualWrapper(nn.Module):
    """``x + inner(norm(x))`` over the last axis, for any leading shape: the inference form of a
    residual branch whose chain ``inner`` (e.g. a :class:`~isoplastic.export.SparseMLP`) maps
    ``(N, d) → (N, d)``."""

    def __init__(self, norm: nn.Module, inner: nn.Module) -> None:
        super().__init__()
        self.norm = norm
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (N, d)
        return x + self.inner(self.norm(flat)).view_as(x)


def _branch_widths(d_model: int, d_ff: int | Sequence[int]) -> list[int]:
    hidden = [int(d_ff)] if isinstance(d_ff, numbers.Integral) else [int(w) for w in d_ff]
    widths = [int(d_model), *hidden, int(d_model)]
    if not hidden or any(w < 1 for w in widths):
        raise ValueError(f"IsotropicFFN(d_model={d_model}, d_ff={d_ff}): need d_model >= 1 and "
                         "at least one inner width >= 1, e.g. d_ff=256 or d_ff=[256, 256]")
    return widths


class IsotropicFFN(AffineStack, AffineChain):
    r"""Isotropic residual feed-forward branch ``y = x + MLP(n(x))`` (see the module docstring).

    Args:
        d_model: width ``d`` of the residual stream.
        d_ff: inner width (one hidden space), or a list of inner widths (``x + MLP(n(x))`` with
            ``len(d_ff)`` hidden spaces, whose maps between hidden spaces can be fully
            diagonalised).
        intrinsic_length, psi, init, eps, profile, psi_decay, small_ball: as for
            :class:`~isoplastic.IsotropicMLP`.
        norm_gain: initial scalar gain ``γ`` of the normaliser; ``1`` puts ``‖W_0 n(x)‖ ≈ 1``
            with an orthogonal ``W_0`` (isotropic tanh away from saturation).
        out_scale: the last weight is multiplied by this after initialisation (``1/√(2L)`` in
            a depth-``L`` transformer keeps the stream's growth in check).
        generator: RNG for the initial weights.

    Attributes:
        linears, activations, psi, widths: as for :class:`~isoplastic.IsotropicMLP`
            (``widths = [d, *d_ff, d]``).
        norm: the :class:`IsotropicNorm`.

    Shapes:
        input ``(..., d)`` (e.g. ``(batch, T, d)`` tokens or ``(batch, d)``); output the same.

    Example:
        >>> import torch, isoplastic as ip
        >>> ffn = ip.IsotropicFFN(8, 32)
        >>> ffn(torch.randn(2, 5, 8)).shape, list(ip.hidden_spaces(ffn))
        (torch.Size([2, 5, 8]), ['0'])
    """

    kind = "ffn"

    def __init__(
        self,
        d_model: int,
        d_ff: int | Sequence[int],
        intrinsic_length: str = "trainable",
        psi: str = "trainable+decay",
        init: str = "orthogonal",
        eps: float = 1e-3,
        profile: AbstractRadialProfile | None = None,
        psi_decay: float = 0.1,
        small_ball: str = "series",
        norm_gain: float = 1.0,
        out_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        widths = _branch_widths(d_model, d_ff)
        self._init_chain(psi, psi_decay)
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.activations = nn.ModuleList(
            IsotropicActivation(profile, intrinsic_length, eps=eps, small_ball=small_ball)
            for _ in widths[1:-1]
        )
        self._build_psi(widths[2:])
        self.norm = IsotropicNorm(norm_gain)
        self.out_scale = float(out_scale)
        init_affine(self.linears, init, generator)
        with torch.no_grad():
            self.linears[-1].weight.mul_(self.out_scale)
        self.check_invariants()

    # -- the contract -----------------------------------------------------------------------------
    def affines(self) -> list[nn.Module]:
        return list(self.linears)

    def check_invariants(self) -> None:
        super().check_invariants()
        w = self.widths
        if w[0] != w[-1]:
            raise TopologyError(f"{type(self).__name__}: the branch reads {w[0]} residual "
                                f"coordinates but writes {w[-1]}; a residual branch keeps "
                                "them equal (resize both through input_space())")

    def stream_space(self) -> HiddenSpace:
        """The branch's view of the residual stream: ``W_0`` dim 1 (read), ``W_L`` dim 0,
        ``b_L`` and the last ψ (written). Rotating or growing it here alone is exact only for
        a branch used on its own (every other user of the stream must move with it)."""
        first, last = self.linears[0], self.linears[-1]
        axes = [Axis(first, "weight", 1, "outgoing"), Axis(last, "weight", 0, "incoming"),
                Axis(last, "bias", 0, "bias")]
        if len(self.psi):
            axes.append(Axis(self.psi, str(len(self.psi) - 1), 0, "psi"))
        return HiddenSpace("residual stream", axes, block=self)

    def input_space(self) -> HiddenSpace:
        return self.stream_space()

    def output_space(self) -> HiddenSpace:
        return self.stream_space()

    def sparse_form(self, chain: nn.Module) -> nn.Module:
        """``x + chain(n(x))`` around the inference module ``chain`` of the inner MLP."""
        return ResidualWrapper(copy.deepcopy(self.norm), chain)

    # -- forward ------------------------------------------------------------------------------------
    def _check(self, x: Tensor) -> Tensor:
        x = check_input_dtype(self, x, self.linears[0].weight)
        d = self.widths[0]
        if x.dim() < 1 or x.shape[-1] != d:
            raise ValueError(f"{type(self).__name__} expects inputs of shape (..., {d}) (the "
                             f"residual stream last); got {tuple(x.shape)}")
        return x

    def _branch(self, u: Tensor, record: Callable[[int, Tensor, Tensor], None] | None) -> Tensor:
        """The inner MLP on ``u = n(x)`` ``(N, d)``: ``z_{k+1} = g_k ⊙ (z_k W_{k+1}ᵀ + ψ_k) +
        b_{k+1}`` as in :class:`~isoplastic.IsotropicMLP`; returns ``(N, d)``."""
        return isotropic_chain(self, u, record)

    def forward(self, x: Tensor) -> Tensor:
        x = self._check(x)
        flat = x.reshape(-1, x.shape[-1])  # (N, d), N = every leading position
        return x + self._branch(self.norm(flat), None).view_as(x)

    def trace(self, x: Tensor) -> dict[str, Tensor | list[Tensor]]:
        """Intermediates over flattened positions ``N``: ``{"input": n(x)`` ``(N, d)``,
        ``"pre": [z_k]``, ``"post": [g_k z_k]``, ``"gains": [g_k]`` ``(N, 1)``, ``"branch":``
        the branch output ``(N, d)``, ``"out": y`` ``(N, d)}``."""
        x = self._check(x)
        flat = x.reshape(-1, x.shape[-1])
        u = self.norm(flat)
        record, seen = trace_recorder()
        branch = self._branch(u, record)
        return {"input": u, **seen, "branch": branch, "out": flat + branch}

    def config(self) -> dict:
        """Constructor arguments that rebuild this branch at its current widths."""
        act = self.activations[0]
        return {
            "d_model": self.widths[0],
            "d_ff": self.widths[1:-1],
            "intrinsic_length": act.mode.value,
            "psi": self.psi_mode.value,
            "eps": act.eps,
            "psi_decay": self.psi_decay,
            "small_ball": act.small_ball,
            "norm_gain": float(self.norm.gain.detach()),
            "out_scale": self.out_scale,
        }


class IsotropicResidualMLP(nn.Module):
    r"""Residual isotropic MLP for flat inputs: ``Linear → [x ← x + MLP_i(n(x))]_i → n → Linear``.

    .. math::
        x_0 = W_{in} u + b_{in}, \quad x_{i+1} = \mathrm{FFN}_i(x_i), \quad
        \mathrm{logits} = W_{out}\, n(x_B) + b_{out}

    Args:
        d_in: input features (images are flattened).
        d_model: residual-stream width.
        hidden: one entry per branch: an inner width or a list of inner widths.
        n_out: number of logits.
        intrinsic_length, psi, init, eps, psi_decay, small_ball: passed to every
            :class:`IsotropicFFN`.
        generator: RNG for the initial weights.

    Hidden spaces: ``"blocks.i.k"`` (branch ``i``, inner space ``k``).

    Shapes:
        input ``(batch, d_in)`` (or ``(batch, *image)``); output ``(batch, n_out)``.

    Example:
        >>> import torch, isoplastic as ip
        >>> net = ip.IsotropicResidualMLP(12, 8, [16, [16, 16]], 3)
        >>> net(torch.randn(4, 12)).shape, list(ip.hidden_spaces(net))
        (torch.Size([4, 3]), ['blocks.0.0', 'blocks.1.0', 'blocks.1.1'])
    """

    kind = "residual_mlp"

    def __init__(
        self,
        d_in: int,
        d_model: int,
        hidden: Sequence[int | Sequence[int]],
        n_out: int,
        intrinsic_length: str = "trainable",
        psi: str = "trainable+decay",
        init: str = "orthogonal",
        eps: float = 1e-3,
        psi_decay: float = 0.1,
        small_ball: str = "series",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if int(d_in) < 1 or int(n_out) < 1 or not len(hidden):
            raise ValueError(f"IsotropicResidualMLP(d_in={d_in}, n_out={n_out}, hidden={hidden}):"
                             " need d_in, n_out >= 1 and at least one branch, e.g. hidden=[64, 64]")
        self.inp = nn.Linear(int(d_in), int(d_model))
        scale = 1.0 / math.sqrt(2 * len(hidden))
        self.blocks = nn.ModuleList(
            IsotropicFFN(d_model, h, intrinsic_length, psi, init, eps, None, psi_decay,
                         small_ball, out_scale=scale, generator=generator)
            for h in hidden)
        self.norm = IsotropicNorm(math.sqrt(d_model))
        self.out = nn.Linear(int(d_model), int(n_out))
        init_affine([self.inp, self.out], "xavier_normal", generator)

    def forward(self, x: Tensor) -> Tensor:
        x = check_input_dtype(self, x, self.inp.weight)
        x = x.flatten(1) if x.dim() > 2 else x
        if x.dim() != 2 or x.shape[1] != self.inp.in_features:
            raise ValueError(f"IsotropicResidualMLP expects inputs of shape (batch, "
                             f"{self.inp.in_features}); got {tuple(x.shape)}")
        h = self.inp(x)  # (batch, d_model)
        for block in self.blocks:
            h = block(h)
        return self.out(self.norm(h))

    def psi_penalty(self) -> Tensor:
        """Sum of the branches' ψ penalties (add it to the training loss)."""
        return sum((b.psi_penalty() for b in self.blocks), torch.zeros((), device=self.inp.weight.device))

    def config(self) -> dict:
        """Constructor arguments that rebuild this model at its current widths."""
        first = self.blocks[0].config()
        return {
            "d_in": self.inp.in_features,
            "d_model": self.inp.out_features,
            "hidden": [b.widths[1:-1] for b in self.blocks],
            "n_out": self.out.out_features,
            "intrinsic_length": first["intrinsic_length"],
            "psi": first["psi"],
            "eps": first["eps"],
            "psi_decay": first["psi_decay"],
            "small_ball": first["small_ball"],
        }
