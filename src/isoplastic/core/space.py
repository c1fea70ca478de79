r"""Hidden spaces: the one mechanism under every symmetry operation and structural change.

A *hidden space* is the coordinate space of one isotropic layer (``n_k`` neurons, or ``C_k``
channels of a convolution). Several tensor axes live in it: the output axis of the incoming
weight, the bias, the ψ vector added to this layer's pre-activation, and the input axis of the
outgoing weight (for convolutions, the channel axes of the kernels). Each is an :class:`Axis`.

A :class:`HiddenSpace` is the list of its axes plus three primitives, each of which moves every
attached axis *and* its gradient and optimizer state (through
:mod:`isoplastic.core.optim_state`):

* :meth:`HiddenSpace.rotate` — change of basis ``c' = Rᵀ c`` for orthogonal ``R`` (``n × n``):
  every axis is contracted with ``R``, i.e. ``W_k ← Rᵀ W_k``, ``b_k ← Rᵀ b_k``, ``ψ ← Rᵀ ψ`` and
  ``W_{k+1} ← W_{k+1} R``;
* :meth:`HiddenSpace.insert` — append ``n`` coordinates (zeros unless an initial value is given);
* :meth:`HiddenSpace.remove` — delete coordinates.

The parameters keep their identity (``.data`` is replaced), so optimizers, hooks and references
stay valid. Models describe their spaces through :class:`HiddenSpaceModel`; the operations in
:mod:`isoplastic.ops` and :mod:`isoplastic.topology` use nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..errors import NonFiniteError, TopologyError
from ..linalg import all_finite
from . import optim_state as ostate


@dataclass(frozen=True)
class Axis:
    """One tensor axis living in a hidden space.

    Attributes:
        owner: the module holding the tensor (a ``Linear``, ``Conv2d``, ``ParameterList``…).
        name: attribute name of the parameter on ``owner``.
        dim: which axis of the tensor is indexed by the space's coordinates.
        role: ``"incoming"`` (rows of the weight feeding the space), ``"bias"``, ``"psi"`` or
            ``"outgoing"`` (columns of the weight reading from the space); informational.
    """

    owner: nn.Module
    name: str
    dim: int
    role: str

    @property
    def param(self) -> Tensor:
        return getattr(self.owner, self.name)

    @property
    def size(self) -> int:
        return int(self.param.shape[self.dim])

    def __str__(self) -> str:
        shape = tuple(self.param.shape)
        return f"{type(self.owner).__name__}.{self.name}{shape}[dim {self.dim}, {self.role}]"


@dataclass
class HiddenSpace:
    """A hidden space: its name and the axes that live in it (see module docstring)."""

    name: str
    axes: list[Axis] = field(default_factory=list)

    @property
    def size(self) -> int:
        sizes = {a.size for a in self.axes}
        if len(sizes) != 1:
            detail = ", ".join(str(a) for a in self.axes)
            raise TopologyError(f"{self.name}: its axes disagree on the width ({detail})")
        return sizes.pop()

    def params(self) -> list[Tensor]:
        seen: dict[int, Tensor] = {}
        for a in self.axes:
            seen.setdefault(id(a.param), a.param)
        return list(seen.values())

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` if any attached tensor holds NaN or Inf."""
        for a in self.axes:
            if not all_finite(a.param):
                raise NonFiniteError(
                    f"{self.name}: {a} holds NaN or Inf; a structural change would spread it. "
                    "Restore the model from a checkpoint or lower the learning rate"
                )

    def _apply(self, cmap: ostate.CoordinateMap, optimizer: torch.optim.Optimizer | None,
               init: dict[int, Tensor] | None = None) -> None:
        for i, a in enumerate(self.axes):
            p = a.param
            ostate.transport_state(optimizer, p, a.dim, cmap)
            grad = None if p.grad is None else cmap.apply(p.grad, a.dim, ostate.FIRST)
            p.grad = None
            p.data = cmap.apply(p.data, a.dim, ostate.FIRST, None if init is None else init.get(i))
            p.grad = grad

    def rotate(self, r: Tensor, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Change of basis by orthogonal ``r`` (``n × n``): every axis ``t ← t ×_dim r``."""
        n = self.size
        if r.shape != (n, n):
            raise TopologyError(
                f"{self.name} has {n} coordinates but R has shape {tuple(r.shape)}; pass an "
                f"orthogonal matrix of shape ({n}, {n})"
            )
        self._apply(ostate.Rotation(r), optimizer)

    def insert(self, n: int, optimizer: torch.optim.Optimizer | None = None,
               init: dict[str, Callable[[torch.Size], Tensor]] | None = None) -> None:
        """Append ``n`` coordinates.

        ``init`` maps an axis role (``"outgoing"``…) to a function of the shape of the new slice
        (the tensor's shape with ``dim`` of size ``n``) returning its values; other axes get zeros.
        """
        by_index = {}
        for i, a in enumerate(self.axes):
            if init and a.role in init:
                shape = list(a.param.shape)
                shape[a.dim] = n
                by_index[i] = init[a.role](torch.Size(shape))
        self._apply(ostate.Insertion(n), optimizer, by_index)

    def remove(self, indices: Sequence[int] | Tensor,
               optimizer: torch.optim.Optimizer | None = None) -> None:
        """Delete the coordinates ``indices``."""
        n = self.size
        drop = torch.as_tensor(indices, dtype=torch.long).flatten()
        if drop.numel() and (drop.min() < 0 or drop.max() >= n):
            raise TopologyError(f"{self.name}: indices {drop.tolist()} out of range for width {n}")
        mask = torch.ones(n, dtype=torch.bool)
        mask[drop] = False
        keep = torch.nonzero(mask).flatten()
        if keep.numel() == 0:
            raise TopologyError(f"{self.name}: removing all {n} coordinates would disconnect it")
        self._apply(ostate.Removal(keep), optimizer)

    def describe(self) -> str:
        """Every attached tensor, one per line (for printing a planned change)."""
        return "\n".join([f"{self.name} (width {self.size}):"] + [f"  {a}" for a in self.axes])


@dataclass
class HiddenLayer:
    """What the structural operations need to know about hidden layer ``k`` beyond its axes.

    Attributes:
        space: the layer's :class:`HiddenSpace`.
        incoming: the incoming weight parameter, output axis first (``(n_k, n_prev)`` for a
            ``Linear``, ``(C_k, C_prev, kh, kw)`` for a convolution); :meth:`incoming_matrix`
            reshapes it to ``(n_k, fan_in)``.
        bias: the incoming bias ``(n_k,)``.
        outgoing: the outgoing weight as seen from this space, ``(n_next, n_k)``: the linear map a
            constant unit signal in coordinate ``j`` contributes to the next pre-activation.
        activation: the isotropic activation of the layer (holds the intrinsic length).
        next_psi: the ψ vector of the next layer's pre-activation (``(n_next,)``) or ``None``.
        next_bias: the bias of the next layer (``(n_next,)``).
        mean_gain: batch mean of this layer's gain in the last training forward pass, or None.
    """

    space: HiddenSpace
    incoming: Tensor
    bias: Tensor
    outgoing: Tensor
    activation: nn.Module
    next_psi: Tensor | None
    next_bias: Tensor
    mean_gain: float | None

    def incoming_matrix(self) -> Tensor:
        """The incoming weight as a matrix ``(n_k, fan_in)``."""
        return self.incoming.detach().reshape(self.incoming.shape[0], -1)


@runtime_checkable
class HiddenSpaceModel(Protocol):
    """What a network implements so that every operation works on it."""

    @property
    def n_hidden(self) -> int:
        """Number of hidden (isotropic) layers."""

    def hidden_space(self, k: int) -> HiddenSpace:
        """The axes of hidden layer ``k`` (``0 ≤ k < n_hidden``)."""

    def hidden_layer(self, k: int) -> HiddenLayer:
        """The view of hidden layer ``k`` used by neurogenesis and neurodegeneration."""

    def input_space(self) -> HiddenSpace:
        """Axes indexed by input features (columns of the first weight)."""

    def output_space(self) -> HiddenSpace:
        """Axes indexed by outputs (rows of the last weight, its bias and ψ)."""

    def check_invariants(self) -> None:
        """Raise if the widths of the layers disagree."""


def check_layer_index(net: HiddenSpaceModel, k: int, op: str, lo: int = 0,
                      hi: int | None = None) -> None:
    """Raise :class:`TopologyError` unless ``lo ≤ k ≤ hi`` (``hi`` defaults to the last hidden)."""
    hi = net.n_hidden - 1 if hi is None else hi
    if not isinstance(k, int) or isinstance(k, bool) or not lo <= k <= hi:
        valid = f"{lo}..{hi}" if lo <= hi else "none (the network is too shallow)"
        raise TopologyError(
            f"{op}: hidden layer k={k!r} is out of range; this network has {net.n_hidden} hidden "
            f"layers and {op} accepts k in {valid}"
        )


@contextlib.contextmanager
def transaction(net: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> Iterator[None]:
    """All-or-nothing: if the body raises, every parameter, buffer, gradient and optimizer state
    of ``net`` is restored exactly (same tensors, same objects) and the error propagates."""
    tensors = list(net.parameters()) + list(net.buffers())
    data = [t.data.clone() for t in tensors]
    grads = [None if t.grad is None else t.grad.clone() for t in tensors]
    params = list(net.parameters())
    opt_snap = ostate.snapshot_state(optimizer, params)
    try:
        yield
    except BaseException:
        for t, d, g in zip(tensors, data, grads, strict=True):
            t.grad = None
            t.data = d
            t.grad = g
        ostate.restore_state(optimizer, params, opt_snap)
        sync = getattr(net, "sync_shapes", None)
        if sync is not None:
            sync()
        raise
