r"""Topology policies: the thresholded scaffold buffer and width targets (paper-notes §10).

:func:`neuroadapt` keeps, in every hidden layer, exactly ``S`` *scaffold* neurons whose strength
(singular value) is at most ``τ``: with ``c = #{i : σ_i ≤ τ}`` it adds ``S − c`` neurons
(neurogenesis, exact) when ``c < S`` and removes the ``c − S`` weakest (neurodegeneration) when
``c > S``. Capacity grows when scaffolds are recruited (their σ rises above τ) and shrinks when
neurons fall silent. Layers are visited from the last hidden layer to the first (a ψ increment
made by a removal in layer ``k`` lives in layer ``k+1``'s pre-activation, and must not be
discarded by a later removal there; paper-notes §6.3).

Changing layer ``k`` adds or removes columns of ``W_{k+1}``, which moves ``W_{k+1}``'s singular
values a little; when that carries one across τ, the pass is repeated (at most ``max_passes``
times) so the postcondition — exactly ``S`` strengths ≤ τ in every layer — holds on return.
The paper's code makes a single pass.

Growth skips the paper's left diagonalisation before appending scaffolds (the default of
:func:`~isoplastic.neurogenesis`): exactness does not need it (a zero row is silent in any
basis) and without the rotation the growth is exact to the bit, in float32 too. Removals still
diagonalise first, which also restores the ordering.

Counts are certified (:mod:`.spectra`): each layer's spectrum is tracked between passes, and a
pass over layers whose weights moved less than their strengths' distance to τ (Weyl's
inequality with a Frobenius-norm bound of the change) makes no decomposition at all; other
layers are counted by the float64 Gram route. The decisions are those of the ``svdvals`` counts.

Policies for the trainer follow :class:`AbstractPolicy`: one call per epoch that receives the
network, the optimizer and the epoch and returns the changes it made.

On a composite model (any module holding isoplastic blocks) :func:`neuroadapt` visits every
block, each from its last hidden layer to its first, and names each change's space as
:func:`~isoplastic.hidden_spaces` does.

Every policy takes an optional ``guard``: a callable that receives each individual
:class:`StructuralChange` right after it was applied, inside its own
:func:`~isoplastic.transaction`. If the guard raises :class:`ChangeRefused`, that single change is
rolled back exactly (model and optimizer), recorded as refused and the policy goes on with the
next layer (a refused layer is not revisited by later passes of :func:`neuroadapt`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.change import Change, operation, transaction
from ..core.model import IsoplasticBlock, hidden_spaces, resolve, resolve_all, space_name
from ..errors import IsoplasticError, TopologyError
from ..ops.diagonalise import singular_values
from . import spectra as _spectra
from .grow import neurogenesis
from .record import StructuralChange
from .shrink import neurodegeneration, remove_weakest
from .spectra import strength_count as strength_count


class ChangeRefused(IsoplasticError):
    """Raised by a policy guard to refuse (and roll back) one structural change.

    Attributes:
        change: the refused :class:`StructuralChange` (filled in by the policy when missing).
        info: optional details from the guard (e.g. the measured function change).
    """

    def __init__(self, message: str = "structural change refused",
                 change: StructuralChange | None = None, info: dict | None = None) -> None:
        super().__init__(message)
        self.change = change
        self.info = dict(info or {})


Guard = Callable[[StructuralChange], None]


def _guarded(guard: Guard | None, apply: Callable[[], StructuralChange | None],
             refused: list[StructuralChange] | None) -> StructuralChange | None:
    """Run ``apply`` and then ``guard`` in one transaction; ``None`` when the guard refused."""
    if guard is None:
        return apply()
    change: StructuralChange | None = None
    try:
        with transaction():
            change = apply()
            if change is not None:
                guard(change)
    except ChangeRefused as exc:
        if exc.change is None:
            exc.change = change
        if refused is not None and exc.change is not None:
            refused.append(exc.change)
        return None
    return change


@operation
def _named(apply: Callable[[], StructuralChange | None], name: str
           ) -> Callable[[], StructuralChange | None]:
    """``apply`` whose record carries the space's full name (the guard sees it too)."""
    def run() -> StructuralChange | None:
        change = apply()
        if change is not None:
            change.space = name
        return change
    return run


def neuroadapt(net: nn.Module, scaffold: int = 2, threshold: float = 0.1,
               optimizer: torch.optim.Optimizer | None = None, *, init_scale: float = 0.01,
               generator: torch.Generator | None = None, max_passes: int = 4,
               layers: Sequence[int | str] | None = None, guard: Guard | None = None,
               refused: list[StructuralChange] | None = None,
               newborn: str = "zero", diagonalise: bool = True) -> list[StructuralChange]:
    """Keep ``scaffold`` neurons with strength ``≤ threshold`` in every hidden layer.

    Args:
        net: an isoplastic block, or any module holding blocks (every block is visited).
        scaffold: ``S``, the number of near-silent neurons to keep per layer (paper default 2;
            the task experiment uses 5).
        threshold: ``τ`` (paper default 0.1; the task experiment uses 0.95).
        optimizer: transported through every change.
        init_scale, generator: outgoing-weight initialisation of new neurons.
        max_passes: repeat the last-to-first pass until no layer changes, at most this often
            (default 4).
        layers: restrict to these hidden layers (indices of a bare block, or names from
            :func:`~isoplastic.hidden_spaces`; default: all).
        guard: called with each individual change right after it is applied (inside its own
            transaction); raising :class:`ChangeRefused` rolls that change back, and the layer
            is not visited again by later passes.
        refused: if given, the changes refused by the guard are appended to it.
        newborn: second-moment optimizer state of new neurons (see
            :func:`~isoplastic.neurogenesis`).
        diagonalise: removals leave the kept neurons in the left singular basis, the paper's
            procedure (default); ``False`` rotates only the removed directions out, by
            Householder reflectors, at a fraction of the cost. Each removal's decision, record
            and function are the same either way, but the kept neurons' basis is not, and an
            optimizer with per-coordinate state (Adam, RMSprop…) trains differently from there
            (see :func:`~isoplastic.neurodegeneration`).

    Returns:
        the list of applied :class:`StructuralChange` records, in the order applied.
    """
    if isinstance(scaffold, bool) or not isinstance(scaffold, int) or scaffold < 0:
        raise TopologyError(f"neuroadapt: scaffold={scaffold!r} must be an integer >= 0")
    if not threshold >= 0:
        raise TopologyError(f"neuroadapt: threshold={threshold!r} must be >= 0")
    found = resolve_all(net, "neuroadapt")
    check = Change("neuroadapt", optimizer)
    for _, block in found:  # what the counts read; each change checks the state it moves
        for k in range(block.n_hidden):
            check.validate_space(block.hidden_space(k), state=False)
    chosen: dict[int, set[int]] | None = None
    if layers is not None:
        chosen = {}
        for key in layers:
            block, k, _ = resolve(net, key, "neuroadapt")
            chosen.setdefault(id(block), set()).add(k)
    changes: list[StructuralChange] = []
    with transaction():
        for prefix, block in reversed(found):
            if chosen is not None and id(block) not in chosen:
                continue
            ks = range(block.n_hidden) if chosen is None else chosen[id(block)]
            changes += _adapt_block(block, prefix, sorted(ks, reverse=True), scaffold,
                                    threshold, optimizer, init_scale, generator, max_passes,
                                    guard, refused, newborn, diagonalise)
    return changes


def _adapt_block(block: IsoplasticBlock, prefix: str, order: list[int], scaffold: int,
                 threshold: float,
                 optimizer: torch.optim.Optimizer | None, init_scale: float,
                 generator: torch.Generator | None, max_passes: int, guard: Guard | None,
                 refused: list[StructuralChange] | None, newborn: str, diagonalise: bool
                 ) -> list[StructuralChange]:
    """:func:`neuroadapt` on one block, visiting ``order`` (last layer first) until stable.
    Each change is named as :func:`~isoplastic.hidden_spaces` names it (``prefix``) before the
    guard sees it."""
    changes: list[StructuralChange] = []
    blocked: set[int] = set()
    spectra = _spectra.tracked(block)
    for _ in range(max_passes):
        changed = False
        for k in order:
            if k in blocked:
                continue
            c, width = _scaffold_count(block, k, threshold)
            apply = None
            if c < scaffold:
                def apply(k=k, n=scaffold - c):
                    return neurogenesis(block, k, n, optimizer, init_scale=init_scale,
                                        generator=generator, diagonalise=False,
                                        newborn=newborn)
            elif c > scaffold:
                n = min(c - scaffold, width - 1)
                if n > 0:
                    def apply(k=k, n=n):
                        return _removal(block, k, n, optimizer, diagonalise)
            change = None
            if apply is not None:
                change = _guarded(guard, _named(apply, space_name(prefix, k)), refused)
            if k in spectra:
                spectra[k].gram = None  # only a removal decided in this visit may use it
            if apply is None:
                continue
            if change is None:
                blocked.add(k)
            else:
                _after_change(block, k, change)
                changes.append(change)
                changed = True
        if not changed:
            break
    return changes


def _scaffold_count(net: IsoplasticBlock, k: int, threshold: float) -> tuple[int, int]:
    """``(#{i : σ_i ≤ τ}, n_k)`` for hidden layer ``k``: the same count as
    ``(singular_values(net, k) <= threshold).sum()``, computed faster.

    The count comes from the layer's tracked spectrum when its certificate holds (a matrix equal
    to, or provably close to, the one counted last, possibly in an earlier pass; see
    :mod:`.spectra`), else from the certified Gram route, whose spectrum is then tracked.
    """
    if not FAST_COUNT:
        strengths = singular_values(net, k)
        return int((strengths <= threshold).sum()), int(strengths.shape[0])
    return _spectra.tracked_count(net, k, threshold, track=TRACK)


def _removal(net: IsoplasticBlock, k: int, n: int, optimizer: torch.optim.Optimizer | None,
             diagonalise: bool) -> StructuralChange:
    """Neurodegeneration of layer ``k``, reusing what its count computed: the Gram matrix
    ``W_k W_kᵀ`` (the basis is its eigenvectors) and ``σ_max(W_{k+1})`` (plus its error bound)
    for the bound."""
    gram = next_norm = None
    if FAST_COUNT:
        mine = _spectra.tracked(net).get(k)
        gram = mine.gram if mine is not None else None  # formed by this visit's count only
        nxt = _spectra.exact_anchor(net, k + 1) if k + 1 < net.n_hidden else None
        if nxt is not None:
            # ≥ ‖W_{k+1}‖₂ (the spectrum's error bound added); rotating or dropping columns
            # never raises it
            next_norm = nxt.sigma_max + nxt.error
    return remove_weakest(net, k, n, optimizer, gram=gram, next_norm=next_norm,
                          diagonalise=diagonalise)


def _after_change(net: IsoplasticBlock, k: int, change: StructuralChange) -> None:
    """Carry layer ``k``'s tracked spectrum through :func:`neuroadapt`'s own removal without
    a recount (:func:`.spectra.reduced`): a removal by singular value keeps the largest
    strengths, moved only by the rotation's round-off. (Growth carries the spectra itself,
    :func:`.spectra.grown`: it appends exact zero strengths.)"""
    if FAST_COUNT and change.op == "neurodegeneration":
        _spectra.reduced(net, k, change.n)


#: Count scaffolds through the certified Gram route and reuse counts of unchanged layers (set
#: False to time the plain ``svdvals`` route; the counts, hence the decisions, are the same).
FAST_COUNT = True

#: Certify counts from each layer's tracked spectrum between passes (set False to time the
#: full Gram route every time; the counts, hence the decisions, are the same).
TRACK = True


@operation
def set_width(net: nn.Module, k: int | str, width: int,
              optimizer: torch.optim.Optimizer | None = None, **grow_kwargs
              ) -> StructuralChange | None:
    """Grow (neurogenesis) or shrink (neurodegeneration) hidden layer ``k`` to ``width``.

    ``k`` is an index of a bare block or a name from :func:`~isoplastic.hidden_spaces`."""
    block, k, name = resolve(net, k, "set_width")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise TopologyError(f"set_width: width={width!r} must be a positive integer")
    space = block.hidden_space(k)
    Change("set_width", optimizer).validate_space(space)
    current = space.size
    change = None
    if width > current:
        grow_kwargs.setdefault("diagonalise", False)
        change = neurogenesis(block, k, width - current, optimizer, **grow_kwargs)
    elif width < current:
        change = neurodegeneration(block, k, current - width, optimizer)
    if change is not None:
        change.space = name
    return change


class AbstractPolicy(ABC):
    """A topology policy: called once per epoch, returns the changes it made."""

    @abstractmethod
    def __call__(self, net: nn.Module, optimizer: torch.optim.Optimizer | None,
                 epoch: int) -> list[StructuralChange]:
        """Adapt ``net`` at the end of ``epoch``."""


@dataclass
class FixedTopology(AbstractPolicy):
    """The control: never changes the network."""

    def __call__(self, net, optimizer, epoch):
        return []


@dataclass
class ScaffoldPolicy(AbstractPolicy):
    """:func:`neuroadapt` once per epoch (the paper's thresholded scaffold buffer)."""

    scaffold: int = 2
    threshold: float = 0.1
    init_scale: float = 0.01
    every: int = 1
    generator: torch.Generator | None = None
    guard: Guard | None = None
    refused: list[StructuralChange] = field(default_factory=list)
    newborn: str = "zero"
    diagonalise: bool = True

    def __call__(self, net, optimizer, epoch):
        if (epoch + 1) % self.every:
            return []
        return neuroadapt(net, self.scaffold, self.threshold, optimizer,
                          init_scale=self.init_scale, generator=self.generator,
                          guard=self.guard, refused=self.refused, newborn=self.newborn,
                          diagonalise=self.diagonalise)


@dataclass
class WidthSchedule(AbstractPolicy):
    """Move hidden layers toward per-epoch target widths, later layers first.

    ``targets[e]`` lists the target width of every hidden space after epoch ``e``, in the order of
    :func:`~isoplastic.hidden_spaces` (the last entry holds for later epochs). :meth:`linear`
    builds the paper's neuroabundance schedule.
    """

    targets: list[list[int]] = field(default_factory=list)
    init_scale: float = 0.01
    generator: torch.Generator | None = None
    guard: Guard | None = None
    refused: list[StructuralChange] = field(default_factory=list)
    newborn: str = "zero"

    def target(self, epoch: int) -> list[int]:
        return self.targets[min(epoch, len(self.targets) - 1)]

    def __call__(self, net, optimizer, epoch):
        if not self.targets:
            return []
        goal = self.target(epoch)
        names = list(hidden_spaces(net))
        if len(goal) != len(names):
            raise TopologyError(f"WidthSchedule: target {goal} names {len(goal)} layers but the "
                                f"network has {len(names)} hidden layers")
        changes = []
        with transaction():
            for name, width in reversed(list(zip(names, goal, strict=True))):
                key: int | str = int(name) if name.isdigit() else name
                def apply(key=key, width=width):
                    return set_width(net, key, width, optimizer, init_scale=self.init_scale,
                                     generator=self.generator, newborn=self.newborn)
                ch = _guarded(self.guard, apply, self.refused)
                if ch is not None:
                    changes.append(ch)
        return changes

    @classmethod
    def linear(cls, start: Sequence[int], target: Sequence[int], hold_start: int,
               ramp: int, hold_end: int) -> WidthSchedule:
        """``hold_start`` epochs at ``start``, ``ramp`` epochs of linear steps, then ``target``
        (with ``ramp=0``, ``target`` right after ``hold_start``)."""
        if len(start) != len(target):
            raise TopologyError(f"WidthSchedule.linear: start has {len(start)} widths but target has "
                                f"{len(target)}; give one width per hidden space in both")
        steps = []
        for e in range(hold_start + ramp + hold_end):
            t = min(max(e - hold_start + 1, 0), ramp) / ramp if ramp else float(e >= hold_start)
            steps.append([round(a + (b - a) * t) for a, b in zip(start, target, strict=True)])
        return cls(targets=steps)
