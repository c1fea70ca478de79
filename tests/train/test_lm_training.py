"""Training the adaptive transformer on text with the Trainer, and the run it leaves (issue 14).

Tiny sizes: ``d_model=16`` with an initial FFN width of 32, so the first neuroadapt pass finds the
16 neurons beyond ``W_0``'s rank (zero singular value) in each block and removes all but the
scaffold (an exact removal: predicted bound 0), and grows scaffold neurons where there are none
(exact: zero incoming rows).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

import isoplastic as ip
from isoplastic.data import DataError
from isoplastic.text import load_text
from isoplastic.train import TrainConfig, Trainer, fit, load_checkpoint
from isoplastic.train.checkpoint import CheckpointError
from isoplastic.train.config import ConfigError
from isoplastic.train.lm import eval_windows, evaluate_text

SMALL = dict(model="transformer", d_model=16, n_layers=2, n_heads=2, d_ff=32, context_length=16,
             batch_size=8, batches_per_epoch=6, n_train=20_000, n_test=2_000, probe_size=16,
             lr=3e-3)
PER_ARM = {"train_loss", "train_bpc", "train_accuracy", "test_loss", "test_bpc",
           "test_accuracy", "widths", "singular_values", "spaces"}
SPACES = ["blocks.0.ffn.0", "blocks.1.ffn.0"]

# slow: the module's runs train two tiny transformers for a few epochs (about 20 s in all)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def text():
    return load_text()


@pytest.fixture(scope="module")
def run(tmp_path_factory, text):
    out = tmp_path_factory.mktemp("lm") / "run"
    result = fit(TrainConfig(epochs=3, out=str(out), **SMALL), data=text.truncated(20_000, 2_000),
                 progress=False)
    return out, result


def test_transformer_defaults_and_bad_sizes():
    cfg = TrainConfig(model="transformer")
    assert cfg.dataset == "stdlib" and cfg.epochs == 12 and cfg.hidden_widths == [256, 256]
    assert TrainConfig().dataset == "digits" and TrainConfig().epochs == 300
    with pytest.raises(ConfigError, match="n_heads.*must divide d_model=10"):
        TrainConfig(model="transformer", d_model=10, n_heads=4)
    with pytest.raises(ConfigError, match="context_length=0: must be an integer >= 1"):
        TrainConfig(model="transformer", context_length=0)
    with pytest.raises(ConfigError, match="trains on text"):
        Trainer(TrainConfig(**SMALL), data=ip.data.load_dataset("digits"), progress=False)


def test_metrics_carry_bpc_per_arm(run, text):
    out, result = run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records == result.metrics and [r["epoch"] for r in records] == [1, 2, 3]
    for r in records:
        assert PER_ARM <= set(r) and PER_ARM <= set(r["control"])
        assert r["spaces"] == SPACES
        assert r["unigram_bpc"] == pytest.approx(text.unigram_bpc)
        for arm in (r, r["control"]):
            assert arm["train_bpc"] == pytest.approx(arm["train_loss"] / torch.log(
                torch.tensor(2.0, dtype=torch.float64)).item(), rel=1e-12)
    # the control keeps its widths; the adaptive model cut the rank-deficient surplus at once
    assert all(r["control"]["widths"] == [32, 32] for r in records)
    assert all(w <= 16 + 1 + 2 for w in records[0]["widths"])
    # it learns: below the unigram entropy after three short epochs
    assert records[-1]["test_bpc"] < records[0]["test_bpc"]


def test_held_out_bpc_is_the_loaded_models_cross_entropy(run, text):
    out, result = run
    model = ip.load(out)
    assert type(model).__name__ == "TextModel" and model.vocab == text.vocab
    x, y = eval_windows(text.truncated(20_000, 2_000).test, SMALL["context_length"])
    got = evaluate_text(model.net, x, y)
    assert got["test_bpc"] == pytest.approx(result.metrics[-1]["test_bpc"], rel=1e-6)
    with torch.no_grad():
        assert torch.equal(model(x[:3]), result.nets["adaptive"].eval()(x[:3]))
        assert model("def f(x):").shape == (1, 9, len(text.vocab))
    control = ip.load(out, arm="control")
    assert control.net.ffn_widths == [32, 32]
    sample = model.generate("import ", 20, generator=torch.Generator().manual_seed(0))
    assert sample.startswith("import ") and len(sample) == 27
    assert model.generate("ab", 5, temperature=0) == model.generate("ab", 5, temperature=0)


def test_growth_exact_and_removals_within_their_bound(run):
    out, result = run
    changes = [json.loads(line) for line in (out / "changes.jsonl").read_text().splitlines()]
    assert changes == result.changes
    grow = [c for c in changes if c["op"] == "neurogenesis"]
    shrink = [c for c in changes if c["op"] == "neurodegeneration"]
    assert grow or shrink
    for c in changes:
        assert c["space"] in SPACES and c["arm"] == "adaptive" and not c["refused"]
        assert {"eps_scaled", "kl", "predicted_bound", "predicted_offset"} <= set(c)
    for c in grow:
        assert c["eps_scaled"] <= 1e-4  # percent, float32
    # the first pass removes the neurons beyond W_0's rank: singular value 0, predicted bound 0,
    # and the measured change (KL per token on the probe) is round-off
    first = [c for c in shrink if c["epoch"] == 1]
    assert {c["space"] for c in first} == set(SPACES)
    for c in first:
        assert max(c["removed_singular_values"]) <= 1e-5
        assert c["eps_scaled"] <= 1e-3 and c["kl"] <= 1e-9


def test_report_plots_bits_per_character(run):
    out, _ = run
    report = (out / "report.md").read_text()
    assert "final held-out bits per character" in report and "unigram entropy" in report
    assert "blocks.0.ffn.0" in report  # the change log names the FFN spaces
    for name in ("accuracy_loss.png", "widths.png", "spectra.png", "function_change.png"):
        assert (out / name).stat().st_size > 1000


def _ffn_input(net, ffn, x):
    """The residual stream ``(B, T, d)`` entering ``ffn`` when ``net`` reads ``x``."""
    seen = []
    handle = ffn.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        net(x)
    handle.remove()
    return seen[0]


def test_removal_of_trained_neurons_stays_within_the_predicted_bound(run, text):
    """On the trained model: the FFN branch output moves by at most
    ``predicted_bound · ‖n(x_t)‖ + predicted_offset`` at every token (float64 copy)."""
    _, result = run
    net = copy.deepcopy(result.nets["adaptive"]).double().eval()
    x, _ = eval_windows(text.truncated(20_000, 2_000).test, SMALL["context_length"])
    for name in SPACES:
        twin = copy.deepcopy(net)
        ffn = twin.get_submodule(name.rsplit(".", 1)[0])
        stream = _ffn_input(twin, ffn, x[:8])
        with torch.no_grad():
            before = ffn.trace(stream)
        change = ip.neurodegeneration(twin, name, 3)
        assert max(change.removed_singular_values) > 0.1  # a trained neuron, not only scaffold
        with torch.no_grad():
            after = ffn.trace(stream)
        moved = (after["branch"] - before["branch"]).norm(dim=1)
        allowed = change.predicted_bound * before["input"].norm(dim=1) + change.predicted_offset
        assert float(moved.max()) > 0
        assert bool((moved <= allowed + 1e-12).all())


def test_resume_continues_bit_identically(tmp_path, text):
    data = text.truncated(20_000, 2_000)
    cfg = dict(SMALL, control=False)
    straight = fit(TrainConfig(epochs=2, out=str(tmp_path / "a"), **cfg), data=data,
                   progress=False, report=False)
    fit(TrainConfig(epochs=1, out=str(tmp_path / "b"), **cfg), data=data, progress=False,
        report=False)
    resumed = fit(TrainConfig(epochs=2, **cfg), resume=tmp_path / "b", data=data, progress=False,
                  report=False)
    a, b = straight.nets["adaptive"].state_dict(), resumed.nets["adaptive"].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert straight.metrics[-1]["test_bpc"] == resumed.metrics[-1]["test_bpc"]
    assert load_checkpoint(tmp_path / "b").vocab == text.vocab


def test_resume_with_another_text_is_refused(tmp_path, text):
    path = tmp_path / "other.txt"
    path.write_text("completely different text " * 200)
    cfg = dict(SMALL, control=False, n_train=None, n_test=None)
    fit(TrainConfig(epochs=1, out=str(tmp_path / "run"), **cfg), data=load_text(str(path)),
        progress=False, report=False)
    with pytest.raises(CheckpointError, match="vocabulary of .* tokens.*resume with the same text"):
        Trainer.from_checkpoint(tmp_path / "run", data=text, progress=False)


def test_text_too_short_for_the_context_is_refused(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("abc" * 40)
    with pytest.raises(DataError, match="fewer than one window"):
        Trainer(TrainConfig(dataset=str(path), **dict(SMALL, n_train=None, n_test=None)),
                progress=False)
