"""Records of structural changes, for logs and reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class StructuralChange:
    """One applied structural change.

    Attributes:
        op: ``"neurogenesis"``, ``"neurodegeneration"``, ``"add_inputs"``…
        layer: hidden layer index (``None`` for input/output resizing).
        n: number of neurons (or coordinates) added or removed.
        width_before, width_after: the width of that space.
        removed_singular_values: singular values of the removed neurons (neurodegeneration).
        removed_bias: their biases ``b*`` in the diagonal basis (folded into ``o`` and ψ).
        predicted_bound: an upper bound on the change of the next pre-activation per unit
            ``‖h_{k-1}‖``: ``Σσ* · (‖W*‖ + ‖W_{k+1}‖)`` (0 for an exact change).
    """

    op: str
    layer: int | None
    n: int
    width_before: int
    width_after: int
    removed_singular_values: list[float] = field(default_factory=list)
    removed_bias: list[float] = field(default_factory=list)
    predicted_bound: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)
