"""``report.md`` and PNG plots for a training run directory, and the task-run plot.

matplotlib is imported inside the functions (Agg backend), never at module import. Epochs are
numbered as in ``metrics.jsonl`` and ``changes.jsonl``: from 1, with epoch 0 the initial network.
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


def _integer_axis(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def is_text_run(metrics: list[dict]) -> bool:
    """Whether the records are a language-model run's (they carry ``test_bpc``)."""
    return bool(metrics) and "test_bpc" in metrics[0]


def _bpc_curves(plt, metrics: list[dict], out: Path) -> None:
    """Bits per character (train and held-out, both arms, the unigram entropy as the reference
    line) and next-character accuracy per epoch."""
    epochs = [m["epoch"] for m in metrics]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    arms = [("adaptive", lambda m: m)]
    if "control" in metrics[0]:
        arms.append(("control", lambda m: m["control"]))
    for name, get in arms:
        line, = ax1.plot(epochs, [get(m)["test_bpc"] for m in metrics], label=f"{name} held-out")
        ax1.plot(epochs, [get(m)["train_bpc"] for m in metrics], ":", color=line.get_color(),
                 label=f"{name} train")
        ax2.plot(epochs, [100 * get(m)["test_accuracy"] for m in metrics], label=name)
    if "unigram_bpc" in metrics[0]:
        ax1.axhline(metrics[0]["unigram_bpc"], color="0.4", ls="--", lw=1,
                    label=f"unigram entropy {metrics[0]['unigram_bpc']:.2f}")
    ax1.set(xlabel="epoch", ylabel="bits per character", title="Bits per character")
    ax2.set(xlabel="epoch", ylabel="held-out accuracy (%)", title="Next-character accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        _integer_axis(ax.xaxis)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _curves(plt, metrics: list[dict], out: Path) -> None:
    if is_text_run(metrics):
        _bpc_curves(plt, metrics, out)
        return
    epochs = [m["epoch"] for m in metrics]
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
        _integer_axis(ax.xaxis)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def initial_widths(config: dict) -> list[int] | None:
    """Hidden widths at epoch 0 (before any change) from a run's ``config.json``."""
    if "widths" not in config:
        return None
    return list(config.get("channels", [])) * (config.get("model") == "cnn") + \
        list(config["widths"])


def space_labels(metrics: list[dict]) -> list[str] | None:
    """The hidden spaces' names of a run that trained a user's own model (its metrics records
    carry ``"spaces"``); ``None`` for the library's networks (hidden layer ``0, 1, ...``)."""
    return list(metrics[0]["spaces"]) if metrics and "spaces" in metrics[0] else None


def widths_from_changes(metrics: list[dict], changes: list[dict]) -> list[int] | None:
    """Hidden widths at epoch 0 of a user-model run: for each space, the ``width_before`` of its
    first change (training does not change widths), else its width in the first record."""
    names = space_labels(metrics)
    if names is None:
        return None
    start = list(metrics[0]["widths"])
    seen: set[str] = set()
    for c in changes:
        name = c.get("space")
        if c.get("arm", "adaptive") == "adaptive" and name in names and name not in seen:
            seen.add(name)
            start[names.index(name)] = int(c["width_before"])
    return start


def _widths(plt, metrics: list[dict], out: Path, start: list[int] | None = None) -> None:
    """Step plot of every hidden width from epoch 0 (the initial widths) on; integer ticks."""
    epochs = [m["epoch"] for m in metrics]
    rows = [m["widths"] for m in metrics]
    names = space_labels(metrics)
    if start is not None and metrics and len(start) == len(rows[0]):
        epochs, rows = [metrics[0]["epoch"] - 1, *epochs], [start, *rows]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    n_layers = len(rows[0]) if rows else 0
    for k in range(n_layers):
        label = f"hidden {k}" if names is None else names[k]
        ax.step(epochs, [r[k] for r in rows], where="post", label=label,
                marker="." if len(rows) <= 40 else None)
    ax.set(xlabel="epoch (0: initial network)", ylabel="width (neurons)",
           title="Hidden widths (adaptive)")
    _integer_axis(ax.xaxis)
    _integer_axis(ax.yaxis)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


#: Panels per row of the spectra figure (deeper networks wrap onto more rows).
SPECTRA_COLUMNS = 3


def _spectra(plt, metrics: list[dict], out: Path) -> None:
    """One heat map per hidden layer (neuron x epoch), in a grid of up to 3 columns."""
    import math

    import numpy as np

    n_layers = len(metrics[0]["singular_values"]) if metrics else 0
    ncols = max(1, min(n_layers, SPECTRA_COLUMNS))
    nrows = max(1, math.ceil(n_layers / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[n_layers:]:
        ax.set_visible(False)
    first = metrics[0]["epoch"] if metrics else 1
    names = space_labels(metrics)
    for k in range(n_layers):
        rows = [m["singular_values"][k] for m in metrics]
        width = max(len(r) for r in rows)
        grid = np.full((width, len(rows)), np.nan)
        for e, r in enumerate(rows):
            grid[: len(r), e] = r
        ax = axes[k // ncols, k % ncols]
        im = ax.imshow(grid, aspect="auto", origin="upper", interpolation="nearest",
                       extent=(first - 0.5, first + len(rows) - 0.5, width - 0.5, -0.5),
                       cmap="viridis")
        fig.colorbar(im, ax=ax, label="singular value")
        title = f"W_{k} (hidden {k})" if names is None else f"space {names[k]}"
        ax.set(xlabel="epoch", ylabel="neuron (by strength)", title=title)
        _integer_axis(ax.xaxis)
        _integer_axis(ax.yaxis)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def zero_row(values: list[float]) -> float:
    """Where exact zeros are drawn on a log axis: a row a decade below the smallest positive
    value, labelled "0 (exact)" and set apart by a line (so they read as zeros)."""
    positive = [v for v in values if v > 0]
    return (min(positive) if positive else 1.0) / 10


def _zero_ticks(ax, zero: float, top: float) -> None:
    """Decade ticks above the zero row, and the zero row's tick labelled "0 (exact)"."""
    import math

    from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatterSciNotation, NullLocator

    lo = math.ceil(math.log10(zero) + 0.5)
    hi = max(lo, math.ceil(math.log10(top))) if top > 0 else lo
    step = max(1, math.ceil((hi - lo + 1) / 7))
    ticks = [zero, *(10.0 ** e for e in range(lo, hi + 1, step))]
    decade = LogFormatterSciNotation()
    ax.set_ylim(zero / 10 ** 0.5, 10.0 ** hi * 10 ** 0.3)
    ax.axhline(zero * 10 ** 0.5, color="0.5", lw=0.8, ls="--")
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(
        lambda v, pos: "0 (exact)" if math.isclose(v, zero, rel_tol=1e-9) else decade(v, pos)))


def _where(change: dict) -> str:
    """A change's hidden layer index, or its space's name inside a composite model."""
    space, layer = change.get("space"), change.get("layer")
    return str(layer) if space is None or space == str(layer) else str(space)


def _changes(plt, changes: list[dict], out: Path) -> None:
    """eps_scaled of every change against its epoch (log scale; exact zeros on their own row);
    several changes of one epoch are spread across it, hidden layer k marked by its number."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    values = [c["eps_scaled"] for c in changes]
    zero = zero_row(values)
    per_epoch: dict[int, int] = {}
    xs = []
    for c in changes:
        per_epoch[c["epoch"]] = per_epoch.get(c["epoch"], 0) + 1
    seen: dict[int, int] = {}
    for c in changes:
        i = seen[c["epoch"]] = seen.get(c["epoch"], 0) + 1
        xs.append(c["epoch"] + (i / (per_epoch[c["epoch"]] + 1) - 0.5) * 0.6)
    styles = {"neurogenesis": ("^", "tab:green"), "neurodegeneration": ("v", "tab:red")}
    for op, (marker, color) in styles.items():
        idx = [i for i, c in enumerate(changes) if c["op"] == op and not c["refused"]]
        if idx:
            ax.scatter([xs[i] for i in idx], [values[i] or zero for i in idx], marker=marker,
                       color=color, label=op)
    idx = [i for i, c in enumerate(changes) if c["refused"]]
    if idx:
        ax.scatter([xs[i] for i in idx], [values[i] or zero for i in idx], marker="x",
                   color="black", label="refused")
    if len(changes) <= 60:
        for x, v, c in zip(xs, values, changes):
            ax.annotate(_where(c), (x, v or zero), textcoords="offset points",
                        xytext=(4, 2), fontsize=6, color="0.3")
    ax.set(yscale="log", xlabel="epoch (numbers: hidden layer)", ylabel="eps_scaled (%)",
           title="Function change per structural change (probe batch)")
    if any(v == 0 for v in values):
        _zero_ticks(ax, zero, max(values))
    _integer_axis(ax.xaxis)
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
        "accuracy_loss.png": ("Bits per character and accuracy" if is_text_run(metrics)
                              else "Accuracy and loss", lambda p: _curves(plt, metrics, p)),
        "widths.png": ("Hidden widths", lambda p: _widths(
            plt, metrics, p, initial_widths(config) if space_labels(metrics) is None
            else widths_from_changes(metrics, changes))),
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
    if config.get("model") == "transformer":
        lines.append(f"Transformer: d_model {config.get('d_model')}, {config.get('n_layers')} "
                     f"blocks, {config.get('n_heads')} heads, initial FFN width "
                     f"{config.get('d_ff')}, context {config.get('context_length')}; "
                     f"{config.get('batches_per_epoch')} batches of {config.get('batch_size')} "
                     "windows per epoch.")
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
    if "test_bpc" in last:
        lines.append(f"| final held-out bits per character | {_fmt(last['test_bpc'], '.3f')} | "
                     f"{_fmt(ctrl.get('test_bpc'), '.3f')} |")
        lines.append(f"| final training bits per character | {_fmt(last['train_bpc'], '.3f')} | "
                     f"{_fmt(ctrl.get('train_bpc'), '.3f')} |")
    lines.append(f"| final hidden widths | {last.get('widths')} | {ctrl.get('widths', 'n/a')} |")
    if "unigram_bpc" in last:
        lines.append("")
        lines.append(f"Reference: the unigram entropy of the training text is "
                     f"{last['unigram_bpc']:.3f} bits per character (a model that ignores "
                     "context). Accuracy is next-character accuracy; a change's KL is per "
                     "predicted character.")
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
        lines += ["## Change log", "",
                  "Epoch e: the change made after the training pass of epoch e (epochs count "
                  "from 1). For a removal, the change of the next pre-activation of an input h "
                  "is at most `bound * |h| + offset`: `bound` comes from the removed singular "
                  "values, `offset` from the removed neurons' psi entries (and, without an "
                  "intrinsic length or psi vectors, their biases). A removal of sigma = 0 "
                  "neurons is exact only when its offset is 0 too; with psi "
                  "`trainable+decay` (the default) it usually is not.", "",
                  "| epoch | op | layer | n | widths after | eps_scaled (%) | KL | agreement "
                  "| predicted bound | predicted offset | wall (ms) | refused |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        user_model = space_labels(metrics) is not None  # change records hold hidden widths
        for c in changes:
            removal = c["op"] == "neurodegeneration"
            bound = _fmt(c.get("predicted_bound"), ".3g") if removal else ""
            offset = _fmt(c.get("predicted_offset"), ".3g") if removal else ""
            hidden = c["widths"] if user_model else c["widths"][1:-1]
            lines.append(f"| {c['epoch']} | {c['op']} | {_where(c)} | {c['n']} | "
                         f"{hidden} | {c['eps_scaled']:.3g} | {c['kl']:.3g} | "
                         f"{c['agreement']:.3f} | {bound} | {offset} | "
                         f"{1000 * c['wall_time']:.1f} | {c['refused']} |")
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
