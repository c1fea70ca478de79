"""Exp 4 — neuroabundance (the paper's Exp 4; claim 11).

3-layer MLPs ``n0-n-n-C`` whose two hidden widths follow a schedule from ``n_start`` to
``n_target`` for every pair of widths: ``hold`` epochs at the start width, ``ramp`` epochs of
linear steps (explicit neurogenesis / neurodegeneration, later hidden layer first), ``end``
epochs at the target width (the library's :class:`~isoplastic.WidthSchedule` through the
:class:`~isoplastic.train.Trainer`). The table reports final test accuracy, mean ± SE, with the
best start width per target in bold. The question: does starting over-abundant (wide) and
shrinking beat starting at the target width?
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..topology.policies import WidthSchedule
from .common import (
    ExperimentConfig,
    fmt_ms,
    load_data,
    make_trainer,
    md_table,
    mean_se,
    progress,
    pyplot,
    resolve_device,
    write_results,
)


@dataclass
class Config(ExperimentConfig):
    dataset: str = "digits"
    data_dir: str | None = None
    widths: list[int] = field(default_factory=lambda: [8, 16, 32])
    hold: int = 5
    ramp: int = 15
    end: int = 5
    repeats: int = 4
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 170000

    @classmethod
    def paper(cls) -> Config:
        return cls(dataset="cifar10", widths=[7, 10, 25, 50, 75, 100], hold=15, ramp=75, end=10,
                   repeats=4)

    @classmethod
    def tiny(cls) -> Config:
        return cls(widths=[4, 8], hold=1, ramp=1, end=1, repeats=1, n_train=200, n_test=100)


def run(config: Config, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    data = load_data(config.dataset, config.data_dir, config.n_train, config.n_test, 0)
    epochs = config.hold + config.ramp + config.end
    setups = [(a, b) for a in config.widths for b in config.widths]
    cells: dict[str, dict] = {}
    jobs = [(i, a, b, r) for i, (a, b) in enumerate(setups) for r in range(config.repeats)]
    raw: dict[tuple[int, int], list[dict]] = {}
    for i, a, b, r in progress(jobs, "abundance"):
        targets = WidthSchedule.linear([a, a], [b, b], config.hold, config.ramp, config.end).targets
        trainer = make_trainer(data, widths=[a, a], epochs=epochs,
                               seed=config.seed + 10000 * i + r, device=device,
                               adapt="schedule", schedule=targets)
        trainer.run()
        raw.setdefault((a, b), []).append({
            "final_accuracy": trainer.metrics[-1]["test_accuracy"],
            "accuracy_curve": [m["test_accuracy"] for m in trainer.metrics],
            "widths": [m["widths"] for m in trainer.metrics]})
    for (a, b), reps in raw.items():
        cells[f"{a}->{b}"] = {"start": a, "target": b,
                              "final_accuracy": mean_se(x["final_accuracy"] for x in reps),
                              "final_widths": reps[0]["widths"][-1], "runs": reps}
    best = {}
    for b in config.widths:
        col = {a: cells[f"{a}->{b}"]["final_accuracy"]["mean"] for a in config.widths}
        best[str(b)] = max(col, key=col.get)
    # over-abundance: widest start vs static (start == target) for every narrower target
    wmax = max(config.widths)
    comparisons = []
    for b in config.widths:
        if b == wmax:
            continue
        wide, static = cells[f"{wmax}->{b}"]["final_accuracy"], cells[f"{b}->{b}"]["final_accuracy"]
        comparisons.append({"target": b, "widest_start": wmax, "widest_start_accuracy": wide,
                            "static_accuracy": static,
                            "difference_pp": 100 * (wide["mean"] - static["mean"]),
                            "widest_at_least_static": wide["mean"] >= static["mean"]})
    results = {"experiment": "abundance", "config": config, "dataset": config.dataset,
               "epochs": epochs, "cells": cells, "best_start_per_target": best,
               "overabundance": comparisons,
               "fraction_targets_best_start_wider": sum(
                   best[str(b)] > b for b in config.widths if b != wmax) / max(
                   len(config.widths) - 1, 1)}
    rows = []
    for a in config.widths:
        row = [f"start {a}"]
        for b in config.widths:
            s = fmt_ms(cells[f"{a}->{b}"]["final_accuracy"], ".3f")
            row.append(f"**{s}**" if best[str(b)] == a else s)
        rows.append(row)
    table = (f"Exp 4 (Table 2 shape) — {config.dataset} n0-n-n-C, {config.hold}+{config.ramp}+"
             f"{config.end} epochs, {config.repeats} repeats; final test accuracy; best start per "
             f"target (column) in bold\n\n"
             + md_table(["start \\ target"] + [f"target {b}" for b in config.widths], rows)
             + "\n\nWidest start vs static, per target: "
             + "; ".join(f"{c['target']}: {c['difference_pp']:+.2f} pp" for c in comparisons))
    results["figures"] = _plot(cells, config, out_dir)
    return write_results(out_dir, results, table)


def _plot(cells: dict, config: Config, out_dir: Path) -> list[str]:
    import numpy as np

    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    ws = config.widths
    m = np.array([[100 * cells[f"{a}->{b}"]["final_accuracy"]["mean"] for b in ws] for a in ws])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    im = ax1.imshow(m, cmap="viridis")
    ax1.set_xticks(range(len(ws)), [str(w) for w in ws])
    ax1.set_yticks(range(len(ws)), [str(w) for w in ws])
    ax1.set(xlabel="target width", ylabel="start width", title="Final test accuracy (%)")
    for i in range(len(ws)):
        for j in range(len(ws)):
            ax1.text(j, i, f"{m[i, j]:.1f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax1)
    b = min(ws)
    for a in ws:
        curves = np.array([x["accuracy_curve"] for x in cells[f"{a}->{b}"]["runs"]])
        ax2.plot(np.arange(1, curves.shape[1] + 1), 100 * curves.mean(0), label=f"{a} → {b}")
    ax2.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"Schedules ending at width {b}")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "abundance.png", dpi=90)
    plt.close(fig)
    return ["abundance.png"]
