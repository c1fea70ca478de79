"""Exp 5 — sparsification by alternating full diagonalisation (the paper's Exp 5; claim 7).

Train each architecture, then fully diagonalise code-layers 1, 3, 5, … (:func:`isoplastic.sparsify`).
Reported per run: accuracy before/after, non-zero parameters (|θ| > 1e-4, all parameters)
before/after and retention, ε_scaled and KL on the test set, wall time, and the fraction of weight
entries made zero against the closed form ⌈H/2⌉-style prediction of :func:`sparsity_closed_form`.
Each trained network is also sparsified as a float64 copy (ε_scaled at float64 noise).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..ops.diagonalise import sparsify
from ..train.trainer import logits_of
from ..verify import compare_logits
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
    dataset: str = "digits"
    data_dir: str | None = None
    architectures: list[list[int]] = field(default_factory=lambda: [
        [64, 64], [64, 64, 64], [64] * 4, [64] * 6, [128, 128], [128] * 4, [128] * 6])
    epochs: int = 10
    repeats: int = 3
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 123450

    @classmethod
    def paper(cls) -> Config:
        return cls(dataset="cifar10",
                   architectures=[[w] * h for w in (500, 1000) for h in (2, 3, 4, 5, 6)],
                   epochs=25, repeats=5)

    @classmethod
    def tiny(cls) -> Config:
        return cls(architectures=[[8, 8], [8, 8, 8, 8]], epochs=1, repeats=1, n_train=200,
                   n_test=100)


def run(config: Config, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    data = load_data(config.dataset, config.data_dir, config.n_train, config.n_test, 0)
    runs = []
    jobs = [(tuple(a), r) for a in config.architectures for r in range(config.repeats)]
    for arch, r in progress(jobs, "sparsify"):
        trainer = make_trainer(data, widths=list(arch), epochs=config.epochs,
                               seed=config.seed + r, device=device)
        trainer.run()
        net = trainer.net
        x, y = trainer.x_test, trainer.y_test
        z0 = logits_of(net, x)
        before = copy.deepcopy(net)
        t0 = time.perf_counter()
        rep = sparsify(net, trainer.optimizer)
        wall = time.perf_counter() - t0
        z1 = logits_of(net, x)
        fc = compare_logits(z0, z1)
        b64 = before.to(torch.float64)
        a64 = copy.deepcopy(b64)
        sparsify(a64)
        x64 = x.to(torch.float64)
        fc64 = compare_logits(logits_of(b64, x64), logits_of(a64, x64))
        runs.append({
            "widths": net.widths, "repeat": r, "layers": rep.layers,
            "accuracy_before": float((z0.argmax(1) == y).double().mean()),
            "accuracy_after": float((z1.argmax(1) == y).double().mean()),
            "nonzero_before": rep.nonzero_before, "nonzero_after": rep.nonzero_after,
            "retention": rep.retention, "eps_scaled": fc.eps_scaled, "kl": fc.kl,
            "max_abs": fc.max_abs, "agreement": fc.agreement, "eps_scaled_float64": fc64.eps_scaled,
            "predicted_weight_zero_fraction": rep.closed_form_fraction,
            "measured_weight_zero_fraction": rep.weight_zero_fraction, "time_s": wall})
    by_arch: dict[str, dict] = {}
    for arch in config.architectures:
        rs = [x for x in runs if x["widths"][1:-1] == list(arch)]
        key = "-".join(str(w) for w in rs[0]["widths"])
        by_arch[key] = {k: mean_se(x[k] for x in rs) for k in (
            "accuracy_before", "accuracy_after", "nonzero_before", "nonzero_after", "retention",
            "eps_scaled", "kl", "eps_scaled_float64", "predicted_weight_zero_fraction",
            "measured_weight_zero_fraction", "time_s")}
        by_arch[key]["delta_accuracy_pp"] = mean_se(
            100 * (x["accuracy_after"] - x["accuracy_before"]) for x in rs)
    summary = {
        "max_abs_delta_accuracy_pp": max(abs(100 * (x["accuracy_after"] - x["accuracy_before"]))
                                         for x in runs),
        "max_eps_scaled_float32": max(x["eps_scaled"] for x in runs),
        "max_eps_scaled_float64": max(x["eps_scaled_float64"] for x in runs),
        "max_kl": max(x["kl"] for x in runs),
        "max_abs_zero_fraction_error": max(abs(x["measured_weight_zero_fraction"]
                                               - x["predicted_weight_zero_fraction"]) for x in runs),
        "largest_predicted_fraction": max(x["predicted_weight_zero_fraction"] for x in runs),
    }
    results = {"experiment": "sparsify", "config": config, "dataset": config.dataset,
               "runs": runs, "by_architecture": by_arch, "summary": summary}
    rows = [[k, fmt_ms(v["accuracy_before"], ".4f"), fmt_ms(v["accuracy_after"], ".4f"),
             fmt_ms(v["delta_accuracy_pp"], ".2f"), f"{v['nonzero_before']['mean']:.0f}",
             f"{v['nonzero_after']['mean']:.0f}", f"{100 * v['retention']['mean']:.1f}",
             f"{100 * v['predicted_weight_zero_fraction']['mean']:.2f}",
             f"{100 * v['measured_weight_zero_fraction']['mean']:.2f}",
             sci(v["eps_scaled"]["mean"]), sci(v["kl"]["mean"]),
             sci(v["eps_scaled_float64"]["mean"]), f"{v['time_s']['mean']:.3f}"]
            for k, v in by_arch.items()]
    table = (f"Exp 5 (Table 6 shape) — {config.dataset}, {config.epochs} epochs, "
             f"{config.repeats} repeats; non-zero = |θ|>1e-4 over all parameters\n\n"
             + md_table(["architecture", "acc before", "acc after", "Δa pp", "non-zero before",
                         "non-zero after", "retention %", "zeroed weights predicted %",
                         "zeroed weights measured %", "ε_scaled % (f32)", "KL (f32)",
                         "ε_scaled % (f64)", "time (s)"], rows))
    results["figures"] = _plot(by_arch, out_dir)
    return write_results(out_dir, results, table)


def _plot(by_arch: dict, out_dir: Path) -> list[str]:
    import numpy as np

    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = list(by_arch)
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(keys)), 3.8))
    ax.bar(x - 0.2, [100 * by_arch[k]["predicted_weight_zero_fraction"]["mean"] for k in keys],
           0.4, label="closed form")
    ax.bar(x + 0.2, [100 * by_arch[k]["measured_weight_zero_fraction"]["mean"] for k in keys],
           0.4, label="measured")
    ax.axhline(50, color="gray", ls="--", lw=0.8, label="asymptote 50 %")
    ax.set_xticks(x, keys, rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="weight entries zeroed (%)", title="Alternating full diagonalisation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "sparsify.png", dpi=90)
    plt.close(fig)
    return ["sparsify.png"]
