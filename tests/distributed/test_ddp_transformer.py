"""The transformer under torchrun (2 processes, gloo over 127.0.0.1) matches one process (issue 14).

``torchrun --nproc_per_node 2 tests/distributed/ddp_worker.py train --model transformer ...``: each
rank takes half of every global batch of windows; the first neuroadapt pass removes the FFN
neurons beyond ``W_0``'s rank and grows scaffold, decided on rank 0 and broadcast. Every rank ends
bit-identical, and equal to one process to round-off.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, load_file

from isoplastic.train import TrainConfig, Trainer
from isoplastic.train.checkpoint import serialise_arms

HERE = Path(__file__).parent
WORKER = HERE / "ddp_worker.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")
ARGS = dict(model="transformer", d_model=16, n_layers=2, n_heads=2, d_ff=24, context_length=12,
            batch_size=8, batches_per_epoch=3, n_train=6000, n_test=600, probe_size=8,
            dtype="float64", epochs=2)

# slow: starts torchrun with two ranks (10-20 s)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not TORCHRUN.exists() or not torch.distributed.is_available(),
                                 reason="torchrun / torch.distributed not available")]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_transformer_two_ranks_identical_and_match_single_process(tmp_path):
    dump = tmp_path / "dump"
    flags = []
    for key, value in ARGS.items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
           "ISOPLASTIC_DIST_TIMEOUT": "60", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "MPLBACKEND": "Agg", "ISOPLASTIC_TEST_DUMP": str(dump)}
    cmd = [str(TORCHRUN), "--nnodes", "1", "--nproc_per_node", "2", "--max-restarts", "0",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(WORKER),
           "train", *flags, "--out", str(tmp_path / "run"), "--no-progress"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    metas = [json.loads((dump / f"rank{r}.json").read_text()) for r in range(2)]
    states = [load_file(dump / f"rank{r}.safetensors") for r in range(2)]
    assert metas[0]["world_size"] == 2 and metas[0]["arms"] == metas[1]["arms"]
    assert metas[0]["changes"] == metas[1]["changes"]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    ops = {c["op"] for c in metas[0]["changes"]}
    assert "neurodegeneration" in ops  # the rank-deficient surplus, removed on rank 0

    single = Trainer(TrainConfig(**ARGS), progress=False, out=None)
    single.run()
    blob, arms = serialise_arms({n: a.net for n, a in single.arms.items()},
                                {n: a.optimizer for n, a in single.arms.items()})
    want = load(blob)
    assert [a["architecture"]["d_ff"] for a in arms.values()] == \
        [a["architecture"]["d_ff"] for a in metas[0]["arms"].values()]
    assert want.keys() == states[0].keys()
    worst = max(float((states[0][k] - want[k]).abs().max()) for k in want
                if want[k].dtype.is_floating_point and want[k].numel())
    assert worst <= 1e-8, worst
    records = [json.loads(line) for line in
               (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(records, single.metrics, strict=True):
        assert a["widths"] == b["widths"]
        assert a["test_bpc"] == pytest.approx(b["test_bpc"], rel=1e-9)
        assert a["train_bpc"] == pytest.approx(b["train_bpc"], rel=1e-9)
