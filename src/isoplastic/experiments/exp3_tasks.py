"""Exp 3 — scheduled task neuroadaptation (the paper's Exp 3; claims 9 and 10).

Several tasks share one network with the union input/output layout (the library's
:func:`isoplastic.train.run_tasks`): tasks are added and removed over epochs; after every epoch
the adaptive network runs neuroadapt (scaffold S, threshold τ) on every hidden layer, last to
first, with optimizer transport; a static control starts from the same initial weights and sees the
same batches. Tracked: per-task accuracy, total hidden width and Σ‖ψ‖ per epoch.

A second, single-task run through the library's :class:`~isoplastic.train.Trainer` (scaffold
policy) checks the buffer invariant: after every epoch each hidden layer holds exactly S neurons
with strength ≤ τ, and every structural change's function change on the probe batch is logged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data import load_dataset
from ..train.tasks import Task, digits_tasks, expand_schedule, run_tasks, truncate_to_smallest
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
    sci,
    write_results,
)


@dataclass
class Config(ExperimentConfig):
    tasks: str = "digits"  # "digits" (0-3 / 4-6 / 7-9) or "mnist,fashion-mnist,emnist-aj"
    data_dir: str | None = None
    # Quick phases of 10 epochs: with 6-epoch phases one repeat in five had not yet recruited
    # scaffolds when the third task arrived (the paper's phases are 150 epochs long).
    schedule: list = field(default_factory=lambda: [[10, [0]], [10, [0, 1]], [10, [0, 1, 2]],
                                                    [15, [1]]])
    hidden: list[int] = field(default_factory=lambda: [12, 12])
    hidden_range: list[int] | None = None  # draw each initial hidden width from [lo, hi]
    scaffold: int = 5
    threshold: float = 0.9
    lr: float = 1e-2
    weight_decay: float = 0.5
    repeats: int = 5
    buffer_dataset: str = "digits"
    buffer_widths: list[int] = field(default_factory=lambda: [32, 32])
    buffer_epochs: int = 12
    #: (S, τ) pairs of the buffer check: the task experiment's and the library defaults
    buffer_settings: list[list[float]] = field(default_factory=lambda: [[5, 0.95], [2, 0.1]])
    seed: int = 0

    @classmethod
    def paper(cls) -> Config:
        return cls(tasks="mnist,fashion-mnist,emnist-aj",
                   schedule=[[150, [0]], [150, [0, 1]], [150, [0, 1, 2]], [150, [1]]],
                   hidden=[2500, 2500, 2500], hidden_range=[500, 2500], scaffold=5,
                   threshold=0.95, lr=1e-3, weight_decay=1e-3, repeats=25,
                   buffer_dataset="mnist", buffer_widths=[500, 500], buffer_epochs=30)

    @classmethod
    def tiny(cls) -> Config:
        return cls(schedule=[[1, [0]], [1, [0, 1]], [1, [1]]], hidden=[8, 8], repeats=1,
                   buffer_widths=[8, 8], buffer_epochs=2)


def _dataset_tasks(names: list[str], data_dir: str | None, seed: int) -> list[Task]:
    tasks = []
    for name in names:
        d = load_dataset(name, data_dir, seed=seed).flat().standardised()
        tasks.append(Task(name, d.x_train, d.y_train, d.x_test, d.y_test, d.n_classes))
    return truncate_to_smallest(tasks)


def _phases(plan: list[list[int]]) -> list[tuple[int, int, list[int]]]:
    """``(first_epoch, last_epoch, active)`` of each constant stretch of the plan."""
    out = []
    start = 0
    for e in range(1, len(plan) + 1):
        if e == len(plan) or plan[e] != plan[start]:
            out.append((start, e - 1, plan[start]))
            start = e
    return out


def _buffer_check(config: Config, device) -> dict:
    runs = [_buffer_run(config, device, int(s), float(t)) for s, t in config.buffer_settings]
    grow = [r["max_eps_neurogenesis"] for r in runs if r["max_eps_neurogenesis"] is not None]
    shrink = [r["max_eps_neurodegeneration"] for r in runs
              if r["max_eps_neurodegeneration"] is not None]
    cells = sum(r["n_cells"] for r in runs)
    return {"runs": runs,
            "fraction_layers_exactly_S": sum(r["fraction_layers_exactly_S"] * r["n_cells"]
                                             for r in runs) / max(cells, 1),
            "n_neurogenesis": sum(r["n_neurogenesis"] for r in runs),
            "n_neurodegeneration": sum(r["n_neurodegeneration"] for r in runs),
            "max_eps_neurogenesis": max(grow, default=None),
            "max_eps_neurodegeneration": max(shrink, default=None),
            "settings": ", ".join(f"S={r['scaffold']} τ={r['threshold']}" for r in runs)}


def _buffer_run(config: Config, device, scaffold: int, threshold: float) -> dict:
    data = load_data(config.buffer_dataset, config.data_dir, None, None, config.seed)
    trainer = make_trainer(data, widths=config.buffer_widths, epochs=config.buffer_epochs,
                           seed=config.seed, device=device, adapt="scaffold",
                           scaffold=scaffold, threshold=threshold)
    trainer.run()
    counts = [[sum(v <= threshold for v in layer) for layer in m["singular_values"]]
              for m in trainer.metrics]
    exact = [c["eps_scaled"] for c in trainer.changes if c["op"] == "neurogenesis"]
    approx = [c["eps_scaled"] for c in trainer.changes if c["op"] == "neurodegeneration"]
    n_cells = sum(len(r) for r in counts)
    return {"scaffold": scaffold, "threshold": threshold, "n_cells": n_cells,
            "scaffold_counts": counts, "widths": [m["widths"] for m in trainer.metrics],
            "fraction_layers_exactly_S": sum(c == scaffold for row in counts
                                             for c in row) / max(n_cells, 1),
            "n_neurogenesis": len(exact), "n_neurodegeneration": len(approx),
            "max_eps_neurogenesis": max(exact, default=None),
            "max_eps_neurodegeneration": max(approx, default=None),
            "final_accuracy": trainer.metrics[-1]["test_accuracy"]}


def run(config: Config, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    if device.type != "cpu":
        print("[exp3] run_tasks trains on the CPU (it has no device option)")
    names = [s.strip() for s in config.tasks.split(",")]
    plan = expand_schedule([(int(n), list(a)) for n, a in config.schedule])
    phases = _phases(plan)
    runs = []
    for r in progress(range(config.repeats), "tasks"):
        seed = config.seed + r
        tasks = (digits_tasks(seed=seed) if names == ["digits"]
                 else _dataset_tasks(names, config.data_dir, seed))
        hidden = list(config.hidden)
        if config.hidden_range is not None:
            g = torch.Generator().manual_seed(12342397856578 % (2**63) + r)
            lo, hi = config.hidden_range
            hidden = [int(torch.randint(lo, hi + 1, (1,), generator=g)) for _ in hidden]
        kw = dict(hidden=hidden, scaffold=config.scaffold, threshold=config.threshold,
                  lr=config.lr, weight_decay=config.weight_decay, seed=seed)
        ada = run_tasks(tasks, plan, adapt=True, **kw)
        ctl = run_tasks(tasks, plan, adapt=False, **kw)
        runs.append({"seed": seed, "initial_hidden": hidden, "tasks": ada.tasks,
                     "adaptive": ada.records, "control": ctl.records,
                     "n_changes": len(ada.changes)})
    task_names = runs[0]["tasks"]
    phase_rows = []
    for first, last, active in phases:
        row = {"epochs": [first, last], "active": [task_names[t] for t in active],
               "total_width_end": mean_se(r["adaptive"][last]["total_width"] for r in runs),
               "psi_norm_end": mean_se(r["adaptive"][last]["psi_norm"] for r in runs),
               "accuracy_adaptive": {}, "accuracy_control": {}}
        for t in active:
            nm = task_names[t]
            row["accuracy_adaptive"][nm] = mean_se(r["adaptive"][last]["accuracy"][nm]
                                                   for r in runs)
            row["accuracy_control"][nm] = mean_se(r["control"][last]["accuracy"][nm]
                                                  for r in runs)
        phase_rows.append(row)
    tracking = []
    for prev, cur in zip(phases, phases[1:]):
        p_last, c_last = prev[1], cur[1]
        added = len(cur[2]) > len(prev[2])
        removed = len(cur[2]) < len(prev[2])
        deltas = [r["adaptive"][c_last]["total_width"] - r["adaptive"][p_last]["total_width"]
                  for r in runs]
        ok = all(d > 0 for d in deltas) if added else all(d < 0 for d in deltas) if removed \
            else None
        tracking.append({"from": [task_names[t] for t in prev[2]],
                         "to": [task_names[t] for t in cur[2]],
                         "direction": "added" if added else "removed" if removed else "changed",
                         "width_change": mean_se(deltas), "follows": ok})
    buffer = _buffer_check(config, device)
    results = {"experiment": "tasks", "config": config, "task_names": task_names,
               "plan": plan, "runs": runs, "phases": phase_rows, "width_tracking": tracking,
               "width_tracks_tasks": all(t["follows"] for t in tracking
                                         if t["follows"] is not None),
               "buffer": buffer}
    rows = []
    for p in phase_rows:
        accs = "; ".join(f"{nm}: {fmt_ms(p['accuracy_adaptive'][nm], '.3f')} vs "
                         f"{fmt_ms(p['accuracy_control'][nm], '.3f')}" for nm in p["accuracy_adaptive"])
        rows.append([f"{p['epochs'][0] + 1}–{p['epochs'][1] + 1}", ", ".join(p["active"]),
                     fmt_ms(p["total_width_end"], ".1f"), fmt_ms(p["psi_norm_end"], ".3f"), accs])
    table = (f"Exp 3 — tasks {task_names}, S={config.scaffold}, τ={config.threshold}, "
             f"initial hidden {config.hidden if config.hidden_range is None else config.hidden_range}"
             f", {config.repeats} repeats; static control = same initial weights, no adaptation "
             f"(width {sum(runs[0]['control'][0]['widths'])})\n\n"
             + md_table(["epochs", "active tasks", "total hidden width (end)", "Σ‖ψ‖ (end)",
                         "task accuracy adaptive vs control (end of phase)"], rows)
             + "\n\nWidth changes between phases: "
             + "; ".join(f"{t['direction']} → {fmt_ms(t['width_change'], '+.1f')}"
                         for t in tracking)
             + f"\n\nBuffer check (single task {config.buffer_dataset}, initial hidden "
               f"{config.buffer_widths}, {config.buffer_epochs} epochs, library Trainer with the "
               f"scaffold policy)\n\n"
             + md_table(["S", "τ", "(epoch, layer) with exactly S σ≤τ", "growth calls",
                         "max ε_scaled growth %", "removal calls", "max ε_scaled removal %",
                         "final widths", "accuracy"],
                        [[b["scaffold"], b["threshold"], f"{100 * b['fraction_layers_exactly_S']:.0f} %",
                          b["n_neurogenesis"], sci(b["max_eps_neurogenesis"]),
                          b["n_neurodegeneration"], sci(b["max_eps_neurodegeneration"]),
                          b["widths"][-1], f"{b['final_accuracy']:.3f}"] for b in buffer["runs"]]))
    results["figures"] = _plot(runs, task_names, out_dir)
    return write_results(out_dir, results, table)


def _plot(runs: list[dict], names: list[str], out_dir: Path) -> list[str]:
    import numpy as np

    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    epochs = np.arange(1, len(runs[0]["adaptive"]) + 1)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for i, nm in enumerate(names):
        for arm, ls in (("adaptive", "-"), ("control", "--")):
            ys = np.array([[np.nan if rec["accuracy"][nm] is None or nm not in rec["active"]
                            else 100 * rec["accuracy"][nm] for rec in r[arm]] for r in runs])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN epochs: task inactive
                mean = np.nanmean(ys, 0)
            a1.plot(epochs, mean, ls, color=colors[i % 5], label=f"{nm} ({arm})")
    for arm, ls in (("adaptive", "-"), ("control", "--")):
        w = np.array([[rec["total_width"] for rec in r[arm]] for r in runs], dtype=float)
        a2.plot(epochs, w.mean(0), ls, color="black", label=arm)
        a2.fill_between(epochs, w.min(0), w.max(0), color="gray", alpha=0.2)
        p = np.array([[rec["psi_norm"] for rec in r[arm]] for r in runs], dtype=float)
        a3.plot(epochs, p.mean(0), ls, color="tab:purple", label=arm)
    prev = None
    for e, rec in enumerate(runs[0]["adaptive"]):
        if prev is not None and rec["active"] != prev:
            for ax in (a1, a2, a3):
                ax.axvline(e + 0.5, color="gray", ls=":")
        prev = rec["active"]
    a1.set(ylabel="test accuracy of active tasks (%)", title="Per-task accuracy")
    a2.set(ylabel="total hidden width", title="Total hidden width")
    a3.set(ylabel="Σ‖ψ‖", xlabel="epoch", title="Σ‖ψ‖")
    for ax in (a1, a2, a3):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out_dir / "tasks.png", dpi=90)
    plt.close(fig)
    return ["tasks.png"]
