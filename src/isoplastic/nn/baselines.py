"""Element-wise baselines with the isotropic MLP's parameter layout, for comparisons.

``ElementwiseMLP`` has ``linears`` (identical shapes and initialisation to
:class:`~isoplastic.nn.mlp.IsotropicMLP`), ``activations`` (``nn.Tanh`` or ``nn.ReLU``) and an empty
``psi``. It declares no hidden spaces: element-wise activations commute only with permutations and
sign flips, so rotations, diagonalisation, and growth or pruning through them are not exact, and
it is not an :class:`~isoplastic.core.IsoplasticBlock`, so every structural operation refuses it with a
:class:`~isoplastic.errors.TopologyError`.
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
