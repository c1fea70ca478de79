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
stay valid. Each primitive is a one-step :class:`~isoplastic.core.change.Change`: validated before
anything is written, and all-or-nothing. Models declare their spaces through
:class:`~isoplastic.core.model.IsoplasticBlock`; the operations in :mod:`isoplastic.ops` and
:mod:`isoplastic.topology` use nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import NonFiniteError, TopologyError
from ..linalg import all_finite
from . import optim_state as ostate
from .change import Change, replace_values


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
    """A hidden space: its name and the axes that live in it (see module docstring).

    Attributes:
        name: a readable name (``"hidden layer 1"``).
        axes: every tensor axis indexed by this space's coordinates.
        block: the module that declared the space (an
            :class:`~isoplastic.core.model.IsoplasticBlock`), whose size attributes are refreshed
            after a change; ``None`` for a free-standing space.
        index: the space's hidden index inside ``block``.
        activation: the isotropic activation acting on this space (holds its intrinsic length),
            if any.
    """

    name: str
    axes: list[Axis] = field(default_factory=list)
    block: nn.Module | None = None
    index: int | None = None
    activation: nn.Module | None = None

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

    def apply_map(self, cmap: ostate.CoordinateMap, optimizer: torch.optim.Optimizer | None,
                  init: dict[int, Tensor] | None = None) -> None:
        """Move every axis, its gradient and its optimizer state through ``cmap``.

        Unchecked and not transactional: the :class:`~isoplastic.core.change.Change` that calls
        it has validated the plan and journals the originals. Each tensor is *replaced* (never
        written into), which is what makes the journal's by-reference rollback exact."""
        for i, a in enumerate(self.axes):
            p = a.param
            ostate.transport_state(optimizer, p, a.dim, cmap)
            grad = None if p.grad is None else cmap.apply(p.grad, a.dim, ostate.FIRST)
            p.grad = None
            replace_values(p, cmap.apply(p.data, a.dim, ostate.FIRST,
                                         None if init is None else init.get(i)))
            p.grad = grad

    def rotate(self, r: Tensor, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Change of basis by orthogonal ``r`` (``n × n``): every axis ``t ← t ×_dim r``.

        Validated (shape, finiteness, orthogonality, optimizer state) before anything is written;
        all-or-nothing."""
        Change("rotate", optimizer).rotate(self, r).apply()

    def insert(self, n: int, optimizer: torch.optim.Optimizer | None = None,
               init: dict[str, Callable[[torch.Size], Tensor]] | None = None) -> None:
        """Append ``n`` coordinates.

        ``init`` maps an axis role (``"outgoing"``…) to a function of the shape of the new slice
        (the tensor's shape with ``dim`` of size ``n``) returning its values; other axes get zeros.
        """
        Change("insert", optimizer).insert(self, n, init).apply()

    def remove(self, indices: Sequence[int] | Tensor,
               optimizer: torch.optim.Optimizer | None = None) -> None:
        """Delete the coordinates ``indices`` (distinct integers; at least one must remain)."""
        Change("remove", optimizer).remove(self, indices).apply()

    def describe(self) -> str:
        """Every attached tensor, one per line (for printing a planned change)."""
        return "\n".join([f"{self.name} (width {self.size}):"] + [f"  {a}" for a in self.axes])
