"""``isoplastic train`` runs as a researcher uses them: a loadable model on raw inputs, safe run
directories, every option, ``--resume`` semantics, console lines and Ctrl-C.

Data: scikit-learn's wine table (shipped inside the wheel; 178 samples, 13 features in very
different units, e.g. proline ~ 1000 and hue ~ 1), saved as a ``.npz`` exactly as a user would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import isoplastic as ip
from isoplastic.cli import main
from isoplastic.data import load_dataset
from isoplastic.train import CheckpointError, load_checkpoint, prepare_data
from isoplastic.train.checkpoint import OPTIMIZER_CLASSES, save_checkpoint
from isoplastic.train.config import OPTIMIZERS

FAST = ["--epochs", "3", "--widths", "24,24", "--lr", "0.01", "--no-progress"]
TIMING_KEYS = {"wall_time", "train_time", "epoch_time"}


@pytest.fixture(scope="module")
def wine(tmp_path_factory) -> Path:
    from sklearn.datasets import load_wine

    bunch = load_wine()
    path = tmp_path_factory.mktemp("data") / "wine.npz"
    np.savez(path, x=bunch.data, y=bunch.target)
    return path


def _train(*args: str) -> object:
    return CliRunner().invoke(main, ["train", *args], catch_exceptions=False)


def _snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` with the sha256 of its bytes."""
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _strip(records: list[dict]) -> list[dict]:
    return [{k: (_strip([v])[0] if k == "control" else v) for k, v in r.items()
             if k not in TIMING_KEYS} for r in records]


# -- ip.load: the trained model on raw inputs ----------------------------------------------------

@pytest.fixture(scope="module")
def wine_run(wine, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "wine"
    result = _train("--dataset", str(wine), *FAST, "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_load_gives_the_reported_accuracy_on_raw_inputs(wine, wine_run):
    model = ip.load(wine_run)
    assert isinstance(model, torch.nn.Module) and not model.training
    raw = load_dataset(wine, seed=0)  # the run's split (seed 0), in the file's own units
    assert float(raw.x_test.abs().max()) > 100  # proline: really raw, not standardised
    reported = _jsonl(wine_run / "metrics.jsonl")[-1]["test_accuracy"]
    assert reported > 0.8
    accuracy = float((model.predict(raw.x_test) == raw.y_test).double().mean())
    assert accuracy == reported
    # a NumPy batch straight from the file's arrays works the same
    assert torch.equal(model(raw.x_test.numpy()), model(raw.x_test))
    # the standardisation is what makes it work: the bare network on raw inputs is far worse
    bare = model.net(raw.x_test.to(next(model.net.parameters()).dtype)).argmax(1)
    assert float((bare == raw.y_test).double().mean()) < reported - 0.2


def test_load_logits_equal_the_training_pipeline_bit_for_bit(wine, wine_run):
    model = ip.load(wine_run)
    ckpt = load_checkpoint(wine_run)
    prepared = prepare_data(ckpt.config)
    with torch.no_grad():
        expected = ckpt.nets["adaptive"].eval()(prepared.x_test)
        got = model(load_dataset(wine, seed=0).x_test)
    assert torch.equal(got, expected)


def test_load_control_arm_and_unknown_arm(wine_run):
    control = ip.load(wine_run, "control")
    assert control.net.widths[1:-1] == [24, 24]
    with pytest.raises(CheckpointError, match="no arm 'student'"):
        ip.load(wine_run, "student")


def test_load_refuses_a_wrongly_shaped_input(wine_run):
    model = ip.load(wine_run)
    with pytest.raises(ValueError, match=r"raw samples of shape \(N, 13\)"):
        model(torch.zeros(4, 12))


def test_load_cnn_run_on_raw_pixels(tmp_path):
    gen = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = gen.integers(0, 40, size=(120, 1, 6, 6)).astype(np.uint8)
    x[np.arange(120), 0, y, y] += 200  # a bright pixel whose place tells the class
    np.savez(tmp_path / "pix.npz", x=x, y=y)
    out = tmp_path / "cnn"
    result = _train("--dataset", str(tmp_path / "pix.npz"), "--model", "cnn", "--channels", "4",
                    "--widths", "8", "--epochs", "3", "--no-progress", "--out", str(out))
    assert result.exit_code == 0, result.output
    model = ip.load(out)
    assert model.input_shape == (1, 6, 6)
    raw = load_dataset(tmp_path / "pix.npz", seed=0)
    assert float(raw.x_test.max()) > 200  # pixel values, not standardised
    reported = _jsonl(out / "metrics.jsonl")[-1]["test_accuracy"]
    assert float((model.predict(raw.x_test) == raw.y_test).double().mean()) == reported


def test_checkpoint_without_statistics_is_refused_then_recomputed(wine, wine_run, tmp_path):
    """A checkpoint written before the statistics were saved (as isoplastic 0.1.0 wrote them)."""
    ckpt = load_checkpoint(wine_run)
    old = tmp_path / "old"
    save_checkpoint(old, ckpt.config, ckpt.epoch, ckpt.nets, ckpt.optimizers,
                    changes=ckpt.changes, metrics=ckpt.metrics)
    assert "preprocess" not in json.loads((old / "checkpoint.json").read_text())
    with pytest.raises(CheckpointError, match=r"recompute=True"):
        ip.load(old)
    raw = load_dataset(wine, seed=0)
    assert torch.equal(ip.load(old, recompute=True)(raw.x_test), ip.load(wine_run)(raw.x_test))


# -- run directories -------------------------------------------------------------------------

def test_existing_run_is_refused_and_left_byte_identical(wine, wine_run):
    before = _snapshot(wine_run)
    result = CliRunner().invoke(main, ["train", "--dataset", str(wine), "--epochs", "1",
                                       "--no-progress", "--out", str(wine_run)])
    assert result.exit_code == 1
    assert "already holds a run" in result.output and "--resume" in result.output
    assert "--overwrite" in result.output
    assert _snapshot(wine_run) == before


def test_overwrite_replaces_the_run_and_keeps_other_files(wine, tmp_path):
    out = tmp_path / "run"
    assert _train("--dataset", str(wine), *FAST, "--out", str(out)).exit_code == 0
    (out / "notes.txt").write_text("mine")
    result = _train("--dataset", str(wine), "--epochs", "1", "--widths", "8", "--no-progress",
                    "--no-control", "--out", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert len(_jsonl(out / "metrics.jsonl")) == 1
    assert load_checkpoint(out).config.widths == [8]
    assert (out / "notes.txt").read_text() == "mine"


def test_too_small_data_set_is_refused_before_anything_is_written(tmp_path):
    np.savez(tmp_path / "twoper.npz", x=np.random.default_rng(0).random((20, 4)),
             y=np.repeat(np.arange(10), 2))
    out = tmp_path / "r"
    result = CliRunner().invoke(main, ["train", "--dataset", str(tmp_path / "twoper.npz"),
                                       "--epochs", "2", "--no-progress", "--out", str(out)])
    assert result.exit_code == 1
    assert "0 test samples" in result.output and "x_test" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


# -- options ---------------------------------------------------------------------------------

def test_model_options_reach_the_saved_run(wine, tmp_path):
    out = tmp_path / "opts"
    result = _train("--dataset", str(wine), "--epochs", "1", "--widths", "8", "--no-progress",
                    "--psi", "none", "--intrinsic-length", "constant", "--n-test", "20",
                    "--device", "cpu", "--optimizer", "sgd", "--momentum", "0.9",
                    "--init-scale", "0.02", "--probe-size", "16", "--out", str(out))
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(out)
    cfg = ckpt.config
    assert (cfg.psi, cfg.intrinsic_length, cfg.n_test, cfg.optimizer, cfg.momentum,
            cfg.init_scale, cfg.probe_size) == ("none", "constant", 20, "sgd", 0.9, 0.02, 16)
    arch = ckpt.nets["adaptive"].config()
    assert arch["psi"] == "none" and arch["intrinsic_length"] == "constant"
    opt = ckpt.optimizers["adaptive"]
    assert type(opt) is torch.optim.SGD and opt.param_groups[0]["momentum"] == 0.9
    assert int(prepare_data(cfg).x_test.shape[0]) == 20


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains_through_structural_changes(wine, tmp_path, name):
    out = tmp_path / name
    result = _train("--dataset", str(wine), "--epochs", "2", "--widths", "24", "--no-progress",
                    "--no-control", "--optimizer", name, "--out", str(out))
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(out)
    assert type(ckpt.optimizers["adaptive"]) is OPTIMIZER_CLASSES[name]
    assert any(not c["refused"] for c in ckpt.changes)  # state was carried through a change


def test_unavailable_device_is_a_clear_error(wine, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    result = CliRunner().invoke(main, ["train", "--dataset", str(wine), "--epochs", "1",
                                       "--device", "cuda", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "CUDA is not available" in result.output
    assert not (tmp_path / "r").exists()


def test_resume_refuses_and_names_contradicting_options(wine, wine_run):
    before = _snapshot(wine_run)
    result = CliRunner().invoke(main, ["train", "--resume", str(wine_run), "--lr", "0.5",
                                       "--widths", "3", "--dataset", "digits", "--out",
                                       "elsewhere", "--psi", "none"])
    assert result.exit_code == 2
    for named in ("--lr 0.5", "--widths [3]", "--dataset 'digits'", "--out 'elsewhere'",
                  "--psi 'none'"):
        assert named in result.output
    assert _snapshot(wine_run) == before and not Path("elsewhere").exists()
    # options equal to the saved run's are accepted
    same = CliRunner().invoke(main, ["train", "--resume", str(wine_run), "--lr", "0.01",
                                     "--widths", "24,24", "--no-progress"])
    assert same.exit_code == 0, same.output


def test_resume_epochs_is_the_new_total(wine, tmp_path):
    """--epochs on --resume is the run's total: 2 then --epochs 3 equals 3 in one go, and a
    total below the completed epochs is refused."""
    part, full = tmp_path / "part", tmp_path / "full"
    common = ["--dataset", str(wine), "--widths", "24,24", "--no-progress"]
    assert _train(*common, "--epochs", "2", "--out", str(part)).exit_code == 0
    refused = CliRunner().invoke(main, ["train", "--resume", str(part), "--epochs", "1"])
    assert refused.exit_code == 2 and "--epochs 3 for 1 more" in refused.output
    assert _train("--resume", str(part), "--epochs", "3", "--no-progress").exit_code == 0
    assert _train(*common, "--epochs", "3", "--out", str(full)).exit_code == 0
    assert [m["epoch"] for m in _jsonl(part / "metrics.jsonl")] == [1, 2, 3]
    assert _strip(_jsonl(part / "metrics.jsonl")) == _strip(_jsonl(full / "metrics.jsonl"))
    assert _strip(_jsonl(part / "changes.jsonl")) == _strip(_jsonl(full / "changes.jsonl"))
    # resuming a finished run without --epochs says so and trains nothing
    again = _train("--resume", str(part), "--no-progress")
    assert again.exit_code == 0 and "nothing to do" in again.output
    assert len(_jsonl(part / "metrics.jsonl")) == 3


# -- records, console ------------------------------------------------------------------------

def test_changes_record_predicted_offset_everywhere(wine_run):
    changes = _jsonl(wine_run / "changes.jsonl")
    removals = [c for c in changes if c["op"] == "neurodegeneration"]
    assert removals and all("predicted_offset" in c and "predicted_bound" in c for c in changes)
    # with psi trainable+decay a removal of sigma = 0 neurons has a nonzero offset
    assert any(c["predicted_offset"] > 0 for c in removals)
    report = (wine_run / "report.md").read_text()
    assert "predicted offset" in report
    offsets = {f"{c['predicted_offset']:.3g}" for c in removals}
    rows = [line for line in report.splitlines() if "| neurodegeneration |" in line]
    assert {line.split("|")[10].strip() for line in rows} == offsets
    shown = CliRunner().invoke(main, ["inspect", str(wine_run)]).output
    assert all(f"offset {o}" in shown for o in offsets)


def test_epochs_are_numbered_alike_in_files_inspect_and_report(wine_run):
    metrics = _jsonl(wine_run / "metrics.jsonl")
    changes = _jsonl(wine_run / "changes.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert load_checkpoint(wine_run).epoch == 3
    shown = CliRunner().invoke(main, ["inspect", str(wine_run)]).output
    report = (wine_run / "report.md").read_text()
    for c in changes:
        assert f"epoch {c['epoch']:4d}  {c['op']}" in shown
        assert f"| {c['epoch']} | {c['op']} |" in report
    assert "epoch 3: test accuracy" in shown


def test_console_prints_a_line_every_k_epochs(wine, tmp_path):
    result = _train("--dataset", str(wine), "--epochs", "5", "--widths", "24,24",
                    "--no-progress", "--log-every", "2", "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["2/5", "4/5", "5/5"]  # every 2, and the last
    metrics = _jsonl(tmp_path / "r" / "metrics.jsonl")
    assert f"loss {metrics[1]['train_loss']:.4f}" in lines[0]
    assert f"test acc {100 * metrics[1]['test_accuracy']:6.2f} %" in lines[0]
    assert f"widths {metrics[1]['widths']}" in lines[0]
    changes = _jsonl(tmp_path / "r" / "changes.jsonl")
    added = sum(c["n"] for c in changes if c["epoch"] <= 2 and c["op"] == "neurogenesis")
    removed = sum(c["n"] for c in changes if c["epoch"] <= 2 and c["op"] == "neurodegeneration")
    assert f"changes +{added}/-{removed}" in lines[0]
    quiet = _train("--dataset", str(wine), "--epochs", "2", "--no-progress", "--log-every", "0",
                   "--out", str(tmp_path / "q"))
    assert not [line for line in quiet.output.splitlines() if line.startswith("epoch ")]


def test_trainer_callbacks_see_every_epoch_and_change(wine):
    from isoplastic.train import TrainConfig, Trainer

    seen: dict[str, list] = {"epoch": [], "change": []}

    class Recorder:
        def on_epoch_end(self, trainer, record):
            seen["epoch"].append(record["epoch"])

        def on_change(self, trainer, record):
            seen["change"].append(record)

    trainer = Trainer(TrainConfig(dataset=str(wine), widths=[24], epochs=2, control=False),
                      progress=False, callbacks=[Recorder()])
    trainer.run()
    assert seen["epoch"] == [1, 2]
    assert seen["change"] == trainer.changes and seen["change"]


# -- Ctrl-C ----------------------------------------------------------------------------------

@pytest.mark.slow  # 15 s: CLI subprocesses
def test_ctrl_c_leaves_a_checkpoint_and_the_printed_command_finishes_the_run(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    args = ["train", "--widths", "20", "--epochs", "30", "--n-train", "200", "--seed", "3",
            "--no-progress", "--log-every", "0"]
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "isoplastic", *args, "--out", str(stopped)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=tmp_path)
    metrics = stopped / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no second epoch within 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Aborted!" not in err
    done = load_checkpoint(stopped).epoch
    assert 2 <= done < 30
    assert f"holds the checkpoint after epoch {done}" in err
    command = err.strip().splitlines()[-1].strip()
    assert command == f"isoplastic train --resume {stopped} --epochs 30"
    assert not list(stopped.glob("*.tmp"))
    # the printed command, run as printed, finishes the run as if never interrupted
    argv = shlex.split(command)
    resumed = subprocess.run([sys.executable, "-m", "isoplastic", *argv[1:], "--no-progress"],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    full = tmp_path / "full"
    assert CliRunner().invoke(main, [*args, "--out", str(full)]).exit_code == 0
    assert _strip(_jsonl(stopped / "metrics.jsonl")) == _strip(_jsonl(full / "metrics.jsonl"))
    assert _strip(_jsonl(stopped / "changes.jsonl")) == _strip(_jsonl(full / "changes.jsonl"))
    a, b = load_checkpoint(stopped), load_checkpoint(full)
    for arm in a.nets:
        for (name, x), (_, y) in zip(a.nets[arm].state_dict().items(),
                                     b.nets[arm].state_dict().items()):
            assert torch.equal(x, y), name


# -- standard logs ---------------------------------------------------------------------------

def test_csv_log_has_a_row_per_epoch_equal_to_the_jsonl(wine, tmp_path):
    import csv

    out = tmp_path / "csv"
    result = _train("--dataset", str(wine), *FAST, "--log", "csv", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))
    metrics = _jsonl(out / "metrics.jsonl")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for row, m in zip(rows, metrics):
        assert float(row["test_accuracy"]) == m["test_accuracy"]
        assert float(row["control_train_loss"]) == m["control"]["train_loss"]
        assert [int(row[f"width_{k}"]) for k in range(len(m["widths"]))] == m["widths"]
    # a resumed run rewrites the whole file: the 4-epoch CSV of 3 + 1 epochs has 4 rows
    assert _train("--resume", str(out), "--epochs", "4", "--no-progress", "--log",
                  "csv").exit_code == 0
    rows = list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]


def test_tensorboard_log_holds_every_epoch_and_change(wine, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    result = _train("--dataset", str(wine), *FAST, "--log", "tensorboard", "--out", str(out))
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    metrics = _jsonl(out / "metrics.jsonl")
    got = [(e.step, e.value) for e in events.Scalars("adaptive/test_accuracy")]
    assert got == [(m["epoch"], pytest.approx(m["test_accuracy"])) for m in metrics]
    changes = [c for c in _jsonl(out / "changes.jsonl") if c["op"] == "neurodegeneration"]
    shrink = events.Scalars("change/neurodegeneration/eps_scaled")
    assert [e.step for e in shrink] == [c["epoch"] for c in changes]


def test_missing_tensorboard_is_named_and_nothing_is_written(wine, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    out = tmp_path / "r"
    result = CliRunner().invoke(main, ["train", "--dataset", str(wine), "--epochs", "1",
                                       "--log", "tensorboard", "--out", str(out)])
    assert result.exit_code == 1 and "pip install tensorboard" in result.output
    assert not out.exists()


def test_every_config_setting_has_an_option_and_every_option_a_resume_rule():
    import dataclasses

    from isoplastic.cli.train import CONFIG_OPTIONS, RESUME_FREE, train_cmd
    from isoplastic.train import TrainConfig

    options = {p.name for p in train_cmd.params}
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"version"}
    assert fields <= set(CONFIG_OPTIONS.values()) | {"epochs", "data_dir", "out"}
    assert set(CONFIG_OPTIONS) <= options
    # an option is either compared with the saved run, free on resume, or names the run itself
    assert options == set(CONFIG_OPTIONS) | set(RESUME_FREE) | {"out", "resume", "overwrite"}


def test_load_a_run_trained_on_data_given_as_is(tmp_path):
    """A Trainer given a Dataset without a standardisation: the loaded model passes inputs on
    unchanged (the checkpoint says so; it is not mistaken for an old checkpoint)."""
    from isoplastic.data import Dataset
    from isoplastic.train import TrainConfig, Trainer

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(90, 5, generator=gen)
    y = (x[:, 0] > 0).long()
    data = Dataset("given", x[:60], y[:60], x[60:], y[60:], n_classes=2, sample_shape=(5,))
    out = tmp_path / "given"
    Trainer(TrainConfig(widths=[6], epochs=1, control=False, out=str(out)), data=data,
            progress=False).run()
    assert json.loads((out / "checkpoint.json").read_text())["preprocess"] == {
        "standardise": False}
    model = ip.load(out)
    assert model.mean is None and model.input_shape == (5,)
    with torch.no_grad():
        assert torch.equal(model(x[60:]), model.net(x[60:]))


def test_train_on_the_embedded_mnist_5k(tmp_path):
    out = tmp_path / "mnist5k"
    result = _train("--dataset", "mnist-5k", "--widths", "16", "--epochs", "1", "--n-train", "300",
                    "--n-test", "100", "--no-progress", "--out", str(out))
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["dataset"], config["n_train"], config["n_test"]) == ("mnist-5k", 300, 100)
    assert len(_jsonl(out / "metrics.jsonl")) == 1
    assert ip.load(out).input_shape == (1, 28, 28)  # raw 28x28 images in, as for MNIST
