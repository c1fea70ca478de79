"""Trainer: adaptation records, tolerance rollback, width schedules."""

from __future__ import annotations

import copy

import pytest
import torch

import isoplastic as ip
from isoplastic.topology.policies import ChangeRefused
from isoplastic.train import TrainConfig, Trainer, fit, prepare_data

FC_FIELDS = ("eps_scaled", "kl", "max_abs", "agreement", "widths", "wall_time", "refused")



@pytest.fixture(scope="module")
def small_data():
    return prepare_data(TrainConfig(n_train=240, n_test=96))


def _config(**kw) -> TrainConfig:
    base = dict(n_train=240, n_test=96, epochs=2, dtype="float64", control=False, probe_size=64)
    base.update(kw)
    return TrainConfig(**base)


def test_tiny_run_records_growth_and_shrink(small_data):
    # Layer 0 (80 neurons, 64 inputs) has 16 silent neurons -> shrink; layer 1 starts full -> grow.
    result = fit(_config(widths=[80, 24]), data=small_data, progress=False)
    ops = {c["op"] for c in result.changes}
    assert {"neurogenesis", "neurodegeneration"} <= ops
    for c in result.changes:
        for f in FC_FIELDS:
            assert f in c
        assert c["refused"] is False
        assert c["wall_time"] >= 0
        assert c["widths"][0] == 64 and c["widths"][-1] == 10
        if c["op"] == "neurogenesis":
            assert c["eps_scaled"] < 1e-8  # exact up to float64 rounding
            assert c["agreement"] == 1.0
    assert len(result.metrics) == 2
    m = result.metrics[-1]
    assert m["widths"] == result.nets["adaptive"].widths[1:-1]
    assert [len(s) for s in m["singular_values"]] == m["widths"]
    summary = result.summary()
    assert summary["n_growth"] >= 1 and summary["n_shrink"] >= 1
    assert summary["control_accuracy"] is None


def _optim_state(opt: torch.optim.Optimizer) -> list[dict]:
    return [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()}
            for g in opt.param_groups for p in g["params"]]


def _assert_same(a, b) -> None:
    assert a.keys() == b.keys() if isinstance(a, dict) else len(a) == len(b)
    items = a.items() if isinstance(a, dict) else enumerate(a)
    for k, v in items:
        w = b[k]
        if isinstance(v, dict):
            _assert_same(v, w)
        elif torch.is_tensor(v):
            assert v.dtype == w.dtype and v.shape == w.shape and torch.equal(v, w), k
        else:
            assert v == w, k


def test_tolerance_zero_refuses_lossy_removal_bit_identically(small_data):
    # After one epoch, shrinking 16 -> 8 neurons is lossy; tolerance 0 must refuse it.
    cfg = _config(widths=[16], adapt="schedule", schedule="8", tolerance=0.0)
    trainer = Trainer(cfg, data=small_data, progress=False)
    trainer.train_epoch(0)
    params = copy.deepcopy(trainer.net.state_dict())
    opt_state = _optim_state(trainer.optimizer)
    new = trainer.adapt(0)
    assert len(new) == 1 and new[0]["refused"] is True
    assert new[0]["op"] == "neurodegeneration" and new[0]["eps_scaled"] > 0
    assert new[0]["widths"][1:-1] == [8]  # the attempted widths
    assert trainer.net.widths == [64, 16, 10]
    _assert_same(trainer.net.state_dict(), params)
    _assert_same(_optim_state(trainer.optimizer), opt_state)
    # the optimizer still points at the live parameters and training goes on
    assert [p for g in trainer.optimizer.param_groups for p in g["params"]] == list(
        trainer.net.parameters())
    trainer.train_epoch(1)


def test_schedule_16_64_16_records_each_change(small_data):
    result = fit(_config(widths=[16], adapt="schedule", schedule="16;64;16", epochs=3),
                 data=small_data, progress=False)
    assert [m["widths"] for m in result.metrics] == [[16], [64], [16]]
    assert [(c["epoch"], c["op"], c["n"]) for c in result.changes] == [
        (2, "neurogenesis", 48), (3, "neurodegeneration", 48)]
    assert result.changes[0]["widths"] == [64, 64, 10]
    assert result.changes[1]["widths"] == [64, 16, 10]
    assert result.changes[0]["eps_scaled"] < 1e-8
    assert all(torch.isfinite(p).all() for p in result.nets["adaptive"].parameters())


def test_control_twin_starts_from_same_weights(small_data):
    trainer = Trainer(_config(widths=[24], control=True), data=small_data, progress=False)
    a, c = trainer.arms["adaptive"].net, trainer.arms["control"].net
    _assert_same(a.state_dict(), c.state_dict())
    result = trainer.run()
    assert "control" in result.metrics[-1]
    assert result.metrics[-1]["control"]["widths"] == [24]


def test_neuroadapt_guard_refusal_terminates_and_is_recorded():
    net = ip.IsotropicMLP([8, 6, 12, 3]).double()
    opt = torch.optim.AdamW(net.parameters())
    before = copy.deepcopy(net.state_dict())
    seen = []

    def guard(change):
        seen.append(change)
        raise ChangeRefused("no")

    refused = []
    changes = ip.neuroadapt(net, 2, 0.1, opt, guard=guard, refused=refused)
    assert changes == [] and len(refused) == len(seen) == 2  # each layer tried once
    _assert_same(net.state_dict(), before)
    policy = ip.ScaffoldPolicy(2, 0.1, guard=guard)
    assert policy(net, opt, 0) == [] and len(policy.refused) == 2


def test_width_schedule_guard_accepts_and_refuses_per_layer():
    net = ip.IsotropicMLP([8, 6, 6, 3]).double()
    calls = []

    def guard(change):
        calls.append(change.layer)
        if change.layer == 1:
            raise ChangeRefused("layer 1 stays")

    policy = ip.WidthSchedule(targets=[[9, 9]], guard=guard)
    changes = policy(net, None, 0)
    assert calls == [1, 0]
    assert [c.layer for c in changes] == [0] and [c.layer for c in policy.refused] == [1]
    assert net.widths == [8, 9, 6, 3]


def test_config_json_round_trip_and_errors(tmp_path):
    from isoplastic.train import ConfigError

    cfg = TrainConfig(widths=[8, 4], adapt="schedule", schedule="8,4:16,2", epochs=4,
                      tolerance=0.5, dtype="float64")
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    assert cfg.schedule_targets() == [[10, 4], [12, 3], [14, 2], [16, 2]]
    assert TrainConfig(widths=[4], adapt="schedule", schedule="16;64;16").schedule_targets() == \
        [[16], [64], [16]]
    with pytest.raises(ConfigError, match="unknown key.*'widht'"):
        TrainConfig.from_dict({**cfg.to_dict(), "widht": 3})
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="version"):
        TrainConfig(version=99)
    with pytest.raises(ConfigError, match="adapt='schedule' needs"):
        TrainConfig(adapt="schedule")


def test_progress_bar_runs(small_data, capsys):
    result = fit(_config(widths=[8], epochs=1), data=small_data, progress=True)
    assert len(result.metrics) == 1
    err = capsys.readouterr().err
    assert "epoch 1/1 adaptive" in err
    # 240 samples in batches of 48: the bar counts 5 batches (not 5 per arm), in batches
    assert "/5 [" in err and "batch" in err and "/10 [" not in err
