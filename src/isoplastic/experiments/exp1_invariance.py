"""Exp 1 — neuroadaptive invariance (the paper's Exp 1; claims 1–6, 12, 15).

After training, on independent clones of each trained network: row "0" = full diagonalisation of
code-layer 1 alone; "+k" = that, then k neurogenesis; "−k" = that, then k neurodegeneration; for
the seven (intrinsic length, ψ) variants. Metrics on the test set against the untouched network:
ε_scaled (%), KL (nats), Δ accuracy (pp), Δ∑σ = ∑σ_pre − ∑σ_post at code-layer 1; mean ± SE
over repeats. Every network is measured in float32 and, as a float64 copy of the same trained
weights, in float64.

Extra checks on the same trained networks (float32 and float64): rotation equivariance of the
activation, random reparameterisation, left/full diagonalisation (the full-diagonal weight's
off-diagonal entries and ordering), the exactly-zero pre-activation of a grown neuron, the
gradient a grown neuron receives with zero vs small random outgoing weights, a σ sweep of
neurodegeneration (a neuron forced to singular value σ with bias 0.5, down to σ = 0), and the
layer-order rule (later hidden layer first vs earlier first).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..linalg import random_orthogonal
from ..ops.diagonalise import full_diagonalise, left_diagonalise, singular_values
from ..ops.reparameterise import reparameterise
from ..topology.grow import neurogenesis
from ..topology.shrink import neurodegeneration
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
    spearman,
    write_results,
)

#: The seven (intrinsic length, ψ) variants of the paper's Table 1 / Table 4.
VARIANTS: tuple[tuple[str, str], ...] = (
    ("none", "trainable+decay"), ("constant", "trainable+decay"),
    ("trainable", "trainable+decay"), ("trainable", "none"), ("trainable", "constant"),
    ("trainable", "trainable"), ("trainable", "expectation"),
)
MAIN = "trainable/trainable+decay"


def vname(o: str, psi: str) -> str:
    return f"{o}/{psi}"


@dataclass
class Config(ExperimentConfig):
    dataset: str = "digits"
    data_dir: str | None = None
    widths: list[int] = field(default_factory=lambda: [48, 48])
    epochs: int = 30
    repeats: int = 5
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20, 30])
    variants: list[list[str]] = field(default_factory=lambda: [list(v) for v in VARIANTS])
    dtypes: list[str] = field(default_factory=lambda: ["float32", "float64"])
    n_train: int | None = None
    n_test: int | None = None
    lr: float = 1e-3
    sweep_fractions: list[float] = field(default_factory=lambda: [0.5, 1e-1, 1e-2, 1e-3, 1e-4,
                                                                  0.0])
    sweep_bias: float = 0.5
    order_k: int = 3
    seed: int = 0

    @classmethod
    def paper(cls) -> Config:
        return cls(dataset="cifar10", widths=[100, 100], epochs=50, repeats=20,
                   ks=[1, 5, 25, 50, 75])

    @classmethod
    def tiny(cls) -> Config:
        return cls(widths=[12, 12], epochs=1, repeats=2, ks=[1, 4], n_train=200, n_test=100,
                   variants=[["trainable", "trainable+decay"], ["none", "none"]])


# ------------------------------------------------------------------ measurements


def _measure(base: torch.nn.Module, after: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             z0: torch.Tensor, sig0: float) -> dict:
    z1 = logits_of(after, x)
    fc = compare_logits(z0, z1)
    acc0 = float((z0.argmax(1) == y).double().mean())
    acc1 = float((z1.argmax(1) == y).double().mean())
    return {"eps_scaled": fc.eps_scaled, "kl": fc.kl, "max_abs": fc.max_abs,
            "delta_accuracy_pp": 100 * (acc1 - acc0),
            "delta_sum_sigma": sig0 - float(singular_values(after, 1).sum())}


def _rows(ks: list[int], width: int) -> list[tuple[str, str, int]]:
    rows = [("0", "none", 0)]
    rows += [(f"+{k}", "grow", k) for k in ks]
    rows += [(f"-{k}", "shrink", k) for k in ks if k < width]
    return rows


@torch.no_grad()
def _invariance_rows(net, x, y, ks, seed) -> dict[str, dict]:
    z0 = logits_of(net, x)
    sig0 = float(singular_values(net, 1).sum())
    out = {"baseline": {"accuracy": float((z0.argmax(1) == y).double().mean()), "sum_sigma": sig0}}
    for name, kind, k in _rows(ks, net.widths[2]):
        c = copy.deepcopy(net)
        full_diagonalise(c, 1)
        removed = 0.0
        if kind == "grow":
            neurogenesis(c, 1, k, generator=torch.Generator().manual_seed(seed))
        elif kind == "shrink":
            ch = neurodegeneration(c, 1, k)
            removed = float(sum(ch.removed_singular_values))
        rec = _measure(net, c, x, y, z0, sig0)
        rec["removed_sum_sigma"] = removed
        out[name] = rec
    return out


def _preacts(net, x) -> list[torch.Tensor]:
    """Pre-activations ``z_k`` of every hidden layer (same recursion as the forward pass)."""
    zs = []
    z = net.linears[0](x)
    for k, act in enumerate(net.activations):
        zs.append(z)
        h, g = act.forward_with_gain(z)
        z = net.linears[k + 1](h)
        if len(net.psi):
            z = z + net.psi[k] * g
    return zs


def _symmetry_checks(net, x, y, seed: int) -> dict:
    """Claims 1–4 and 12 on one trained network (in its dtype)."""
    dt = net.linears[0].weight.dtype
    g = torch.Generator().manual_seed(seed)
    res: dict = {}
    with torch.no_grad():
        z0 = logits_of(net, x)
        # 1. equivariance of the activation
        n1 = net.widths[1]
        act = net.activations[0]
        z = torch.randn(256, n1, generator=g, dtype=torch.float64).to(dt) * 3
        R = random_orthogonal(n1, generator=g, dtype=dt)
        res["equivariance_max_abs"] = float((act(z @ R.T) - act(z) @ R.T).abs().max())
        # 2. random reparameterisation of every hidden layer, and left diagonalisation
        c = copy.deepcopy(net)
        for k in range(net.n_hidden):
            reparameterise(c, k, random_orthogonal(net.widths[k + 1], generator=g, dtype=dt))
        res["reparameterise"] = compare_logits(z0, logits_of(c, x)).as_dict()
        c = copy.deepcopy(net)
        for k in range(net.n_hidden):
            left_diagonalise(c, k)
        res["left_diagonalise"] = compare_logits(z0, logits_of(c, x)).as_dict()
        # 3. full diagonalisation
        c = copy.deepcopy(net)
        s = full_diagonalise(c, 1)
        w = c.linears[1].weight
        off = w.clone()
        m = min(w.shape)
        off[torch.arange(m), torch.arange(m)] = 0
        d = torch.diagonal(w)
        res["full_diagonalise"] = compare_logits(z0, logits_of(c, x)).as_dict() | {
            "offdiag_max_abs": float(off.abs().max()),
            "descending": bool((d[:-1] >= d[1:]).all()), "nonnegative": bool((d >= 0).all()),
            "diag_equals_sigma_max_abs": float((d - s.to(dt)).abs().max())}
        # 4. neurogenesis: function and the new neurons' pre-activations
        c = copy.deepcopy(net)
        grown = {}
        for k in range(net.n_hidden):
            neurogenesis(c, k, 3, generator=g)
            grown[k] = net.widths[k + 1]
        zs = _preacts(c, x)
        res["neurogenesis"] = compare_logits(z0, logits_of(c, x)).as_dict() | {
            "new_preactivation_max_abs": max(float(zs[k][:, grown[k]:].abs().max())
                                             for k in grown)}
    # 12. gradient reaching a grown neuron's incoming row
    grads = {}
    for scale in (0.0, 0.01):
        c = copy.deepcopy(net)
        neurogenesis(c, 0, 1, init_scale=scale, generator=torch.Generator().manual_seed(seed))
        c.train()
        loss = F.cross_entropy(c(x[:256]), y[:256])
        loss.backward()
        grads[str(scale)] = float(c.linears[0].weight.grad[-1].norm())
    res["scaffold_incoming_grad_norm"] = grads
    return res


@torch.no_grad()
def _sigma_sweep(net, x, fractions: list[float], bias: float) -> list[dict]:
    """Force the weakest neuron of hidden layer 1 to strength σ with bias b, then remove it."""
    base = copy.deepcopy(net)
    s = left_diagonalise(base, 1)
    n1 = base.widths[2]
    smin = float(s[: n1 - 1].min())  # weakest of the *other* neurons
    out = []
    for f in fractions:
        ref = copy.deepcopy(base)
        row = ref.linears[1].weight[-1]
        nrm = float(row.norm())
        sigma = f * smin
        if nrm > 0:
            row.mul_(sigma / nrm)
        ref.linears[1].bias[-1] = bias
        if len(ref.psi):
            ref.psi[0][-1] = 0.0
        c = copy.deepcopy(ref)
        ch = neurodegeneration(c, 1, 1)
        fc = compare_logits(logits_of(ref, x), logits_of(c, x))
        out.append({"fraction": f, "sigma": sigma,
                    "removed_sigma": float(ch.removed_singular_values[0]),
                    "eps_scaled": fc.eps_scaled, "kl": fc.kl, "max_abs": fc.max_abs,
                    "predicted_bound": ch.predicted_bound})
    return out


@torch.no_grad()
def _order_check(net, x, k: int, bias: float) -> dict:
    """Remove ``k`` neurons from both hidden layers, later layer first vs earlier first.

    Done on the trained network and on a copy whose ``k`` weakest neurons of hidden layer 0 were
    forced to σ = 0 with bias ``bias`` ("silent_layer0"): their removal is exact and puts
    ``b*·w*`` into ψ_0 (which lives in hidden layer 1); removing layer 1's neurons afterwards drops
    their ψ_0 entries (the leakage the layer-order rule avoids), removing them first does not.
    """
    zero = copy.deepcopy(net)
    left_diagonalise(zero, 0)
    zero.linears[0].weight[-k:] = 0.0
    zero.linears[0].bias[-k:] = bias
    out = {}
    for tag, ref in (("trained", net), ("silent_layer0", zero)):
        z0 = logits_of(ref, x)
        later = copy.deepcopy(ref)
        neurodegeneration(later, 1, k)
        neurodegeneration(later, 0, k)
        earlier = copy.deepcopy(ref)
        neurodegeneration(earlier, 0, k)
        neurodegeneration(earlier, 1, k)
        out[f"{tag}_later_first_eps"] = compare_logits(z0, logits_of(later, x)).eps_scaled
        out[f"{tag}_earlier_first_eps"] = compare_logits(z0, logits_of(earlier, x)).eps_scaled
    return out


# ------------------------------------------------------------------ run


def run(config: Config, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    data = load_data(config.dataset, config.data_dir, config.n_train, config.n_test, config.seed)
    raw: dict[str, dict[str, list[dict]]] = {}
    sweeps: dict[str, dict[str, list]] = {}
    symmetry: dict[str, list[dict]] = {dt: [] for dt in config.dtypes}
    order: list[dict] = []
    train_acc: dict[str, list[float]] = {}
    jobs = [(tuple(v), r) for v in config.variants for r in range(config.repeats)]
    for (o, psi), r in progress(jobs, "invariance"):
        name = vname(o, psi)
        seed = config.seed + 1000 * r
        trainer = make_trainer(data, widths=config.widths, epochs=config.epochs, seed=seed,
                               device=device, intrinsic_length=o, psi=psi, lr=config.lr)
        trainer.run()
        net = trainer.net
        train_acc.setdefault(name, []).append(trainer.metrics[-1]["test_accuracy"])
        for dt in config.dtypes:
            dtype = getattr(torch, dt)
            netd = copy.deepcopy(net).to(dtype)
            x, y = trainer.x_test.to(dtype), trainer.y_test
            raw.setdefault(name, {}).setdefault(dt, []).append(
                _invariance_rows(netd, x, y, config.ks, seed))
            if r == 0 and dt == "float64":
                sweeps.setdefault(name, {})["float64"] = _sigma_sweep(
                    netd, x, config.sweep_fractions, config.sweep_bias)
            if name == MAIN or (MAIN not in {vname(*v) for v in config.variants}
                                and name == vname(*config.variants[0])):
                symmetry[dt].append(_symmetry_checks(netd, x, y, seed))
                if dt == "float64":
                    order.append(_order_check(netd, x, config.order_k, config.sweep_bias))
    # aggregate
    variants: dict[str, dict] = {}
    for name, per_dt in raw.items():
        variants[name] = {"train_test_accuracy": mean_se(train_acc[name])}
        for dt, reps in per_dt.items():
            rows = {}
            for row in reps[0]:
                keys = reps[0][row].keys()
                stats = {k: mean_se(rep[row][k] for rep in reps) for k in keys}
                if row == "baseline":
                    variants[name][f"baseline_{dt}"] = stats
                else:
                    rows[row] = stats
            variants[name][dt] = rows
    summary = _summarise(raw, variants, sweeps, symmetry, order, config)
    results = {"experiment": "invariance", "config": config, "dataset": config.dataset,
               "architecture": [data.n_features, *config.widths, data.n_classes],
               "variants": variants, "sigma_sweep": sweeps, "symmetry": symmetry,
               "order": {"k": config.order_k, "runs": order} | {
                   key: mean_se(o[key] for o in order) for key in (order[0] if order else {})},
               "summary": summary}
    results["figures"] = _plot(variants, sweeps, raw, config, out_dir)
    return write_results(out_dir, results, _table(results, config))


def _summarise(raw, variants, sweeps, symmetry, order, config) -> dict:
    summ: dict = {}
    for dt in config.dtypes:
        exact = [v[dt][row]["eps_scaled"]["mean"] for v in variants.values() for row in v[dt]
                 if row == "0" or row.startswith("+")]
        summ[f"max_eps_exact_ops_{dt}"] = max(exact) if exact else None
        xs, ys = [], []
        for reps in (r[dt] for r in raw.values()):
            for rep in reps:
                for row, rec in rep.items():
                    if row.startswith("-"):
                        xs.append(rec["removed_sum_sigma"])
                        ys.append(rec["eps_scaled"])
        summ[f"spearman_eps_vs_removed_sigma_{dt}"] = spearman(xs, ys)
        mono = {}
        for name, v in variants.items():
            seq = [v[dt][f"-{k}"]["eps_scaled"]["mean"] for k in config.ks if f"-{k}" in v[dt]]
            mono[name] = all(a <= b for a, b in zip(seq, seq[1:]))
        summ[f"eps_monotone_in_k_{dt}"] = mono
    sweep0 = {}
    for name, sw in sweeps.items():
        pts = sw["float64"]
        zero = [p for p in pts if p["sigma"] == 0.0]
        nz = [p for p in pts if p["sigma"] > 0]
        sweep0[name] = {"eps_at_sigma0": zero[0]["eps_scaled"] if zero else None,
                        "eps_decreases_with_sigma": all(
                            a["eps_scaled"] >= b["eps_scaled"] for a, b in zip(nz, nz[1:]))}
    summ["sigma_sweep"] = sweep0
    largest = max(config.ks)
    row = f"-{largest}" if any(f"-{largest}" in v.get("float32", {}) for v in variants.values()) \
        else f"-{min(config.ks)}"
    summ["largest_removal_row"] = row
    summ["eps_largest_removal_float32"] = {
        name: v["float32"][row]["eps_scaled"]["mean"] for name, v in variants.items()
        if "float32" in v and row in v["float32"]}
    return summ


def _table(results: dict, config: Config) -> str:
    variants = results["variants"]
    main = MAIN if MAIN in variants else next(iter(variants))
    v = variants[main]
    rows = []
    dt0 = config.dtypes[0]
    for row in v[dt0]:
        r32 = v[dt0][row]
        r64 = v.get("float64", {}).get(row)
        rows.append([row, fmt_ms(r32["eps_scaled"], ".2e"),
                     fmt_ms(r64["eps_scaled"], ".2e") if r64 else "n/a",
                     fmt_ms(r32["kl"], ".2e"), fmt_ms(r32["delta_accuracy_pp"], ".2f"),
                     fmt_ms(r32["delta_sum_sigma"], ".3f")])
    base = v[dt0]
    t1 = (f"Exp 1 (Table 1 shape) — {config.dataset} {results['architecture']}, variant "
          f"o/ψ = {main}, {config.repeats} repeats, {config.epochs} epochs; changes at code-layer 1. "
          f"Baseline a_0 = {fmt_ms(v[f'baseline_{dt0}']['accuracy'], '.3f')}, ∑σ_0 = "
          f"{fmt_ms(v[f'baseline_{dt0}']['sum_sigma'], '.2f')}.\n\n"
          + md_table(["row", "ε_scaled % (float32)", "ε_scaled % (float64)", "KL (float32)",
                      "Δa pp (float32)", "Δ∑σ (float32)"], rows))
    del base
    names = list(variants)
    rows2 = []
    for row in v[dt0]:
        rows2.append([row] + [fmt_ms(variants[n][dt0][row]["eps_scaled"], ".2e")
                              if row in variants[n][dt0] else "n/a" for n in names])
    t2 = ("ε_scaled (%, float32) for every (o, ψ) variant (Table 4 shape)\n\n"
          + md_table(["row"] + names, rows2))
    rows3 = []
    for n, sw in results["sigma_sweep"].items():
        rows3.append([n] + [sci(p["eps_scaled"]) for p in sw["float64"]])
    any_sw = next(iter(results["sigma_sweep"].values()))["float64"]
    t3 = (f"σ sweep (float64): the weakest neuron of code-layer 1 forced to σ with bias "
          f"{config.sweep_bias}, then removed; ε_scaled %\n\n"
          + md_table(["variant"] + [f"σ={p['sigma']:.2g}" for p in any_sw], rows3))
    sym = results["symmetry"]
    rows4 = []
    for dt, lst in sym.items():
        if not lst:
            continue
        s = lst[0]
        rows4.append([dt, sci(s["equivariance_max_abs"]), sci(s["reparameterise"]["max_abs"]),
                      sci(s["left_diagonalise"]["max_abs"]), sci(s["full_diagonalise"]["max_abs"]),
                      sci(s["full_diagonalise"]["offdiag_max_abs"]),
                      sci(s["neurogenesis"]["max_abs"]),
                      sci(s["neurogenesis"]["new_preactivation_max_abs"]),
                      f"{s['scaffold_incoming_grad_norm']['0.0']:.2g} / "
                      f"{s['scaffold_incoming_grad_norm']['0.01']:.2g}"])
    t4 = ("Exactness checks (repeat 0; max |Δlogit| unless stated)\n\n"
          + md_table(["dtype", "φ(Rz)−Rφ(z)", "reparameterise", "left diag", "full diag",
                      "full-diag off-diagonal", "neurogenesis", "new-neuron pre-activation",
                      "grad of new row (c=0 / c~0.01)"], rows4))
    od = results["order"]
    t5 = (f"Layer order (float64, remove {od['k']} neurons from each hidden layer), ε_scaled %\n\n"
          + md_table(["network", "later layer first", "earlier layer first"],
                     [[tag, fmt_ms(od.get(f"{tag}_later_first_eps"), ".2e"),
                       fmt_ms(od.get(f"{tag}_earlier_first_eps"), ".2e")]
                      for tag in ("trained", "silent_layer0")]))
    return "\n\n".join([t1, t2, t3, t4, t5])


def _plot(variants, sweeps, raw, config, out_dir: Path) -> list[str]:
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = []
    fig, axes = plt.subplots(1, len(config.dtypes), figsize=(5.5 * len(config.dtypes), 3.8),
                             squeeze=False)
    for ax, dt in zip(axes[0], config.dtypes):
        for name, v in variants.items():
            ks = [k for k in config.ks if f"-{k}" in v[dt]]
            ax.errorbar(ks, [max(v[dt][f"-{k}"]["eps_scaled"]["mean"], 1e-18) for k in ks],
                        yerr=[v[dt][f"-{k}"]["eps_scaled"]["se"] for k in ks], marker="o",
                        label=f"−k {name}", capsize=2)
        exact = [max(v[dt][f"+{k}"]["eps_scaled"]["mean"], 1e-18) for k in config.ks]
        ax.plot(config.ks, exact, "k--", marker="s", label=f"+k ({MAIN})" if MAIN in variants
                else "+k")
        ax.set_yscale("log")
        ax.set(xlabel="k (neurons added / removed at code-layer 1)", ylabel="ε_scaled (%)",
               title=f"Function change after ±k ({dt})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out_dir / "invariance_k.png", dpi=100)
    plt.close(fig)
    figs.append("invariance_k.png")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, sw in sweeps.items():
        pts = sw["float64"]
        ax1.plot([max(p["sigma"], 1e-9) for p in pts], [max(p["eps_scaled"], 1e-18) for p in pts],
                 marker="o", label=name)
    ax1.set(xscale="log", yscale="log", xlabel="σ of the removed neuron (0 plotted at 1e-9)",
            ylabel="ε_scaled (%)", title="Removing one neuron of strength σ (float64)")
    ax1.legend(fontsize=6)
    ax1.grid(alpha=0.3)
    for name, per in raw.items():
        xs, ys = [], []
        for rep in per.get("float32", []):
            for row, rec in rep.items():
                if row.startswith("-"):
                    xs.append(rec["removed_sum_sigma"])
                    ys.append(rec["eps_scaled"])
        ax2.scatter(xs, ys, s=10, label=name)
    ax2.set(xscale="log", yscale="log", xlabel="∑σ removed", ylabel="ε_scaled (%)",
            title="−k rows: error vs removed singular values (float32)")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "invariance_sigma.png", dpi=100)
    plt.close(fig)
    figs.append("invariance_sigma.png")
    return figs
