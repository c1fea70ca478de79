"""Exp 0 — cost of neuroadaptation against a training epoch (the paper's Exp 0, claim 8).

One network, one run: after warm-up epochs, each round times one training epoch, one test pass,
one neurogenesis and one neurodegeneration of code-layer 1 (hidden layer 1) with optimizer-state
transport (the width returns to where it was), interleaved so machine drift hits all alike.
Reported as seconds and as a fraction of the training epoch; the paper's figures (RTX 3080,
CIFAR-10 3072-500-500-10, 1042 batches/epoch) are ~0.030 s / 0.037 s per operation against a
17.5 s epoch, i.e. ~0.2 % of an epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..linalg import left_singular_basis
from ..topology.grow import neurogenesis
from ..topology.shrink import neurodegeneration
from .common import (
    ExperimentConfig,
    env_info,
    fmt_ms,
    load_data,
    make_trainer,
    md_table,
    mean_se,
    progress,
    pyplot,
    quick_datasets,
    resolve_device,
    write_results,
)

PAPER = {"epoch_s": 17.52, "test_s": 1.74, "neurodegeneration_s": 0.037, "neurogenesis_s": 0.030,
         "fraction_percent": 100 * 0.0335 / 17.52, "batches_per_epoch": 1042,
         "accuracy_30_epochs": 0.44}


@dataclass
class Config(ExperimentConfig):
    dataset: str = "auto"  # "auto": Fashion-MNIST when installed, else digits
    data_dir: str | None = None
    widths: list[int] = field(default_factory=lambda: [500, 500])
    n_train: int | None = 6000
    n_test: int | None = 1000
    warmup: int = 1
    rounds: int = 10
    layer: int = 1
    batch_size: int = 48
    seed: int = 0

    @classmethod
    def paper(cls) -> Config:
        return cls(dataset="cifar10", n_train=None, n_test=None, warmup=5, rounds=25)

    @classmethod
    def tiny(cls) -> Config:
        return cls(dataset="digits", widths=[24, 24], n_train=300, n_test=100, warmup=1, rounds=2)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(config: Config, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    dataset = config.dataset
    if dataset == "auto":
        dataset = quick_datasets(config.data_dir)[-1]
    data = load_data(dataset, config.data_dir, config.n_train, config.n_test, config.seed)
    trainer = make_trainer(data, widths=config.widths, epochs=config.warmup + config.rounds,
                           seed=config.seed, device=device, batch_size=config.batch_size)
    net, opt = trainer.net, trainer.optimizer
    n_batches = -(-trainer.x_train.shape[0] // config.batch_size)
    for e in range(config.warmup):
        trainer.train_epoch(e)
    times: dict[str, list[float]] = {"epoch": [], "test": [], "neurogenesis": [],
                                     "neurodegeneration": [], "basis": []}
    gen = torch.Generator().manual_seed(config.seed)
    for r in progress(range(config.rounds), "timing"):
        e = config.warmup + r
        _sync(device)
        t0 = time.perf_counter()
        trainer.train_epoch(e)
        _sync(device)
        times["epoch"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        trainer.evaluate(trainer.arms["adaptive"])
        _sync(device)
        times["test"].append(time.perf_counter() - t0)
        # alternate the order so neither op always follows the epoch
        ops = [("neurogenesis",
                lambda: neurogenesis(net, config.layer, 1, opt, generator=gen)),
               ("neurodegeneration", lambda: neurodegeneration(net, config.layer, 1, opt))]
        ops.append(("basis",
                    lambda: left_singular_basis(net.linears[config.layer].weight.detach())))
        if r % 2:
            ops.reverse()
        for name, fn in ops:
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    acc = trainer.evaluate(trainer.arms["adaptive"])["test_accuracy"]
    stats = {k: mean_se(v) for k, v in times.items()}
    frac = {op: mean_se([100 * t / ep for t, ep in zip(times[op], times["epoch"])])
            for op in ("neurogenesis", "neurodegeneration")}
    per_batch = sum(times["epoch"]) / len(times["epoch"]) / n_batches
    # the same op cost against an epoch of the paper's length (1042 batches of 48)
    frac_1042 = {op: 100 * stats[op]["mean"] / (per_batch * PAPER["batches_per_epoch"])
                 for op in ("neurogenesis", "neurodegeneration")}
    results = {
        "experiment": "timing", "config": config, "dataset": dataset,
        "architecture": [data.n_features, *config.widths, data.n_classes],
        "batches_per_epoch": n_batches, "device": str(device), "machine": env_info(),
        "times_s": stats, "fraction_of_epoch_percent": frac,
        "fraction_of_1042_batch_epoch_percent": frac_1042,
        "final_test_accuracy": acc, "widths_after": net.widths, "paper": PAPER,
    }
    rows = [["training epoch", fmt_ms(stats["epoch"], ".3f"), "100", "17.52 ± 0.06"],
            ["test pass", fmt_ms(stats["test"], ".3f"),
             f"{100 * stats['test']['mean'] / stats['epoch']['mean']:.2f}", "1.74"],
            ["neurogenesis (+1, layer 1)", fmt_ms(stats["neurogenesis"], ".4f"),
             fmt_ms(frac["neurogenesis"], ".3f"), "0.030 ± 0.000 (0.17 %)"],
            ["neurodegeneration (−1, layer 1)", fmt_ms(stats["neurodegeneration"], ".4f"),
             fmt_ms(frac["neurodegeneration"], ".3f"), "0.037 ± 0.001 (0.21 %)"],
            ["one left singular basis of W_1 alone", fmt_ms(stats["basis"], ".4f"),
             f"{100 * stats['basis']['mean'] / stats['epoch']['mean']:.3f}", "—"]]
    table = (f"Exp 0 — cost of neuroadaptation, {dataset} "
             f"{results['architecture']}, {n_batches} batches/epoch, {device}, "
             f"{config.rounds} timed rounds\n\n"
             + md_table(["operation", "time (s)", "% of a training epoch", "paper (s)"], rows)
             + f"\n\nAt the paper's epoch length (1042 batches): neurogenesis "
               f"{frac_1042['neurogenesis']:.4f} %, neurodegeneration "
               f"{frac_1042['neurodegeneration']:.4f} % of an epoch.")
    results["figures"] = [_plot(stats, out_dir)]
    return write_results(out_dir, results, table)


def _plot(stats: dict, out_dir: Path) -> str:
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(stats)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(names, [stats[n]["mean"] for n in names], yerr=[stats[n]["se"] for n in names],
           color=["tab:blue", "tab:gray", "tab:green", "tab:red", "tab:purple"][:len(names)])
    ax.set_yscale("log")
    ax.set_ylabel("seconds (log)")
    ax.set_title("Cost of one structural change vs one training epoch")
    fig.tight_layout()
    path = out_dir / "timing.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name
