"""Checkpoints: round trip, tamper detection, no pickle, bit-identical resume, crash + resume."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from isoplastic.cli import main
from isoplastic.train import (
    CheckpointError,
    TrainConfig,
    Trainer,
    load_checkpoint,
    prepare_data,
)

TIMING_KEYS = {"train_time", "epoch_time", "wall_time"}



@pytest.fixture(scope="module")
def small_data():
    return prepare_data(TrainConfig(n_train=240, n_test=96))


def _config(out, **kw) -> TrainConfig:
    base = dict(n_train=240, n_test=96, epochs=2, dtype="float64", widths=[70, 12],
                probe_size=64, out=str(out))
    base.update(kw)
    return TrainConfig(**base)


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} |
            ({"control": _strip([r["control"]])[0]} if "control" in r else {}) for r in records]


def _assert_optim_equal(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    pa = [p for g in a.param_groups for p in g["params"]]
    pb = [p for g in b.param_groups for p in g["params"]]
    assert len(pa) == len(pb)
    for x, y in zip(pa, pb):
        sa, sb = a.state[x], b.state[y]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), k
    for ga, gb in zip(a.param_groups, b.param_groups):
        assert {k: v for k, v in ga.items() if k != "params"} == \
            {k: v for k, v in gb.items() if k != "params"}


def _assert_nets_equal(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def test_round_trip(tmp_path, small_data):
    trainer = Trainer(_config(tmp_path), data=small_data, progress=False)
    trainer.run()
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.epoch == 2 and ckpt.config == trainer.config
    assert set(ckpt.nets) == {"adaptive", "control"}
    for arm in ("adaptive", "control"):
        net = ckpt.nets[arm]
        assert net.widths == trainer.arms[arm].net.widths
        _assert_nets_equal(net, trainer.arms[arm].net)
        _assert_optim_equal(ckpt.optimizers[arm], trainer.arms[arm].optimizer)
        assert [p for g in ckpt.optimizers[arm].param_groups for p in g["params"]] == \
            list(net.parameters())
    assert ckpt.changes == trainer.changes and ckpt.metrics == trainer.metrics
    assert ckpt.nets["adaptive"].widths != ckpt.nets["control"].widths  # adapted
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    assert {"architecture", "optimizer"} <= set(meta["arms"]["adaptive"])
    assert {"torch", "python", "numpy"} <= set(meta["rng"])
    assert all(isinstance(v, int) for v in meta["rng"]["torch"])
    assert len(meta["sha256"]) == 64
    from safetensors.torch import load_file

    names = set(load_file(tmp_path / "checkpoint.safetensors"))
    assert "optim.0.exp_avg" in names and "control.optim.0.exp_avg_sq" in names
    assert any(n.startswith("model.linears.0") for n in names)


def test_tampered_and_truncated_refused(tmp_path, small_data):
    Trainer(_config(tmp_path, epochs=1, control=False), data=small_data, progress=False).run()
    path = tmp_path / "checkpoint.safetensors"
    blob = path.read_bytes()
    tampered = bytearray(blob)
    tampered[-5] ^= 0xFF
    path.write_bytes(bytes(tampered))
    with pytest.raises(CheckpointError, match="sha256.*tampered"):
        load_checkpoint(tmp_path)
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path)
    path.write_bytes(blob)
    assert load_checkpoint(tmp_path).epoch == 1
    (tmp_path / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing")


def test_interrupted_save_keeps_or_rolls_forward(tmp_path, small_data):
    trainer = Trainer(_config(tmp_path, epochs=2, control=False), data=small_data,
                      progress=False)
    trainer.run(until=1)
    old_meta = (tmp_path / "checkpoint.json").read_text()
    old_tensors = (tmp_path / "checkpoint.safetensors").read_bytes()
    trainer.run(until=2)
    new_meta = (tmp_path / "checkpoint.json").read_text()
    # crash after the tensors were replaced but before the JSON was: roll forward
    (tmp_path / "checkpoint.json").write_text(old_meta)
    (tmp_path / "checkpoint.json.tmp").write_text(new_meta)
    assert load_checkpoint(tmp_path).epoch == 2
    # crash while writing the temp files: the previous checkpoint is intact
    (tmp_path / "checkpoint.safetensors").write_bytes(old_tensors)
    (tmp_path / "checkpoint.json").write_text(old_meta)
    (tmp_path / "checkpoint.safetensors.tmp").write_bytes(b"partial")
    (tmp_path / "checkpoint.json.tmp").write_text("{partial")
    assert load_checkpoint(tmp_path).epoch == 1


def test_loading_never_unpickles(tmp_path, small_data, monkeypatch):
    Trainer(_config(tmp_path, epochs=1), data=small_data, progress=False).run()
    assert {p.name for p in tmp_path.glob("checkpoint.*")} == {
        "checkpoint.json", "checkpoint.safetensors"}

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    for mod, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"),
                      (torch, "load")):
        monkeypatch.setattr(mod, name, forbidden)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.epoch == 1
    assert b"\x80\x04" not in (tmp_path / "checkpoint.json").read_bytes()


def test_resume_is_bit_identical(tmp_path, small_data):
    full = Trainer(_config(tmp_path / "full", epochs=4), data=small_data, progress=False)
    full.run()
    part = Trainer(_config(tmp_path / "part", epochs=4), data=small_data, progress=False)
    part.run(until=2)
    del part
    resumed = Trainer.from_checkpoint(tmp_path / "part", data=small_data, progress=False)
    assert resumed.epoch == 2
    resumed.run()
    for arm in ("adaptive", "control"):
        _assert_nets_equal(full.arms[arm].net, resumed.arms[arm].net)
        _assert_optim_equal(full.arms[arm].optimizer, resumed.arms[arm].optimizer)
    assert _strip(full.metrics) == _strip(resumed.metrics)
    assert _strip(full.changes) == _strip(resumed.changes)
    assert any(c["op"] == "neurogenesis" for c in full.changes)


def _read_metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return _strip([json.loads(line) for line in lines])


@pytest.mark.slow  # 15 s; tests/reliability/test_rel_crash.py covers kill-and-resume fast
def test_killed_cli_run_resumes_to_the_same_result(tmp_path):
    args = ["train", "--widths", "20", "--epochs", "40", "--n-train", "200", "--seed", "3",
            "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "isoplastic", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (killed / "checkpoint.json").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    interrupted_at = load_checkpoint(killed).epoch
    assert 0 <= interrupted_at < 40  # a run checkpoints its initial state (epoch 0) too
    assert not (killed / "report.md").exists()
    resumed = subprocess.run([sys.executable, "-m", "isoplastic", "train", "--no-progress",
                              "--resume", str(killed)], capture_output=True, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert b"report:" in resumed.stdout
    # uninterrupted reference, in process, same seed
    full = tmp_path / "full"
    runner = CliRunner()
    res = runner.invoke(main, [*args, "--out", str(full)])
    assert res.exit_code == 0, res.output
    assert _read_metrics(killed) == _read_metrics(full)
    assert len(_read_metrics(full)) == 40


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "adagrad", "rmsprop", "nadam"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_make_optimizer_uses_the_fused_kernel_where_torch_has_one(name, dtype):
    from isoplastic import IsotropicMLP
    from isoplastic.train.checkpoint import FUSED_OPTIMIZERS, make_optimizer

    net = IsotropicMLP([6, 5, 3]).to(dtype)
    opt = make_optimizer(net, TrainConfig(optimizer=name))
    assert bool(opt.param_groups[0].get("fused")) is (name in FUSED_OPTIMIZERS)
    assert [p for g in opt.param_groups for p in g["params"]] == list(net.parameters())


def test_a_checkpoint_of_the_default_implementation_resumes_with_it(tmp_path, small_data):
    """A run saved by a torch-default (unfused) AdamW, as every run before the Trainer used the
    fused kernel, resumes unfused: the implementation is one of the parameter groups' settings,
    which loading the checkpoint's optimizer state restores (with the state itself)."""
    from isoplastic.core import optim_state as ostate

    trainer = Trainer(_config(tmp_path / "run", epochs=1), data=small_data, progress=False)
    opt = trainer.arms["adaptive"].optimizer
    assert opt.param_groups[0]["fused"] is True
    net = trainer.arms["adaptive"].net
    plain = torch.optim.AdamW(net.parameters(), lr=opt.param_groups[0]["lr"],
                              weight_decay=opt.param_groups[0]["weight_decay"])
    x = trainer.x_train[:32]
    y = trainer.y_train[:32]
    loss = torch.nn.functional.cross_entropy(net(x), y) + net.psi_penalty()
    loss.backward()
    plain.step()
    tensors, meta = ostate.state_tensors(plain), ostate.state_meta(plain)
    ostate.load_state_tensors(opt, tensors, meta)
    assert not opt.param_groups[0]["fused"]
    _assert_optim_equal(plain, opt)
