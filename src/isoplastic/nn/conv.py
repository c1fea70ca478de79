r"""Isotropic convolutional networks: every channel space is a hidden space (docs/convolutions.md).

Layout, with ``K = len(channels)`` convolutions (stride 1) and ``H = len(head)`` head layers:

.. math::
    z_0 = \mathrm{conv}_0(x) + b_0, \qquad
    (h_k, g_k) = (g(z_k; o_k)\, z_k,\; g(z_k; o_k)) \quad\text{(norm over channels, per position)},

    z_{k+1} = \mathrm{conv}_{k+1}(h_k) + b_{k+1} + ψ_k\, \bar g_k, \qquad
    \bar g_k = \mathrm{avgpool}_{k_{k+1} \times k_{k+1}}(g_k)

(the gain map averaged over the next kernel's footprint, with the same zero padding as the
convolution; for a 1×1 kernel ``ḡ_k = g_k``). The head reads ``u = mean_p h_{K-1}(p)`` (pooling
``"mean"``) or ``u = h_{K-1}`` flattened (``"flatten"``) through :class:`ChannelLinear`
(weight ``(n_out, C, P)``, ``P = 1`` or ``H·W``), adds ``ψ_{K-1} mean_p g_{K-1}(p)``, and then runs
an isotropic MLP with ψ vectors as in :class:`~isoplastic.IsotropicMLP`. The network returns logits.

Hidden spaces (``n_hidden = K + H``): channel space ``k < K`` holds ``convs[k].weight`` dim 0,
``convs[k].bias``, ``psi[k-1]`` (``k ≥ 1``) and the next kernel's dim 1 (``convs[k+1].weight`` or
``head_in.weight``); head space ``K + i`` is a dense hidden layer. Every operation of
:mod:`isoplastic.ops` and :mod:`isoplastic.topology` therefore applies unchanged.

Exactness (derived in docs/convolutions.md, tested in tests/nn/test_conv.py): reparameterisation,
left diagonalisation and neurogenesis are exact for every space; full diagonalisation is possible
(and exact) only where the incoming kernel is 1×1 (or the dense head); removing a channel whose
singular value is zero is exact when the *next* map is a 1×1 convolution, the mean-pooled head or a
dense layer, and also whenever the removed channel's outgoing kernel slice is constant over its
taps; otherwise (a ``k×k`` next kernel, or the flattened head) the ψ compensation is only a
first-order approximation, because the gain map varies across the kernel footprint.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..activations import AbstractRadialProfile, IsotropicActivation
from ..errors import TopologyError
from .chain import AffineChain, check_init, check_input_dtype, init_affine

PADDINGS = ("same", "valid")
POOLINGS = ("mean", "flatten")


class ChannelLinear(nn.Module):
    """Affine map reading a feature map ``u`` of shape ``(batch, C, P)``.

    .. math::  y = \\sum_{c, p} W_{:, c, p}\\, u_{c, p} + b

    The weight is stored as ``(n_out, C, P)`` so that the channel axis is a tensor axis (dim 1) of
    its own: a channel space can rotate, grow or shrink it like any ``Linear``'s input axis. With
    ``P = 1`` this is an ``nn.Linear`` on mean-pooled channels; with ``P = H·W`` it is the
    ``Linear`` of a flattened feature map, viewed as ``(n_out, C, H·W)``.

    Shapes:
        input ``(batch, C, P)``; output ``(batch, n_out)``.
    """

    def __init__(self, in_channels: int, positions: int, out_features: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.positions = positions
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_channels, positions))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, u: Tensor) -> Tensor:
        # (batch, C·P) @ (C·P, n_out): the flattened layout of u and of the weight agree
        return F.linear(u.flatten(1), self.weight.flatten(1), self.bias)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, positions={self.positions}, "
                f"out_features={self.out_features}")


def _as_list(value: int | Sequence[int], n: int, what: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        out = [value] * n
    else:
        out = [int(v) for v in value]
    if len(out) != n or any(v < 1 for v in out):
        raise ValueError(f"{what}={value!r}: give one positive integer per convolution ({n})")
    return out


class IsotropicCNN(AffineChain):
    """Convolutions with channel-wise isotropic activations, then a pooled or flattened
    isotropic MLP head; every channel space and head layer is a hidden space.

    Args:
        in_shape: ``(C, H, W)`` of the inputs.
        channels: output channels of each convolution ``[c_0, c_1, ...]`` (at least one).
        kernel_sizes: square kernel size of each convolution (one int for all).
        head: widths of the head's hidden layers (may be empty).
        n_classes: number of logits.
        intrinsic_length: ``"none" | "constant" | "trainable"`` for every isotropic activation.
        psi: ``"none" | "constant" | "trainable" | "trainable+decay" | "expectation"``.
        padding: ``"same"`` (zero padding, odd kernels only) or ``"valid"`` / ``0`` (no padding).
        pooling: ``"mean"`` (global mean over positions) or ``"flatten"``.
        init: ``"orthogonal"`` (default), ``"xavier_normal"`` or ``"xavier_uniform"``; biases and ψ
            start at zero.
        eps, profile, small_ball: passed to every :class:`~isoplastic.IsotropicActivation`.
        psi_decay: ``λ`` of :meth:`psi_penalty`.
        generator: RNG for the initial weights.

    Attributes:
        convs: ``nn.Conv2d`` layers (``weight (C_k, C_{k-1}, s, s)``).
        head_in: :class:`ChannelLinear` from the last channel space to the head.
        linears: the head's remaining ``nn.Linear`` layers.
        activations: one isotropic activation per hidden space (``dim=1`` for channels,
            ``dim=-1`` for the head); ``activations[k].o`` is the intrinsic length of space ``k``.
        psi: ``psi[k]`` is added to the pre-activation that hidden space ``k`` feeds (empty when
            psi is ``"none"`` or ``"expectation"``).

    Shapes:
        input ``(batch, C, H, W)``; output ``(batch, n_classes)``.

    Example:
        >>> import torch, isoplastic as ip
        >>> from isoplastic.nn.conv import IsotropicCNN
        >>> net = IsotropicCNN((3, 8, 8), channels=[8, 16], kernel_sizes=3, head=[32], n_classes=10)
        >>> net(torch.randn(2, 3, 8, 8)).shape, net.n_hidden
        (torch.Size([2, 10]), 3)
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        channels: Sequence[int],
        kernel_sizes: int | Sequence[int] = 3,
        head: Sequence[int] = (),
        n_classes: int = 10,
        intrinsic_length: str = "trainable",
        psi: str = "trainable+decay",
        padding: str | int = "same",
        pooling: str = "mean",
        init: str = "orthogonal",
        eps: float = 1e-3,
        profile: AbstractRadialProfile | None = None,
        psi_decay: float = 0.1,
        small_ball: str = "series",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        in_shape = [int(v) for v in in_shape]
        if len(in_shape) != 3 or any(v < 1 for v in in_shape):
            raise ValueError(f"in_shape={in_shape}: give (channels, height, width), all >= 1")
        channels = [int(c) for c in channels]
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels={channels}: give at least one convolution, widths >= 1")
        head = [int(m) for m in head]
        if any(m < 1 for m in head) or int(n_classes) < 1:
            raise ValueError(f"head={head}, n_classes={n_classes}: widths must be >= 1")
        kernels = _as_list(kernel_sizes, len(channels), "kernel_sizes")
        if padding == 0:
            padding = "valid"
        if padding not in PADDINGS:
            raise ValueError(f"padding={padding!r}; choose 'same' or 'valid' (= 0)")
        if padding == "same" and any(s % 2 == 0 for s in kernels):
            raise ValueError(f"kernel_sizes={kernels}: padding='same' needs odd kernels")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}; choose 'mean' or 'flatten'")
        check_init(init)

        self._init_chain(psi, psi_decay)
        self.padding = padding
        self.pooling = pooling
        self.kernel_sizes = kernels
        c_in, height, width = in_shape
        self.spatial: list[tuple[int, int]] = []  # output (H, W) of every convolution
        for s in kernels:
            if padding == "valid":
                height, width = height - s + 1, width - s + 1
            if height < 1 or width < 1:
                raise ValueError(f"in_shape={in_shape}, kernel_sizes={kernels}: the feature map "
                                 "vanishes with padding='valid'; use smaller kernels or 'same'")
            self.spatial.append((height, width))
        self.in_hw = (in_shape[1], in_shape[2])

        conv_pad = padding  # nn.Conv2d understands 'same' and 'valid'
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, s, stride=1, padding=conv_pad)
            for a, b, s in zip([c_in] + channels[:-1], channels, kernels)
        )
        positions = height * width if pooling == "flatten" else 1
        outs = head + [int(n_classes)]
        self.head_in = ChannelLinear(channels[-1], positions, outs[0])
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(outs[:-1], outs[1:]))
        self.activations = nn.ModuleList(
            [IsotropicActivation(profile, intrinsic_length, eps=eps, dim=1, small_ball=small_ball)
             for _ in channels]
            + [IsotropicActivation(profile, intrinsic_length, eps=eps, dim=-1,
                                   small_ball=small_ball) for _ in head]
        )
        self._build_psi(channels[1:] + outs)
        init_affine(self.affines(), init, generator)
        self.check_invariants()

    kind = "cnn"

    def affines(self) -> list[nn.Module]:
        """Every weighted layer in order: convolutions, ``head_in``, head linears."""
        return list(self.convs) + [self.head_in] + list(self.linears)

    def space_label(self, k: int) -> str:
        kind = "channel space" if k < self.n_conv else "head layer"
        return f"hidden layer {k} ({kind})"

    # -- sizes ----------------------------------------------------------------------------------
    @property
    def n_conv(self) -> int:
        return len(self.convs)

    @property
    def channels(self) -> list[int]:
        """Current output channels of every convolution."""
        return [int(c.weight.shape[0]) for c in self.convs]

    @property
    def head_widths(self) -> list[int]:
        """Current widths of the head's hidden layers."""
        return [int(lin.weight.shape[1]) for lin in self.linears]

    @property
    def widths(self) -> list[int]:
        """``[C_in, c_0, ..., c_{K-1}, m_0, ..., m_{H-1}, n_classes]`` (current)."""
        return ([int(self.convs[0].weight.shape[1])] + self.channels + self.head_widths
                + [int(self.affines()[-1].weight.shape[0])])

    def sync_shapes(self) -> None:
        """Refresh the size attributes of every layer after a resize."""
        for conv in self.convs:
            conv.out_channels, conv.in_channels = conv.weight.shape[:2]
        hi = self.head_in
        hi.out_features, hi.in_channels, hi.positions = hi.weight.shape
        for lin in self.linears:
            lin.out_features, lin.in_features = lin.weight.shape

    def check_invariants(self) -> None:
        """Raise :class:`TopologyError` if consecutive layers disagree on a width."""
        self.sync_shapes()
        w = self.widths
        affines = self.affines()
        expect_in = w[:-1]
        for i, layer in enumerate(affines):
            shape = tuple(layer.weight.shape)
            ok = shape[0] == w[i + 1] and shape[1] == expect_in[i] and layer.bias.shape == (w[i + 1],)
            if ok and i < self.n_conv:
                s = self.kernel_sizes[i]
                ok = shape[2:] == (s, s)
            if ok and layer is self.head_in:
                h, wd = self.spatial[-1]
                ok = shape[2] == (h * wd if self.pooling == "flatten" else 1)
            if not ok:
                raise TopologyError(f"{type(layer).__name__} #{i} has weight {shape} and bias "
                                    f"{tuple(layer.bias.shape)}, inconsistent with widths {w}")
        if len(self.activations) != self.n_hidden:
            raise TopologyError(f"{len(self.activations)} activations for {self.n_hidden} "
                                "hidden spaces")
        if len(self.psi):
            if len(self.psi) != self.n_hidden:
                raise TopologyError(f"{len(self.psi)} psi vectors for {self.n_hidden} hidden spaces")
            for k, p in enumerate(self.psi):
                if p.shape != (w[k + 2],):
                    raise TopologyError(f"psi[{k}] has shape {tuple(p.shape)}, expected "
                                        f"({w[k + 2]},)")

    # -- forward --------------------------------------------------------------------------------
    def _window_gain(self, g: Tensor, k: int) -> Tensor:
        """Gain map ``g`` (``(batch, 1, H, W)``) averaged over the footprint of ``convs[k]``."""
        s = self.kernel_sizes[k]
        if s == 1:
            return g
        pad = s // 2 if self.padding == "same" else 0
        return F.avg_pool2d(g, s, stride=1, padding=pad, count_include_pad=True)

    @staticmethod
    def _add_psi(z: Tensor, psi: Tensor, gbar: Tensor) -> Tensor:
        """``z + ψ ⊗ ḡ``: ``z`` ``(batch, C, H, W)``, ``ψ`` ``(C,)``, ``ḡ`` ``(batch, 1, H, W)``.

        Evaluated as a batched rank-one update (``baddbmm`` with inner size 1), so that autograd
        contracts the gradient with ``ḡ`` and ``ψ`` by matrix products (``∂L/∂ψ_c = Σ_{b,p}
        G_{bcp} ḡ_{bp}``, ``∂L/∂ḡ_{bp} = Σ_c G_{bcp} ψ_c``) instead of forming two
        ``(batch, C, H, W)`` products first: one pass over the feature map forward and two reads
        backward."""
        b, c, h, w = z.shape
        out = torch.baddbmm(z.reshape(b, c, h * w), psi.view(1, c, 1).expand(b, c, 1),
                            gbar.reshape(b, 1, h * w))  # (batch, C, H·W)
        return out.view(b, c, h, w)

    def _check_input(self, x: Tensor) -> None:
        check_input_dtype(self, x, self.convs[0].weight)
        c = int(self.convs[0].weight.shape[1])
        if x.dim() != 4 or x.shape[1] != c or tuple(x.shape[2:]) != self.in_hw:
            raise ValueError(f"IsotropicCNN expects inputs of shape (batch, {c}, {self.in_hw[0]}, "
                             f"{self.in_hw[1]}); got {tuple(x.shape)}")

    def _run(self, x: Tensor, record: bool) -> tuple[Tensor, list[Tensor]]:
        self._check_input(x)
        gains: list[Tensor] = []
        psi = len(self.psi) > 0
        h, g = x, None
        for k, conv in enumerate(self.convs):
            z = conv(h)  # (batch, C_k, H_k, W_k)
            if psi and k >= 1:
                z = self._add_psi(z, self.psi[k - 1], self._window_gain(g, k))
            h, g = self.activations[k].forward_with_gain(z)  # g: (batch, 1, H_k, W_k)
            gains.append(g)
        if self.pooling == "mean":
            u = h.mean(dim=(2, 3)).unsqueeze(-1)  # (batch, C, 1)
        else:
            u = h.flatten(2)  # (batch, C, H·W)
        z = self.head_in(u)  # (batch, n_out)
        if psi:
            z = z + self.psi[self.n_conv - 1] * g.mean(dim=(2, 3))  # g mean: (batch, 1)
        for i, lin in enumerate(self.linears):
            k = self.n_conv + i
            h, g = self.activations[k].forward_with_gain(z)  # (batch, m_i), (batch, 1)
            gains.append(g)
            z = lin(h)
            if psi:
                z = z + self.psi[k] * g
        if record:
            for k, gk in enumerate(gains):
                self._note_gain(k, gk)
        return z, gains

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x, self.training)[0]

    def gains(self, x: Tensor) -> list[Tensor]:
        """Gain of every hidden space: ``(batch, 1, H_k, W_k)`` for channels, ``(batch, 1)`` for
        the head."""
        return self._run(x, False)[1]

    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture (used by checkpoints)."""
        act = self.activations[0]
        return {
            "in_shape": [self.widths[0], *self.in_hw],
            "channels": self.channels,
            "kernel_sizes": list(self.kernel_sizes),
            "head": self.head_widths,
            "n_classes": self.widths[-1],
            "intrinsic_length": act.mode.value,
            "psi": self.psi_mode.value,
            "padding": self.padding,
            "pooling": self.pooling,
            "eps": act.eps,
            "psi_decay": self.psi_decay,
            "small_ball": act.small_ball,
        }
