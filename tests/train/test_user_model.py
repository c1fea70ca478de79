"""The Trainer on a user's own model: a residual stack of two IsotropicMLP blocks between
nn.Linear layers (the README's "Your own model"), trained with the scaffold policy, checkpointed
and resumed bit-identically into a freshly constructed model."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import isoplastic as ip
from isoplastic.errors import TopologyError
from isoplastic.train import CheckpointError, ConfigError, TrainConfig, Trainer, fit, prepare_data
from isoplastic.train.distributed import DistContext
from isoplastic.train.trainer import psi_penalty

NAMES = ["blocks.0.0", "blocks.1.0"]


class Residual(torch.nn.Module):
    def __init__(self, n_blocks: int = 2, width: int = 12, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Linear(64, 16)
        self.blocks = torch.nn.ModuleList(ip.IsotropicMLP([16, width, 16])
                                          for _ in range(n_blocks))
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):
        h = self.embed(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


def _optimizer(model: Residual) -> torch.optim.Optimizer:
    # two groups, in another order than model.parameters(): the checkpoint must keep both
    return torch.optim.AdamW([
        {"params": list(model.blocks.parameters()), "lr": 1e-2},
        {"params": [*model.embed.parameters(), *model.head.parameters()], "lr": 5e-3}])


@pytest.fixture(scope="module")
def small_data():
    return prepare_data(TrainConfig(n_train=240, n_test=96))


def _config(**kw) -> TrainConfig:
    base = dict(n_train=240, n_test=96, epochs=3, dtype="float64", control=True,
                probe_size=64, adapt="scaffold")
    base.update(kw)
    return TrainConfig(**base)


def _hidden(model) -> list[int]:
    return [s.size for s in ip.hidden_spaces(model).values()]


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


def _same_optimizer(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    pa = [p for g in a.param_groups for p in g["params"]]
    pb = [p for g in b.param_groups for p in g["params"]]
    assert [g["lr"] for g in a.param_groups] == [g["lr"] for g in b.param_groups]
    assert [p.shape for p in pa] == [p.shape for p in pb]
    for p, q in zip(pa, pb):
        sa, sb = a.state[p], b.state[q]
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key


def test_trainer_trains_a_user_model_with_the_scaffold_policy(small_data):
    model = Residual()
    opt = _optimizer(model)
    trainer = Trainer(_config(), model=model, optimizer=opt, data=small_data, progress=False)
    assert trainer.net is model and trainer.optimizer is opt
    control = trainer.arms["control"]
    assert control.net is not model and control.optimizer is not opt
    _same_state(control.net.state_dict(), model.state_dict())
    twin_params = {id(p) for p in control.net.parameters()}
    assert all(id(p) in twin_params for g in control.optimizer.param_groups for p in g["params"])
    assert [g["lr"] for g in control.optimizer.param_groups] == [1e-2, 5e-3]

    result = trainer.run()
    assert result.nets["adaptive"] is model
    widths = [m["widths"] for m in result.metrics]
    assert all(m["spaces"] == NAMES for m in result.metrics)
    assert widths[-1] == _hidden(model) and widths[-1] != [12, 12]
    for m in result.metrics:
        assert [len(s) for s in m["singular_values"]] == m["widths"]
        assert m["control"]["widths"] == [12, 12] and m["control"]["spaces"] == NAMES
        for rec in (m, m["control"]):
            for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "psi_norm"):
                assert math.isfinite(rec[key]), key
    assert _hidden(control.net) == [12, 12]
    assert result.changes and all(c["arm"] == "adaptive" for c in result.changes)
    for c in result.changes:
        assert c["space"] in NAMES and c["layer"] == 0
        assert len(c["widths"]) == 2 and c["widths"][NAMES.index(c["space"])] == c["width_after"]
    grown = [c for c in result.changes if c["op"] == "neurogenesis"]
    assert grown and max(c["eps_scaled"] for c in grown) < 1e-8  # exact up to float64 rounding
    # the user's optimizer still holds the model's (resized) parameters and trains them
    held = [p for g in opt.param_groups for p in g["params"]]
    assert {id(p) for p in held} == {id(p) for p in model.parameters()}
    assert all(opt.state[p]["exp_avg"].shape == p.shape for p in held)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_psi_penalty_sums_every_block():
    model = Residual().double()
    for block in model.blocks:
        torch.nn.init.normal_(block.psi[0])
    expected = model.blocks[0].psi_penalty() + model.blocks[1].psi_penalty()
    assert float(expected.detach()) > 0 and torch.equal(psi_penalty(model), expected)
    bare = model.blocks[1]
    assert torch.equal(psi_penalty(bare), bare.psi_penalty())  # a bare block: as before
    assert psi_penalty(torch.nn.Linear(2, 2)) is None


def test_resume_into_a_fresh_model_is_bit_identical(tmp_path, small_data):
    cfg = dict(epochs=4, threshold=1.0)  # tau = 1: spaces keep changing in epochs 1 to 3
    straight = Residual()
    a = Trainer(_config(out=str(tmp_path / "a"), **cfg), model=straight,
                optimizer=_optimizer(straight), data=small_data, progress=False)
    a.run()

    first = Residual()
    b = Trainer(_config(out=str(tmp_path / "b"), **cfg), model=first,
                optimizer=_optimizer(first), data=small_data, progress=False)
    b.run(until=1)
    saved = _hidden(first)
    assert saved != [12, 12]  # the resize on resume has work to do
    fresh = Residual(seed=123)  # other initial values: everything must come from the checkpoint
    resumed = Trainer.from_checkpoint(tmp_path / "b", model=fresh, data=small_data,
                                      progress=False)
    assert resumed.net is fresh and _hidden(fresh) == saved
    assert _hidden(resumed.arms["control"].net) == [12, 12]
    resumed.run()

    assert len(resumed.changes) > len(b.changes)  # it kept adapting after the resume
    for arm in ("adaptive", "control"):
        _same_state(resumed.arms[arm].net.state_dict(), a.arms[arm].net.state_dict())
        _same_optimizer(resumed.arms[arm].optimizer, a.arms[arm].optimizer)
    drop = ("train_time", "epoch_time", "wall_time")
    strip = lambda rs: [{k: v for k, v in r.items() if k not in drop} for r in rs]  # noqa: E731
    assert strip(resumed.metrics) == strip(a.metrics)
    assert strip(resumed.changes) == strip(a.changes)

    # ip.load needs the model too, and then computes what the trainer's network computes
    with pytest.raises(CheckpointError, match=r"model=Residual\(\.\.\.\)"):
        ip.load(tmp_path / "a")
    loaded = ip.load(tmp_path / "a", model=Residual(seed=7))
    x = small_data.x_test.to(torch.float64)
    with torch.no_grad():
        assert torch.equal(loaded.net(x), a.net.eval()(x))
    # and the report copes with space names
    from isoplastic.plot.report import write_report

    text = write_report(tmp_path / "a").read_text()
    assert "blocks.1.0" in text


def test_wrong_or_missing_fresh_model_is_refused(tmp_path, small_data):
    model = Residual()
    fit(_config(epochs=1, out=str(tmp_path / "r"), control=False), model=model,
        data=small_data, progress=False, report=False)
    with pytest.raises(CheckpointError, match="this run trained your own model"):
        Trainer.from_checkpoint(tmp_path / "r", data=small_data, progress=False)
    with pytest.raises(CheckpointError, match=r"hidden spaces \['blocks.0.0', 'blocks.1.0', "
                                              r"'blocks.2.0'\].*same blocks"):
        Trainer.from_checkpoint(tmp_path / "r", model=Residual(n_blocks=3), data=small_data,
                                progress=False)
    other = Residual()
    other.head = torch.nn.Linear(16, 7)  # same blocks, another head: the tensors do not fit
    with pytest.raises(CheckpointError, match="construct it exactly as for the run"):
        Trainer.from_checkpoint(tmp_path / "r", model=other, data=small_data, progress=False)


def test_model_for_a_library_run_is_refused(tmp_path, small_data):
    fit(_config(epochs=1, out=str(tmp_path / "lib"), control=False, widths=[8]),
        data=small_data, progress=False, report=False)
    with pytest.raises(CheckpointError, match="drop it"):
        Trainer.from_checkpoint(tmp_path / "lib", model=Residual(), data=small_data)


def test_user_model_arguments_are_checked(small_data):
    model = Residual()
    with pytest.raises(ConfigError, match="pass model= too"):
        Trainer(_config(), optimizer=_optimizer(model), data=small_data, progress=False)
    stranger = torch.optim.AdamW([*model.parameters(), torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(ConfigError, match="not parameters of the model"):
        Trainer(_config(), model=model, optimizer=stranger, data=small_data, progress=False)
    with pytest.raises(ConfigError, match="LBFGS"):
        Trainer(_config(), model=model, optimizer=torch.optim.LBFGS(model.parameters()),
                data=small_data, progress=False)
    with pytest.raises(TopologyError, match="does not declare hidden spaces"):
        Trainer(_config(), model=torch.nn.Linear(64, 10), data=small_data, progress=False)
    fake = DistContext(rank=0, world_size=2, backend="gloo")
    with pytest.raises(ConfigError, match="under torchrun is not supported"):
        Trainer(_config(), model=model, data=small_data, progress=False, dist=fake)


def test_default_optimizer_comes_from_the_config(small_data):
    model = Residual()
    trainer = Trainer(_config(control=False, optimizer="sgd", lr=0.05, epochs=1), model=model,
                      data=small_data, progress=False)
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    assert [p for g in trainer.optimizer.param_groups for p in g["params"]] == list(
        model.parameters())
    assert next(model.parameters()).dtype == torch.float64  # cast to config.dtype
    trainer.run()
    assert copy.deepcopy(trainer.metrics[-1]["spaces"]) == NAMES


def test_library_records_keep_their_form(small_data):
    """A bare IsotropicMLP is recorded as before the contract: widths[1:-1], spectra by layer
    index, the ψ norm of its vectors, full widths in change records, no "spaces" key."""
    result = fit(_config(widths=[20, 12], control=False, epochs=1), data=small_data,
                 progress=False)
    net, m = result.nets["adaptive"], result.metrics[-1]
    assert "spaces" not in m
    assert m["widths"] == net.widths[1:-1]
    assert m["singular_values"] == [ip.singular_values(net, k).tolist()
                                    for k in range(net.n_hidden)]
    assert m["psi_norm"] == float(sum(p.detach().norm() for p in net.psi))
    assert result.changes and all(c["widths"][0] == 64 and c["widths"][-1] == 10
                                  and c["space"] == str(c["layer"]) for c in result.changes)
