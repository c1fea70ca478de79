"""Reliability tests run single-threaded: tiny float64 networks are several times faster on one
thread than on two contended ones (CI has 2 shared cores), and results do not depend on it."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
