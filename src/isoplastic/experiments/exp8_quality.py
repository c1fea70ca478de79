"""Training quality: isotropic and grouped isotropic MLPs against tuned element-wise baselines.

Question (docs/quality.md, "Grouped isotropic networks"): how far below the best element-wise
MLPs does the isotropic MLP train once every model's learning rate is tuned, how much of that gap
does splitting each hidden layer into groups close, at which group size and depth, and what does
adaptive width add? Models (:func:`build`), all trained the same way (:func:`train`: AdamW with
torch's default weight decay 0.01 and its foreach kernels, batch 48, inputs standardised with the
training statistics, orthogonal initialisation):

* ``gs-S``: :class:`~isoplastic.GroupedIsotropicMLP` with groups of ``S`` neurons (``gs-all``:
  one group, the isotropic function class; ``gs-1``: element-wise tanh through the isotropic
  code path), library defaults for ``o`` and ψ;
* ``isotropic``: :class:`~isoplastic.IsotropicMLP` with the library's defaults;
* ``tanh``, ``relu``: :class:`~isoplastic.ElementwiseMLP`;
* ``gelu-ln``: :class:`~isoplastic.GeluLayerNormMLP` (``Linear → LayerNorm → GELU``);
* ``hybrid``: :class:`HybridMLP`, ``gelu-ln`` whose last hidden layer is isotropic (at depth 1,
  with no ``Linear → LayerNorm → GELU`` layer before it, the isotropic MLP itself).

Protocol (:func:`sweep`): the last 10 % of the training set, shuffled with seed 0, is a
validation split. Every model and depth (``[n_0, width × depth, n_L]``) is trained at every rate
of ``lrs`` with seed ``seed``; the rate with the best validation accuracy is kept, ties to the
smaller rate (:func:`choose_lr`), and seeds ``seed + 1 … seed + repeats − 1`` are trained at
it. Test accuracy (%, mean ± SE over the seeds) is reported at the chosen rate; the test set
never chooses. Each model's best depth (:func:`best_cell`) is the one with the highest mean
validation accuracy at its chosen rate (ties to the shallower); ``comparison`` sets the
isotropic MLPs' best against each element-wise baseline's best, difference of means ± the
root-sum-square of the two standard errors.

Width sweep (:func:`width_sweep`): one hidden layer of every width in ``width_sweep``, each model
of ``width_models`` at the rate the sweep chose for it at depth 1, the same seeds; with the
sweep's own depth-1 cell at ``width`` it gives accuracy against width.

Adaptive comparison (:func:`adaptive`): ``adapt_model`` at hidden widths ``adapt_hidden`` with
``neuroadapt(scaffold, threshold)`` at every epoch end against its fixed-width control, same
seeds and batches (paired difference). Bench (:func:`bench`): median training-step time of the
isotropic MLP, tanh and grouped networks at ``[n_0, width × max(depths), n_L]``, interleaved
repeats, ratios within one run.

Writes ``results.json`` (every number), ``table.md``, ``group_size.png`` (accuracy against group
size), ``depth.png`` (accuracy against depth) and ``width.png`` (accuracy against width). With
``bench_only`` only the step-time bench runs: ``run_experiment("quality", OUT, "paper",
data_dir=DIR, bench_only=True, depths=[2])``.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data import load_dataset
from ..nn import ElementwiseMLP, GeluLayerNormMLP, GroupedIsotropicMLP, IsotropicMLP
from ..topology.policies import neuroadapt
from .common import (
    ExperimentConfig,
    accuracy,
    fmt_ms,
    md_table,
    mean_se,
    progress,
    pyplot,
    resolve_device,
    write_results,
)

#: The element-wise baselines.
BASELINES = ("tanh", "relu", "gelu-ln")
#: The isotropic MLPs (the isotropic function class) that claim 13 compares with the baselines.
ISOTROPIC = ("isotropic", "gs-all")
#: Isotropic in their last hidden layer only (:class:`HybridMLP`).
HYBRIDS = ("hybrid",)
#: Mini-batch size of every training run.
BATCH = 48


@dataclass
class Config(ExperimentConfig):
    dataset: str = "digits"
    data_dir: str | None = None
    width: int | None = None  # None: 128 on digits, else 256
    epochs: int | None = None  # None: 30 on digits, else 3
    depths: list[int] = field(default_factory=lambda: [1, 2, 4])
    models: list[str] = field(default_factory=lambda: [
        "gs-4", "gs-8", "gs-16", "gs-32", "gs-all", "isotropic", "tanh", "relu", "gelu-ln"])
    lrs: list[float] = field(default_factory=lambda: [3e-4, 1e-3, 3e-3])
    repeats: int = 3  # seeds seed, seed + 1, ...; the rate is chosen with the first
    seed: int = 0
    n_train: int | None = None  # the first n of the shuffled training set (validation included)
    foreach: bool = True  # AdamW's foreach kernels (False: its per-tensor loop)
    width_sweep: list[int] = field(default_factory=lambda: [32, 64, 256])  # besides `width`
    width_models: list[str] | None = field(  # None: every model of `models`
        default_factory=lambda: ["gs-16", "isotropic", "tanh", "gelu-ln"])
    adaptive: bool = True
    adapt_model: str = "gs-16"
    adapt_hidden: list[int] | None = None  # hidden widths; None: one layer of `width`
    adapt_epochs: int | None = None  # None: `epochs`
    adapt_lr: float | None = None  # None: the rate the sweep chose for adapt_model at that depth
    scaffold: int = 2
    threshold: float = 0.1
    bench: bool = True
    bench_only: bool = False
    bench_repeats: int = 15

    @classmethod
    def paper(cls) -> Config:  # no paper counterpart: Fashion-MNIST (--data-dir), deeper
        return cls(dataset="fashion-mnist", width=256, epochs=3, depths=[1, 2, 4, 8],
                   models=["gs-8", "gs-16", "gs-all", "isotropic", "tanh", "relu", "gelu-ln"],
                   lrs=[1e-3, 3e-3], width_sweep=[64, 128, 512],
                   width_models=["gs-16", "isotropic", "tanh", "gelu-ln"],
                   adapt_model="isotropic", adapt_hidden=[500, 500], adapt_epochs=10)

    @classmethod
    def tiny(cls) -> Config:
        return cls(width=8, epochs=2, depths=[1, 2], models=["gs-4", "gs-all", "isotropic",
                                                             "tanh", "gelu-ln"],
                   lrs=[1e-3, 3e-3], repeats=2, n_train=500, width_sweep=[4],
                   width_models=["gs-4", "tanh"], adapt_model="gs-4",
                   adapt_epochs=2, bench_repeats=1)


# ------------------------------------------------------------------ models and training


class HybridMLP(nn.Module):
    """``Linear → LayerNorm → GELU`` hidden layers, then one isotropic hidden layer.

    At ``widths = [n_0, n_1, …, n_L]`` (``L ≥ 2``) the hidden layers ``1 … L − 2`` are those of
    :class:`~isoplastic.GeluLayerNormMLP` and the last, ``n_{L−1}``, is the hidden layer of an
    :class:`~isoplastic.IsotropicMLP` ``[n_{L−2}, n_{L−1}, n_L]`` (library defaults: trainable
    intrinsic length, ψ with decay), which also holds the read-out:

    ``front = Sequential(GeluLayerNormMLP([n_0, …, n_{L−2}]), LayerNorm(n_{L−2}), GELU)``,
    ``iso = IsotropicMLP([n_{L−2}, n_{L−1}, n_L])``, ``net(x) = iso(front(x))``.

    At depth 1 (``L = 2``) there is no front (``nn.Identity``): the network is the isotropic
    MLP ``[n_0, n_1, n_2]``, drawn as ``IsotropicMLP`` draws it. The weights are drawn front first
    (each ``Linear`` orthogonal, zero bias), then the isotropic block. ``iso`` is an isoplastic
    block inside a composite model: ``ip.hidden_spaces(net)`` is ``{"iso.0": …}``, and
    :func:`~isoplastic.neuroadapt`, :func:`~isoplastic.neurogenesis` and the other structural
    operations act on that space alone; the front is not an isoplastic block and never changes.

    Shapes:
        input ``(batch, n_0)``; output ``(batch, n_L)``.
    """

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 3 or min(widths) < 1:
            raise ValueError(f"HybridMLP widths={widths}: give [n_0, hidden..., n_L] with at "
                             "least one hidden layer, every entry >= 1")
        front = widths[:-2]
        self.front: nn.Module = nn.Identity() if len(front) < 2 else nn.Sequential(
            GeluLayerNormMLP(front), nn.LayerNorm(front[-1]), nn.GELU())
        self.iso = IsotropicMLP(widths[-3:])

    @property
    def widths(self) -> list[int]:
        """``[n_0, …, n_L]``, the isotropic layer at its current width."""
        if isinstance(self.front, nn.Identity):
            return list(self.iso.widths)
        return [*self.front[0].widths, *self.iso.widths[1:]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.iso(self.front(x))

    def psi_penalty(self) -> torch.Tensor:
        """The isotropic block's ψ penalty (the front has no ψ)."""
        return self.iso.psi_penalty()


def build(name: str, widths: list[int]) -> nn.Module:
    """The model ``name`` at ``widths = [n_0, n_1, …, n_L]``, drawn from the global stream.

    ``gs-S`` splits every hidden layer into groups of ``S`` neurons (``gs-all``: one group);
    ``isotropic``, ``tanh``, ``relu``, ``gelu-ln``, ``hybrid`` as in the module docstring.
    """
    if name in ("tanh", "relu"):
        return ElementwiseMLP(widths, activation=name)
    if name == "gelu-ln":
        return GeluLayerNormMLP(widths)
    if name == "isotropic":
        return IsotropicMLP(widths)
    if name == "hybrid":
        return HybridMLP(widths)
    if name.startswith("gs-"):
        size = name[3:]
        if size == "all":
            return GroupedIsotropicMLP(widths, 1)
        if not size.isdigit() or int(size) < 1:
            raise ValueError(f"model {name!r}: write gs-S with a group size S >= 1, or gs-all")
        bad = [w for w in widths[1:-1] if w % int(size)]
        if bad:
            raise ValueError(f"model {name!r} at widths {widths}: hidden widths {bad} are not "
                             f"multiples of the group size {size}; choose widths divisible by it")
        return GroupedIsotropicMLP(widths, widths[1] // int(size))
    raise ValueError(f"unknown model {name!r}; choose gs-S (S a group size), gs-all, isotropic, "
                     f"{', '.join(HYBRIDS)}, {', '.join(BASELINES)}")


def _penalty(net: nn.Module) -> torch.Tensor | float:
    fn = getattr(net, "psi_penalty", None)
    return fn() if fn is not None else 0.0


def hidden_widths(net: nn.Module) -> list:
    """Final hidden widths: group widths per layer for a grouped network, else per layer."""
    if isinstance(net, GroupedIsotropicMLP):
        return net.group_widths
    return list(net.widths[1:-1])


def train(net: nn.Module, data: dict, epochs: int, lr: float, seed: int, *, foreach: bool = True,
          adapt: tuple[int, float] | None = None) -> dict:
    """Train ``net`` on ``data["train"]`` and score it on the validation and test splits.

    Loss ``CE(net(x_B), y_B) + net.psi_penalty()``, AdamW (``lr``, weight decay 0.01, torch's
    default), batches of 48 in the order of one ``randperm`` per epoch from
    ``Generator().manual_seed(seed)``; ``adapt=(S, τ)`` calls ``neuroadapt(net, S, τ)`` (optimizer
    transported, new neurons drawn from ``Generator().manual_seed(seed)``) at every epoch end.
    ``data[split] = (x, y)`` with ``x`` ``(N, n_0)`` on the network's device.

    Returns:
        ``{"val", "test"}``: accuracies in %, and ``"widths"``: the final hidden widths.
    """
    xtr, ytr = data["train"]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, foreach=foreach)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=gen).to(xtr.device)
        for i in range(0, len(perm), BATCH):
            b = perm[i:i + BATCH]
            loss = F.cross_entropy(net(xtr[b]), ytr[b]) + _penalty(net)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if adapt is not None:
            neuroadapt(net, adapt[0], adapt[1], optimizer=opt,
                       generator=torch.Generator().manual_seed(seed))
    return {"val": 100 * accuracy(net, *data["val"]), "test": 100 * accuracy(net, *data["test"]),
            "widths": hidden_widths(net)}


def prepare(dataset: str, data_dir: str | None, n_train: int | None,
            device: torch.device) -> tuple[dict, dict]:
    """Flattened splits ``{"train", "val", "test"}``, standardised with the training split's
    per-feature mean and standard deviation (clamped at 1e-6), and their sizes.

    The training set is shuffled with seed 0, cut to its first ``n_train`` samples, and its last
    10 % (at least one sample) is the validation split.
    """
    ds = load_dataset(dataset, data_dir)
    x, y = ds.x_train.flatten(1).float(), ds.y_train
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    if n_train:
        x, y = x[:n_train], y[:n_train]
    n_val = max(1, len(x) // 10)
    xtr, ytr, xva, yva = x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xte = ds.x_test.flatten(1).float()
    data = {"train": ((xtr - mean) / std, ytr), "val": ((xva - mean) / std, yva),
            "test": ((xte - mean) / std, ds.y_test)}
    data = {k: (a.to(device), b.to(device)) for k, (a, b) in data.items()}
    info = {"dataset": dataset, "n_train": len(xtr), "n_val": n_val, "n_test": len(xte),
            "n_features": x.shape[1], "n_classes": ds.n_classes}
    return data, info


# ------------------------------------------------------------------ protocol


def choose_lr(val_by_lr: dict[float, float]) -> float:
    """The rate with the highest validation accuracy; among equal accuracies the smallest rate."""
    if not val_by_lr:
        raise ValueError("choose_lr needs at least one (rate, validation accuracy) pair")
    best = max(val_by_lr.values())
    return min(lr for lr, v in val_by_lr.items() if v == best)


def best_cell(sweep_res: dict, model: str) -> dict | None:
    """``model``'s sweep cell at the depth with the highest mean validation accuracy at its
    chosen rate (ties to the shallower depth); ``None`` when the sweep did not run ``model``."""
    cells = sorted((c for c in sweep_res.values() if c["model"] == model),
                   key=lambda c: c["depth"])
    if not cells:
        return None
    top = max(c["val_pct"]["mean"] for c in cells)
    return next(c for c in cells if c["val_pct"]["mean"] == top)


def run_seeded(config: Config, name: str, widths: list[int], data: dict, lr: float, seed: int,
               device: torch.device, *, epochs: int | None = None,
               adapt: tuple[int, float] | None = None) -> tuple[dict, nn.Module]:
    """One run of the protocol: ``torch.manual_seed(seed)``, build ``name`` at ``widths``, then
    :func:`train` it (``epochs`` defaults to ``config.epochs``). Returns its scores and the
    trained network."""
    torch.manual_seed(seed)
    net = build(name, widths).to(device)
    res = train(net, data, config.epochs if epochs is None else epochs, lr, seed,
                foreach=config.foreach, adapt=adapt)
    return res, net


def sweep(config: Config, data: dict, n_in: int, n_out: int, device: torch.device) -> dict:
    """Every ``(depth, model)`` cell: the rate chosen on seed ``seed``'s validation accuracy,
    then the other seeds at that rate (each run built right after ``torch.manual_seed(seed)``)."""
    res: dict = {}
    jobs = [(d, m) for d in config.depths for m in config.models]
    for depth, name in progress(jobs, "quality"):
        widths = [n_in, *[config.width] * depth, n_out]
        t0 = time.perf_counter()
        by_lr = {}
        for lr in config.lrs:
            by_lr[lr] = run_seeded(config, name, widths, data, lr, config.seed, device)[0]
        lr = choose_lr({r: by_lr[r]["val"] for r in config.lrs})
        runs = [by_lr[lr]] + [run_seeded(config, name, widths, data, lr, seed, device)[0]
                              for seed in range(config.seed + 1, config.seed + config.repeats)]
        res[f"{name}@{depth}"] = {
            "model": name, "depth": depth, "widths": widths, "lr": lr,
            "seeds": list(range(config.seed, config.seed + config.repeats)),
            "test_pct": mean_se(r["test"] for r in runs),
            "val_pct": mean_se(r["val"] for r in runs),
            "val_pct_by_lr": {str(r): by_lr[r]["val"] for r in config.lrs},
            "seed0_test_pct_by_lr": {str(r): by_lr[r]["test"] for r in config.lrs},
            "seconds": time.perf_counter() - t0}
    return res


def width_sweep(config: Config, data: dict, n_in: int, n_out: int, sweep_res: dict,
                device: torch.device) -> dict:
    """Every ``(width, model)`` cell of one hidden layer of ``width`` in ``config.width_sweep``:
    the model at the rate the sweep chose for it at depth 1 (each run built right after
    ``torch.manual_seed(seed)``), seeds ``seed … seed + repeats − 1``."""
    res: dict = {}
    models = config.width_models or config.models
    jobs = [(w, m) for w in config.width_sweep for m in models]
    for width, name in progress(jobs, "quality widths"):
        lr = sweep_res[f"{name}@1"]["lr"]
        widths = [n_in, width, n_out]
        runs = [run_seeded(config, name, widths, data, lr, seed, device)[0]
                for seed in range(config.seed, config.seed + config.repeats)]
        res[f"{name}@w{width}"] = {"model": name, "width": width, "widths": widths, "lr": lr,
                                   "test_pct": mean_se(r["test"] for r in runs),
                                   "val_pct": mean_se(r["val"] for r in runs)}
    return res


def comparison(sweep_res: dict) -> dict:
    """Each model's best cell, and every isotropic MLP's best minus every baseline's best (pp;
    SE: root-sum-square of the two standard errors, the runs being different networks)."""
    models = list(dict.fromkeys(c["model"] for c in sweep_res.values()))
    best = {}
    for m in models:
        c = best_cell(sweep_res, m)
        best[m] = {"depth": c["depth"], "lr": c["lr"], "test_pct": c["test_pct"],
                   "val_pct": c["val_pct"]}
    iso = [m for m in ISOTROPIC if m in best]
    base = [m for m in BASELINES if m in best]
    diff = {}
    for a in iso:
        for b in base:
            ta, tb = best[a]["test_pct"], best[b]["test_pct"]
            diff[f"{a} - {b}"] = {"mean": ta["mean"] - tb["mean"],
                                  "se": math.hypot(ta["se"], tb["se"])}
    return {"best": best, "isotropic": iso, "baselines": base, "difference_pp": diff}


def adaptive(config: Config, data: dict, n_in: int, n_out: int, sweep_res: dict,
             device: torch.device) -> dict:
    """``adapt_model`` at ``[n_in, *adapt_hidden, n_out]`` with ``neuroadapt(scaffold,
    threshold)`` at every epoch end against its fixed-width control: per seed both arms start
    from the same draw (``torch.manual_seed(seed)``) and see the same batches."""
    hidden = list(config.adapt_hidden or [config.width])
    widths = [n_in, *hidden, n_out]
    epochs = config.adapt_epochs or config.epochs
    key = f"{config.adapt_model}@{len(hidden)}"
    if config.adapt_lr is not None:
        lr, source = config.adapt_lr, "adapt_lr"
    elif key in sweep_res:
        cell = sweep_res[key]
        lr = cell["lr"]
        source = f"chosen by the sweep for {config.adapt_model} at depth {len(hidden)} (widths " \
                 f"{cell['widths']})"
    else:
        lr, source = 1e-3, f"1e-3 (the sweep has no {key} cell)"
    arms: dict = {"fixed": [], "adaptive": [], "widths": [], "params_fixed": [],
                  "params_adaptive": []}
    seeds = range(config.seed, config.seed + config.repeats)
    for seed in progress(seeds, "quality adaptive"):
        for arm in ("fixed", "adaptive"):
            res, net = run_seeded(
                config, config.adapt_model, widths, data, lr, seed, device, epochs=epochs,
                adapt=(config.scaffold, config.threshold) if arm == "adaptive" else None)
            arms[arm].append(res["test"])
            arms[f"params_{arm}"].append(sum(p.numel() for p in net.parameters()))
            if arm == "adaptive":
                arms["widths"].append(res["widths"])
    return {"model": config.adapt_model, "architecture": widths, "epochs": epochs, "lr": lr,
            "lr_source": source, "scaffold": config.scaffold, "threshold": config.threshold,
            "fixed_pct": mean_se(arms["fixed"]), "adaptive_pct": mean_se(arms["adaptive"]),
            "difference_pp": mean_se(a - f for a, f in zip(arms["adaptive"], arms["fixed"])),
            "final_widths": arms["widths"], "params_fixed": arms["params_fixed"],
            "params_adaptive": arms["params_adaptive"]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(config: Config, n_in: int, n_out: int, device: torch.device) -> dict:
    """Median training-step time (forward, backward, AdamW; batch 48, 10 steps per timing) of
    each model at ``[n_in, width × max(depths), n_out]``; models interleaved within every repeat,
    the first 3 repeats discarded; ratios to the isotropic MLP and to tanh."""
    widths = [n_in, *[config.width] * max(config.depths), n_out]
    names = ["isotropic", "tanh", "gs-all",
             *(f"gs-{s}" for s in (32, 16, 4, 1) if s <= config.width and config.width % s == 0)]
    x = torch.randn(BATCH, n_in, device=device)
    y = torch.randint(0, n_out, (BATCH,), device=device)
    nets = {n: build(n, widths).to(device) for n in names}
    opts = {n: torch.optim.AdamW(nets[n].parameters(), lr=1e-4, foreach=config.foreach)
            for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in progress(range(config.bench_repeats + 3), "quality bench"):
        for n in names:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(10):
                loss = F.cross_entropy(nets[n](x), y) + _penalty(nets[n])
                opts[n].zero_grad(set_to_none=True)
                loss.backward()
                opts[n].step()
            _sync(device)
            if rep >= 3:
                times[n].append((time.perf_counter() - t0) / 10)
    med = {n: statistics.median(v) for n, v in times.items()}
    return {"widths": widths, "device": str(device), "median_step_s": med,
            "ratio_to_isotropic": {n: med[n] / med["isotropic"] for n in names},
            "ratio_to_tanh": {n: med[n] / med["tanh"] for n in names}}


# ------------------------------------------------------------------ run and output


#: Data sets of a few thousand samples: trained like digits (width 128, 30 epochs).
SMALL_DATASETS = ("digits", "mnist-5k")


def resolved(config: Config) -> Config:
    """``config`` with the data-set defaults filled in: width 128 and 30 epochs on the small data
    sets (:data:`SMALL_DATASETS`), width 256 and 3 epochs elsewhere (a single pass over
    Fashion-MNIST is ~40× one over digits)."""
    small = config.dataset in SMALL_DATASETS
    return replace(config, width=config.width or (128 if small else 256),
                   epochs=config.epochs or (30 if small else 3))


def run(config: Config, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    config = resolved(config)
    device = resolve_device(config.device)
    for name in config.models:  # a bad name or group size fails before any training
        build(name, [2, config.width, 2])
    if config.width_sweep and not config.bench_only:
        missing = [m for m in config.width_models or [] if m not in config.models]
        if missing or 1 not in config.depths:
            raise ValueError(f"width_sweep trains each model at the rate the sweep chose for it "
                             f"at depth 1: include depth 1 in depths={config.depths} and the "
                             f"width models {missing} in models")
        for name in config.width_models or config.models:
            for w in config.width_sweep:
                build(name, [2, w, 2])
    if config.adaptive and not config.bench_only:
        if config.adapt_model in BASELINES:
            raise ValueError(f"adapt_model={config.adapt_model!r} cannot change its width (an "
                             "element-wise baseline); choose gs-S, gs-all, isotropic or hybrid")
        build(config.adapt_model, [2, *(config.adapt_hidden or [config.width]), 2])
    data, info = prepare(config.dataset, config.data_dir, config.n_train, device)
    n_in, n_out = info["n_features"], info["n_classes"]
    results: dict = {"experiment": "quality", "config": config, "data": info}
    if config.bench or config.bench_only:
        results["bench"] = bench(config, n_in, n_out, device)
    if not config.bench_only:
        results["sweep"] = sweep(config, data, n_in, n_out, device)
        results["comparison"] = comparison(results["sweep"])
        if config.width_sweep:
            results["width"] = width_sweep(config, data, n_in, n_out, results["sweep"], device)
        if config.adaptive:
            results["adaptive"] = adaptive(config, data, n_in, n_out, results["sweep"], device)
        results["figures"] = _plot(results, config, out_dir)
    else:
        results["figures"] = []
    return write_results(out_dir, results, _table(results, config))


def _pm(stat: dict) -> str:
    """A signed difference ``"+1.23 ± 0.45"``."""
    return f"{stat['mean']:+.2f} ± {stat['se']:.2f}"


def _table(results: dict, config: Config) -> str:
    info = results["data"]
    parts = [f"Training quality on {info['dataset']} ({info['n_train']} train / {info['n_val']} "
             f"validation / {info['n_test']} test)"]
    if "sweep" in results:
        res = results["sweep"]
        parts.append(f"width {config.width}, {config.epochs} epochs, AdamW batch {BATCH}, rate "
                     f"chosen from {config.lrs} on seed {config.seed}'s validation accuracy, "
                     f"{config.repeats} seeds; test accuracy % mean ± SE (chosen rate)")
        rows = [[name, *(fmt_ms(res[f"{name}@{d}"]["test_pct"]) + f" ({res[f'{name}@{d}']['lr']:g})"
                         if f"{name}@{d}" in res else "" for d in config.depths)]
                for name in config.models]
        parts.append(md_table(["model", *(f"depth {d}" for d in config.depths)], rows))
        cmp = results["comparison"]
        best = cmp["best"]
        parts.append("Best depth per model (highest mean validation accuracy): " + ", ".join(
            f"{m} {fmt_ms(b['test_pct'])} (depth {b['depth']}, lr {b['lr']:g})"
            for m, b in best.items()))
        if cmp["difference_pp"]:
            parts.append("Isotropic − element-wise, best against best (pp): " + ", ".join(
                f"{k} {_pm(v)}" for k, v in cmp["difference_pp"].items()))
    if results.get("width"):
        cells = {**results["width"], **{f"{m}@w{config.width}": res[f"{m}@1"] for m in
                    config.width_models or config.models}}
        widths = sorted({*config.width_sweep, config.width})
        parts.append(f"One hidden layer of each width, every model at its depth-1 rate; test "
                     f"accuracy % mean ± SE over {config.repeats} seeds")
        parts.append(md_table(["model", *(f"width {w}" for w in widths)], [
            [m, *(fmt_ms(cells[f"{m}@w{w}"]["test_pct"]) for w in widths)]
            for m in config.width_models or config.models]))
    if "adaptive" in results:
        a = results["adaptive"]
        parts.append(f"Adaptive {a['model']} {a['architecture']} (neuroadapt S={a['scaffold']}, "
                     f"τ={a['threshold']} each epoch, {a['epochs']} epochs, lr {a['lr']:g}: "
                     f"{a['lr_source']}): fixed {fmt_ms(a['fixed_pct'])}, adaptive "
                     f"{fmt_ms(a['adaptive_pct'])}, paired difference "
                     f"{_pm(a['difference_pp'])} pp; final hidden widths "
                     f"{a['final_widths']}")
    if "bench" in results:
        b = results["bench"]
        parts.append(f"Step time at {b['widths']}, batch {BATCH}, {b['device']} (median; tanh "
                     f"{1e3 * b['median_step_s']['tanh']:.2f} ms), ratio to tanh / to the "
                     "isotropic MLP: " + ", ".join(
                         f"{n} {b['ratio_to_tanh'][n]:.2f} / {b['ratio_to_isotropic'][n]:.2f}"
                         for n in b["ratio_to_tanh"]))
    return "\n\n".join(parts)


def _plot(results: dict, config: Config, out_dir: Path) -> list[str]:
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    res, best = results["sweep"], results["comparison"]["best"]
    title = f"{config.dataset}, width {config.width}, {config.epochs} epochs"
    figures = []
    grouped = [m for m in config.models if m.startswith("gs-")]
    if grouped:
        fig, ax = plt.subplots(figsize=(6, 4))
        sizes = [config.width if m == "gs-all" else int(m[3:]) for m in grouped]
        for d in config.depths:
            pts = [(s, res[f"{m}@{d}"]["test_pct"]) for s, m in zip(sizes, grouped)]
            ax.errorbar([p[0] for p in pts], [p[1]["mean"] for p in pts],
                        yerr=[p[1]["se"] for p in pts], marker="o", capsize=3,
                        label=f"grouped, depth {d}")
        others = [m for m in config.models if not m.startswith("gs-")]
        for i, m in enumerate(others):
            ax.axhline(best[m]["test_pct"]["mean"], ls="--", color=f"C{(i + 5) % 10}",
                       label=f"{m}, best depth ({best[m]['depth']})")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="group size (neurons per isotropic group)", ylabel="test accuracy (%)",
               title=title)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "group_size.png", dpi=110)
        plt.close(fig)
        figures.append("group_size.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in config.models:
        pts = [(d, res[f"{m}@{d}"]["test_pct"]) for d in config.depths]
        ax.errorbar([p[0] for p in pts], [p[1]["mean"] for p in pts],
                    yerr=[p[1]["se"] for p in pts], marker="o", capsize=3, label=m)
    ax.set(xlabel="hidden layers", ylabel="test accuracy (%)", title=title)
    ax.set_xticks(config.depths)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out_dir / "depth.png", dpi=110)
    plt.close(fig)
    figures.append("depth.png")
    if results.get("width"):
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in config.width_models or config.models:
            cells = [res[f"{m}@1"] | {"width": config.width},
                     *(c for c in results["width"].values() if c["model"] == m)]
            cells.sort(key=lambda c: c["width"])
            ax.errorbar([c["width"] for c in cells], [c["test_pct"]["mean"] for c in cells],
                        yerr=[c["test_pct"]["se"] for c in cells], marker="o", capsize=3,
                        label=m)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="hidden width (one hidden layer)", ylabel="test accuracy (%)",
               title=f"{config.dataset}, {config.epochs} epochs")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out_dir / "width.png", dpi=110)
        plt.close(fig)
        figures.append("width.png")
    return figures
