"""Exp 2 — singular-value and bias evolution (the paper's Exp 2).

An isotropic tanh MLP and an element-wise tanh MLP start from identical affine parameters and
see identical batches (lr raised to 5e-2 as in the paper, "so the evolution is clearer"). After
every epoch the singular values and biases of every layer are recorded; ridge plots show their
histograms per epoch (24 bins, as in the paper's figure). The paper's specific findings are not
published; we report what we see (spread of singular values, how many fall below 0.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

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
    resolve_device,
    train_module,
    write_results,
)


@dataclass
class Config(ExperimentConfig):
    dataset: str = "digits"
    data_dir: str | None = None
    widths: list[int] = field(default_factory=lambda: [48, 48])
    epochs: int = 30
    repeats: int = 3
    lr: float = 5e-2
    bins: int = 24
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0

    @classmethod
    def paper(cls) -> Config:
        return cls(dataset="cifar10", widths=[100, 100], epochs=40, repeats=40)

    @classmethod
    def tiny(cls) -> Config:
        return cls(widths=[12, 12], epochs=2, repeats=1, n_train=200, n_test=100)


def _snapshot(net) -> dict:
    return {"singular_values": [torch.linalg.svdvals(lin.weight.detach().double()).tolist()
                                for lin in net.linears],
            "biases": [lin.bias.detach().double().tolist() for lin in net.linears]}


def run(config: Config, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    data = load_data(config.dataset, config.data_dir, config.n_train, config.n_test, config.seed)
    widths = [data.n_features, *config.widths, data.n_classes]
    runs = []
    for r in progress(range(config.repeats), "spectra"):
        seed = config.seed + r
        iso = IsotropicMLP(widths, generator=generator(seed, "init"))
        ew = ElementwiseMLP(widths)
        ew.linears.load_state_dict(iso.linears.state_dict())  # identical initial affine params
        rec = {}
        for name, net in (("isotropic", iso), ("elementwise", ew)):
            snaps: list[dict] = []
            hist = train_module(net, data, epochs=config.epochs, lr=config.lr, seed=seed,
                                device=device, on_epoch=lambda e, n, s=snaps: s.append(_snapshot(n)))
            rec[name] = {"snapshots": snaps, "test_accuracy": [h["test_accuracy"] for h in hist]}
        runs.append(rec)
    summary = {}
    for name in ("isotropic", "elementwise"):
        final = [run_["snapshots"][-1]["singular_values"] for run_ in (x[name] for x in runs)]
        summary[name] = {
            "final_accuracy": mean_se(x[name]["test_accuracy"][-1] for x in runs),
            "hidden_sigma_max": mean_se(max(s[1]) for s in final),
            "hidden_sigma_min": mean_se(min(s[1]) for s in final),
            "hidden_fraction_below_0.1": mean_se(
                sum(v < 0.1 for v in s[1]) / len(s[1]) for s in final),
            "hidden_bias_norm": mean_se(
                float(torch.tensor(x[name]["snapshots"][-1]["biases"][1]).norm()) for x in runs),
        }
    results = {"experiment": "spectra", "config": config, "dataset": config.dataset,
               "architecture": widths, "runs": runs, "summary": summary}
    rows = [[name, fmt_ms(s["final_accuracy"], ".3f"), fmt_ms(s["hidden_sigma_max"], ".2f"),
             fmt_ms(s["hidden_sigma_min"], ".3f"), fmt_ms(s["hidden_fraction_below_0.1"], ".2f"),
             fmt_ms(s["hidden_bias_norm"], ".2f")] for name, s in summary.items()]
    table = (f"Exp 2 — {config.dataset} {widths}, lr {config.lr}, {config.epochs} epochs, "
             f"{config.repeats} repeats, identical initial affine parameters\n\n"
             + md_table(["model", "final accuracy", "max σ (W_1)", "min σ (W_1)",
                         "fraction σ<0.1 (W_1)", "‖b_1‖"], rows))
    results["figures"] = _plot(runs[0], config, out_dir)
    return write_results(out_dir, results, table)


def _ridge(ax, series: list[list[float]], bins: int, color: str) -> None:
    import numpy as np

    allv = np.concatenate([np.asarray(s, dtype=float) for s in series])
    lo, hi = float(allv.min()), float(allv.max())
    if hi <= lo:
        hi = lo + 1e-9
    edges = np.linspace(lo, hi, bins + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    step = 1.0
    hs = [np.histogram(np.asarray(s, dtype=float), bins=edges)[0] for s in series]
    for i, h in enumerate(hs):
        base = -i * step
        y = base + 2.2 * step * h / max(h.max(), 1)  # each epoch scaled to its own peak
        ax.fill_between(centres, base, y, color=color, alpha=0.35, lw=0)
        ax.plot(centres, y, color=color, lw=0.6)
    ax.set_yticks([-i * step for i in range(0, len(series), max(1, len(series) // 5))])
    ax.set_yticklabels([str(i - 1) if i else "init" for i in range(0, len(series),
                                                               max(1, len(series) // 5))])


def _plot(run0: dict, config: Config, out_dir: Path) -> list[str]:
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = []
    for key, fname in (("singular_values", "spectra_sigma.png"), ("biases", "spectra_bias.png")):
        n_layers = len(run0["isotropic"]["snapshots"][0][key])
        fig, axes = plt.subplots(2, n_layers, figsize=(3.6 * n_layers, 6.5), squeeze=False)
        for row, (name, color) in enumerate((("isotropic", "tab:blue"),
                                             ("elementwise", "tab:orange"))):
            snaps = run0[name]["snapshots"]
            for layer in range(n_layers):
                ax = axes[row][layer]
                _ridge(ax, [s[key][layer] for s in snaps], config.bins, color)
                ax.set_title(f"{name}: W_{layer}" if key == "singular_values"
                             else f"{name}: b_{layer}", fontsize=9)
                ax.set_xlabel("singular value" if key == "singular_values" else "bias")
            axes[row][0].set_ylabel("epoch (top = init)")
        fig.suptitle(f"Per-epoch {key.replace('_', ' ')} (ridge plot, {config.bins} bins)")
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=90)
        plt.close(fig)
        figs.append(fname)
    return figs
