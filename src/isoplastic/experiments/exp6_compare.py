"""Exp 6 — element-wise tanh vs isotropic tanh (the paper's Exp 6; claim 13).

Per repeat both models start from identical affine parameters and see identical batches; the
isotropic model has no intrinsic length and no ψ (the paper's setting). Final test accuracy,
mean ± SE, across data sets and depths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..nn import ElementwiseMLP, IsotropicMLP
from ..train.trainer import generator
from .common import (
    ExperimentConfig,
    fmt_ms,
    load_data,
    md_table,
    mean_se,
    progress,
    pyplot,
    quick_datasets,
    resolve_device,
    train_module,
    write_results,
)


@dataclass
class Config(ExperimentConfig):
    datasets: list[str] = field(default_factory=lambda: ["auto"])  # auto: digits + F-MNIST
    data_dir: str | None = None
    hidden: list[int] = field(default_factory=lambda: [64])
    depths: list[int] = field(default_factory=lambda: [2, 3, 4])
    epochs: dict = field(default_factory=lambda: {"digits": 30, "default": 8})
    repeats: int = 3
    n_train: int | None = 5000  # subset of the large data sets (digits is used whole)
    n_test: int | None = 1000
    lr: float = 1e-3
    seed: int = 0

    @classmethod
    def paper(cls) -> Config:
        return cls(datasets=["mnist", "fashion-mnist", "cifar10", "cifar100", "emnist-aj"],
                   hidden=[500, 1000], depths=[2, 3, 4, 5], epochs={"default": 50}, repeats=9,
                   n_train=None, n_test=None)

    @classmethod
    def tiny(cls) -> Config:
        return cls(datasets=["digits"], hidden=[8], depths=[2], epochs={"default": 1},
                   repeats=1, n_train=200, n_test=100)


def run(config: Config, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    names = []
    for d in config.datasets:
        names += quick_datasets(config.data_dir) if d == "auto" else [d]
    cells = {}
    jobs = [(d, w, h) for d in names for w in config.hidden for h in config.depths]
    for d, w, h in progress(jobs, "compare"):
        big = d != "digits"
        data = load_data(d, config.data_dir, config.n_train if big else None,
                         config.n_test if big else None, 0)
        epochs = int(config.epochs.get(d, config.epochs.get("default", 10)))
        widths = [data.n_features, *[w] * h, data.n_classes]
        acc = {"isotropic": [], "elementwise": []}
        for r in range(config.repeats):
            seed = config.seed + r
            iso = IsotropicMLP(widths, intrinsic_length="none", psi="none",
                               generator=generator(seed, "init"))
            ew = ElementwiseMLP(widths)
            ew.linears.load_state_dict(iso.linears.state_dict())
            for name, net in (("isotropic", iso), ("elementwise", ew)):
                hist = train_module(net, data, epochs=epochs, lr=config.lr, seed=seed,
                                    device=device)
                acc[name].append(hist[-1]["test_accuracy"])
        cells[f"{d} [{w}]x{h}"] = {
            "dataset": d, "width": w, "depth": h, "epochs": epochs, "architecture": widths,
            "isotropic": mean_se(acc["isotropic"]), "elementwise": mean_se(acc["elementwise"]),
            "difference_pp": mean_se(100 * (a - b) for a, b in zip(acc["isotropic"],
                                                                  acc["elementwise"]))}
    wins = sum(c["difference_pp"]["mean"] > 0 for c in cells.values())
    results = {"experiment": "compare", "config": config, "datasets": names, "cells": cells,
               "isotropic_wins": wins, "n_cells": len(cells),
               "mean_difference_pp": mean_se(c["difference_pp"]["mean"] for c in cells.values())}
    rows = [[k, c["epochs"], fmt_ms(c["elementwise"], ".4f"), fmt_ms(c["isotropic"], ".4f"),
             fmt_ms(c["difference_pp"], "+.2f")] for k, c in cells.items()]
    table = (f"Exp 6 (Table 7 shape) — identical initial affine parameters; isotropic without o "
             f"and ψ; {config.repeats} repeats; final test accuracy\n\n"
             + md_table(["data set / hidden", "epochs", "element-wise tanh", "isotropic tanh",
                         "iso − elem (pp)"], rows))
    results["figures"] = _plot(cells, out_dir)
    return write_results(out_dir, results, table)


def _plot(cells: dict, out_dir: Path) -> list[str]:
    import numpy as np

    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = list(cells)
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(keys)), 3.8))
    for off, name, col in ((-0.2, "elementwise", "tab:orange"), (0.2, "isotropic", "tab:blue")):
        ax.bar(x + off, [100 * cells[k][name]["mean"] for k in keys], 0.4,
               yerr=[100 * cells[k][name]["se"] for k in keys], label=name, color=col)
    ax.set_xticks(x, keys, rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="test accuracy (%)", title="Element-wise vs isotropic tanh (same init)")
    ax.legend(fontsize=7)
    lo = min(100 * min(cells[k]["elementwise"]["mean"], cells[k]["isotropic"]["mean"]) for k in keys)
    ax.set_ylim(max(0, lo - 10), 100)
    fig.tight_layout()
    fig.savefig(out_dir / "compare.png", dpi=90)
    plt.close(fig)
    return ["compare.png"]
