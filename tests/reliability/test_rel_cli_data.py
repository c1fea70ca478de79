"""CLI options out of range, and data directories / .npz files that are missing, truncated,
corrupt or hostile: every case ends in a clear message (never a traceback) and nothing runs."""

from __future__ import annotations

import gzip
import json
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from isoplastic.cli import main
from isoplastic.data import DataError, load_dataset

# -- CLI options out of range --------------------------------------------------------------------

BAD_TRAIN_OPTIONS = [
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "-3"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-1e-3"], "--lr"),
    (["--lr", "nan"], "lr"),
    (["--weight-decay", "-1"], "--weight-decay"),
    (["--scaffold", "-1"], "--scaffold"),
    (["--threshold", "-0.1"], "--threshold"),
    (["--threshold", "nan"], "threshold"),
    (["--tolerance", "-1"], "--tolerance"),
    (["--seed", "-1"], "--seed"),
    (["--n-train", "0"], "--n-train"),
    (["--threads", "-2"], "--threads"),
    (["--dtype", "float16"], "--dtype"),
    (["--adapt", "bogus"], "--adapt"),
    (["--widths", "a,b"], "--widths"),
    (["--widths", "0,4"], "--widths"),
    (["--widths", ","], "--widths"),
    (["--adapt", "schedule"], "--schedule"),
    (["--adapt", "schedule", "--schedule", "x:y"], "schedule"),
    (["--dataset", "no-such-set"], "unknown data set"),
    (["--dataset", "mnist", "--data-dir", "/nonexistent/isoplastic"], "does not exist"),
    (["--dataset", "/nonexistent/file.npz"], "npz file not found"),
    (["--resume", "/nonexistent/run"], "--resume"),
]


@pytest.mark.parametrize("args,names", BAD_TRAIN_OPTIONS, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_train_option_out_of_range_is_a_clear_usage_error(tmp_path, args, names):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "--epochs", "1", "--no-progress", "--out", str(out),
                                    *args] if "--epochs" not in args else
                             ["train", "--no-progress", "--out", str(out), *args])
    assert res.exit_code in (1, 2), res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)  # no traceback
    assert names in res.output, res.output
    assert "Traceback" not in res.output
    assert not (out / "checkpoint.json").exists()


def test_resume_of_a_directory_without_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    res = CliRunner().invoke(main, ["train", "--no-progress", "--resume", str(tmp_path)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    assert "no checkpoint" in res.output


@pytest.mark.parametrize("args,names", [
    (["/nonexistent/run"], "does not exist"),
    (["RUN", "--max-changes", "-1"], "--max-changes"),
    (["EMPTY"], "no checkpoint"),
])
def test_inspect_bad_arguments(tmp_path, args, names):
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / "empty") if a in ("RUN", "EMPTY") else a for a in args]
    res = CliRunner().invoke(main, ["inspect", *args])
    assert res.exit_code in (1, 2) and isinstance(res.exception, SystemExit), res.output
    assert names in res.output


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-epoch run (tolerance 0: every change is refused and logged, so the log is long)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    res = CliRunner().invoke(main, ["train", "--epochs", "2", "--widths", "6", "--n-train", "40",
                                    "--no-control", "--no-progress", "--batch-size", "40",
                                    "--scaffold", "3", "--threshold", "0.5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_inspect_max_changes_larger_than_the_log_shows_every_change(tiny_run):
    """Regression (cli/inspect.py): --max-changes above the number of logged changes sliced
    changes[len - max:] with a negative start and dropped the oldest ones."""
    n = len(json.loads((tiny_run / "checkpoint.json").read_text())["changes"])
    assert n >= 1
    res = CliRunner().invoke(main, ["inspect", str(tiny_run), "--max-changes", str(n + 1)])
    assert res.exit_code == 0, res.output
    assert res.output.count("  epoch ") == n
    res = CliRunner().invoke(main, ["inspect", str(tiny_run), "--max-changes", "0"])
    assert res.output.count("  epoch ") == 0


@pytest.mark.parametrize("edit", ["drop_arms", "extra_arch_key", "bad_epoch", "config_reduce"])
def test_inspect_edited_checkpoint_metadata_is_a_clear_error(tiny_run, tmp_path, edit):
    """Regression (cli/inspect.py): a hand-edited checkpoint.json (its sha256 covers only the
    tensors) escaped as KeyError/TypeError/ConfigError tracebacks."""
    run = tmp_path / "run"
    run.mkdir()
    for f in tiny_run.iterdir():
        if f.is_file():
            (run / f.name).write_bytes(f.read_bytes())
    meta = json.loads((run / "checkpoint.json").read_text())
    if edit == "drop_arms":
        del meta["arms"]
    elif edit == "extra_arch_key":
        meta["arms"]["adaptive"]["architecture"]["evil"] = 1
    elif edit == "bad_epoch":
        meta["epoch"] = "x"
    else:
        meta["config"]["__reduce__"] = ["os.system", ["touch pwned"]]
    (run / "checkpoint.json").write_text(json.dumps(meta))
    res = CliRunner().invoke(main, ["inspect", str(run)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), repr(res.exception)
    assert "checkpoint" in res.output
    assert not Path("pwned").exists() and not (run / "pwned").exists()


# -- data directories with missing, truncated or corrupt files -----------------------------------

MNIST = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")


def _idx(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    return struct.pack(">I", 0x800 | arr.ndim) + b"".join(
        struct.pack(">I", d) for d in arr.shape) + arr.tobytes()


def _write_mnist(folder: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (6, 28, 28)), np.arange(6) % 10,
              rng.integers(0, 256, (3, 28, 28)), np.arange(3) % 10]
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(MNIST, arrays, strict=True):
        data = _idx(arr)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


def _mutations(data: bytes, rng: random.Random) -> list[tuple[str, bytes]]:
    cuts = [0, 1, 3, 4, 7, 8, 15, 16, len(data) // 2, len(data) - 1]
    out = [(f"truncated@{c}", data[:c]) for c in cuts if c < len(data)]
    for i in range(6):  # header corruption (magic and dimensions)
        pos = rng.randrange(min(16, len(data)))
        flipped = bytearray(data)
        flipped[pos] ^= 1 << rng.randrange(8)
        out.append((f"header-bitflip#{i}@{pos}", bytes(flipped)))
    out.append(("trailing-garbage", data + b"\x00\x01"))
    out.append(("huge-dimension", data[:4] + struct.pack(">I", 2**31) + data[8:]))
    return out


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_every_truncation_or_corruption_of_an_idx_file_is_a_data_error(tmp_path, gz):
    rng = random.Random(5)
    src = tmp_path / "src"
    _write_mnist(src, gz)
    clean = load_dataset("mnist", src)
    tried = 0
    for name in MNIST:
        fname = f"{name}.gz" if gz else name
        raw = (src / fname).read_bytes()
        plain = gzip.decompress(raw) if gz else raw
        cases = _mutations(plain, rng)
        if gz:
            cases = [(c, gzip.compress(d)) for c, d in cases] + [
                ("gzip-truncated", raw[: len(raw) // 2]), ("gzip-garbage", b"\x1f\x8b" + raw[5:])]
        for label, payload in cases:
            d = tmp_path / f"case{tried}"
            d.mkdir()
            for f in src.iterdir():
                (d / f.name).write_bytes(payload if f.name == fname else f.read_bytes())
            try:
                ds = load_dataset("mnist", d)
            except DataError as exc:
                assert str(d) in str(exc) or "mnist" in str(exc), (label, exc)
            else:  # a flip that leaves a valid file (e.g. in a label value) must load sanely
                assert ds.x_train.shape[1:] == clean.x_train.shape[1:], label
                assert ds.y_train.max() < ds.n_classes and ds.y_test.max() < ds.n_classes, label
            tried += 1
    assert tried == (76 if gz else 68)  # the counts quoted in docs/reliability.md


def test_missing_file_and_directory_in_place_of_a_file(tmp_path):
    _write_mnist(tmp_path / "m", gz=False)
    (tmp_path / "m" / MNIST[3]).unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*not found"):
        load_dataset("mnist", tmp_path / "m")
    (tmp_path / "m" / MNIST[3]).mkdir()  # a directory where the file should be
    with pytest.raises(DataError, match="not found"):
        load_dataset("mnist", tmp_path / "m")


def test_cifar_batch_truncated_or_with_bad_labels(tmp_path):
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        rec = np.concatenate([rng.integers(0, 10, (2, 1)), rng.integers(0, 256, (2, 3072))], 1)
        (tmp_path / name).write_bytes(rec.astype(np.uint8).tobytes())
    assert load_dataset("cifar10", tmp_path).x_train.shape == (10, 3, 32, 32)
    good = (tmp_path / names[0]).read_bytes()
    (tmp_path / names[0]).write_bytes(good[:-7])
    with pytest.raises(DataError, match=names[0]):
        load_dataset("cifar10", tmp_path)
    (tmp_path / names[0]).write_bytes(bytes([200]) + good[1:])  # label 200 in CIFAR-10
    with pytest.raises(DataError, match="label"):
        load_dataset("cifar10", tmp_path)


# -- .npz files with wrong arrays ---------------------------------------------------------------

class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


X = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
Y = np.arange(20) % 3


@pytest.mark.parametrize("arrays,match", [
    ({"x": X}, r"missing array\(s\) y"),
    ({"a": X, "b": Y}, r"missing array\(s\) x, y"),
    ({"x": X, "y": Y[:-1]}, "20 samples but 'y' has 19 labels"),
    ({"x": X[:, 0], "y": Y}, "at least 2 dimensions"),
    ({"x": X, "y": np.eye(3)[Y]}, "labels must be a 1-D array"),
    ({"x": X, "y": Y - 1}, "negative label"),
    ({"x": X, "y": Y + 0.5}, "non-integer labels"),
    ({"x": X.astype(np.complex64), "y": Y}, "not a real numeric type"),
    ({"x": np.where(X > 1, np.nan, X), "y": Y}, "non-finite"),
    ({"x": X[:0], "y": Y[:0]}, "no samples"),
    ({"x": X, "y": Y, "x_test": X}, "only one of x_test / y_test"),
    ({"x": X, "y": Y, "x_test": X[:, :2], "y_test": Y}, "sample shape"),
    ({"x": X, "y": np.where(Y == 2, 2**40, Y)}, "classes \\(at most 65536\\)"),
], ids=["no-y", "no-x-y", "length", "1-d-x", "one-hot", "negative", "fractional", "complex",
        "nan", "empty", "half-test", "test-shape", "huge-label"])
def test_npz_with_wrong_arrays_is_a_data_error(tmp_path, arrays, match):
    """(huge-label is a regression: one label of 2**40 sized the output layer at 2**40 and the
    run died in the allocator with a RuntimeError.)"""
    path = _npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=match):
        load_dataset(str(path))


def test_npz_object_array_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "PWNED"
    obj = np.empty(1, dtype=object)
    obj[0] = _Payload(marker)
    path = tmp_path / "evil.npz"
    np.savez(path, x=X, y=obj)  # allow_pickle is needed on load only
    with pytest.raises(DataError, match="object array"):
        load_dataset(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("payload", ["pickle", "npy", "truncated", "empty"])
def test_npz_that_is_not_an_archive_is_a_data_error(tmp_path, payload):
    import pickle

    marker = tmp_path / "PWNED"
    path = tmp_path / "d.npz"
    if payload == "pickle":
        path.write_bytes(pickle.dumps(_Payload(marker)))
    elif payload == "npy":
        with open(path, "wb") as fh:
            np.save(fh, X)
    elif payload == "truncated":
        _npz(path, x=X, y=Y)
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.write_bytes(b"")
    with pytest.raises(DataError, match="d.npz"):
        load_dataset(str(path))
    assert not marker.exists()


def test_cli_reports_a_bad_npz_without_traceback(tmp_path):
    path = _npz(tmp_path / "d.npz", x=X, y=Y - 1)
    res = CliRunner().invoke(main, ["train", "--dataset", str(path), "--epochs", "1",
                                    "--no-progress", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    assert "cannot load the data" in res.output and "negative label" in res.output
