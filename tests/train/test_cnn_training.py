"""`model="cnn"`: the trainer adapts an isotropic CNN's channel and head spaces, and resumes it."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import isoplastic as ip
from isoplastic.cli import main
from isoplastic.train import TrainConfig, Trainer, fit
from isoplastic.train.config import ConfigError


def _config(**kw) -> TrainConfig:
    base = dict(model="cnn", channels=[6, 6], widths=[12], n_train=200, n_test=64, epochs=3,
                dtype="float64", control=False, probe_size=48, scaffold=2, threshold=0.5)
    base.update(kw)
    return TrainConfig(**base)


def test_cnn_run_records_growth_and_shrink_of_channels():
    torch.set_num_threads(1)
    result = fit(_config(), progress=False)
    ops = {(c["op"]) for c in result.changes}
    assert {"neurogenesis", "neurodegeneration"} <= ops
    net = result.nets["adaptive"]
    assert isinstance(net, ip.IsotropicCNN)
    for c in result.changes:
        if c["op"] == "neurogenesis":  # growth is exact for channels too
            assert c["eps_scaled"] < 1e-10
    for k in range(net.n_hidden):  # the scaffold buffer holds in every space on return
        assert int((ip.singular_values(net, k) <= 0.5).sum()) == 2


def test_cnn_checkpoint_resumes_bit_identically(tmp_path):
    torch.set_num_threads(1)
    full = Trainer(_config(), progress=False, out=tmp_path / "full")
    full.run()
    part = Trainer(_config(), progress=False, out=tmp_path / "part")
    part.run(until=1)
    resumed = Trainer.from_checkpoint(tmp_path / "part", progress=False)
    resumed.run()
    assert resumed.net.widths == full.net.widths
    for a, b in zip(resumed.net.state_dict().values(), full.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_cnn_needs_image_data(tmp_path):
    import numpy as np

    path = tmp_path / "vectors.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=(40, 5)).astype("float32"),
             y=np.arange(40) % 2)
    with pytest.raises(ConfigError, match="needs image data"):
        fit(_config(dataset=str(path), n_train=None, n_test=None), progress=False)


def test_cli_model_cnn_and_bad_kernel(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["train", "--model", "cnn", "--channels", "4", "--widths", "8",
                               "--epochs", "2", "--n-train", "120", "--no-control",
                               "--no-progress", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "adaptive" in res.output and (tmp_path / "run" / "report.md").exists()
    bad = runner.invoke(main, ["train", "--model", "cnn", "--kernel-size", "2", "--epochs", "1",
                               "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "kernel_size" in bad.output
