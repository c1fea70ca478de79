r"""Isotropic residual convolutional branches (ResNet-style): channel spaces inside a residual.

With the stream ``x`` of ``C`` channels, ``K`` stride-1 convolutions with ``"same"`` padding and
isotropic activations over channels at every position (docs/convolutions.md, docs/transformers.md):

.. math::
    u = n(x), \quad z_0 = \mathrm{conv}_0(u) + b_0, \quad
    z_{k+1} = \mathrm{conv}_{k+1}(φ(z_k)) + b_{k+1} + ψ_k\, \bar g_k, \quad
    y = x + z_{K-1},

where ``n`` is :class:`~isoplastic.nn.residual.IsotropicNorm` over the channel axis at every
position and ``ḡ_k`` the gain map averaged over the next kernel's footprint (as in
:class:`~isoplastic.IsotropicCNN`). The inner channel spaces ``0..K-2`` are hidden spaces (names
``"<module>.k"``); what is exact follows docs/convolutions.md: rotations, left diagonalisation and
growth always; full diagonalisation where the incoming kernel is 1×1; removal of a zero-σ channel
exactly when the next kernel is 1×1 (else the ψ fold is first order). The residual adds ``x``,
which no change of an inner space touches, so every claim for the chain holds for the block.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..activations import AbstractRadialProfile, IsotropicActivation
from ..core.space import Axis, HiddenSpace
from ..errors import TopologyError
from .chain import AffineChain, check_input_dtype, init_affine
from .residual import IsotropicNorm

__all__ = ["IsotropicResidualConv"]


class IsotropicResidualConv(AffineChain):
    """Residual convolutional branch ``y = x + convs(n(x))`` (see the module docstring).

    Args:
        channels: stream channels ``C`` (input and output).
        inner: the inner channel widths (one hidden space each), e.g. ``[64]`` or ``[32, 32]``.
        kernel_sizes: one odd size for every convolution, or a list of ``len(inner) + 1``.
        intrinsic_length, psi, init, eps, profile, psi_decay, small_ball: as for
            :class:`~isoplastic.IsotropicCNN`.
        norm_gain: initial gain of the channel normaliser.
        out_scale: the last kernel is multiplied by this after initialisation.
        generator: RNG for the initial weights.

    Shapes:
        input ``(batch, C, H, W)``; output the same.

    Example:
        >>> import torch, isoplastic as ip
        >>> branch = ip.IsotropicResidualConv(4, [8, 8], kernel_sizes=[3, 1, 3])
        >>> branch(torch.randn(2, 4, 5, 5)).shape, list(ip.hidden_spaces(branch))
        (torch.Size([2, 4, 5, 5]), ['0', '1'])
    """

    kind = "residual_conv"

    def __init__(
        self,
        channels: int,
        inner: Sequence[int],
        kernel_sizes: int | Sequence[int] = 3,
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
        widths = [int(channels), *[int(c) for c in inner], int(channels)]
        if len(widths) < 3 or any(w < 1 for w in widths):
            raise ValueError(f"IsotropicResidualConv(channels={channels}, inner={inner}): need "
                             "channels >= 1 and at least one inner width >= 1, e.g. inner=[64]")
        n = len(widths) - 1
        kernels = ([int(kernel_sizes)] * n if isinstance(kernel_sizes, numbers.Integral)
                   else [int(s) for s in kernel_sizes])
        if len(kernels) != n or any(s < 1 or s % 2 == 0 for s in kernels):
            raise ValueError(f"kernel_sizes={kernel_sizes}: give one odd size, or {n} odd sizes "
                             "(one per convolution; 'same' padding needs odd kernels)")
        self._init_chain(psi, psi_decay)
        self.kernel_sizes = kernels
        self.convs = nn.ModuleList(nn.Conv2d(a, b, s, padding="same")
                                   for a, b, s in zip(widths[:-1], widths[1:], kernels))
        self.activations = nn.ModuleList(
            IsotropicActivation(profile, intrinsic_length, eps=eps, dim=1, small_ball=small_ball)
            for _ in widths[1:-1])
        self._build_psi(widths[2:])
        self.norm = IsotropicNorm(norm_gain)
        self.out_scale = float(out_scale)
        init_affine(list(self.convs), init, generator)
        with torch.no_grad():
            self.convs[-1].weight.mul_(self.out_scale)
        self.check_invariants()

    # -- the contract ---------------------------------------------------------------------------
    def affines(self) -> list[nn.Module]:
        return list(self.convs)

    def space_label(self, k: int) -> str:
        return f"hidden layer {k} (channel space)"

    @property
    def widths(self) -> list[int]:
        """``[C, c_0, …, c_{K-2}, C]`` (current)."""
        return [int(self.convs[0].weight.shape[1])] + [int(c.weight.shape[0]) for c in self.convs]

    def sync_shapes(self) -> None:
        for conv in self.convs:
            conv.out_channels, conv.in_channels = conv.weight.shape[:2]

    def check_invariants(self) -> None:
        self.sync_shapes()
        w = self.widths
        for i, conv in enumerate(self.convs):
            s = self.kernel_sizes[i]
            if (tuple(conv.weight.shape) != (w[i + 1], w[i], s, s)
                    or conv.bias.shape != (w[i + 1],)):
                raise TopologyError(f"convs[{i}] has weight {tuple(conv.weight.shape)} and bias "
                                    f"{tuple(conv.bias.shape)}, inconsistent with widths {w}")
        for k, p in enumerate(self.psi):
            if p.shape != (w[k + 2],):
                raise TopologyError(f"psi[{k}] has shape {tuple(p.shape)}, expected ({w[k + 2]},)")
        if w[0] != w[-1]:
            raise TopologyError(f"IsotropicResidualConv reads {w[0]} stream channels but writes "
                                f"{w[-1]}; resize both through input_space()")

    def stream_space(self) -> HiddenSpace:
        """The branch's view of the stream's channels: ``convs[0]`` dim 1, the last convolution's
        dim 0 and bias, and the last ψ (its inputs and outputs are the same channels)."""
        first, last = self.convs[0], self.convs[-1]
        axes = [Axis(first, "weight", 1, "outgoing"), Axis(last, "weight", 0, "incoming"),
                Axis(last, "bias", 0, "bias")]
        if len(self.psi):
            axes.append(Axis(self.psi, str(len(self.psi) - 1), 0, "psi"))
        return HiddenSpace("residual stream", axes, block=self)

    def input_space(self) -> HiddenSpace:
        return self.stream_space()

    def output_space(self) -> HiddenSpace:
        return self.stream_space()

    # -- forward --------------------------------------------------------------------------------
    def _window_gain(self, g: Tensor, k: int) -> Tensor:
        """Gain map ``g`` ``(batch, 1, H, W)`` averaged over ``convs[k]``'s footprint."""
        s = self.kernel_sizes[k]
        if s == 1:
            return g
        return F.avg_pool2d(g, s, stride=1, padding=s // 2, count_include_pad=True)

    def forward(self, x: Tensor) -> Tensor:
        x = check_input_dtype(self, x, self.convs[0].weight)
        c = self.widths[0]
        if x.dim() != 4 or x.shape[1] != c:
            raise ValueError(f"IsotropicResidualConv expects inputs of shape (batch, {c}, H, W); "
                             f"got {tuple(x.shape)}")
        h = self.norm(x.movedim(1, -1)).movedim(-1, 1)  # channel norm at every position
        g = None
        psi = len(self.psi) > 0
        for k, conv in enumerate(self.convs):
            z = conv(h)  # (batch, C_k, H, W)
            if psi and k >= 1:
                z = z + self.psi[k - 1].view(-1, 1, 1) * self._window_gain(g, k)
            if k < self.n_hidden:
                h, g = self.activations[k].forward_with_gain(z)  # g: (batch, 1, H, W)
                self._note_gain(k, g)
        return x + z

    def config(self) -> dict:
        """Constructor arguments that rebuild this branch at its current widths."""
        act = self.activations[0]
        return {
            "channels": self.widths[0],
            "inner": self.widths[1:-1],
            "kernel_sizes": list(self.kernel_sizes),
            "intrinsic_length": act.mode.value,
            "psi": self.psi_mode.value,
            "eps": act.eps,
            "psi_decay": self.psi_decay,
            "small_ball": act.small_ball,
            "norm_gain": float(self.norm.gain.detach()),
            "out_scale": self.out_scale,
        }
