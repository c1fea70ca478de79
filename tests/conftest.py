"""Shared fixtures: one thread, deterministic torch RNG, restored default dtype, hypothesis profile."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "isoplastic",
    deadline=None,
    max_examples=25,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# CI draws the same examples every run (a red CI names a reproducible case); local runs draw new
# ones each time, so property tests keep exploring.
settings.register_profile("ci", parent=settings.get_profile("isoplastic"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "isoplastic")


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test runs on one intra-op thread: the networks under test are tiny, and on two
    shared cores one thread is several times faster than two contended ones. Results do not
    depend on it; the setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed_and_restore_dtype():
    dtype = torch.get_default_dtype()
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(dtype)


# -- both float dtypes (e3nn's float_tolerance pattern) -----------------------------------------
# A test that takes an argument named ``float_dtype`` runs once per float dtype. The tolerance it holds
# each dtype to is stated once, in :data:`isoplastic.testing.FLOAT_TOLERANCE` (max |Δ logit| /
# max |logit|: 1e-10 for float64, 1e-5 for float32); use ``FLOAT_TOLERANCE[float_dtype]``, not a
# literal. Tests that compare two evaluations of the same formula (a fused forward against the
# textbook one) use ``reference.AGREEMENT_TOLERANCE[float_dtype]`` (1e-13 / 4e-6). This is direct
# parametrisation (not a fixture), so it also works with hypothesis (put ``float_dtype`` first when
# @given fills the other arguments by position).
FLOAT_DTYPES = (torch.float32, torch.float64)


def pytest_generate_tests(metafunc):
    if "float_dtype" in metafunc.fixturenames:
        metafunc.parametrize("float_dtype", FLOAT_DTYPES, ids=[str(d).removeprefix("torch.")
                                                         for d in FLOAT_DTYPES])
