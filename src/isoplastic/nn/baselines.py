"""Element-wise baselines with the isotropic networks' parameter layout, for comparisons.

``ElementwiseMLP`` has ``linears`` (identical shapes and initialisation to
:class:`~isoplastic.nn.mlp.IsotropicMLP`), ``activations`` (``nn.Tanh`` or ``nn.ReLU``) and an empty
``psi``. It declares no hidden spaces: element-wise activations commute only with permutations and
sign flips, so rotations, diagonalisation, and growth or pruning through them are not exact, and
it is not an :class:`~isoplastic.core.IsoplasticBlock`, so every structural operation refuses it with a
:class:`~isoplastic.errors.TopologyError`. ``GeluLayerNormMLP`` (``Linear → LayerNorm → GELU`` per
hidden layer) is the strongest of the MLP baselines of the quality study (docs/quality.md) and
has the same ``linears`` / ``activations`` / ``psi`` layout, plus ``norms``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .mlp import AffineStack, _check_widths, init_affine

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class ElementwiseMLP(AffineStack):
    """``z_{k+1} = W_{k+1} σ(z_k) + b_{k+1}`` with element-wise ``σ`` (tanh by default).

    Example:
        >>> import torch, isoplastic as ip
        >>> base = ip.ElementwiseMLP([64, 32, 10])
        >>> base(torch.randn(2, 64)).shape
        torch.Size([2, 10])
    """

    kind = "elementwise"

    def __init__(self, widths: Sequence[int], activation: str = "tanh", init: str = "orthogonal",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        widths = _check_widths(widths)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        self.activation_name = activation
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.activations = nn.ModuleList(ACTIVATIONS[activation]() for _ in widths[1:-1])
        self.psi = nn.ParameterList()
        init_affine(self.linears, init, generator)
        self.check_invariants()

    def forward(self, x: Tensor) -> Tensor:
        z = self.linears[0](self._flatten(x))
        for k, act in enumerate(self.activations):
            z = self.linears[k + 1](act(z))
        return z

    def psi_penalty(self) -> Tensor:
        return torch.zeros((), device=self.linears[0].weight.device)

    def config(self) -> dict:
        return {"widths": self.widths, "activation": self.activation_name}


class GeluLayerNormMLP(AffineStack):
    """``z_0 = W_0 x + b_0``, ``z_{k+1} = W_{k+1} GELU(LN_k(z_k)) + b_{k+1}``: ``Linear →
    LayerNorm → GELU`` per hidden layer, then a linear read-out.

    ``LN_k`` is :class:`torch.nn.LayerNorm` over hidden layer ``k`` (learned gain and shift,
    ``ε = 1e-5``). The affine layers are drawn one after another, each as ``nn.Linear`` followed
    by its initialisation (orthogonal weight, zero bias, ``generator`` or the global stream), so
    under ``torch.manual_seed(s)`` the weights equal those of the ``nn.Sequential(Linear,
    LayerNorm, GELU, ..., Linear)`` built and initialised in the same order. Not an isoplastic
    block: structural operations refuse it.

    Shapes:
        input ``(batch, n_0)`` (or images that flatten to it); output ``(batch, n_L)``.

    Example:
        >>> import torch, isoplastic as ip
        >>> base = ip.GeluLayerNormMLP([64, 32, 10])
        >>> base(torch.randn(2, 64)).shape
        torch.Size([2, 10])
    """

    kind = "gelu_layernorm"

    def __init__(self, widths: Sequence[int], init: str = "orthogonal",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        widths = _check_widths(widths)
        self.linears = nn.ModuleList()
        for a, b in zip(widths[:-1], widths[1:]):
            lin = nn.Linear(a, b)
            init_affine([lin], init, generator)
            self.linears.append(lin)
        self.norms = nn.ModuleList(nn.LayerNorm(n) for n in widths[1:-1])
        self.activations = nn.ModuleList(nn.GELU() for _ in widths[1:-1])
        self.psi = nn.ParameterList()
        self.check_invariants()

    def forward(self, x: Tensor) -> Tensor:
        z = self.linears[0](self._flatten(x))
        for k, (norm, act) in enumerate(zip(self.norms, self.activations)):
            z = self.linears[k + 1](act(norm(z)))
        return z

    def psi_penalty(self) -> Tensor:
        return torch.zeros((), device=self.linears[0].weight.device)

    def config(self) -> dict:
        return {"widths": self.widths}


class ElementwiseCNN(nn.Module):
    """The element-wise twin of :class:`~isoplastic.nn.conv.IsotropicCNN` (same layers, shapes
    and initialisation; no ψ, no intrinsic lengths), for speed and accuracy comparisons.

    .. math::
        z_0 = \\mathrm{conv}_0(x) + b_0, \\quad z_{k+1} = \\mathrm{conv}_{k+1}(σ(z_k)) + b_{k+1},
        \\quad u = \\mathrm{mean}_p\\, σ(z_{K-1})(p), \\quad \\text{head: } z ← W σ(z) + b

    with element-wise ``σ`` (tanh by default), ``"same"`` zero padding (odd kernels) and global
    mean pooling before the head; not an isoplastic block (structural operations refuse it).

    Shapes:
        input ``(batch, C, H, W)``; output ``(batch, n_classes)``.

    Example:
        >>> import torch, isoplastic as ip
        >>> base = ip.ElementwiseCNN((1, 8, 8), channels=[4, 8], head=[16], n_classes=3)
        >>> base(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 3])
    """

    kind = "elementwise_cnn"

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int],
                 kernel_sizes: int | Sequence[int] = 3, head: Sequence[int] = (),
                 n_classes: int = 10, activation: str = "tanh", init: str = "orthogonal",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        in_shape = [int(v) for v in in_shape]
        channels = [int(c) for c in channels]
        if len(in_shape) != 3 or not channels or min(in_shape + channels) < 1:
            raise ValueError(f"in_shape={in_shape}, channels={channels}: give (C, H, W) and at "
                             "least one convolution, all sizes >= 1")
        kernels = ([int(kernel_sizes)] * len(channels) if isinstance(kernel_sizes, int)
                   else [int(s) for s in kernel_sizes])
        if len(kernels) != len(channels) or any(s < 1 or s % 2 == 0 for s in kernels):
            raise ValueError(f"kernel_sizes={kernel_sizes}: one odd size per convolution")
        self.activation_name = activation
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, s, padding="same")
            for a, b, s in zip([in_shape[0]] + channels[:-1], channels, kernels))
        outs = [channels[-1], *[int(m) for m in head], int(n_classes)]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(outs[:-1], outs[1:]))
        self.act = ACTIVATIONS[activation]()
        init_affine(list(self.convs) + list(self.linears), init, generator)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for conv in self.convs:
            h = self.act(conv(h))  # (batch, C_k, H, W)
        z = self.linears[0](h.mean(dim=(2, 3)))  # (batch, n_out)
        for lin in self.linears[1:]:
            z = lin(self.act(z))
        return z

    def psi_penalty(self) -> Tensor:
        return torch.zeros((), device=self.linears[0].weight.device)
