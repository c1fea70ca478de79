"""``isoplastic train --model transformer`` end to end on a text file, and ``reproduce
transformer`` (issue 14)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import isoplastic as ip
from isoplastic.cli import main

TINY = ["--model", "transformer", "--d-model", "16", "--n-heads", "2", "--d-ff", "32",
        "--context-length", "16", "--batch-size", "8", "--batches-per-epoch", "4", "--epochs",
        "2", "--probe-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """About 24 kB of real text nobody here wrote: the documentation of Python's ``if``,
    ``for``, ``while`` and ``def`` statements (shipped with every CPython)."""
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("text") / "python-doc.txt"
    path.write_text("".join(topics[k] for k in ("if", "for", "while", "function")),
                    encoding="utf-8")
    return path


@pytest.mark.slow  # two tiny runs through the CLI, report included (~10-20 s)
def test_cli_trains_a_transformer_on_a_text_file(tmp_path, text_file):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--dataset", str(text_file), "--out", str(out),
                                       *TINY], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "held-out bpc" in result.output  # the per-epoch console line
    assert "held-out bits per character: adaptive" in result.output
    assert "unigram entropy of the training text" in result.output
    for name in ("config.json", "metrics.jsonl", "changes.jsonl", "checkpoint.safetensors",
                 "checkpoint.json", "report.md", "accuracy_loss.png", "widths.png",
                 "spectra.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "transformer" and config["dataset"] == str(text_file)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    assert {"train_bpc", "test_bpc", "unigram_bpc"} <= set(records[-1])
    assert {"train_bpc", "test_bpc"} <= set(records[-1]["control"])
    model = ip.load(out)
    assert model.vocab.chars == "".join(sorted(set(model.vocab.chars)))
    inspect = CliRunner().invoke(main, ["inspect", str(out)])
    assert inspect.exit_code == 0, inspect.output
    assert "blocks.0.ffn.0" in inspect.output and "held-out bits per character" in inspect.output
    # --resume continues it, refusing a changed model size
    refused = CliRunner().invoke(main, ["train", "--resume", str(out), "--epochs", "3",
                                        "--d-model", "32"])
    assert refused.exit_code == 2 and "--d-model 32 (saved run: 16)" in refused.output
    more = CliRunner().invoke(main, ["train", "--resume", str(out), "--epochs", "3",
                                     "--no-progress"], catch_exceptions=False)
    assert more.exit_code == 0, more.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize("content, message", [
    (None, "text file not found"),
    (b"\xff\xfe not utf-8", "not UTF-8 text"),
    (b"short text", "fewer than one window of context length 16"),
])
def test_cli_bad_text_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "t.txt"
    if content is not None:
        path.write_bytes(content)
    result = CliRunner().invoke(main, ["train", "--dataset", str(path), "--out",
                                       str(tmp_path / "r"), *TINY])
    assert result.exit_code == 1, result.output
    assert "cannot load the data" in result.output and message in result.output
    assert not (tmp_path / "r").exists()


def test_cli_transformer_heads_must_divide_the_width(tmp_path):
    result = CliRunner().invoke(main, ["train", "--model", "transformer", "--d-model", "10",
                                       "--n-heads", "4", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "must divide d_model=10" in result.output
