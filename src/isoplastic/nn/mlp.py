r"""Isotropic multilayer perceptrons, and the element-wise baseline with the same layout.

Forward pass (paper-notes §8.1), ``L`` affine maps, hidden layers ``k = 0..L-2``:

.. math::
    z_0 = W_0 x + b_0, \qquad (h_k, g_k) = (g(z_k; o_k)\, z_k,\; g(z_k; o_k)),
    \qquad z_{k+1} = W_{k+1} h_k + b_{k+1} + ψ_k\, g_k,

and the network returns the logits ``z_{L-1}`` (no final activation). Attribute layout
(a contract, see design.md): ``linears[i]`` (``nn.Linear``, weight ``(out, in)``),
``activations[k]`` (:class:`~isoplastic.activations.IsotropicActivation`, ``.o`` is its
intrinsic length), ``psi[k]`` (ψ vector added to ``linears[k+1]``'s output, shape
``(widths[k+2],)``; empty list when psi is ``"none"`` or ``"expectation"``), ``widths``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..activations import AbstractRadialProfile, IsotropicActivation
from ..errors import TopologyError
from .chain import INITS, AffineChain, PsiMode, check_input_dtype, init_affine, psi_penalty

__all__ = ["INITS", "AffineStack", "IsotropicMLP", "PsiMode", "init_affine", "psi_penalty",
           "sparsity_closed_form"]


def _check_widths(widths: Sequence[int]) -> list[int]:
    widths = [int(w) for w in widths]
    if len(widths) < 2 or any(w < 1 for w in widths):
        raise ValueError(
            f"widths={widths}: give at least [inputs, outputs], every entry >= 1, "
            "e.g. [784, 256, 256, 10]"
        )
    return widths


def sparsity_closed_form(widths: list[int]) -> float:
    r"""Fraction of weight entries that alternating full diagonalisation makes zero.

    .. math:: \frac{\sum_{k=1,3,5,\dots\le H} (n_k n_{k+1} - \min(n_k, n_{k+1}))}
                   {\sum_{i} n_i n_{i+1}}

    with ``widths = [n_0, …, n_L]`` and ``H = L − 2`` hidden-to-hidden maps (``linears[k]``,
    ``1 ≤ k ≤ L − 2``). Assumes the other weight entries are non-zero (true for generic weights).
    """
    total = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    n_maps = len(widths) - 1
    zeroed = sum(widths[k] * widths[k + 1] - min(widths[k], widths[k + 1])
                 for k in range(1, n_maps - 1, 2))
    return zeroed / total


class AffineStack(nn.Module):
    """Common layout of the isotropic and element-wise MLPs: ``linears``, ``activations``, ``psi``."""

    linears: nn.ModuleList
    activations: nn.ModuleList
    psi: nn.ParameterList

    @property
    def widths(self) -> list[int]:
        """``[n_0, n_1, ..., n_L]``, read from the current weight shapes."""
        return [self.linears[0].weight.shape[1]] + [lin.weight.shape[0] for lin in self.linears]

    @property
    def n_hidden(self) -> int:
        return len(self.linears) - 1

    def sync_shapes(self) -> None:
        """Refresh ``in_features``/``out_features`` of every ``Linear`` after a resize."""
        for lin in self.linears:
            lin.out_features, lin.in_features = lin.weight.shape

    def check_invariants(self) -> None:
        """Raise :class:`TopologyError` if consecutive layers disagree on a width."""
        self.sync_shapes()
        w = self.widths
        for i, lin in enumerate(self.linears):
            if lin.weight.shape != (w[i + 1], w[i]) or lin.bias.shape != (w[i + 1],):
                raise TopologyError(f"linears[{i}] has weight {tuple(lin.weight.shape)} and bias "
                                    f"{tuple(lin.bias.shape)}, inconsistent with widths {w}")
        for k, p in enumerate(self.psi):
            if p.shape != (w[k + 2],):
                raise TopologyError(f"psi[{k}] has shape {tuple(p.shape)}, expected ({w[k + 2]},)")

    def _flatten(self, x: Tensor) -> Tensor:
        x = check_input_dtype(self, x, self.linears[0].weight)
        x = x.flatten(1) if x.dim() > 2 else x
        if x.dim() != 2 or x.shape[1] != self.widths[0]:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape (batch, {self.widths[0]}) (or "
                f"images that flatten to it); got {tuple(x.shape)}"
            )
        return x


def trace_recorder() -> tuple[Callable[[int, Tensor, Tensor], None], dict[str, list[Tensor]]]:
    """A ``record(k, z_k, g_k)`` for :func:`isotropic_chain` and the lists it fills:
    ``{"pre": [z_k], "post": [g_k z_k], "gains": [g_k]}``."""
    seen: dict[str, list[Tensor]] = {"pre": [], "post": [], "gains": []}

    def record(k: int, z: Tensor, g: Tensor) -> None:
        seen["pre"].append(z)
        seen["post"].append(g * z)
        seen["gains"].append(g)

    return record, seen


def isotropic_chain(net: AffineChain, h: Tensor,
                    record: Callable[[int, Tensor, Tensor], None] | None) -> Tensor:
    """The fused forward pass of an isotropic chain of ``nn.Linear`` layers (``net.linears``,
    ``net.activations``, ``net.psi``) on ``h`` ``(batch, n_0)``, returning ``(batch, n_L)``:

    ``z_0 = A_0 h + b_0``, ``z_{k+1} = g_k ⊙ (z_k W_{k+1}ᵀ + ψ_k) + b_{k+1}`` with ``g_k`` of
    shape ``(batch, 1)``. ``record(k, z_k, g_k)`` is called for every hidden layer if given.
    The gain and the fused multiply-add are one call, :meth:`IsotropicActivation.gain_affine`
    (one autograd node for isotropic tanh).
    """
    z = net.linears[0](h)  # (batch, n_1)
    for k, act in enumerate(net.activations):
        lin = net.linears[k + 1]
        w_t = lin.weight.mT
        u = torch.addmm(net.psi[k], z, w_t) if len(net.psi) else z @ w_t
        z_next, g = act.gain_affine(z, u, lin.bias)  # g: (batch, 1)
        net._note_gain(k, g)
        if record is not None:
            record(k, z, g)
        z = z_next
    return z


class IsotropicMLP(AffineStack, AffineChain):
    """Isotropic MLP with intrinsic lengths and optional ψ vectors (paper-notes §8.1).

    Args:
        widths: ``[n_0, n_1, ..., n_L]`` (input, hidden..., output).
        intrinsic_length: ``"none" | "constant" | "trainable"`` for every hidden activation.
        psi: ``"none" | "constant" | "trainable" | "trainable+decay" | "expectation"``.
        init: ``"orthogonal"`` (default), ``"xavier_normal"`` or ``"xavier_uniform"``; biases
            and ψ start at zero.
        eps: small-ball radius of the activations.
        profile: radial profile (default tanh).
        psi_decay: ``λ`` of :meth:`psi_penalty`.
        generator: RNG for the initial weights.

    Shapes:
        input ``(batch, n_0)`` (or ``(batch, *image)`` flattening to ``n_0``); output
        ``(batch, n_L)`` logits.

    Example:
        >>> import torch, isoplastic as ip
        >>> net = ip.IsotropicMLP([64, 32, 32, 10], psi="trainable+decay")
        >>> net(torch.randn(5, 64)).shape, net.widths
        (torch.Size([5, 10]), [64, 32, 32, 10])
    """

    def __init__(
        self,
        widths: Sequence[int],
        intrinsic_length: str = "trainable",
        psi: str = "trainable+decay",
        init: str = "orthogonal",
        eps: float = 1e-3,
        profile: AbstractRadialProfile | None = None,
        psi_decay: float = 0.1,
        small_ball: str = "series",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        widths = _check_widths(widths)
        self._init_chain(psi, psi_decay)
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.activations = nn.ModuleList(
            IsotropicActivation(profile, intrinsic_length, eps=eps, small_ball=small_ball)
            for _ in widths[1:-1]
        )
        self._build_psi(widths[2:])
        init_affine(self.linears, init, generator)
        self.check_invariants()

    kind = "mlp"

    def affines(self) -> list[nn.Module]:
        return list(self.linears)

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x, None)

    def gains(self, x: Tensor) -> list[Tensor]:
        """The gains ``g_k`` of every hidden layer for inputs ``x``, each of shape ``(batch, 1)``."""
        out: list[Tensor] = []
        self._run(x, lambda k, z, g: out.append(g))
        return out

    def trace(self, x: Tensor) -> dict[str, list[Tensor] | Tensor]:
        """Every intermediate of the forward pass, for inspection and tests.

        Returns:
            ``{"pre": [z_k], "post": [h_k = g_k z_k], "gains": [g_k], "logits": z_L}`` with
            ``z_k, h_k`` of shape ``(batch, n_{k+1})`` and ``g_k`` of shape ``(batch, 1)``.
        """
        record, seen = trace_recorder()
        return {**seen, "logits": self._run(x, record)}

    def _run(self, x: Tensor, record: Callable[[int, Tensor, Tensor], None] | None) -> Tensor:
        """The forward pass, as ``z_{k+1} = g_k ⊙ (z_k W_{k+1}ᵀ + ψ_k) + b_{k+1}``.

        That equals ``W_{k+1} φ(z_k) + ψ_k g_k + b_{k+1}`` (``φ(z) = g z``) without forming
        ``φ(z_k)``: one matrix product with ψ as its bias, one fused multiply-add, and the gain
        from the activation's fused kernel. Shapes: ``z_k`` ``(batch, n_k)``, ``g_k``
        ``(batch, 1)``. ``record(k, z_k, g_k)`` is called for every hidden layer if given.
        """
        return isotropic_chain(self, self._flatten(x), record)

    def sparsity_closed_form(self) -> float | None:
        return sparsity_closed_form(self.widths)

    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture (used by checkpoints)."""
        act = self.activations[0] if len(self.activations) else None
        return {
            "widths": self.widths,
            "intrinsic_length": act.mode.value if act is not None else "none",
            "psi": self.psi_mode.value,
            "eps": act.eps if act is not None else 1e-3,
            "psi_decay": self.psi_decay,
            "small_ball": act.small_ball if act is not None else "series",
        }
