"""``isoplastic train`` / ``inspect`` through click's CliRunner, in process."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from isoplastic.cli import main

TINY = ["--widths", "80,12", "--epochs", "2", "--n-train", "200", "--no-progress"]



@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = CliRunner().invoke(main, ["train", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_train_writes_all_files(run_dir):
    out, output = run_dir
    for name in ("metrics.jsonl", "changes.jsonl", "config.json", "checkpoint.safetensors",
                 "checkpoint.json", "report.md", "accuracy_loss.png", "widths.png",
                 "spectra.png", "function_change.png"):
        assert (out / name).is_file(), name
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]  # epochs count from 1 everywhere
    for key in ("train_loss", "test_accuracy", "widths", "singular_values", "control"):
        assert key in metrics[-1]
    changes = [json.loads(line) for line in (out / "changes.jsonl").read_text().splitlines()]
    assert changes and all("eps_scaled" in c and "widths" in c for c in changes)
    config = json.loads((out / "config.json").read_text())
    assert config["widths"] == [80, 12] and config["epochs"] == 2 and config["version"] == 1
    report = (out / "report.md").read_text()
    assert "![" in report and "spectra.png" in report
    assert "final test accuracy: adaptive" in output and "control" in output
    assert "growth events" in output and "shrink events" in output
    assert "max eps_scaled of neurogenesis" in output
    assert f"report: {out / 'report.md'}" in output


def test_inspect_prints_architecture_and_changes(run_dir):
    out, _ = run_dir
    result = CliRunner().invoke(main, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "architecture:" in result.output
    assert "adaptive: mlp, widths [64, " in result.output and "control: mlp, widths [64, 80, 12, 10]" in \
        result.output
    assert "hidden 0:" in result.output and "hidden 1:" in result.output
    assert "change log" in result.output and "neurodegeneration" in result.output


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "--epochs"),
    (["--widths", "a,b"], "--widths"),
    (["--widths", "8,0"], "--widths"),
    (["--adapt", "grow"], "--adapt"),
    (["--threshold", "-1"], "--threshold"),
    (["--tolerance", "-0.5"], "--tolerance"),
    (["--dtype", "float16"], "--dtype"),
    (["--adapt", "schedule"], "--schedule"),
    (["--adapt", "schedule", "--schedule", "8:x"], "schedule"),
    (["--lr", "0"], "--lr"),
])
def test_bad_options_exit_2_with_clear_message(tmp_path, args, message):
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2, result.output
    assert "Error" in result.output and message in result.output
    assert not (tmp_path / "r").exists()


def test_unknown_dataset_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["train", "--dataset", "nope", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "cannot load the data" in result.output


def test_inspect_missing_checkpoint(tmp_path):
    result = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert result.exit_code == 1 and "no checkpoint" in result.output


def test_help_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "train" in result.output and "inspect" in result.output
