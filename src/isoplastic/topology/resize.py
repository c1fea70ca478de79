"""Input and output resizing, for appending and removing tasks (paper-notes §11).

* :func:`add_inputs`: zero columns in ``W_0`` — exact, the new inputs are ignored until trained.
* :func:`remove_inputs`: delete columns of ``W_0`` (exact if those inputs are zero or their
  columns are).
* :func:`add_outputs`: zero rows of the last weight, zero bias and ψ entries — existing logits
  unchanged; new logits start at 0.
* :func:`remove_outputs`: delete output rows; the remaining logits are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.change import Change, integer_positions, operation, positive_int
from ..core.model import IsoplasticBlock, require_blocks
from ..core.space import HiddenSpace
from ..errors import TopologyError
from .record import StructuralChange


def _bare_block(net: nn.Module, op: str) -> IsoplasticBlock:
    """``net`` itself as a block: input and output widths belong to a bare block (inside a
    composite model they are tied to the user's own layers)."""
    found = require_blocks(net, op)
    block = found.get("")
    if block is None:
        raise TopologyError(
            f"{op}: {type(net).__name__} is a composite model; {op} resizes the inputs or outputs "
            f"of an isoplastic block itself, whose neighbours it cannot see. Call it on the block "
            f"(one of {', '.join(repr(n) for n in found)}) and resize its neighbours to match"
        )
    return block


def _resize(space: HiddenSpace, op: str, n: int | None, indices: Sequence[int] | None,
            optimizer: torch.optim.Optimizer | None) -> StructuralChange:
    change = Change(op, optimizer).validate_space(space)
    width = space.size
    if indices is None:
        n = positive_int(n, op)
        change.insert(space, n)
        after = width + n
    else:
        idx = integer_positions(indices, op, width)
        if not idx:
            raise TopologyError(f"{op}: indices {list(indices)} must lie in 0..{width - 1}")
        if len(idx) >= width:
            raise TopologyError(f"{op}: cannot remove all {width} coordinates")
        change.remove(space, idx)
        after, n = width - len(idx), len(idx)
    change.apply()
    return StructuralChange(op=op, layer=None, n=n, width_before=width, width_after=after)


@operation
def add_inputs(net: nn.Module, n: int, optimizer: torch.optim.Optimizer | None = None
               ) -> StructuralChange:
    """Append ``n`` input features (zero columns of the first weight)."""
    return _resize(_bare_block(net, "add_inputs").input_space(), "add_inputs", n, None, optimizer)


@operation
def remove_inputs(net: nn.Module, indices: Sequence[int],
                  optimizer: torch.optim.Optimizer | None = None) -> StructuralChange:
    """Delete the input features ``indices`` (columns of the first weight)."""
    return _resize(_bare_block(net, "remove_inputs").input_space(), "remove_inputs", None,
                   indices, optimizer)


@operation
def add_outputs(net: nn.Module, n: int, optimizer: torch.optim.Optimizer | None = None
                ) -> StructuralChange:
    """Append ``n`` outputs (zero rows, bias and ψ entries); existing logits are unchanged."""
    return _resize(_bare_block(net, "add_outputs").output_space(), "add_outputs", n, None,
                   optimizer)


@operation
def remove_outputs(net: nn.Module, indices: Sequence[int],
                   optimizer: torch.optim.Optimizer | None = None) -> StructuralChange:
    """Delete the outputs ``indices``; the remaining logits are unchanged."""
    return _resize(_bare_block(net, "remove_outputs").output_space(), "remove_outputs", None,
                   indices, optimizer)
