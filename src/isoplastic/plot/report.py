"""``report.md`` and PNG plots for a training run directory, and the task-run plot.

matplotlib is imported inside the functions (Agg backend), never at module import.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import import_extra


def _pyplot():
    """matplotlib.pyplot (Agg); :class:`~isoplastic.errors.MissingExtraError` when absent."""
    matplotlib = import_extra("matplotlib", feature="plotting the run report")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def _curves(plt, metrics: list[dict], out: Path) -> None:
    epochs = [m["epoch"] + 1 for m in metrics]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(epochs, [100 * m["test_accuracy"] for m in metrics], label="adaptive")
    ax2.plot(epochs, [m["train_loss"] for m in metrics], label="adaptive train")
    ax2.plot(epochs, [m["test_loss"] for m in metrics], "--", label="adaptive test")
    if metrics and "control" in metrics[0]:
        ax1.plot(epochs, [100 * m["control"]["test_accuracy"] for m in metrics], label="control")
        ax2.plot(epochs, [m["control"]["train_loss"] for m in metrics], label="control train")
        ax2.plot(epochs, [m["control"]["test_loss"] for m in metrics], "--", label="control test")
    ax1.set(xlabel="epoch", ylabel="test accuracy (%)", title="Accuracy")
    ax2.set(xlabel="epoch", ylabel="cross-entropy", title="Loss", yscale="log")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _widths(plt, metrics: list[dict], out: Path) -> None:
    epochs = [m["epoch"] + 1 for m in metrics]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    n_layers = len(metrics[0]["widths"]) if metrics else 0
    for k in range(n_layers):
        ax.step(epochs, [m["widths"][k] for m in metrics], where="post", label=f"hidden {k}")
    ax.set(xlabel="epoch", ylabel="width", title="Hidden widths (adaptive)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _spectra(plt, metrics: list[dict], out: Path) -> None:
    import numpy as np

    n_layers = len(metrics[0]["singular_values"]) if metrics else 0
    fig, axes = plt.subplots(1, max(n_layers, 1), figsize=(5 * max(n_layers, 1), 3.8),
                             squeeze=False)
    for k in range(n_layers):
        rows = [m["singular_values"][k] for m in metrics]
        width = max(len(r) for r in rows)
        grid = np.full((width, len(rows)), np.nan)
        for e, r in enumerate(rows):
            grid[: len(r), e] = r
        ax = axes[0, k]
        im = ax.imshow(grid, aspect="auto", origin="upper", interpolation="nearest",
                       extent=(0.5, len(rows) + 0.5, width - 0.5, -0.5), cmap="viridis")
        fig.colorbar(im, ax=ax, label="singular value")
        ax.set(xlabel="epoch", ylabel="neuron (ordered by strength)",
               title=f"Spectrum of W_{k} (hidden {k})")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _changes(plt, changes: list[dict], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    floor = 1e-12
    styles = {"neurogenesis": ("^", "tab:green"), "neurodegeneration": ("v", "tab:red")}
    for op, (marker, color) in styles.items():
        idx = [i for i, c in enumerate(changes) if c["op"] == op and not c["refused"]]
        ax.scatter(idx, [max(changes[i]["eps_scaled"], floor) for i in idx], marker=marker,
                   color=color, label=op)
    idx = [i for i, c in enumerate(changes) if c["refused"]]
    if idx:
        ax.scatter(idx, [max(changes[i]["eps_scaled"], floor) for i in idx], marker="x",
                   color="black", label="refused")
    ax.set(yscale="log", xlabel="structural change #", ylabel="eps_scaled (%)",
           title="Function change per structural change (probe batch)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` and its PNGs into ``run_dir`` (from its metrics/changes/config files).

    Returns the path of ``report.md``.
    """
    run_dir = Path(run_dir)
    metrics = _read_jsonl(run_dir / "metrics.jsonl")
    changes = _read_jsonl(run_dir / "changes.jsonl")
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json"
                                                                  ).is_file() else {}
    plt = _pyplot()
    figures = {
        "accuracy_loss.png": ("Accuracy and loss", lambda p: _curves(plt, metrics, p)),
        "widths.png": ("Hidden widths", lambda p: _widths(plt, metrics, p)),
        "spectra.png": ("Singular-value spectra per epoch", lambda p: _spectra(plt, metrics, p)),
        "function_change.png": ("Function change per structural change",
                                lambda p: _changes(plt, changes, p)),
    }
    made = []
    for name, (title, draw) in figures.items():
        if name == "function_change.png" and not changes:
            continue
        if not metrics:
            continue
        draw(run_dir / name)
        made.append((name, title))

    last = metrics[-1] if metrics else {}
    applied = [c for c in changes if not c["refused"]]
    grow = [c for c in applied if c["op"] == "neurogenesis"]
    shrink = [c for c in applied if c["op"] == "neurodegeneration"]
    lines = ["# isoplastic training report", ""]
    lines.append(f"Data set `{config.get('dataset')}`, adapt `{config.get('adapt')}` "
                 f"(S={config.get('scaffold')}, tau={config.get('threshold')}), "
                 f"{len(metrics)} epochs, dtype {config.get('dtype')}, seed {config.get('seed')}.")
    lines.append("")
    lines.append("| | adaptive | control |")
    lines.append("|---|---|---|")
    ctrl = last.get("control", {})
    acc = last.get("test_accuracy")
    cacc = ctrl.get("test_accuracy")
    lines.append(f"| final test accuracy (%) | {_fmt(None if acc is None else 100 * acc)} | "
                 f"{_fmt(None if cacc is None else 100 * cacc)} |")
    lines.append(f"| final hidden widths | {last.get('widths')} | {ctrl.get('widths', 'n/a')} |")
    lines.append("")
    lines.append(f"Structural changes: {len(grow)} growth events "
                 f"(+{sum(c['n'] for c in grow)} neurons), {len(shrink)} shrink events "
                 f"(-{sum(c['n'] for c in shrink)} neurons), "
                 f"{sum(c['refused'] for c in changes)} refused.")
    if grow:
        lines.append(f"Max eps_scaled of neurogenesis: {max(c['eps_scaled'] for c in grow):.3g} %.")
    if shrink:
        lines.append("Max eps_scaled of neurodegeneration: "
                     f"{max(c['eps_scaled'] for c in shrink):.3g} %.")
    lines.append("")
    for name, title in made:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    if changes:
        lines += ["## Change log", "", "| epoch | op | layer | n | widths after | eps_scaled (%) "
                  "| KL | agreement | wall (ms) | refused |", "|---|---|---|---|---|---|---|---|---|---|"]
        for c in changes:
            lines.append(f"| {c['epoch'] + 1} | {c['op']} | {c['layer']} | {c['n']} | "
                         f"{c['widths'][1:-1]} | {c['eps_scaled']:.3g} | {c['kl']:.3g} | "
                         f"{c['agreement']:.3f} | {1000 * c['wall_time']:.1f} | {c['refused']} |")
        lines.append("")
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def plot_tasks(result, path: str | Path) -> Path:
    """Per-task test accuracy and total hidden width per epoch, task additions/removals marked.

    ``result`` is a :class:`~isoplastic.train.tasks.TaskResult` (or its ``records`` list).
    """
    records = getattr(result, "records", result)
    plt = _pyplot()
    path = Path(path)
    epochs = [r["epoch"] + 1 for r in records]
    names = list(records[0]["accuracy"]) if records else []
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for name in names:
        ys = [None if r["accuracy"][name] is None else 100 * r["accuracy"][name] for r in records]
        ax1.plot(epochs, [float("nan") if y is None else y for y in ys], label=name)
    ax2.step(epochs, [r["total_width"] for r in records], where="post", color="black",
             label="total hidden width")
    prev: set[str] = set()
    for r in records:
        now = set(r["active"])
        for ax in (ax1, ax2):
            if now - prev and prev:
                ax.axvline(r["epoch"] + 0.5, color="tab:green", ls="--", alpha=0.7)
            if prev - now:
                ax.axvline(r["epoch"] + 0.5, color="tab:red", ls=":", alpha=0.7)
        if now != prev:
            added, removed = sorted(now - prev), sorted(prev - now)
            text = " ".join([f"+{a}" for a in added] + [f"-{a}" for a in removed])
            ax2.annotate(text, (r["epoch"] + 0.5, ax2.get_ylim()[1]), fontsize=7,
                         va="top", rotation=90)
        prev = now
    ax1.set(ylabel="test accuracy (%)", title="Per-task accuracy")
    ax2.set(xlabel="epoch", ylabel="width", title="Total hidden width (green: task added, "
                                                  "red: task removed)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
