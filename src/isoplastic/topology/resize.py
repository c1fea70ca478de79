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

from ..core.space import HiddenSpace, HiddenSpaceModel, transaction
from ..errors import TopologyError
from ..ops._common import prepare, require_count, require_model
from .record import StructuralChange


def _resize(net: HiddenSpaceModel, space: HiddenSpace, op: str, n: int | None,
            indices: Sequence[int] | None, optimizer) -> StructuralChange:
    prepare(net, op, None, optimizer, spaces=[space])
    width = space.size
    with transaction(net, optimizer):  # type: ignore[arg-type]
        if indices is None:
            require_count(n, op)
            space.insert(n, optimizer)
            after = width + n
        else:
            idx = sorted({int(i) for i in indices})
            if not idx or idx[0] < 0 or idx[-1] >= width:
                raise TopologyError(f"{op}: indices {list(indices)} must lie in 0..{width - 1}")
            if len(idx) >= width:
                raise TopologyError(f"{op}: cannot remove all {width} coordinates")
            space.remove(idx, optimizer)
            after, n = width - len(idx), len(idx)
        net.check_invariants()
    return StructuralChange(op=op, layer=None, n=n, width_before=width, width_after=after)


def add_inputs(net: HiddenSpaceModel, n: int, optimizer: torch.optim.Optimizer | None = None
               ) -> StructuralChange:
    """Append ``n`` input features (zero columns of the first weight)."""
    require_model(net, "add_inputs")
    return _resize(net, net.input_space(), "add_inputs", n, None, optimizer)


def remove_inputs(net: HiddenSpaceModel, indices: Sequence[int],
                  optimizer: torch.optim.Optimizer | None = None) -> StructuralChange:
    """Delete the input features ``indices`` (columns of the first weight)."""
    require_model(net, "remove_inputs")
    return _resize(net, net.input_space(), "remove_inputs", None, indices, optimizer)


def add_outputs(net: HiddenSpaceModel, n: int, optimizer: torch.optim.Optimizer | None = None
                ) -> StructuralChange:
    """Append ``n`` outputs (zero rows, bias and ψ entries); existing logits are unchanged."""
    require_model(net, "add_outputs")
    return _resize(net, net.output_space(), "add_outputs", n, None, optimizer)


def remove_outputs(net: HiddenSpaceModel, indices: Sequence[int],
                   optimizer: torch.optim.Optimizer | None = None) -> StructuralChange:
    """Delete the outputs ``indices``; the remaining logits are unchanged."""
    require_model(net, "remove_outputs")
    return _resize(net, net.output_space(), "remove_outputs", None, indices, optimizer)
