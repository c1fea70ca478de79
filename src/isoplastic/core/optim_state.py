"""The only place that touches optimizer state.

A structural change maps the coordinates of a hidden space: a rotation ``R`` (orthogonal), an
insertion of new coordinates, or a removal. Each optimizer state tensor of a parameter is moved
along with it by the rule of its *kind*:

=========  ==========================================  =============================================
kind       keys                                        rule under a rotation ``R`` on axis ``d``
=========  ==========================================  =============================================
first      ``momentum_buffer``, ``exp_avg``,           exactly like the parameter: ``m ← m ×_d R``
           ``grad_avg``
second     ``exp_avg_sq``, ``max_exp_avg_sq``,         element-wise squared rotation
           ``square_avg``, ``acc_delta``, ``sum``      ``v ← v ×_d (R∘R)`` (keeps the diagonal of
                                                       ``R diag(v) Rᵀ``; paper-notes §4.2)
keep       ``step``, ``mu_product``                    unchanged (scalars)
=========  ==========================================  =============================================

New coordinates get zero state, removed coordinates are dropped. The parameter objects are
kept (their ``.data`` is replaced), so ``optimizer.param_groups`` and ``optimizer.state`` keep
pointing at the live parameters. Optimizers outside :data:`SUPPORTED_OPTIMIZERS`, and state keys
outside :data:`STATE_KINDS`, are refused with :class:`~isoplastic.errors.UnsupportedOptimizerError`
before anything changes; :func:`register_optimizer` extends both tables.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ..errors import NonFiniteError, UnsupportedOptimizerError
from ..linalg import all_finite

FIRST = "first"
SECOND = "second"
KEEP = "keep"

STATE_KINDS: dict[str, str] = {
    "momentum_buffer": FIRST,
    "exp_avg": FIRST,
    "grad_avg": FIRST,
    "exp_avg_sq": SECOND,
    "max_exp_avg_sq": SECOND,
    "square_avg": SECOND,
    "acc_delta": SECOND,
    "sum": SECOND,
    "step": KEEP,
    "mu_product": KEEP,
}

SUPPORTED_OPTIMIZERS: list[type[torch.optim.Optimizer]] = [
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.Adadelta,
]


def register_optimizer(cls: type[torch.optim.Optimizer], state_kinds: dict[str, str]) -> None:
    """Allow ``cls`` and classify its state keys (each ``"first"``, ``"second"`` or ``"keep"``)."""
    for key, kind in state_kinds.items():
        if kind not in (FIRST, SECOND, KEEP):
            raise ValueError(f"state kind {kind!r} for key {key!r}; use 'first', 'second' or 'keep'")
        STATE_KINDS[key] = kind
    if cls not in SUPPORTED_OPTIMIZERS:
        SUPPORTED_OPTIMIZERS.append(cls)


def _supported_names() -> str:
    return ", ".join(c.__name__ for c in SUPPORTED_OPTIMIZERS)


def check_transportable(optimizer: torch.optim.Optimizer | None, params: Iterable[Tensor]) -> None:
    """Raise :class:`UnsupportedOptimizerError` unless every state tensor of ``params`` can move."""
    if optimizer is None:
        return
    if not isinstance(optimizer, tuple(SUPPORTED_OPTIMIZERS)):
        raise UnsupportedOptimizerError(
            f"cannot transport the state of {type(optimizer).__name__} through a change of basis; "
            f"supported optimizers: {_supported_names()}. Register a new one with "
            "isoplastic.register_optimizer(cls, {state_key: 'first' | 'second' | 'keep'})"
        )
    for p in params:
        for key, value in optimizer.state.get(p, {}).items():
            kind = STATE_KINDS.get(key)
            if kind is None:
                raise UnsupportedOptimizerError(
                    f"{type(optimizer).__name__} holds state {key!r}, whose transport is unknown; "
                    "classify it with isoplastic.register_optimizer(cls, {key: 'first' | 'second' "
                    "| 'keep'})"
                )
            if isinstance(value, Tensor) and kind != KEEP and value.shape != p.shape:
                raise UnsupportedOptimizerError(
                    f"{type(optimizer).__name__} state {key!r} has shape {tuple(value.shape)} but "
                    f"its parameter has shape {tuple(p.shape)}; only per-element state can be moved"
                )
            # A rotation mixes every entry of an axis: one NaN/Inf in a moment would spread to a
            # whole row/column of state (and then of parameters at the next step). Refuse it.
            if (isinstance(value, Tensor) and kind != KEEP and value.is_floating_point()
                    and not all_finite(value)):
                raise NonFiniteError(
                    f"{type(optimizer).__name__} state {key!r} of a parameter of shape "
                    f"{tuple(p.shape)} holds NaN or Inf; a structural change would spread it. "
                    "Reset the optimizer (or restore it from a checkpoint) first"
                )


def _along(t: Tensor, dim: int, mat: Tensor) -> Tensor:
    """Contract axis ``dim`` of ``t`` with the first index of ``mat``.

    ``t'[..i..] = Σ_j t[..j..] M[j, i]``. The first and last axes are contracted by one
    matrix product that writes the result in place order (no transposed copy)."""
    mat = mat.to(dtype=t.dtype, device=t.device)
    dim = dim % t.dim()
    if dim == t.dim() - 1:
        return t @ mat
    if dim == 0:
        return (mat.mT @ t.reshape(t.shape[0], -1)).reshape(mat.shape[1], *t.shape[1:])
    return (t.movedim(dim, -1) @ mat).movedim(-1, dim).contiguous()


class CoordinateMap:
    """A change of the coordinates of one hidden space (rotation, insertion or removal)."""

    def apply(self, t: Tensor, dim: int, kind: str, init: Tensor | None = None) -> Tensor:
        raise NotImplementedError


class Rotation(CoordinateMap):
    """New coordinates ``c' = Rᵀ c``: every attached axis is contracted with ``R``."""

    def __init__(self, r: Tensor) -> None:
        self.r = r

    def apply(self, t: Tensor, dim: int, kind: str, init: Tensor | None = None) -> Tensor:
        if kind == SECOND:
            return _along(t, dim, self.r * self.r)
        return _along(t, dim, self.r)


class Insertion(CoordinateMap):
    """Append ``n`` coordinates; parameters take ``init`` (zeros if None), optimizer state zeros."""

    def __init__(self, n: int) -> None:
        self.n = n

    def apply(self, t: Tensor, dim: int, kind: str, init: Tensor | None = None) -> Tensor:
        shape = list(t.shape)
        shape[dim] = self.n
        extra = torch.zeros(shape, dtype=t.dtype, device=t.device) if init is None else init
        return torch.cat([t, extra.to(dtype=t.dtype, device=t.device)], dim=dim)


class Removal(CoordinateMap):
    """Keep only the coordinates ``keep`` (a sorted index tensor), dropping the others."""

    def __init__(self, keep: Tensor) -> None:
        self.keep = keep

    def apply(self, t: Tensor, dim: int, kind: str, init: Tensor | None = None) -> Tensor:
        return t.index_select(dim, self.keep.to(t.device)).contiguous()


def transport_state(
    optimizer: torch.optim.Optimizer | None, param: Tensor, dim: int, cmap: CoordinateMap
) -> None:
    """Move ``param``'s optimizer state through ``cmap`` along axis ``dim`` (shapes are checked by
    :func:`check_transportable` first). The gradient is moved by the caller, with ``.data``."""
    if optimizer is None:
        return
    state = optimizer.state.get(param)
    if not state:
        return
    for key, value in list(state.items()):
        if not isinstance(value, Tensor) or STATE_KINDS[key] == KEEP or value.dim() == 0:
            continue
        state[key] = cmap.apply(value, dim, STATE_KINDS[key])


def state_entry(optimizer: torch.optim.Optimizer, param: Tensor) -> object:
    """A shallow copy of ``param``'s state entry (its tensors by reference), or ``None``.

    Transport replaces state tensors instead of writing into them, so the references stay the
    originals; :func:`restore_entry` puts them back."""
    entry = optimizer.state.get(param)
    return None if entry is None else dict(entry)


def restore_entry(optimizer: torch.optim.Optimizer, param: Tensor, entry: object) -> None:
    """Undo everything done to ``param``'s state since :func:`state_entry` returned ``entry``."""
    if entry is None:
        optimizer.state.pop(param, None)
    else:
        optimizer.state[param] = dict(entry)  # type: ignore[call-overload]
