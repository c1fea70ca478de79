"""Validation shared by every operation: run before anything is modified."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from ..core import optim_state as ostate
from ..core.space import HiddenSpace, HiddenSpaceModel, check_layer_index
from ..errors import TopologyError


def require_model(net: object, op: str) -> HiddenSpaceModel:
    if not isinstance(net, HiddenSpaceModel):
        raise TopologyError(
            f"{op}: {type(net).__name__} does not declare hidden spaces; structural operations "
            "work on isoplastic.IsotropicMLP, isoplastic.IsotropicCNN or models implementing "
            "isoplastic.core.HiddenSpaceModel"
        )
    return net


def require_count(n: object, op: str, what: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TopologyError(f"{op}: {what}={n!r} must be a positive integer")
    return n


def prepare(net: object, op: str, k: int | None, optimizer: torch.optim.Optimizer | None,
            spaces: Callable[[], Iterable[HiddenSpace]] | None = None, lo: int = 0,
            hi: int | None = None, indexed: bool = True) -> list[HiddenSpace]:
    """Check the model, the layer index, finiteness and the optimizer; return the spaces.

    ``spaces`` (default: hidden layer ``k``'s own space) is called only after the index check,
    so it may index the model freely. Operations on the whole model (or on its input/output
    space) pass ``indexed=False`` and ``k=None``.
    """
    model = require_model(net, op)
    if indexed:
        check_layer_index(model, k, op, lo, hi)  # type: ignore[arg-type]
    spaces = list(spaces()) if spaces is not None else [model.hidden_space(k)]  # type: ignore[arg-type]
    params = []
    for s in spaces:
        s.check_finite()
        params.extend(s.params())
    for act in getattr(model, "activations", []):
        o = act.o if hasattr(act, "o") else 0.0
        if not math.isfinite(o):
            raise TopologyError(f"{op}: an intrinsic length is {o}; restore the model first")
    ostate.check_transportable(optimizer, params)
    return spaces
