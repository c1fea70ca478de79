"""``TrainConfig.group_size`` / ``isoplastic train --group-size``: the grouped accuracy recipe
through the library's own trainer, checkpoints and loader."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import isoplastic as ip
from isoplastic.cli import main
from isoplastic.train import ConfigError, TrainConfig, Trainer, load_checkpoint, prepare_data
from isoplastic.train.trainer import build_model


@pytest.fixture(scope="module")
def small_data():
    return prepare_data(TrainConfig(n_train=240, n_test=96))


def _config(out, **kw) -> TrainConfig:
    base = dict(n_train=240, n_test=96, epochs=3, dtype="float64", widths=[16, 8], group_size=4,
                probe_size=64, out=str(out))
    base.update(kw)
    return TrainConfig(**base)


def test_group_size_builds_groups_of_that_size(small_data):
    net = build_model(TrainConfig(widths=[16, 8], group_size=4), small_data)
    assert isinstance(net, ip.GroupedIsotropicMLP)
    assert net.group_widths == [[4, 4, 4, 4], [4, 4]]
    assert isinstance(build_model(TrainConfig(widths=[16, 8]), small_data), ip.IsotropicMLP)


@pytest.mark.parametrize("kw, words", [
    (dict(widths=[16, 10], group_size=4), "does not divide the hidden widths [10]"),
    (dict(group_size=0), "integer >= 1"),
    (dict(group_size=True), "integer >= 1"),
    (dict(model="cnn", group_size=4), "model='mlp' only"),
    (dict(widths=[16], group_size=4, adapt="schedule", schedule="16:8"), "adapt='scaffold'"),
])
def test_bad_group_size_is_refused_with_the_fix(kw, words):
    with pytest.raises(ConfigError, match="group_size") as info:
        TrainConfig(**kw)
    assert words in str(info.value)


def test_grouped_run_adapts_per_group_and_resumes_bit_identically(tmp_path, small_data):
    full = Trainer(_config(tmp_path / "full"), data=small_data, progress=False)
    full.run()
    net = full.arms["adaptive"].net
    # every group is a hidden space that adapted on its own; the control kept its groups
    assert len(ip.hidden_spaces(net)) == 6
    assert net.group_widths != [[4, 4, 4, 4], [4, 4]]
    assert full.arms["control"].net.group_widths == [[4, 4, 4, 4], [4, 4]]
    part = Trainer(_config(tmp_path / "part"), data=small_data, progress=False)
    part.run(until=1)
    resumed = Trainer.from_checkpoint(tmp_path / "part", data=small_data, progress=False)
    resumed.run()
    a, b = full.arms["adaptive"].net.state_dict(), resumed.arms["adaptive"].net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ckpt = load_checkpoint(tmp_path / "full")
    assert ckpt.config.group_size == 4
    assert ckpt.nets["adaptive"].group_widths == net.group_widths


def test_cli_group_size_trains_and_loads_on_raw_data(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "--widths", "8", "--group-size", "4", "--epochs",
                                    "2", "--n-train", "200", "--n-test", "80", "--out", str(out),
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    model = ip.load(out)
    assert isinstance(model.net, ip.GroupedIsotropicMLP)
    from sklearn.datasets import load_digits

    raw = torch.as_tensor(load_digits().data[:5])
    assert model(raw).shape == (5, 10)
    bad = CliRunner().invoke(main, ["train", "--widths", "10", "--group-size", "4", "--epochs",
                                    "1", "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "does not divide" in bad.output
