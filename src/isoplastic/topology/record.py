"""Records of structural changes, for logs and reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class StructuralChange:
    """One applied structural change.

    Attributes:
        op: ``"neurogenesis"``, ``"neurodegeneration"``, ``"add_inputs"``…
        layer: hidden layer index inside its block (``None`` for input/output resizing).
        n: number of neurons (or coordinates) added or removed.
        width_before, width_after: the width of that space.
        removed_singular_values: singular values of the removed neurons (neurodegeneration).
        removed_bias: their biases ``b*`` in the diagonal basis (folded into ``o`` and ψ).
        predicted_bound: the input-dependent part of an upper bound on the change of the next
            pre-activation, per unit ``‖h_{k-1}‖``: ``Σσ* · (‖W*‖ + ‖W_{k+1}‖)``.
        predicted_offset: its input-independent part: ``Σ|ψ*| (‖W*‖ + ‖W_{k+1}‖)`` for
            removed ψ entries, plus ``‖b*‖ (‖W*‖ + ‖W_{k+1}‖)`` without an intrinsic length and
            ``‖W* b*‖`` without ψ vectors. The change of the next pre-activation of an input is at
            most ``predicted_bound · ‖h_{k-1}‖ + predicted_offset``; both are 0 for an exact removal.
        space: the hidden space's name in :func:`~isoplastic.hidden_spaces` (``"3"`` for a bare
            block, ``"encoder.1"`` inside a composite model).
    """

    op: str
    layer: int | None
    n: int
    width_before: int
    width_after: int
    removed_singular_values: list[float] = field(default_factory=list)
    removed_bias: list[float] = field(default_factory=list)
    predicted_bound: float = 0.0
    predicted_offset: float = 0.0
    space: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)
