r"""Chains of affine maps with isotropic hidden spaces: the one implementation of the model
contract that :class:`~isoplastic.IsotropicMLP` and :class:`~isoplastic.IsotropicCNN` share.

An affine chain has ``L`` weighted layers ``A_0, …, A_{L-1}`` (``nn.Linear``, ``nn.Conv2d`` or
:class:`~isoplastic.nn.conv.ChannelLinear`), each with a ``weight`` whose axis 0 is its output
and axis 1 its input, and a ``bias``. Hidden space ``k = 0..L-2`` is the output of ``A_k``:

.. math::
    z_{k+1} = A_{k+1}(g_k z_k) + b_{k+1} + ψ_k\, g_k, \qquad g_k = g(z_k; o_k),

so its axes are ``A_k.weight`` dim 0, ``A_k.bias``, ``ψ_{k-1}`` (for ``k ≥ 1``) and
``A_{k+1}.weight`` dim 1. A subclass lists its layers in :meth:`AffineChain.affines` and writes
its forward pass; declaring the spaces, ψ, initialisation, the mean gain of ψ mode
``"expectation"``, the dtype check of inputs and ``config()`` bookkeeping are done here once.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..choices import Choice
from ..core.model import HiddenLayer, IsoplasticBlock
from ..core.space import Axis, HiddenSpace


class PsiMode(Choice, argument="psi"):
    """How the ψ ("linear-correction") vectors are kept.

    * ``none``: no ψ; a removed neuron's output ``b* w*`` is lost.
    * ``constant``: ψ present, not trained (``requires_grad=False``), changed only by
      neurodegeneration.
    * ``trainable``: ψ trained.
    * ``trainable+decay``: ψ trained, and ``psi_penalty()`` adds ``λ Σ‖ψ‖²`` (``λ = 0.1``) for
      the training loss to include.
    * ``expectation``: no ψ; neurodegeneration adds ``mean(g) b* w*`` to the next bias instead.
    """

    NONE = "none"
    CONSTANT = "constant"
    TRAINABLE = "trainable"
    TRAINABLE_DECAY = "trainable+decay"
    EXPECTATION = "expectation"

    @property
    def has_vectors(self) -> bool:
        return self in (PsiMode.CONSTANT, PsiMode.TRAINABLE, PsiMode.TRAINABLE_DECAY)


def psi_penalty(psi: nn.ParameterList, mode: PsiMode, decay: float, like: Tensor) -> Tensor:
    """``λ Σ_k ‖ψ_k‖²`` for ``mode="trainable+decay"`` (one concatenation and one dot product,
    a handful of kernels however many layers), else a zero on ``like``'s device."""
    if mode is not PsiMode.TRAINABLE_DECAY or not len(psi):
        return torch.zeros((), device=like.device)
    flat = torch.cat(list(psi))
    return decay * torch.dot(flat, flat)


INITS = ("orthogonal", "xavier_normal", "xavier_uniform")


def check_init(init: str) -> str:
    if init not in INITS:
        raise ValueError(f"init={init!r}; choose one of {', '.join(INITS)}")
    return init


@torch.no_grad()
def init_affine(layers: Sequence[nn.Module], init: str, generator: torch.Generator | None) -> None:
    """Initialise weights (orthogonal, Xavier normal or uniform) and zero the biases."""
    check_init(init)
    for layer in layers:
        if init == "orthogonal":
            nn.init.orthogonal_(layer.weight, generator=generator)
        elif init == "xavier_normal":
            nn.init.xavier_normal_(layer.weight, generator=generator)
        else:
            nn.init.xavier_uniform_(layer.weight, generator=generator)
        layer.bias.zero_()


def check_input_dtype(module: nn.Module, x: object, weight: Tensor) -> Tensor:
    """``x`` if it is a tensor of ``weight``'s dtype (or autocast is on); else a ``TypeError``
    that names both dtypes and the two fixes."""
    name = type(module).__name__
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expects a torch.Tensor of inputs; got {type(x).__name__}")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        fix = f"convert the inputs with x.to({weight.dtype})"
        if x.is_floating_point():
            fix += f" or the network with net.to({x.dtype})"
        raise TypeError(f"{name} has {weight.dtype} parameters but got {x.dtype} inputs; {fix}")
    return x


class AffineChain(IsoplasticBlock):
    """An isoplastic block made of a chain of affine maps (see the module docstring).

    Subclasses set ``activations`` (one isotropic activation per hidden space), ``psi`` (a
    ``ParameterList``, empty unless the ψ mode keeps vectors; ``psi[k]`` is added to the output
    of ``affines()[k+1]``), ``psi_mode`` and ``psi_decay``, and implement :meth:`affines`,
    :meth:`sync_shapes`, :meth:`check_invariants`, ``forward`` and ``config``.
    """

    kind: str = "chain"  # the architecture's name in checkpoints
    activations: nn.ModuleList
    psi: nn.ParameterList
    psi_mode: PsiMode
    psi_decay: float

    @abstractmethod
    def affines(self) -> list[nn.Module]:
        """Every weighted layer in order (``L`` of them; ``L − 1`` hidden spaces)."""

    @abstractmethod
    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture: ``type(net)(**net.config())``."""

    # -- construction helpers -------------------------------------------------------------------
    def _init_chain(self, psi: str, psi_decay: float) -> None:
        """Parse the ψ mode (before the layers are built, so a bad mode fails first)."""
        self.psi_mode = PsiMode.parse(psi)
        self.psi_decay = float(psi_decay)

    def _build_psi(self, next_widths: Sequence[int]) -> None:
        """One zero ψ vector per hidden space, sized by the pre-activation it feeds. Registered
        after the layers and activations, so parameter order (optimizer state indices in
        checkpoints) is layers, activations, ψ."""
        self.psi = nn.ParameterList()
        if self.psi_mode.has_vectors:
            trainable = self.psi_mode is not PsiMode.CONSTANT
            for w in next_widths:
                self.psi.append(nn.Parameter(torch.zeros(int(w)), requires_grad=trainable))
        self._mean_gains: list[Tensor | None] = [None] * len(next_widths)

    def _note_gain(self, k: int, g: Tensor) -> None:
        """Record the batch mean of gain ``g_k`` in training (ψ mode ``"expectation"`` folds it
        into a bias on removal). An empty batch has no mean (NaN): the last one is kept."""
        if self.training and self.psi_mode is PsiMode.EXPECTATION and g.numel():
            self._mean_gains[k] = g.detach().mean()

    def sparse_form(self, chain: nn.Module) -> nn.Module:
        """The inference module of this block, given ``chain``, a module that computes its
        affine chain (activations and ψ included; e.g. :class:`~isoplastic.export.SparseMLP`).
        A plain chain is its chain; a residual branch wraps it (``x + chain(n(x))``)."""
        return chain

    def psi_penalty(self) -> Tensor:
        """``λ Σ_k ‖ψ_k‖²`` for ``psi="trainable+decay"``, else 0 (add it to the training loss)."""
        return psi_penalty(self.psi, self.psi_mode, self.psi_decay, self.affines()[0].weight)

    # -- the contract with isoplastic.core ------------------------------------------------------
    @property
    def n_hidden(self) -> int:
        return len(self.affines()) - 1

    def space_label(self, k: int) -> str:
        """How hidden space ``k`` is described in messages (``"hidden layer 1"``)."""
        return f"hidden layer {k}"

    def outgoing_matrix(self, k: int) -> Tensor:
        """``(n_next, n_k)``: the next pre-activation produced by a constant unit signal in
        coordinate ``j`` of space ``k``: the outgoing weight summed over every axis beyond the
        first two (kernel taps, positions)."""
        w = self.affines()[k + 1].weight.detach()
        return w.sum(dim=tuple(range(2, w.dim()))) if w.dim() > 2 else w

    def hidden_space(self, k: int) -> HiddenSpace:
        layers = self.affines()
        inc, out = layers[k], layers[k + 1]
        axes = [Axis(inc, "weight", 0, "incoming"), Axis(inc, "bias", 0, "bias")]
        if len(self.psi) and k >= 1:
            axes.append(Axis(self.psi, str(k - 1), 0, "psi"))
        axes.append(Axis(out, "weight", 1, "outgoing"))
        return HiddenSpace(self.space_label(k), axes, block=self, index=k,
                           activation=self.activations[k])

    def hidden_layer(self, k: int) -> HiddenLayer:
        layers = self.affines()
        g = self._mean_gains[k]
        return HiddenLayer(
            space=self.hidden_space(k),
            incoming=layers[k].weight,
            bias=layers[k].bias,
            outgoing=self.outgoing_matrix(k),
            activation=self.activations[k],
            next_psi=self.psi[k] if len(self.psi) else None,
            next_bias=layers[k + 1].bias,
            # a NaN/Inf mean gain (a batch holding NaN inputs) must not be folded into a bias
            mean_gain=None if g is None or not torch.isfinite(g) else float(g),
            fold_into_bias=self.psi_mode is PsiMode.EXPECTATION,
        )

    def input_space(self) -> HiddenSpace:
        return HiddenSpace("input", [Axis(self.affines()[0], "weight", 1, "outgoing")], block=self)

    def output_space(self) -> HiddenSpace:
        last = self.affines()[-1]
        axes = [Axis(last, "weight", 0, "incoming"), Axis(last, "bias", 0, "bias")]
        if len(self.psi):
            axes.append(Axis(self.psi, str(len(self.psi) - 1), 0, "psi"))
        return HiddenSpace("output", axes, block=self)
