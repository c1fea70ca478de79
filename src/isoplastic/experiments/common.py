"""Shared helpers of the reproduction experiments.

Statistics (mean ± standard error), data loading with a cache, a generic "train this
``nn.Module`` for E epochs" loop (for the element-wise baselines, which the
:class:`~isoplastic.train.Trainer` does not build), device placement, JSON/markdown output and the
matplotlib import (Agg backend, only inside plotting code).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data import DEBIAN_FASHION_MNIST_DIR, DataError, Dataset
from ..errors import import_extra

# ------------------------------------------------------------------ statistics


@dataclass
class ExperimentConfig:
    """Base of every experiment's ``Config``: the device, and the three presets.

    ``quick()`` is the class defaults (offline data, minutes on a CPU); each experiment defines
    ``paper()`` (the paper's architectures, epochs and repeats) and ``tiny()`` (seconds, tests).
    """

    device: str = "cpu"

    @classmethod
    def quick(cls):
        return cls()

    @classmethod
    def paper(cls):
        raise NotImplementedError

    @classmethod
    def tiny(cls):
        raise NotImplementedError


def mean_se(values: Iterable[float]) -> dict:
    """``{"mean", "se", "n", "values"}``; ``se`` is the standard error (0 for a single value)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return {"mean": None, "se": None, "n": 0, "values": []}
    m = sum(xs) / n
    se = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n) if n > 1 else 0.0
    return {"mean": m, "se": se, "n": n, "values": xs}


def fmt_ms(stat: dict | None, spec: str = ".2f", scale: float = 1.0) -> str:
    """``"mean ± se"`` of a :func:`mean_se` dict (``scale`` multiplies both)."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    return f"{format(stat['mean'] * scale, spec)} ± {format(stat['se'] * scale, spec)}"


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); ``None`` for < 3 points."""
    if len(x) < 3:
        return None

    def ranks(v: Sequence[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for t in range(i, j + 1):
                r[order[t]] = (i + j) / 2.0
            i = j + 1
        return r

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    vy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return None if vx == 0 or vy == 0 else cov / (vx * vy)


# ------------------------------------------------------------------ data


def fashion_mnist_available(data_dir: str | None = None) -> bool:
    """Whether Fashion-MNIST can be read offline (``data_dir`` or the Debian package)."""
    try:
        load_data("fashion-mnist", data_dir, 16, 16, 0)
        return True
    except DataError:
        return False


def quick_datasets(data_dir: str | None = None) -> list[str]:
    """Data sets of the quick presets: digits always, Fashion-MNIST when installed."""
    names = ["digits"]
    if data_dir is not None or DEBIAN_FASHION_MNIST_DIR.is_dir():
        if fashion_mnist_available(data_dir):
            names.append("fashion-mnist")
    return names


@lru_cache(maxsize=16)
def load_data(dataset: str, data_dir: str | None, n_train: int | None, n_test: int | None,
              seed: int = 0) -> Dataset:
    """Flat, standardised data (via :func:`isoplastic.train.prepare_data`), cached per process."""
    from ..train import TrainConfig, prepare_data

    cfg = TrainConfig(dataset=dataset, data_dir=data_dir, n_train=n_train, n_test=n_test,
                      seed=seed, epochs=1, control=False, adapt="none")
    return prepare_data(cfg)


# ------------------------------------------------------------------ devices and training


def resolve_device(device: str | None) -> torch.device:
    """``"cpu"`` / ``"cuda"`` (falls back to CPU with a message when CUDA is missing)."""
    if device in (None, "cpu"):
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("[isoplastic reproduce] CUDA requested but not available; using the CPU",
              file=sys.stderr)
        return torch.device("cpu")
    return torch.device(device)


def trainer_to(trainer, device: torch.device) -> None:
    """Move a :class:`~isoplastic.train.Trainer`'s data and networks to ``device``.

    Must be called before the first training step (optimizer state still empty); the
    parameters are moved in place, so the optimizers keep pointing at them.
    """
    if device.type == "cpu":
        return
    for name in ("x_train", "y_train", "x_test", "y_test", "probe"):
        setattr(trainer, name, getattr(trainer, name).to(device))
    for arm in trainer.arms.values():
        arm.net.to(device)


def make_trainer(data: Dataset, *, widths: Sequence[int], epochs: int, seed: int,
                 device: torch.device | str = "cpu", **config):
    """A :class:`~isoplastic.train.Trainer` on already prepared ``data`` (no files written)."""
    from ..train import TrainConfig, Trainer

    cfg = TrainConfig(dataset=data.name, widths=list(widths), epochs=epochs, seed=seed,
                      **{"control": False, "adapt": "none", **config})
    trainer = Trainer(cfg, data=data, progress=False, out=None)
    trainer_to(trainer, torch.device(device))
    return trainer


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy in evaluation mode."""
    from ..train.trainer import logits_of

    return float((logits_of(net, x).argmax(1) == y).double().mean())


def train_module(net: nn.Module, data: Dataset, *, epochs: int, lr: float = 1e-3,
                 weight_decay: float = 1e-3, batch_size: int = 48, seed: int = 0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 on_epoch: Callable[[int, nn.Module], None] | None = None) -> list[dict]:
    """Train any ``nn.Module`` (cross-entropy + ``net.psi_penalty()`` when present, AdamW).

    Same protocol as the library's trainer (shuffle per epoch from a ``(seed, epoch)``
    generator, batch 48, AdamW) so two networks trained with the same ``seed`` see the same
    batches. ``on_epoch(epoch, net)`` is called after epoch 0-based ``epoch`` (and with -1
    before training). Returns one ``{"epoch", "train_loss", "test_accuracy", "time"}`` per epoch.
    """
    from ..train.trainer import generator

    device = torch.device(device)
    net.to(device=device, dtype=dtype)
    xtr, ytr = data.x_train.to(device, dtype), data.y_train.to(device)
    xte, yte = data.x_test.to(device, dtype), data.y_test.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    penalty = getattr(net, "psi_penalty", None)
    if on_epoch is not None:
        on_epoch(-1, net)
    records = []
    n = xtr.shape[0]
    for e in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=generator(seed, "shuffle", e)).to(device)
        net.train()
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            ce = F.cross_entropy(net(xtr[idx]), ytr[idx])
            loss = ce + penalty() if penalty is not None else ce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(ce.detach()) * len(idx)
        records.append({"epoch": e, "train_loss": total / n,
                        "test_accuracy": accuracy(net, xte, yte),
                        "time": time.perf_counter() - t0})
        if on_epoch is not None:
            on_epoch(e, net)
    return records


# ------------------------------------------------------------------ progress and output


def progress(iterable: Iterable, desc: str, total: int | None = None):
    """tqdm progress bar, disabled when stderr is not a terminal or tqdm is not installed."""
    try:
        from tqdm.auto import tqdm  # tqdm comes with the [cli] extra
    except ModuleNotFoundError:  # without it: no progress bar
        return iterable

    return tqdm(iterable, desc=desc, total=total, leave=False, disable=not sys.stderr.isatty())


def _jsonable(obj):
    if is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_results(out_dir: Path, results: dict, table: str) -> dict:
    """Write ``results.json`` and ``table.md`` into ``out_dir``; returns the JSON-able results."""
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = _jsonable(results)
    (out_dir / "results.json").write_text(json.dumps(clean, indent=1) + "\n")
    (out_dir / "table.md").write_text(table.rstrip() + "\n")
    return clean


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot():
    """matplotlib.pyplot with the Agg backend (imported on demand).

    Raises:
        MissingExtraError: matplotlib is not installed (``pip install 'isoplastic[cli]'``).
    """
    matplotlib = import_extra("matplotlib", feature="plotting the experiments")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def sci(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}e}"


def env_info() -> dict:
    from ..bench.timing import machine

    return machine()


__all__ = ["accuracy", "env_info", "fashion_mnist_available", "fmt_ms", "load_data",
           "make_trainer", "md_table", "mean_se", "progress", "pyplot", "quick_datasets",
           "resolve_device", "sci", "spearman", "train_module", "trainer_to", "write_results"]
