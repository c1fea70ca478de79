r"""The model contract: what a module declares so that every operation works on it.

An *isoplastic block* (:class:`IsoplasticBlock`) is an ``nn.Module`` that owns a chain of
isotropic hidden spaces and declares them: how many (:attr:`~IsoplasticBlock.n_hidden`), the axes
of each (:meth:`~IsoplasticBlock.hidden_space`), the view the structural operations read
(:meth:`~IsoplasticBlock.hidden_layer`: incoming weight, bias, outgoing map, activation, the next
layer's ψ and bias, the mean gain), and its input and output spaces. The operations use nothing
else: no attribute probing, no class tests.

A user's model is any ``nn.Module`` holding blocks anywhere in ``named_modules()``.
:func:`hidden_spaces` names every hidden space of every block: the block's qualified name, a dot,
and the hidden index (``"encoder.block2.1"``); for a bare block the names are ``"0"``, ``"1"``, ….
Every operation takes such a name, or an ``int`` for a bare block.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from torch import Tensor, nn

from ..errors import TopologyError
from .change import add_mirror, remove_mirror
from .space import HiddenSpace


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
        fold_into_bias: a removal folds ``mean_gain · W_D b*`` into ``next_bias`` (ψ mode
            ``"expectation"``) when there is no ``next_psi``.
    """

    space: HiddenSpace
    incoming: Tensor
    bias: Tensor
    outgoing: Tensor
    activation: nn.Module
    next_psi: Tensor | None
    next_bias: Tensor
    mean_gain: float | None
    fold_into_bias: bool = False

    def incoming_matrix(self) -> Tensor:
        """The incoming weight as a matrix ``(n_k, fan_in)``."""
        return self.incoming.detach().reshape(self.incoming.shape[0], -1)


class IsoplasticBlock(nn.Module, ABC):
    """Abstract base of every module that declares isotropic hidden spaces.

    Subclasses implement every abstract member; a missing one fails at construction, not later
    inside an operation. :class:`~isoplastic.nn.chain.AffineChain` implements all of them for
    chains of affine maps (the MLP and the CNN); a new block type (a residual branch, a
    transformer's FFN) subclasses it or this class.
    """

    @property
    @abstractmethod
    def n_hidden(self) -> int:
        """Number of hidden (isotropic) spaces, indexed ``0..n_hidden-1``."""

    @abstractmethod
    def hidden_space(self, k: int) -> HiddenSpace:
        """The axes of hidden space ``k`` (with ``block=self``, ``index=k``)."""

    @abstractmethod
    def hidden_layer(self, k: int) -> HiddenLayer:
        """The view of hidden layer ``k`` read by neurogenesis and neurodegeneration."""

    @abstractmethod
    def input_space(self) -> HiddenSpace:
        """Axes indexed by the block's input features."""

    @abstractmethod
    def output_space(self) -> HiddenSpace:
        """Axes indexed by the block's outputs."""

    @abstractmethod
    def sync_shapes(self) -> None:
        """Refresh derived size attributes (``in_features``…) from the weight shapes."""

    @abstractmethod
    def check_invariants(self) -> None:
        """Refresh sizes and raise :class:`TopologyError` if consecutive layers disagree."""

    def can_full_diagonalise(self, k: int) -> bool:
        """Whether hidden layer ``k``'s incoming map is a plain matrix between spaces ``k−1`` and
        ``k`` (dense, or a 1×1 kernel), so that :func:`~isoplastic.full_diagonalise` applies."""
        return 1 <= k < self.n_hidden and (
            self.hidden_layer(k).incoming_matrix().shape[1] == self.hidden_space(k - 1).size)

    def sparsity_closed_form(self) -> float | None:
        """The zeroed weight fraction :func:`~isoplastic.sparsify` reaches, when a closed form is
        known for this block (``None`` otherwise)."""
        return None


#: Older name of the contract, kept for imports written against it.
HiddenSpaceModel = IsoplasticBlock


def unwrap(model: nn.Module) -> nn.Module:
    """The module ``torch.compile`` wrapped (its spaces are the original's), else ``model``."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # loaded if anything was compiled
    if eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
        return model._orig_mod
    return model


def blocks(model: nn.Module) -> dict[str, IsoplasticBlock]:
    """Every :class:`IsoplasticBlock` in ``model.named_modules()``, by qualified name
    (``""`` for the model itself), in module order. A ``torch.compile``'d model is read through
    to the module it compiled (and recompiles after a change of shapes)."""
    if not isinstance(model, nn.Module):
        raise TopologyError(f"expected a torch.nn.Module holding isoplastic blocks; got "
                            f"{type(model).__name__}")
    model = unwrap(model)
    return {name: m for name, m in model.named_modules() if isinstance(m, IsoplasticBlock)}


def space_name(prefix: str, k: int) -> str:
    """``"prefix.k"``, or ``"k"`` for the model itself."""
    return f"{prefix}.{k}" if prefix else str(k)


def hidden_spaces(model: nn.Module) -> dict[str, HiddenSpace]:
    """Every hidden space of every isoplastic block in ``model``, by name, in order.

    The name is the owning block's qualified name in ``model.named_modules()``, a dot, and the
    hidden index (``"encoder.block2.1"``); for a bare block: ``"0"``, ``"1"``, …. Each value is
    a fresh :class:`HiddenSpace` view (its ``block`` and ``index`` say where it lives).

    Example:
        >>> import torch, isoplastic as ip
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 6), ip.IsotropicMLP([6, 5, 4, 3]))
        >>> list(ip.hidden_spaces(model))
        ['1.0', '1.1']
    """
    out: dict[str, HiddenSpace] = {}
    for prefix, block in blocks(model).items():
        for k in range(block.n_hidden):
            out[space_name(prefix, k)] = block.hidden_space(k)
    return out


def check_layer_index(net: IsoplasticBlock, k: int, op: str, lo: int) -> None:
    """Raise :class:`TopologyError` unless ``lo ≤ k ≤ n_hidden − 1``."""
    hi = net.n_hidden - 1
    if not isinstance(k, int) or isinstance(k, bool) or not lo <= k <= hi:
        valid = f"{lo}..{hi}" if lo <= hi else "none (the network is too shallow)"
        raise TopologyError(
            f"{op}: hidden layer k={k!r} is out of range; this network has {net.n_hidden} hidden "
            f"layers and {op} accepts k in {valid}"
        )


def require_blocks(model: object, op: str) -> dict[str, IsoplasticBlock]:
    """The blocks of ``model``; :class:`TopologyError` if it declares no hidden spaces."""
    found = blocks(model) if isinstance(model, nn.Module) else {}
    if not found:
        raise TopologyError(
            f"{op}: {type(model).__name__} does not declare hidden spaces; structural operations "
            "work on isoplastic.IsotropicMLP, isoplastic.IsotropicCNN, models that contain them, "
            "or modules subclassing isoplastic.core.IsoplasticBlock"
        )
    return found


def resolve(model: object, key: int | str, op: str, lo: int = 0
            ) -> tuple[IsoplasticBlock, int, str]:
    """``(block, k, name)`` of the hidden space ``key`` names in ``model``.

    ``key`` is an ``int`` for a bare block, or a name from :func:`hidden_spaces`. ``lo``
    is the smallest block-local index the operation accepts (``full_diagonalise`` needs
    ``k ≥ 1``).
    """
    found = require_blocks(model, op)
    if isinstance(key, str):
        prefix, _, idx = key.rpartition(".")
        block = found.get(prefix)
        if block is None or idx not in {str(k) for k in range(block.n_hidden)}:
            names = ", ".join(repr(n) for n in hidden_spaces(model)) or "none"  # type: ignore[arg-type]
            raise TopologyError(f"{op}: no hidden space named {key!r} in {type(model).__name__}; "
                                f"its hidden spaces are {names}")
        check_layer_index(block, int(idx), f"{op}({key!r})", lo)
        return block, int(idx), key
    model = unwrap(model)
    if isinstance(model, IsoplasticBlock):
        check_layer_index(model, key, op, lo)
        return model, key, str(key)
    names = ", ".join(repr(n) for n in hidden_spaces(model))  # type: ignore[arg-type]
    raise TopologyError(
        f"{op}: k={key!r} addresses a hidden layer of a bare isoplastic block, but "
        f"{type(model).__name__} is a composite model; name the space instead, one of {names}"
    )


def resolve_all(model: object, op: str) -> list[tuple[str, IsoplasticBlock]]:
    """``(prefix, block)`` for every block of ``model`` (``TopologyError`` if none)."""
    return list(require_blocks(model, op).items())


@dataclass
class MirrorHandle:
    """Returned by :func:`mirror`; :meth:`remove` stops the mirroring."""

    pairs: list[tuple[IsoplasticBlock, IsoplasticBlock]] = field(default_factory=list)

    def remove(self) -> None:
        for block, twin in self.pairs:
            remove_mirror(block, twin)
        self.pairs.clear()


def mirror(model: nn.Module, *copies: nn.Module) -> MirrorHandle:
    """Carry ``copies`` of ``model`` through every structural change made to ``model``.

    An exponential moving average (``torch.optim.swa_utils.AveragedModel(model)``), a teacher,
    or any list of modules of the same architecture: each change applied to one of ``model``'s
    blocks, by any operation or policy, is replayed on the matching block of every copy (blocks
    are matched in ``named_modules()`` order) in the same all-or-nothing change: the same
    rotations, the same new neurons (same initial values), the same removed coordinates, and
    each copy's own compensation (``o += Σb²``, ``ψ += W_D b*`` from its own weights). Each copy
    keeps computing its own function: exactly where the change is exact for it (rotations,
    growth), approximately where a removal drops coordinates that are silent in ``model`` but
    not quite in the copy.

    Returns a :class:`MirrorHandle`; ``handle.remove()`` ends the mirroring (it also ends when a
    copy is garbage-collected).

    Example:
        >>> import torch, isoplastic as ip
        >>> from torch.optim.swa_utils import AveragedModel
        >>> net = ip.IsotropicMLP([4, 6, 3])
        >>> ema = AveragedModel(net)
        >>> handle = ip.mirror(net, ema)
        >>> _ = ip.neurogenesis(net, 0, 2)
        >>> ema.module.widths
        [4, 8, 3]
    """
    mine = list(blocks(model).values())
    if not mine:
        require_blocks(model, "mirror")
    def layout(found: list[IsoplasticBlock]) -> list[tuple[str, list[int]]]:
        return [(type(b).__name__, [b.hidden_space(k).size for k in range(b.n_hidden)])
                for b in found]

    handle = MirrorHandle()
    mine_layout = layout(mine)
    for copy in copies:
        theirs = list(blocks(copy).values())
        layout_of_copy = layout(theirs)
        if mine_layout != layout_of_copy:
            handle.remove()
            raise TopologyError(
                f"mirror: {type(copy).__name__} does not have {type(model).__name__}'s blocks "
                f"(blocks and hidden widths {layout_of_copy} against {mine_layout}); mirror a copy "
                "made with copy.deepcopy(model) or AveragedModel(model)"
            )
        for block, twin in zip(mine, theirs, strict=True):
            if twin is block:
                handle.remove()
                raise TopologyError("mirror: a model cannot mirror itself")
            add_mirror(block, twin)
            handle.pairs.append((block, twin))
    return handle
