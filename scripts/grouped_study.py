"""Grouped isotropic MLPs against element-wise baselines: accuracy against group size and depth.

Question (issue 15, docs/quality.md "Grouped isotropic networks"): how much of the isotropic
MLP's gap to element-wise networks does splitting each hidden layer into groups close, at which
group size, and at what depth? Models, all trained the same way (AdamW, batch 48, inputs
standardised with training statistics, orthogonal initialisation):

* ``gs-S``: :class:`~isoplastic.GroupedIsotropicMLP` with groups of ``S`` neurons (``gs-all`` is
  one group: the isotropic MLP; ``gs-1`` is one neuron per group: element-wise tanh through the
  isotropic code path), library defaults for ``o`` and ψ;
* ``tanh``, ``relu``: :class:`~isoplastic.ElementwiseMLP`;
* ``gelu-ln``: ``Linear → LayerNorm → GELU`` per hidden layer.

Protocol: the last 10 % of the (shuffled, seed 0) training set is a validation split; every
model and depth is trained at each learning rate of the grid with seed 0, the rate with the best
validation accuracy is kept, and seeds ``1..seeds-1`` are trained at that rate. Test accuracy
(mean ± standard error over seeds) is reported at the chosen rate; the test set never chooses.
``--adaptive`` also trains one grouped network with ``neuroadapt`` at every epoch end against
its fixed-width control (same seeds, same batches). ``--bench`` measures training-step time
ratios (grouped / isotropic / tanh, interleaved repeats, medians, one run).

Writes ``results.json``, ``results.md`` and ``groups.png`` (accuracy against group size and
against depth) under ``--out``.

Usage::

    python scripts/grouped_study.py --quick --out OUT                     # seconds, digits
    python scripts/grouped_study.py --dataset digits --out OUT
    python scripts/grouped_study.py --dataset fashion-mnist --data-dir DIR --out OUT
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import isoplastic as ip
from isoplastic.data import load_dataset

GROUP_SIZES = (1, 2, 4, 8, 16, 32, "all")
BASELINES = ("tanh", "relu", "gelu-ln")


class GeluLayerNormMLP(nn.Module):
    """``Linear → LayerNorm → GELU`` per hidden layer, then a linear read-out."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-2], widths[1:-1]):
            lin = nn.Linear(a, b)
            nn.init.orthogonal_(lin.weight)
            nn.init.zeros_(lin.bias)
            layers += [lin, nn.LayerNorm(b), nn.GELU()]
        out = nn.Linear(widths[-2], widths[-1])
        nn.init.orthogonal_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*layers, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build(name: str, widths: list[int]) -> nn.Module:
    if name in ("tanh", "relu"):
        return ip.ElementwiseMLP(widths, activation=name)
    if name == "gelu-ln":
        return GeluLayerNormMLP(widths)
    if name == "isotropic":
        return ip.IsotropicMLP(widths)
    if name.startswith("gs-"):
        size = name[3:]
        width = widths[1]
        groups = 1 if size == "all" else width // int(size)
        return ip.GroupedIsotropicMLP(widths, groups)
    raise SystemExit(f"unknown model {name!r}")


def penalty(net: nn.Module) -> torch.Tensor | float:
    fn = getattr(net, "psi_penalty", None)
    return fn() if fn is not None else 0.0


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        hits = sum(int((net(x[i:i + 4096]).argmax(1) == y[i:i + 4096]).sum())
                   for i in range(0, len(x), 4096))
    net.train()
    return 100.0 * hits / len(x)


FOREACH = True


def train(net: nn.Module, data: dict, epochs: int, lr: float, seed: int,
          adapt: tuple[int, float] | None = None, foreach: bool | None = None) -> dict:
    """AdamW (weight decay 0.01, torch's default), batch 48; ``adapt=(S, τ)`` calls
    ``neuroadapt`` at every epoch end. Returns validation and test accuracy (and widths)."""
    xtr, ytr = data["train"]
    foreach = FOREACH if foreach is None else foreach
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, foreach=foreach)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(perm), 48):
            b = perm[i:i + 48]
            loss = F.cross_entropy(net(xtr[b]), ytr[b]) + penalty(net)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if adapt is not None:
            ip.neuroadapt(net, adapt[0], adapt[1], optimizer=opt,
                          generator=torch.Generator().manual_seed(seed))
    out = {"val": accuracy(net, *data["val"]), "test": accuracy(net, *data["test"])}
    if isinstance(net, ip.GroupedIsotropicMLP):
        out["group_widths"] = net.group_widths
    return out


def prepare(dataset: str, data_dir: str | None, limit: int | None) -> tuple[dict, int, int]:
    ds = load_dataset(dataset, data_dir)
    x, y = ds.x_train.flatten(1).float(), ds.y_train
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    if limit:
        x, y = x[:limit], y[:limit]
    n_val = max(1, len(x) // 10)
    xtr, ytr, xva, yva = x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xte = ds.x_test.flatten(1).float()
    data = {"train": ((xtr - mean) / std, ytr), "val": ((xva - mean) / std, yva),
            "test": ((xte - mean) / std, ds.y_test)}
    return data, x.shape[1], ds.n_classes


def mean_se(values: list[float]) -> tuple[float, float]:
    m = statistics.mean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return m, se


def sweep(args, data: dict, n_in: int, n_out: int, log) -> dict:
    results: dict = {}
    for depth in args.depths:
        widths = [n_in, *[args.width] * depth, n_out]
        for name in args.models:
            t0 = time.perf_counter()
            by_lr = {}
            for lr in args.lrs:
                torch.manual_seed(0)
                by_lr[lr] = train(build(name, widths), data, args.epochs, lr, 0)
            best = max(args.lrs, key=lambda lr: by_lr[lr]["val"])
            runs = [by_lr[best]]
            for seed in range(1, args.seeds):
                torch.manual_seed(seed)
                runs.append(train(build(name, widths), data, args.epochs, best, seed))
            test = [r["test"] for r in runs]
            m, se = mean_se(test)
            results[f"{name}@{depth}"] = {
                "model": name, "depth": depth, "lr": best, "test": test,
                "val_by_lr": {str(lr): by_lr[lr]["val"] for lr in args.lrs},
                "seed0_test_by_lr": {str(lr): by_lr[lr]["test"] for lr in args.lrs},
                "test_mean": m, "test_se": se, "seconds": time.perf_counter() - t0}
            log(f"depth {depth} {name:8s} lr {best:g}  test {m:6.2f} ± {se:4.2f}  "
                f"val {[round(by_lr[lr]['val'], 2) for lr in args.lrs]}  "
                f"({time.perf_counter() - t0:.0f} s)")
    return results


def adaptive(args, data: dict, n_in: int, n_out: int, chosen: dict, log) -> dict:
    """One grouped network (group size ``args.adapt_size``, depth 1) with ``neuroadapt(S, τ)``
    at every epoch end against its fixed-width control, at the rate chosen for that model."""
    name = f"gs-{args.adapt_size}"
    widths = [n_in, args.width, n_out]
    lr = chosen.get(f"{name}@1", {}).get("lr", 1e-3)
    pairs = {"fixed": [], "adaptive": [], "widths": []}
    for seed in range(args.seeds):
        for arm in ("fixed", "adaptive"):
            torch.manual_seed(seed)
            net = build(name, widths)
            res = train(net, data, args.epochs, lr, seed,
                        adapt=(args.scaffold, args.threshold) if arm == "adaptive" else None)
            pairs[arm].append(res["test"])
            if arm == "adaptive":
                pairs["widths"].append(res["group_widths"])
    diffs = [a - f for a, f in zip(pairs["adaptive"], pairs["fixed"])]
    out = {"model": name, "lr": lr, "scaffold": args.scaffold, "threshold": args.threshold,
           **pairs, "diff_mean": mean_se(diffs)[0], "diff_se": mean_se(diffs)[1]}
    log(f"adaptive {name}: fixed {mean_se(pairs['fixed'])[0]:.2f}, adaptive "
        f"{mean_se(pairs['adaptive'])[0]:.2f}, paired diff {out['diff_mean']:+.2f} ± "
        f"{out['diff_se']:.2f}; widths {pairs['widths'][0]}")
    return out


def bench(args, n_in: int, n_out: int, log) -> dict:
    """Median training-step time (forward, backward, AdamW) of each model at
    ``[n_in, width]*depth + [n_out]``, batch 48, interleaved repeats; ratios to the isotropic
    MLP and to tanh."""
    widths = [n_in, *[args.width] * max(args.depths), n_out]
    names = ["isotropic", "tanh", "gs-all", *(f"gs-{s}" for s in (32, 16, 4, 1)
                                               if s <= args.width)]
    x, y = torch.randn(48, n_in), torch.randint(0, n_out, (48,))
    nets = {n: build(n, widths) for n in names}
    opts = {n: torch.optim.AdamW(nets[n].parameters(), lr=1e-4, foreach=args.foreach)
            for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(args.bench_repeats + 3):
        for n in names:
            t0 = time.perf_counter()
            for _ in range(10):
                loss = F.cross_entropy(nets[n](x), y) + penalty(nets[n])
                opts[n].zero_grad(set_to_none=True)
                loss.backward()
                opts[n].step()
            if rep >= 3:
                times[n].append((time.perf_counter() - t0) / 10)
    med = {n: statistics.median(v) for n, v in times.items()}
    out = {"widths": widths, "median_step_s": med,
           "ratio_to_isotropic": {n: med[n] / med["isotropic"] for n in names},
           "ratio_to_tanh": {n: med[n] / med["tanh"] for n in names}}
    log(f"step time (tanh {1e3 * med['tanh']:.2f} ms) / tanh: "
        + ", ".join(f"{n} {r:.2f}" for n, r in out["ratio_to_tanh"].items()))
    return out


def markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [f"# Grouped isotropic MLPs on {cfg['dataset']}", "",
             f"width {cfg['width']}, {cfg['epochs']} epochs, AdamW batch 48, lr grid "
             f"{cfg['lrs']} chosen on seed 0's validation accuracy, {cfg['seeds']} seeds; test "
             "accuracy % mean ± SE (chosen lr).", ""]
    res = report["sweep"]
    depths = cfg["depths"]
    lines.append("| model | " + " | ".join(f"depth {d}" for d in depths) + " |")
    lines.append("|---|" + "---|" * len(depths))
    for name in cfg["models"]:
        cells = []
        for d in depths:
            r = res.get(f"{name}@{d}")
            cells.append("" if r is None else
                         f"{r['test_mean']:.2f} ± {r['test_se']:.2f} ({r['lr']:g})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report.get("adaptive"):
        a = report["adaptive"]
        lines += ["", f"Adaptive {a['model']} (neuroadapt S={a['scaffold']}, τ={a['threshold']} "
                  f"each epoch, lr {a['lr']:g}): fixed {statistics.mean(a['fixed']):.2f}, "
                  f"adaptive {statistics.mean(a['adaptive']):.2f}, paired difference "
                  f"{a['diff_mean']:+.2f} ± {a['diff_se']:.2f} pp; final group widths "
                  f"{a['widths']}"]
    if report.get("bench"):
        b = report["bench"]
        lines += ["", f"Step time at {b['widths']}, batch 48 (median, ratio to tanh / to the "
                  "isotropic MLP): " + ", ".join(
                      f"{n} {b['ratio_to_tanh'][n]:.2f} / {b['ratio_to_isotropic'][n]:.2f}"
                      for n in b["ratio_to_tanh"])]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, res = report["config"], report["sweep"]
    grouped = [m for m in cfg["models"] if m.startswith("gs-")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    for d in cfg["depths"]:
        xs = [cfg["width"] if m == "gs-all" else int(m[3:]) for m in grouped]
        pts = [(x, res[f"{m}@{d}"]) for x, m in zip(xs, grouped) if f"{m}@{d}" in res]
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1]["test_mean"] for p in pts],
                        yerr=[p[1]["test_se"] for p in pts], marker="o", capsize=3,
                        label=f"grouped, depth {d}")
    for i, base in enumerate(b for b in BASELINES if b in cfg["models"]):
        r = res.get(f"{base}@{cfg['depths'][0]}")
        if r:
            ax.axhline(r["test_mean"], ls="--", color=f"C{i + 5}",
                       label=f"{base}, depth {cfg['depths'][0]}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("group size (neurons per isotropic group)")
    ax.set_ylabel("test accuracy %")
    ax.legend(fontsize=7)
    ax = axes[1]
    for m in cfg["models"]:
        pts = [(d, res[f"{m}@{d}"]) for d in cfg["depths"] if f"{m}@{d}" in res]
        ax.errorbar([p[0] for p in pts], [p[1]["test_mean"] for p in pts],
                    yerr=[p[1]["test_se"] for p in pts], marker="o", capsize=3, label=m)
    ax.set_xlabel("hidden layers")
    ax.set_ylabel("test accuracy %")
    ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"{cfg['dataset']}, width {cfg['width']}, {cfg['epochs']} epochs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--width", type=int, default=None, help="digits 128, else 256")
    ap.add_argument("--epochs", type=int, default=None, help="digits 30, else 3")
    ap.add_argument("--depths", default="1,2,4")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lrs", default="3e-4,1e-3,3e-3")
    ap.add_argument("--models", default=",".join([*(f"gs-{s}" for s in GROUP_SIZES),
                                                  *BASELINES]))
    ap.add_argument("--limit", type=int, default=None, help="use the first N training samples")
    ap.add_argument("--adaptive", action="store_true")
    ap.add_argument("--adapt-size", default="16")
    ap.add_argument("--scaffold", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.1)
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--bench-repeats", type=int, default=15)
    ap.add_argument("--bench-only", action="store_true", help="the step-time ratios alone")
    ap.add_argument("--no-foreach", dest="foreach", action="store_false",
                    help="AdamW's per-tensor loop instead of its foreach kernels (slower for "
                         "many groups: each group holds its own tensors)")
    ap.add_argument("--quick", action="store_true", help="digits, width 16, 2 epochs, depths "
                    "1,2, groups of 4 and all vs tanh, 2 lrs, 2 seeds (a test runs it)")
    args = ap.parse_args(argv)
    if args.quick:
        args.dataset, args.width, args.epochs, args.depths = "digits", 16, 2, "1,2"
        args.seeds, args.lrs, args.models = 2, "1e-3,3e-3", "gs-4,gs-all,tanh"
        args.adapt_size, args.bench_repeats = "4", 2
    torch.set_num_threads(1)
    global FOREACH
    FOREACH = args.foreach
    digits = args.dataset == "digits"
    args.width = args.width or (128 if digits else 256)
    args.epochs = args.epochs or (30 if digits else 3)
    args.depths = [int(d) for d in args.depths.split(",")]
    args.lrs = [float(v) for v in args.lrs.split(",")]
    args.models = args.models.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.txt"

    def log(msg: str) -> None:
        print(msg, flush=True)
        with log_path.open("a") as fh:
            fh.write(msg + "\n")

    data, n_in, n_out = prepare(args.dataset, args.data_dir, args.limit)
    report: dict = {"config": {k: v for k, v in vars(args).items() if k not in ("data_dir", "out")},
                    "environment": {"torch": torch.__version__, "python": platform.python_version(),
                                    "threads": torch.get_num_threads()}}
    if args.bench or args.bench_only:
        report["bench"] = bench(args, n_in, n_out, log)
    if args.bench_only:
        (out / "results.json").write_text(json.dumps(report, indent=1))
        return report
    report["sweep"] = sweep(args, data, n_in, n_out, log)
    if args.adaptive:
        report["adaptive"] = adaptive(args, data, n_in, n_out, report["sweep"], log)
    (out / "results.json").write_text(json.dumps(report, indent=1))
    (out / "results.md").write_text(markdown(report))
    plot(report, out / "groups.png")
    return report


if __name__ == "__main__":
    main()
