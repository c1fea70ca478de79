"""Exception types. Every error names the problem, the value received and the fix."""

from __future__ import annotations


class IsoplasticError(Exception):
    """Base class of every error raised by isoplastic."""


class TopologyError(IsoplasticError, ValueError):
    """A structural change was asked for that the network cannot take (bad layer, width, matrix).

    Raised before anything is modified: the model and optimizer are left as they were.
    """


class UnsupportedOptimizerError(IsoplasticError, TypeError):
    """The optimizer holds per-parameter state whose transport under a change of basis is unknown."""


class NonFiniteError(IsoplasticError, ValueError):
    """A tensor that a structural change would read holds NaN or Inf."""


class OptimizerStateError(IsoplasticError, ValueError):
    """Saved optimizer state does not fit the optimizer it is loaded into (name, shape, dtype).

    Raised before anything is modified: the optimizer is left as it was.
    """
