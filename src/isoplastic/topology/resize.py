"""Input and output resizing, for appending and removing tasks (paper-notes §11).

* :func:`add_inputs`: zero columns in ``W_0`` — exact, the new inputs are ignored until trained.
* :func:`remove_inputs`: delete columns of ``W_0`` (exact if those inputs are zero or their
  columns are).
* :func:`add_outputs`: zero rows of the last weight, zero bias and ψ entries — existing logits
  unchanged; new logits start at 0.
* :func:`remove_outputs`: delete output rows; the remaining logits are unchanged.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

import torch

from ..core.space import HiddenSpace, HiddenSpaceModel, transaction
from ..errors import TopologyError
from ..ops._common import prepare, require_count, require_model
from .record import StructuralChange


def _integer_indices(indices: object, op: str, width: int) -> list[int]:
    """Sorted distinct positions; anything but integers is refused.

    ``int(i)`` used to accept ``0.5`` (removing position 0) and failed on ``"a"`` with a bare
    ``ValueError``; a bare integer failed with ``TypeError: 'int' object is not iterable``."""
    if isinstance(indices, torch.Tensor):
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise TopologyError(f"{op}: indices must be integers, got a {indices.dtype} tensor")
        values: list[object] = indices.flatten().tolist()
    elif isinstance(indices, (str, bytes)) or not isinstance(indices, Iterable):
        raise TopologyError(f"{op}: indices={indices!r} must be a sequence of integer positions "
                            f"in 0..{width - 1}, e.g. [0]")
    else:
        values = list(indices)
    out = set()
    for i in values:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise TopologyError(f"{op}: index {i!r} is not an integer; pass integer positions in "
                                f"0..{width - 1}")
        out.add(int(i))
    return sorted(out)


def _resize(net: HiddenSpaceModel, space: HiddenSpace, op: str, n: int | None,
            indices: Sequence[int] | None, optimizer) -> StructuralChange:
    prepare(net, op, None, optimizer, indexed=False, spaces=lambda: [space])
    width = space.size
    with transaction(net, optimizer):  # type: ignore[arg-type]
        if indices is None:
            require_count(n, op)
            space.insert(n, optimizer)
            after = width + n
        else:
            idx = _integer_indices(indices, op, width)
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
