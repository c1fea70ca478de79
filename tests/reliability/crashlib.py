"""Kill a training run at a random point (SIGKILL) and resume it; shared by
``test_rel_crash.py`` (forked runs, cheap) and ``scripts/fuzz.py`` (``python -m isoplastic train``
subprocesses).

A *trial*: start ``isoplastic train ... --out RUN``, SIGKILL it after a random delay, then
``isoplastic train --resume RUN`` (or, when it died before its first checkpoint, start it again
from scratch, after checking that ``--resume`` refuses with a clear message). The trial passes
when the run directory then holds exactly the metrics and the final parameters/optimizer state
of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

TIMING_KEYS = {"train_time", "epoch_time", "wall_time"}

ARGS = ["train", "--widths", "8", "--epochs", "10", "--n-train", "80", "--batch-size", "20",
        "--seed", "1", "--scaffold", "2", "--threshold", "0.3", "--no-progress"]


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def metrics(run: Path) -> list[dict]:
    return [_strip(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]


def final_state(run: Path) -> dict:
    """Checkpoint epoch, metrics, change log, every model tensor and optimizer tensor."""
    from isoplastic.train.checkpoint import read_checkpoint_files

    meta, tensors = read_checkpoint_files(run)
    return {"epoch": meta["epoch"], "metrics": _strip(meta["metrics"]),
            "changes": _strip(meta["changes"]), "tensors": tensors}


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = final_state(a), final_state(b)
    assert sa["epoch"] == sb["epoch"]
    assert sa["metrics"] == sb["metrics"], "metrics differ from the uninterrupted run"
    assert sa["changes"] == sb["changes"], "change logs differ"
    assert sa["tensors"].keys() == sb["tensors"].keys()
    for k in sa["tensors"]:
        assert torch.equal(sa["tensors"][k], sb["tensors"][k]), f"tensor {k} differs"
    assert metrics(a) == metrics(b)


# -- process runners ------------------------------------------------------------------------

class Forked:
    """Runs the CLI in a forked child of this (already warm) interpreter: no import cost.

    The HTML/PNG report written at the end of ``train`` is replaced by a stub (it is not what
    is being tested and costs seconds of matplotlib)."""

    def __init__(self, args: list[str]) -> None:
        self.pid = os.fork()
        if self.pid == 0:  # child
            code = 1
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - (pytest capture)
                torch.set_num_threads(1)
                import isoplastic.plot.report as report

                report.write_report = lambda run_dir: Path(run_dir) / "report.md"
                from isoplastic.cli import main

                try:
                    main.main(args, standalone_mode=False)
                    code = 0
                except BaseException:  # noqa: BLE001 - exit status is the report
                    code = 1
            finally:
                os._exit(code)

    returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is not None:  # already reaped
            return self.returncode
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        self.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        return self.returncode

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float = 300) -> int:
        deadline = time.monotonic() + timeout
        while (rc := self.poll()) is None:
            if time.monotonic() > deadline:
                self.kill()
                os.waitpid(self.pid, 0)
                self.returncode = -signal.SIGKILL
                raise TimeoutError("forked run did not finish")
            time.sleep(0.01)
        return rc


class Spawned:
    """``python -m isoplastic ARGS`` in a real subprocess (what a user runs)."""

    def __init__(self, args: list[str]) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "isoplastic", *args], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    def wait(self, timeout: float = 300) -> int:
        rc = self.proc.wait(timeout=timeout)
        self.proc.stderr.close()
        return rc


@dataclass
class Trial:
    delay: float                # seconds after the run wrote its config
    killed: bool                # False: the run had already finished
    checkpoint_epoch: int | None  # epoch of the checkpoint found after the kill (None: none yet)
    lost_epochs_ok: bool
    identical: bool


def warm() -> None:
    """Import and touch, in this process, what every forked child would otherwise load itself
    (the CLI, the trainer, sklearn's digits, torch's optimizer machinery)."""
    import isoplastic.cli  # noqa: F401
    from isoplastic.data import load_dataset
    from isoplastic.train import trainer  # noqa: F401

    load_dataset("digits")
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])


def _started(run: Path, proc, timeout: float = 120) -> None:
    """Wait until the trainer has written its config (imports and data loading are done)."""
    deadline = time.monotonic() + timeout
    while not (run / "config.json").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.002)


def reference_run(root: Path, runner=Forked, args: list[str] = ARGS) -> tuple[Path, float]:
    """Run to completion; returns the run directory and the length of its training window
    (from the config file appearing to the last checkpoint being written)."""
    if runner is Forked:
        warm()
    ref = root / "reference"
    proc = runner([*args, "--out", str(ref)])
    _started(ref, proc)
    t0 = time.monotonic()
    last, t_last = None, t0
    while proc.poll() is None:
        ck = ref / "checkpoint.json"
        stamp = ck.stat().st_mtime_ns if ck.exists() else None
        if stamp != last:
            last, t_last = stamp, time.monotonic()
        time.sleep(0.002)
    assert proc.wait() == 0, "uninterrupted run failed"
    return ref, max(t_last - t0, 0.05)


def crash_trial(root: Path, ref: Path, duration: float, rng: random.Random, index: int,
                runner=Forked, args: list[str] = ARGS) -> Trial:
    """One kill-and-resume trial; raises AssertionError on any inconsistency."""
    from isoplastic.train.checkpoint import CheckpointError, load_checkpoint

    run = root / f"trial{index}"
    delay = rng.uniform(0.0, 1.1 * duration)  # from the start of training to just past its end
    proc = runner([*args, "--out", str(run)])
    _started(run, proc)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.002)
    killed = proc.poll() is None
    if killed:
        proc.kill()
    rc = proc.wait()
    assert rc in ((0, -signal.SIGKILL) if killed else (0,)), rc
    killed = rc == -signal.SIGKILL  # rc 0: it finished just before the signal arrived
    epoch = None
    if (run / "checkpoint.json").exists():
        epoch = load_checkpoint(run).epoch  # must load: saves are atomic
        lines = metrics(run) if (run / "metrics.jsonl").exists() else []
        # metrics.jsonl is written just before the checkpoint: at most one epoch ahead of it
        lost_ok = epoch <= len(lines) <= epoch + 1
        assert lost_ok, (epoch, len(lines))
        assert runner(["train", "--no-progress", "--resume", str(run)]).wait() == 0
    else:
        lost_ok = True
        if run.exists():
            try:
                load_checkpoint(run)
            except CheckpointError as exc:
                assert "no checkpoint" in str(exc)
            assert runner([*args, "--out", str(run)]).wait() == 0  # nothing to resume: restart
        else:
            assert runner([*args, "--out", str(run)]).wait() == 0
    assert_same_run(run, ref)
    return Trial(delay, killed, epoch, lost_ok, True)
