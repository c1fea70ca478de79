"""Data-parallel training under torchrun (2 processes, gloo over 127.0.0.1) vs one process.

Each test launches ``torchrun --nproc_per_node 2 tests/distributed/ddp_worker.py train ...``
(``isoplastic train`` plus test-only hooks that dump every rank's final state or SIGKILL a rank),
with a free loopback port and bounded timeouts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from isoplastic.train import TrainConfig, Trainer, fit, load_checkpoint
from isoplastic.train.checkpoint import serialise_arms

HERE = Path(__file__).parent
WORKER = HERE / "ddp_worker.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")
TIMEOUT = 150

# Layer 0 (80 neurons on 64 inputs) has 16 silent neurons -> shrink; layer 1 (24) -> growth.
ARGS = dict(n_train=240, widths=[80, 24], batch_size=32, dtype="float64", seed=3)

# slow: each test starts torchrun with two ranks (10-16 s)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not TORCHRUN.exists() or not torch.distributed.is_available(),
                                 reason="torchrun / torch.distributed not available")]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_args(epochs: int, out: Path, control: bool) -> list[str]:
    return ["train", "--n-train", str(ARGS["n_train"]),
            "--widths", ",".join(map(str, ARGS["widths"])), "--batch-size",
            str(ARGS["batch_size"]), "--dtype", ARGS["dtype"], "--seed", str(ARGS["seed"]),
            "--epochs", str(epochs), "--out", str(out), "--no-progress",
            "--control" if control else "--no-control"]


def _config(epochs: int, control: bool) -> TrainConfig:
    return TrainConfig(epochs=epochs, control=control, **ARGS)


def _torchrun(args: list[str], tmp_path: Path, nproc: int = 2, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
               "ISOPLASTIC_DIST_TIMEOUT": "60", "OMP_NUM_THREADS": "1",
               "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", **env}
    cmd = [str(TORCHRUN), "--nnodes", "1", "--nproc_per_node", str(nproc), "--max-restarts", "0",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           str(WORKER), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=environ, capture_output=True, text=True,
                          timeout=TIMEOUT)


def _state(trainer: Trainer) -> tuple[dict[str, torch.Tensor], dict]:
    blob, arms = serialise_arms({n: a.net for n, a in trainer.arms.items()},
                                {n: a.optimizer for n, a in trainer.arms.items()})
    from safetensors.torch import load

    return load(blob), arms


def _assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], tol: float) -> float:
    assert got.keys() == want.keys()
    worst, where = 0.0, None
    for k in want:
        assert got[k].shape == want[k].shape, k
        if got[k].dtype.is_floating_point:
            d = float((got[k] - want[k]).abs().max()) if got[k].numel() else 0.0
            if d > worst:
                worst, where = d, k
        else:
            assert torch.equal(got[k], want[k]), k
    print(f"largest abs difference vs one process: {worst:.6g} ({where})")
    assert worst <= tol, f"largest difference {worst:.3g} > {tol}"
    return worst



def test_two_ranks_identical_and_match_single_process(tmp_path):
    epochs = 4
    dump = tmp_path / "dump"
    proc = _torchrun(_cli_args(epochs, tmp_path / "run", control=True), tmp_path,
                     ISOPLASTIC_TEST_DUMP=str(dump))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    # every rank: same widths, same change log, bit-identical parameters and optimizer states
    metas = [json.loads((dump / f"rank{r}.json").read_text()) for r in range(2)]
    states = [load_file(dump / f"rank{r}.safetensors") for r in range(2)]
    assert metas[0]["world_size"] == 2 and metas[0]["epoch"] == epochs
    assert metas[0]["arms"] == metas[1]["arms"]  # architectures (widths) + optimizer metadata
    assert metas[0]["changes"] == metas[1]["changes"]
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    ops = [c["op"] for c in metas[0]["changes"] if not c["refused"]]
    assert "neurogenesis" in ops and "neurodegeneration" in ops
    # SVD on identical input is bit-identical across processes on this machine (not relied on)
    assert metas[0]["svd_sha256"] == metas[1]["svd_sha256"]

    # only rank 0 wrote the run directory; its checkpoint is the ranks' common state
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.epoch == epochs and ckpt.meta["extra"]["world_size"] == 2
    assert (tmp_path / "run" / "report.md").is_file()
    assert "final test accuracy" in proc.stdout and proc.stdout.count("final test accuracy") == 1

    # one process, same global batch (--batch-size is global): equal to round-off
    single = Trainer(_config(epochs, control=True), progress=False, out=None)
    single.run()
    want, arms = _state(single)
    assert [a["architecture"]["widths"] for a in arms.values()] == \
        [a["architecture"]["widths"] for a in metas[0]["arms"].values()]
    _assert_close(states[0], want, 1e-8)
    assert [(c["op"], c["layer"], c["n"]) for c in single.changes] == \
        [(c["op"], c["layer"], c["n"]) for c in metas[0]["changes"]]
    got_metrics = [json.loads(line) for line in
                   (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(got_metrics, single.metrics, strict=True):
        assert a["widths"] == b["widths"] and a["test_accuracy"] == pytest.approx(b["test_accuracy"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-10)


def test_killed_rank_fails_run_then_resumes_on_one_process(tmp_path):
    epochs, steps_per_epoch = 4, 8  # 240 samples / global batch 32 -> 8 steps per rank
    run = tmp_path / "run"
    # rank 1 SIGKILLs itself at its 3rd step of epoch 3: epoch 2's checkpoint is complete (rank 0
    # cannot finish an all-reduce of epoch 3 before it has saved)
    proc = _torchrun(_cli_args(epochs, run, control=False), tmp_path,
                     ISOPLASTIC_TEST_KILL_RANK="1",
                     ISOPLASTIC_TEST_KILL_STEP=str(2 * steps_per_epoch + 3))
    assert proc.returncode != 0
    assert "SIGKILL" in proc.stderr or "Signal 9" in proc.stderr or "-9" in proc.stderr, \
        proc.stderr[-3000:]
    ckpt = load_checkpoint(run)
    assert ckpt.epoch == 2 and ckpt.meta["extra"]["world_size"] == 2
    assert len(ckpt.metrics) == 2

    # resume on one process (a different world size) to the end
    result = fit(None, resume=run, progress=False, report=False)
    assert len(result.metrics) == epochs
    assert [m["epoch"] for m in result.metrics] == list(range(1, epochs + 1))
    assert load_checkpoint(run).epoch == epochs
    assert "world_size" in result.metrics[0] and "world_size" not in result.metrics[-1]

    # and it lands where an uninterrupted single-process run lands
    single = Trainer(_config(epochs, control=False), progress=False, out=None)
    single.run()
    got, _ = _state(Trainer.from_checkpoint(run, progress=False))
    want, _ = _state(single)
    _assert_close(got, want, 1e-8)
    assert result.metrics[-1]["widths"] == single.metrics[-1]["widths"]
    shutil.rmtree(run)


def test_divergence_check_names_the_ranks():
    # in-process: a context whose all-gather reports another rank with a different state
    from isoplastic.train.distributed import DistContext, DistributedDivergenceError, state_digest

    class FakeTwoRanks(DistContext):
        def all_gather_int64(self, values):
            other = list(values)
            other[-1] ^= 1
            return [list(values), other]

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    digest = state_digest({"adaptive": net}, {"adaptive": opt})
    assert len(digest) == 32 and digest == state_digest({"adaptive": net}, {"adaptive": opt})
    with pytest.raises(DistributedDivergenceError, match="rank 1: widths \\[3, 2\\]"):
        FakeTwoRanks(world_size=2).verify_identical(digest, [3, 2], "after the adaptation")
    DistContext().verify_identical(digest, [3, 2], "single process: no-op")
