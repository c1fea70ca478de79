r"""The change pipeline: plan → validate → apply, all-or-nothing.

Every write that isoplastic makes to a model goes through a :class:`Change`: an ordered list of
steps on hidden spaces and the few tensors beside them.

=====================  ============================================================================
step                   effect
=====================  ============================================================================
``rotate(space, R)``   every axis of ``space`` contracted with orthogonal ``R`` (``n × n``):
                       ``W_k ← Rᵀ W_k``, ``b_k ← Rᵀ b_k``, ``ψ ← Rᵀ ψ``, ``W_{k+1} ← W_{k+1} R``;
                       ``R`` a dense matrix or a structured
                       :class:`~isoplastic.core.optim_state.OrthogonalMap` (``k`` Householder
                       reflectors: ``O(k n m)`` instead of ``O(n² m)``)
``insert(space, n)``   ``n`` coordinates appended to every axis (zeros, or an ``init`` per role)
``remove(space, idx)`` coordinates ``idx`` deleted from every axis
``assign(p, value)``   parameter or buffer ``p`` replaced by ``value`` of the same shape (the
                       exact zeros of a full diagonalisation)
``fold(space, f)``     a compensation computed when the step runs from ``space``'s block:
                       ``f(layer) -> [(target, value)]`` (a removal's ``o += Σb²``,
                       ``ψ += W_D b*``)
=====================  ============================================================================

Each coordinate step moves the parameter, its gradient and its optimizer state
(:mod:`isoplastic.core.optim_state`).

:meth:`Change.validate` checks the whole plan before anything is written: the shape of every
``R`` against the width the space will have at that step, its finiteness and orthogonality (a
per-dtype tolerance, :func:`~isoplastic.linalg.ortho_tolerance`), indices (integers, in range,
not every coordinate), counts, the finiteness of every tensor the plan reads, and that the
optimizer's state for every touched parameter is of a kind it can transport. :meth:`Change.apply`
then runs the steps under a :class:`Journal`. The journal records, on first touch, each touched
tensor's data, gradient and optimizer-state entry *by reference*: every step replaces ``.data``
(and each state tensor) by a new tensor instead of writing into it, so the originals stay intact
and a rollback re-attaches them. If any step raises, every touched parameter, gradient and
optimizer state is restored bit-identically and the error propagates. The extra memory of a
change is therefore the originals of the tensors it touches (held until it commits), never a copy
of the model.

:func:`transaction` opens a journal around several changes (a guarded policy pass): changes
applied inside it are recorded in it too, so a failure anywhere in the block undoes all of them.
Journals nest at no cost (references, not copies).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import numbers
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from ..errors import NonFiniteError, TopologyError, UnsupportedOptimizerError
from ..linalg import all_finite, ortho_tolerance, orthogonality_error
from . import optim_state as ostate

if TYPE_CHECKING:
    from .space import HiddenSpace

Optimizer = torch.optim.Optimizer


_SWAP_IMPL = getattr(torch._C, "_swap_tensor_impl", None)  # torch >= 2.3


def _stale_graph(grad_outputs: object) -> None:
    raise RuntimeError(
        "this autograd graph was built before a structural change resized one of its parameters "
        "(isoplastic renews a resized parameter's gradient accumulator); run the forward pass "
        "again after the change and backpropagate the new loss"
    )


def replace_values(t: Tensor, new: Tensor) -> None:
    """Give parameter or buffer ``t`` the values ``new`` (any shape), keeping the object.

    When a parameter's shape changes, the Python object is kept (optimizers, hooks on the module
    and user references stay valid) but it is given a fresh tensor underneath (the mechanism of
    :func:`torch.utils.swap_tensors`): a graph built before the change and still alive (the
    previous loss, a notebook's output history) keeps the old tensor and its gradient
    accumulator, so the next forward builds a new accumulator of the new shape instead of
    reusing the old one, on which the next backward would fail. Backpropagating through such an
    old graph afterwards raises a clear error instead of accumulating a gradient of the old
    shape. Gradient hooks registered on the parameter tensor itself do not survive a resize.
    Where this is impossible (a weak reference to the parameter, a ``Parameter`` subclass,
    torch < 2.3) the values are replaced through ``.data``. ``t``'s gradient is the caller's.
    """
    if (new.shape != t.shape and type(t) is nn.Parameter and _SWAP_IMPL is not None
            and not weakref.getweakrefs(t)):
        if t.requires_grad and t._use_count() > 1:  # some graph holds t: mark it stale
            torch.autograd.graph.get_gradient_edge(t).node.register_prehook(_stale_graph)
        _SWAP_IMPL(t, nn.Parameter(new, requires_grad=t.requires_grad))
        return
    t.data = new


def check_resizable(params: list[Tensor], op: str) -> None:
    """Refuse a resize that :func:`replace_values` could only write through ``.data`` while an
    autograd graph holds the parameter (the next backward would then fail on the old shape).

    That happens when something keeps a weak reference to the parameter; a garbage collection
    is tried first (uncollected reference cycles are the usual holders)."""
    def stuck(p: Tensor) -> bool:
        return (type(p) is nn.Parameter and p.requires_grad and p._use_count() > 1
                and bool(weakref.getweakrefs(p)))

    if any(stuck(p) for p in params):
        gc.collect()
        if any(stuck(p) for p in params):
            raise TopologyError(
                f"{op}: a parameter it resizes is weakly referenced and still held by a live "
                "autograd graph, so its gradient accumulator cannot be renewed; drop the graph "
                "first (del loss, clear held outputs), then repeat the change"
            )


_LIVE_OPTIMIZERS: weakref.WeakSet[Optimizer] = weakref.WeakSet()


def _note_optimizer(optimizer: Optimizer, args: object, kwargs: object) -> None:
    _LIVE_OPTIMIZERS.add(optimizer)


# Every optimizer that has taken a step is remembered (weakly, one set insertion per step), so a
# change called without ``optimizer=`` on parameters that have state can be refused before it
# leaves that state stale (its shapes would no longer match, and the next step would fail).
register_optimizer_step_post_hook(_note_optimizer)


def check_optimizer_matches(optimizer: Optimizer | None, params: list[Tensor], op: str) -> None:
    """Refuse a change whose optimizer argument cannot be right for ``params``.

    * ``optimizer=None`` while a live optimizer holds state for one of ``params``: its state
      would go stale (wrong shapes after a resize, wrong basis after a rotation).
    * An optimizer that holds none of the trainable ``params``: most likely another network's.
    """
    ids = {id(p) for p in params}
    if optimizer is None:
        for other in list(_LIVE_OPTIMIZERS):
            if any(id(p) in ids and st for p, st in other.state.items()):
                raise UnsupportedOptimizerError(
                    f"{op}: the parameters it changes have state in a {type(other).__name__} "
                    "optimizer, but no optimizer was passed; pass optimizer=<that optimizer> so "
                    "its state moves with them (or clear their state first: opt.state.pop(p))"
                )
        return
    trainable = [p for p in params if p.requires_grad]
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    if trainable and not any(id(p) in held for p in trainable):
        raise UnsupportedOptimizerError(
            f"{op}: the {type(optimizer).__name__} passed as optimizer= holds none of the "
            "parameters this change moves; pass the optimizer that trains this model"
        )


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """No gradient recording, no autocast and no TF32: decompositions, rotations and
    compensations run in the tensors' own dtypes (low-precision ones are promoted where they are
    computed) at full float32 precision on GPUs too, whatever the caller's ``torch.autocast``
    region or TF32 settings say (PyTorch enables TF32 for cuDNN convolutions by default). The
    settings are restored on exit."""
    matmul = torch.get_float32_matmul_precision()
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        for device in ("cpu", "cuda"):
            if device == "cpu" or torch.cuda.is_available():
                stack.enter_context(torch.autocast(device_type=device, enabled=False))
        try:
            torch.set_float32_matmul_precision("highest")
            torch.backends.cudnn.allow_tf32 = False
            yield
        finally:
            torch.set_float32_matmul_precision(matmul)
            torch.backends.cudnn.allow_tf32 = cudnn_tf32


def operation(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for every public operation: runs it under :func:`full_precision`."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with full_precision():
            return fn(*args, **kwargs)
    return wrapper


# --------------------------------------------------------------------------------------------
# The journal: first-touch references to what a change replaces
# --------------------------------------------------------------------------------------------
class Journal:
    """Originals of every tensor touched since the journal was opened, for an exact rollback.

    Parameters and buffers are recorded by reference to their current ``.data`` and ``.grad``
    and a shallow copy of their optimizer-state entry; the change pipeline never writes into a
    recorded tensor, it replaces it. A tensor that some step must update in place (the scalar
    intrinsic length) is recorded with ``copy=True``.
    """

    def __init__(self) -> None:
        self._tensors: dict[int, tuple[Tensor, Tensor, Tensor | None]] = {}
        self._states: dict[tuple[int, int], tuple[Optimizer, Tensor, Any]] = {}
        self._blocks: dict[int, nn.Module] = {}

    def record(self, t: Tensor, optimizer: Optimizer | None = None, copy: bool = False) -> None:
        """Remember ``t``'s data, gradient and optimizer state unless already recorded."""
        if id(t) not in self._tensors:
            data = t.data.clone() if copy else t.data
            self._tensors[id(t)] = (t, data, t.grad)
        if optimizer is not None and (id(optimizer), id(t)) not in self._states:
            self._states[(id(optimizer), id(t))] = (optimizer, t, ostate.state_entry(optimizer, t))

    def record_block(self, block: nn.Module | None) -> None:
        """Remember a block whose derived size attributes must be refreshed after a rollback."""
        if block is not None:
            self._blocks.setdefault(id(block), block)

    def rollback(self) -> None:
        """Re-attach every recorded original (data, gradient, optimizer state)."""
        for t, data, grad in self._tensors.values():
            t.grad = None
            replace_values(t, data)
            t.grad = grad
        for optimizer, t, entry in self._states.values():
            ostate.restore_entry(optimizer, t, entry)
        for block in self._blocks.values():
            block.sync_shapes()

    @property
    def n_tensors(self) -> int:
        return len(self._tensors)

    def held_bytes(self) -> int:
        """Bytes of the originals this journal keeps alive: the data, gradients and optimizer
        state of every tensor touched so far (each storage counted once). This is the memory
        a change needs for its rollback: the touched tensors, once, never the whole model."""
        held: list[Tensor] = []
        for _, data, grad in self._tensors.values():
            held += [data] + ([grad] if grad is not None else [])
        for _, _, entry in self._states.values():
            held += [v for v in (entry or {}).values() if isinstance(v, Tensor)]
        seen: set[int] = set()
        total = 0
        for x in held:
            storage = x.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        return total


_LOCAL = threading.local()


def _open_journals() -> list[Journal]:
    if not hasattr(_LOCAL, "stack"):
        _LOCAL.stack = []
    return _LOCAL.stack


@contextlib.contextmanager
def transaction(model: nn.Module | None = None, optimizer: Optimizer | None = None
                ) -> Iterator[Journal]:
    """All-or-nothing around several changes: if the body raises, every change applied through
    isoplastic inside it (on any model, with any optimizer) is undone exactly and the error
    propagates.

    ``model`` and ``optimizer`` are accepted for readability and older call sites; the journal
    records whatever the changes touch. Writes made outside the change pipeline (a manual
    ``p.data.add_``) are not journalled.
    """
    del model, optimizer
    journal = Journal()
    stack = _open_journals()
    stack.append(journal)
    try:
        yield journal
    except BaseException:
        stack.pop()
        journal.rollback()
        raise
    else:
        stack.pop()


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------
@dataclass
class _Rotate:
    space: HiddenSpace
    rot: ostate.OrthogonalMap


@dataclass
class _Insert:
    space: HiddenSpace
    n: int
    init: dict[str, Callable[[torch.Size], Tensor]] | None = None
    newborn: str = "zero"
    source: _Insert | None = None  # a mirrored step takes its initial values from this one
    values: dict[int, Tensor] | None = None  # the initial values used, by axis index


@dataclass
class _Remove:
    space: HiddenSpace
    keep: Tensor
    drop: list[int]


@dataclass
class _Assign:
    target: Tensor
    value: Tensor


@dataclass
class _Fold:
    """A compensation computed from the space's block when the step runs (after the steps before
    it), so a mirrored copy folds its own values: ``compute(layer)`` receives the block's
    :class:`~isoplastic.core.model.HiddenLayer` and returns ``[(target, value)]`` with targets
    tensors (assigned) or isotropic activations (their intrinsic length set)."""

    space: HiddenSpace
    compute: Callable[[Any], list[tuple[Any, Any]]]


# Mirrors: block -> weak references to the blocks of copies that every change replays on.
_MIRRORS: weakref.WeakKeyDictionary[nn.Module, list[weakref.ref[nn.Module]]] = (
    weakref.WeakKeyDictionary())


def add_mirror(block: nn.Module, twin: nn.Module) -> None:
    """Replay every change of ``block``'s spaces on ``twin`` (same architecture) from now on."""
    _MIRRORS.setdefault(block, []).append(weakref.ref(twin))


def remove_mirror(block: nn.Module, twin: nn.Module) -> None:
    refs = _MIRRORS.get(block, [])
    refs[:] = [r for r in refs if r() is not None and r() is not twin]


def mirrors_of(block: nn.Module | None) -> list[nn.Module]:
    if block is None:
        return []
    return [t for t in (r() for r in _MIRRORS.get(block, [])) if t is not None]


def positive_int(n: object, op: str, what: str = "n") -> int:
    """``n`` if it is a positive integer, else :class:`TopologyError`."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise TopologyError(f"{op}: {what}={n!r} must be a positive integer")
    return int(n)


def integer_positions(indices: object, where: str, width: int) -> list[int]:
    """Sorted distinct integer positions in ``0..width-1``; anything else is refused."""
    if isinstance(indices, Tensor):
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise TopologyError(f"{where}: indices must be integers, got a {indices.dtype} tensor")
        values: list[object] = indices.flatten().tolist()
    elif isinstance(indices, (str, bytes)) or not isinstance(indices, Iterable):
        raise TopologyError(f"{where}: indices={indices!r} must be a sequence of integer positions "
                            f"in 0..{width - 1}, e.g. [0]")
    else:
        values = list(indices)
    out = set()
    for i in values:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise TopologyError(f"{where}: index {i!r} is not an integer; pass integer positions "
                                f"in 0..{width - 1}")
        out.add(int(i))
    pos = sorted(out)
    if pos and (pos[0] < 0 or pos[-1] >= width):
        raise TopologyError(f"{where}: indices {pos} must lie in 0..{width - 1}")
    return pos


class Change:
    """A planned structural change: steps, validated as a whole, applied all-or-nothing.

    Build it with the step methods (each returns the change, so calls chain), then
    :meth:`apply`. ``print(change)`` lists every step and every tensor it touches with its
    current shape.

    Example:
        >>> import torch, isoplastic as ip
        >>> from isoplastic.core import Change
        >>> net = ip.IsotropicMLP([4, 3, 2], psi="none")
        >>> space = ip.hidden_spaces(net)["0"]
        >>> Change("grow").insert(space, 2).apply()
        >>> net.widths
        [4, 5, 2]
    """

    def __init__(self, op: str = "change", optimizer: Optimizer | None = None) -> None:
        self.op = op
        self.optimizer = optimizer
        self.steps: list[Any] = []
        self._widths: dict[int, int] = {}
        self._checked: set[int] = set()

    # -- planning -----------------------------------------------------------------------------
    def _width(self, space: HiddenSpace) -> int:
        if id(space) not in self._widths:
            self._widths[id(space)] = space.size
        return self._widths[id(space)]

    def rotate(self, space: HiddenSpace, r: Tensor | ostate.OrthogonalMap, *,
               check_orthogonal: bool = True) -> Change:
        """Plan a change of basis of ``space`` by orthogonal ``r``: a dense matrix (``(n, n)``)
        or an :class:`~isoplastic.core.optim_state.OrthogonalMap` of size ``n`` (such as
        :class:`~isoplastic.core.optim_state.Reflectors`).

        ``check_orthogonal=False`` skips the ``O(n³)`` orthogonality test for matrices the library
        computed itself from a decomposition (shape and finiteness are still checked)."""
        n = self._width(space)
        where = f"{self.op}: {space.name}"
        rot = r if isinstance(r, ostate.OrthogonalMap) else None
        if rot is None:
            if not isinstance(r, Tensor) or r.dim() != 2 or tuple(r.shape) != (n, n):
                shape = tuple(r.shape) if isinstance(r, Tensor) else type(r).__name__
                raise TopologyError(f"{self.op}: R has shape {shape}; {space.name} has {n} "
                                    f"coordinates, so pass an orthogonal matrix of shape "
                                    f"({n}, {n})")
            rot = ostate.Rotation(r)
        elif rot.n != n:
            raise TopologyError(f"{self.op}: the {type(rot).__name__} map has size {rot.n}; "
                                f"{space.name} has {n} coordinates, so build one of size {n}")
        if not all(x.is_floating_point() for x in rot.tensors()):
            dtype = next(x.dtype for x in rot.tensors() if not x.is_floating_point())
            raise TopologyError(f"{where}: R has dtype {dtype}; pass a floating-point matrix")
        if not all(all_finite(x) for x in rot.tensors()):
            raise TopologyError(f"{where}: R holds NaN or Inf")
        if check_orthogonal:
            r = rot.dense()
            err, tol = orthogonality_error(r.to(torch.float64)), ortho_tolerance(r)
            if err > tol:
                raise TopologyError(
                    f"{where}: R is not orthogonal (max |RᵀR − I| = {err:.3g} > {tol:.3g} for "
                    f"{r.dtype}); build one with {rot.how_to_build}"
                )
        self.steps.append(_Rotate(space, rot))
        return self

    def insert(self, space: HiddenSpace, n: int,
               init: dict[str, Callable[[torch.Size], Tensor]] | None = None, *,
               newborn: str = "zero") -> Change:
        """Plan appending ``n`` coordinates to ``space``.

        ``init`` maps an axis role (``"outgoing"``…) to a function of the new slice's shape (the
        tensor's shape with ``dim`` of size ``n``) returning its values; other axes get zeros.
        Optimizer state: first moments zero, second moments by ``newborn`` (``"zero"``, the
        default; ``"population"``: the median of the existing coordinates), see
        :class:`~isoplastic.core.optim_state.Insertion`."""
        n = positive_int(n, self.op)
        if newborn not in ostate.NEWBORN_STATES:
            raise TopologyError(f"{self.op}: newborn={newborn!r}; choose one of "
                                f"{ostate.NEWBORN_STATES}")
        width = self._width(space)
        self.steps.append(_Insert(space, int(n), init, newborn))
        self._widths[id(space)] = width + int(n)
        return self

    def remove(self, space: HiddenSpace, indices: Sequence[int] | Tensor) -> Change:
        """Plan deleting coordinates ``indices`` of ``space`` (at least one must remain)."""
        width = self._width(space)
        drop = integer_positions(indices, f"{self.op}: {space.name}", width)
        if not drop:
            raise TopologyError(f"{self.op}: {space.name}: no indices to remove")
        if len(drop) >= width:
            raise TopologyError(
                f"{self.op}: {space.name} has {width} coordinates, and removing {len(drop)} would "
                f"disconnect it; keep at least one (remove at most {width - 1})"
            )
        mask = torch.ones(width, dtype=torch.bool)
        mask[drop] = False
        self.steps.append(_Remove(space, torch.nonzero(mask).flatten(), drop))
        self._widths[id(space)] = width - len(drop)
        return self

    def assign(self, target: Tensor, value: Tensor) -> Change:
        """Plan replacing the values of parameter or buffer ``target`` by ``value`` (the shape
        ``target`` will have at that step). Gradient and optimizer state are left alone."""
        if not isinstance(value, Tensor) or not all_finite(value):
            raise NonFiniteError(f"{self.op}: the new value of a tensor of shape "
                                 f"{tuple(target.shape)} holds NaN or Inf; nothing was changed")
        self.steps.append(_Assign(target, value.detach()))
        return self

    def fold(self, space: HiddenSpace, compute: Callable[[Any], list[tuple[Any, Any]]]
             ) -> Change:
        """Plan a compensation computed when it runs from ``space``'s block (see
        :class:`_Fold`); ``space`` must belong to a block (``space.block``)."""
        if space.block is None or space.index is None:
            raise TopologyError(f"{self.op}: {space.name} belongs to no block; a compensation "
                                "reads the block's hidden layer")
        self.steps.append(_Fold(space, compute))
        return self

    # -- validation ---------------------------------------------------------------------------
    def spaces(self) -> list[HiddenSpace]:
        seen: dict[int, HiddenSpace] = {}
        for s in self.steps:
            if isinstance(s, (_Rotate, _Insert, _Remove, _Fold)):
                seen.setdefault(id(s.space), s.space)
        return list(seen.values())

    def params(self) -> list[Tensor]:
        """Every parameter a coordinate step moves (each once)."""
        seen: dict[int, Tensor] = {}
        for space in self.spaces():
            for p in space.params():
                seen.setdefault(id(p), p)
        return list(seen.values())

    def validate_space(self, space: HiddenSpace, *, state: bool = True) -> Change:
        """Check now what :meth:`validate` would check for ``space``: every attached tensor
        finite, its intrinsic length finite, and the optimizer's state of its parameters
        transportable. Operations call it before decomposing a weight, so that a NaN is reported
        as such and not as a failed SVD. ``state=False`` checks only the model's tensors and the
        optimizer's class (a read-only pass such as a count; each change still checks the state
        it moves when it is applied)."""
        space.check_finite()
        act = space.activation
        if act is not None and not math.isfinite(act.o):
            raise NonFiniteError(f"{self.op}: {space.name} has intrinsic length {act.o}; "
                                 "restore the model from a checkpoint first")
        ostate.check_transportable(self.optimizer, space.params() if state else [])
        if state:
            self._checked.add(id(space))
        return self

    def validate(self) -> None:
        """Check what can only be checked against the model's current state, for every space not
        yet checked by :meth:`validate_space`: finiteness of the tensors the plan reads, the
        intrinsic lengths, and the optimizer's state. (Shapes, indices and matrices were checked
        when each step was planned.)"""
        for space in self.spaces():
            if id(space) not in self._checked:
                self.validate_space(space)
        for s in self.steps:
            if isinstance(s, _Fold):  # the tensors a compensation adds to must be finite too
                layer = s.space.block.hidden_layer(s.space.index)
                for t in (layer.next_psi, layer.next_bias):
                    if t is not None and not all_finite(t):
                        raise NonFiniteError(
                            f"{self.op}: the ψ vector or bias after {s.space.name} holds NaN or "
                            "Inf; a removal would fold into it. Restore the model from a "
                            "checkpoint first")
        resized = {id(s.space): s.space for s in self.steps if isinstance(s, (_Insert, _Remove))}
        check_resizable([p for sp in resized.values() for p in sp.params()], self.op)
        extra = [s.target for s in self.steps if isinstance(s, _Assign)]
        check_optimizer_matches(self.optimizer, self.params() + extra, self.op)

    # -- application --------------------------------------------------------------------------
    def _touch(self, journals: list[Journal]) -> None:
        for j in journals:
            for space in self.spaces():
                j.record_block(space.block)
                for p in space.params():
                    j.record(p, self.optimizer)
            for s in self.steps:
                if isinstance(s, _Assign):
                    j.record(s.target, self.optimizer)
                elif isinstance(s, _Fold):
                    layer = s.space.block.hidden_layer(s.space.index)
                    for t in (layer.next_psi, layer.next_bias):
                        if t is not None:
                            j.record(t, self.optimizer)
                    act = layer.activation
                    for t in list(act.parameters()) + list(act.buffers()):
                        j.record(t, self.optimizer, copy=True)

    def apply(self) -> None:
        """Validate, then run every step; on any failure restore everything and re-raise."""
        with full_precision():
            self._apply()

    def _apply(self) -> None:
        self.validate()
        twins = self._mirrored()
        for twin in twins:
            twin.validate()
        journal = Journal()
        journals = [journal, *_open_journals()]
        for change in (self, *twins):
            change._touch(journals)
        try:
            for change in (self, *twins):
                for s in change.steps:
                    change._run(s)
            for change in (self, *twins):
                for block in {id(sp.block): sp.block for sp in change.spaces()
                              if sp.block is not None}.values():
                    block.check_invariants()
        except BaseException:
            journal.rollback()
            raise

    def _mirrored(self) -> list[Change]:
        """The same change planned on every mirror of the touched blocks (see
        :func:`~isoplastic.mirror`): the same rotations, insertions (with the same initial
        values) and removals, and the compensations computed from each mirror's own tensors.
        Assignments computed from this model's values (a full diagonalisation's exact zeros)
        are not replayed: the mirror keeps its own rotated weight, which computes the same."""
        by_twin: dict[int, Change] = {}
        spaces: dict[tuple[int, int], HiddenSpace] = {}

        def twin_space(twin: nn.Module, space: HiddenSpace) -> HiddenSpace:
            key = (id(twin), id(space))
            if key not in spaces:
                if space.index is not None:
                    spaces[key] = twin.hidden_space(space.index)
                elif space.name == "input":
                    spaces[key] = twin.input_space()
                else:
                    spaces[key] = twin.output_space()
            return spaces[key]

        for s in self.steps:
            if not isinstance(s, (_Rotate, _Insert, _Remove, _Fold)):
                continue
            space = s.space
            for twin in mirrors_of(space.block):
                change = by_twin.setdefault(id(twin), Change(f"{self.op} (mirror)", None))
                ts = twin_space(twin, space)
                if isinstance(s, _Rotate):
                    change.rotate(ts, s.rot, check_orthogonal=False)
                elif isinstance(s, _Insert):
                    change.insert(ts, s.n, newborn=s.newborn)
                    change.steps[-1].source = s
                elif isinstance(s, _Remove):
                    change.remove(ts, s.drop)
                elif isinstance(s, _Fold):
                    change.fold(ts, s.compute)
        return list(by_twin.values())

    def _run(self, s: Any) -> None:
        if isinstance(s, _Rotate):
            s.space.apply_map(s.rot, self.optimizer)
        elif isinstance(s, _Insert):
            if s.source is not None:
                by_index = dict(s.source.values or {})
            else:
                by_index = {}
                for i, a in enumerate(s.space.axes):
                    if s.init and a.role in s.init:
                        shape = list(a.param.shape)
                        shape[a.dim] = s.n
                        by_index[i] = s.init[a.role](torch.Size(shape))
            s.values = by_index
            s.space.apply_map(ostate.Insertion(s.n, s.newborn), self.optimizer, by_index)
        elif isinstance(s, _Fold):
            for target, value in s.compute(s.space.block.hidden_layer(s.space.index)):
                if isinstance(target, Tensor):
                    if not all_finite(value):
                        raise NonFiniteError(f"{self.op}: a compensation came out NaN or Inf "
                                             "(overflow); nothing was changed")
                    replace_values(target, value.to(dtype=target.dtype, device=target.device))
                else:
                    if not math.isfinite(float(value)):
                        raise NonFiniteError(f"{self.op}: an intrinsic length came out {value} "
                                             "(NaN or Inf); nothing was changed")
                    target.o = float(value)
        elif isinstance(s, _Remove):
            s.space.apply_map(ostate.Removal(s.keep), self.optimizer)
        elif isinstance(s, _Assign):
            t = s.target
            if tuple(s.value.shape) != tuple(t.shape):
                raise TopologyError(f"{self.op}: a tensor of shape {tuple(t.shape)} cannot take a "
                                    f"value of shape {tuple(s.value.shape)}")
            replace_values(t, s.value.to(dtype=t.dtype, device=t.device, copy=True))
        else:  # pragma: no cover - the step methods build only the kinds above
            raise TypeError(f"unknown step {s!r}")

    # -- printing -----------------------------------------------------------------------------
    def __str__(self) -> str:
        lines = [f"{self.op} ({len(self.steps)} step{'s' * (len(self.steps) != 1)}):"]
        for s in self.steps:
            if isinstance(s, _Rotate):
                lines.append(f"  rotate {s.space.name} by {s.rot.describe()}")
            elif isinstance(s, _Insert):
                lines.append(f"  insert {s.n} coordinate(s) into {s.space.name}")
            elif isinstance(s, _Remove):
                lines.append(f"  remove coordinates {s.drop} of {s.space.name}")
            elif isinstance(s, _Assign):
                lines.append(f"  assign a tensor {tuple(s.target.shape)}")
            else:
                lines.append(f"  fold the removed coordinates into the tensors after {s.space.name}")
            if isinstance(s, (_Rotate, _Insert, _Remove)):
                lines.extend(f"    {a}" for a in s.space.axes)
        return "\n".join(lines)

    __repr__ = __str__
