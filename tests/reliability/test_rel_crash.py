"""Crash safety: SIGKILL a training run at random points, resume it with ``--resume``, and get
exactly the metrics, change log, parameters and optimizer state of an uninterrupted run.

CI runs 3 trials in forked children of the (warm) test process; ``scripts/fuzz.py
--crash-trials N`` runs N trials with real ``python -m isoplastic train`` subprocesses."""

from __future__ import annotations

import os
import random

import crashlib
import pytest

CI_TRIALS = 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path):
    ref, duration = crashlib.reference_run(tmp_path)
    rng = random.Random(20260529)
    trials = [crashlib.crash_trial(tmp_path, ref, duration, rng, i) for i in range(CI_TRIALS)]
    assert all(t.identical and t.lost_epochs_ok for t in trials)
    assert any(t.killed for t in trials)
