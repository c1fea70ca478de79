"""Property-based fuzzing: random architectures x random sequences of 50 structural operations
interleaved with optimizer steps (SGD momentum, Adam, AdamW). See ``fuzzlib`` for every check
made after each operation; ``scripts/fuzz.py`` runs the same engine for longer."""

from __future__ import annotations

import json
import os

import fuzzlib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isoplastic.testing.strategies import seeds

OPS_PER_SEQUENCE = 50
MLP_SEQUENCES = 10
CNN_SEQUENCES = 3

TOTAL = fuzzlib.Stats()


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    """With ISOPLASTIC_FUZZ_STATS=path, write the counts of this module's run there (used for
    the figures in docs/reliability.md)."""
    yield
    path = os.environ.get("ISOPLASTIC_FUZZ_STATS")
    if path:
        with open(path, "w") as fh:
            json.dump({"sequences": TOTAL.sequences, "operations": TOTAL.n_ops,
                       "exact_checks": TOTAL.exact_checks, "bound_checks": TOTAL.bound_checks,
                       "library_bound_exceeded": TOTAL.library_bound_exceeded,
                       "refused": sum(TOTAL.refused.values()), "roundtrips": TOTAL.roundtrips,
                       "steps": TOTAL.steps, "worst_exact": TOTAL.worst_exact,
                       "worst_bound_ratio": TOTAL.worst_bound_ratio}, fh, indent=1)


_ops = st.lists(st.sampled_from(fuzzlib.OPS), min_size=OPS_PER_SEQUENCE,
                max_size=OPS_PER_SEQUENCE)


@settings(max_examples=MLP_SEQUENCES, deadline=None)
@given(seed=seeds(), ops=_ops)
def test_mlp_survives_50_random_structural_operations_with_training(seed, ops):
    stats = fuzzlib.run_sequence(seed, ops, "mlp")
    TOTAL.merge(stats)
    assert stats.n_ops == OPS_PER_SEQUENCE
    assert stats.exact_checks + sum(stats.refused.values()) + stats.bound_checks > 0


@settings(max_examples=CNN_SEQUENCES, deadline=None)
@given(seed=seeds(), ops=_ops)
def test_cnn_survives_50_random_structural_operations_with_training(seed, ops):
    stats = fuzzlib.run_sequence(seed, ops, "cnn")
    TOTAL.merge(stats)
    assert stats.n_ops == OPS_PER_SEQUENCE


def test_fixed_seeds_cover_every_operation_optimizer_and_a_bound_check():
    """Deterministic companion of the hypothesis tests: fixed seeds that together exercise every
    operation, all three optimizers, both architectures and the removal bound."""
    total = fuzzlib.Stats()
    for seed in range(4):
        ops = list(fuzzlib.OPS) * 2
        total.merge(fuzzlib.run_sequence(seed, ops, "mlp" if seed < 3 else "cnn"))
    TOTAL.merge(total)
    assert set(total.ops) == set(fuzzlib.OPS)
    assert total.bound_checks > 0 and total.exact_checks > 0 and total.roundtrips > 0
    assert total.worst_exact <= fuzzlib.EXACT_TOL
