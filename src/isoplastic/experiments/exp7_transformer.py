"""Transformers on real text: fixed isotropic, adaptive isotropic and standard, at equal size.

Question: on character-level language modelling, how does the isotropic transformer (isotropic
normaliser, isotropic-tanh FFNs) compare in held-out bits per character with a standard
pre-LayerNorm GELU transformer of the same parameter count, trained on the same windows for the
same steps; which FFN widths does the scaffold policy settle on; are its growth steps exact and
its removals within their predicted bound on a trained model?

One :func:`isoplastic.train.fit` run trains the adaptive transformer (scaffold policy,
neuroadapt after every epoch) and its fixed-width control from the same initial weights on the
same batches. The standard transformer (:class:`~isoplastic.nn.standard_transformer.
StandardTransformer`, FFN width solved to match the fixed isotropic model's parameter count)
then sees exactly the same windows (the trainer's per-epoch generator) with the same optimizer
settings, and is evaluated on the same held-out windows.

Growth check: the same copies gain ``n`` neurons (:func:`isoplastic.neurogenesis`) instead; the
float32 change of the logits on the probe (per token).

Removal check: on the trained adaptive model, for every FFN space and every ``n`` of
``removal_counts``, a copy loses its ``n`` weakest neurons (:func:`isoplastic.neurodegeneration`)
and the change of the FFN branch output at every held-out token of the probe,
``‖ΔB(n(x_t))‖``, is compared with the record's bound ``predicted_bound · ‖n(x_t)‖ +
predicted_offset``; also the held-out bits per character after the removal.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.model import hidden_spaces
from ..nn.standard_transformer import (
    StandardTransformer,
    matching_d_ff,
    standard_parameter_count,
)
from ..topology.grow import neurogenesis
from ..topology.shrink import neurodegeneration
from ..train.checkpoint import make_optimizer
from ..train.config import TrainConfig
from ..train.lm import (
    count_parameters,
    eval_windows,
    evaluate_text,
    random_starts,
    sequence_loss,
    windows,
)
from ..train.trainer import fit, generator, prepare_text
from ..verify import compare_logits
from .common import ExperimentConfig, md_table, pyplot, write_results


@dataclass
class Config(ExperimentConfig):
    dataset: str = "stdlib"
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256
    context_length: int = 64
    batch_size: int = 48
    batches_per_epoch: int = 150
    epochs: int = 12
    lr: float = 1e-3
    weight_decay: float = 1e-3
    scaffold: int = 2
    threshold: float = 0.1
    n_train: int | None = None
    n_test: int | None = None
    removal_counts: list[int] = field(default_factory=lambda: [1, 8, 32])
    probe_windows: int = 64
    seed: int = 0

    @classmethod
    def paper(cls) -> Config:  # no paper counterpart: a larger model, trained longer
        return cls(d_model=256, n_layers=4, n_heads=8, d_ff=512, context_length=128,
                   epochs=30)

    @classmethod
    def tiny(cls) -> Config:
        return cls(d_model=16, n_layers=2, n_heads=2, d_ff=16, context_length=16, batch_size=8,
                   batches_per_epoch=4, epochs=2, n_train=20_000, n_test=2_000,
                   removal_counts=[1, 4], probe_windows=8)


def _train_standard(cfg: Config, tcfg: TrainConfig, data, x_test, y_test, d_ff: int
                    ) -> tuple[StandardTransformer, list[dict], float]:
    """The standard transformer on the trainer's windows (same generator per epoch)."""
    t0 = time.perf_counter()
    net = StandardTransformer(data.vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, d_ff,
                              cfg.context_length, generator=generator(cfg.seed, "standard-init"))
    opt = make_optimizer(net, tcfg)
    history = []
    t_len = cfg.context_length
    for epoch in range(cfg.epochs):
        starts = random_starts(data.train.numel(), t_len, (cfg.batches_per_epoch, cfg.batch_size),
                               generator(cfg.seed, "windows", epoch))
        net.train()
        total = 0.0
        for idx in starts:
            xb, yb = windows(data.train, idx, t_len)
            loss = sequence_loss(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        train_loss = total / cfg.batches_per_epoch
        history.append({"epoch": epoch + 1, "train_bpc": train_loss / torch.log(
            torch.tensor(2.0)).item(), **evaluate_text(net, x_test, y_test)})
    return net, history, time.perf_counter() - t0


def _ffn_input(net: torch.nn.Module, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The residual stream ``(B, T, d)`` entering ``module`` when ``net`` reads ``x``."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            net.eval()
            net(x)
    finally:
        handle.remove()
    return seen[0]


def _removal_checks(net, probe: torch.Tensor, x_test, y_test, counts: list[int]) -> list[dict]:
    """Remove the ``n`` weakest neurons of each FFN space of a copy of ``net``; the observed
    per-token change of the branch output against the record's bound (module docstring)."""
    rows = []
    with torch.no_grad():
        net.eval()
        before_logits = net(probe)
    for name, space in hidden_spaces(net).items():
        block_name = name.rsplit(".", 1)[0]
        for n in counts:
            if n >= space.size:
                continue
            twin = copy.deepcopy(net)
            ffn = twin.get_submodule(block_name)
            x = _ffn_input(twin, ffn, probe)
            with torch.no_grad():
                before = ffn.trace(x)
            change = neurodegeneration(twin, name, n)
            with torch.no_grad():
                after = ffn.trace(x)
                observed = (after["branch"] - before["branch"]).to(torch.float64).norm(dim=1)
                allowed = (change.predicted_bound * before["input"].to(torch.float64).norm(dim=1)
                           + change.predicted_offset)
                fc = compare_logits(before_logits.reshape(-1, before_logits.shape[-1]),
                                    twin(probe).reshape(-1, before_logits.shape[-1]))
                # float32 round-off of the branch output, allowed on top of the bound
                slack = 1e-5 * (before["branch"].to(torch.float64).norm(dim=1) + 1)
            bounded = allowed > 0
            rows.append({
                "space": name, "n": n, "width_before": change.width_before,
                "removed_singular_values": list(change.removed_singular_values),
                "max_observed": float(observed.max()), "max_allowed": float(allowed.max()),
                # over the tokens with a non-zero bound (an exact removal's change is round-off)
                "max_ratio": float((observed[bounded] / allowed[bounded]).max())
                if bool(bounded.any()) else None,
                "within_bound": bool((observed <= allowed + slack).all()),
                "eps_scaled": fc.eps_scaled, "kl": fc.kl,
                "test_bpc_after": evaluate_text(twin, x_test, y_test)["test_bpc"],
            })
    return rows


def _growth_checks(net, probe: torch.Tensor, counts: list[int], seed: int) -> list[dict]:
    """Grow ``n`` neurons in each FFN space of a copy of the trained ``net`` (float32); the
    function change of the logits on the probe, per token."""
    rows = []
    with torch.no_grad():
        net.eval()
        before = net(probe)
    for name in hidden_spaces(net):
        for n in counts:
            twin = copy.deepcopy(net)
            change = neurogenesis(twin, name, n, generator=generator(seed, "check-grow", name, n))
            with torch.no_grad():
                fc = compare_logits(before.reshape(-1, before.shape[-1]),
                                    twin(probe).reshape(-1, before.shape[-1]))
            rows.append({"space": name, "n": n, "width_after": change.width_after,
                         "eps_scaled": fc.eps_scaled, "kl": fc.kl, "max_abs": fc.max_abs})
    return rows


def run(config: Config, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    torch.manual_seed(config.seed)
    tcfg = TrainConfig(model="transformer", dataset=config.dataset, d_model=config.d_model,
                       n_layers=config.n_layers, n_heads=config.n_heads, d_ff=config.d_ff,
                       context_length=config.context_length, batch_size=config.batch_size,
                       batches_per_epoch=config.batches_per_epoch, epochs=config.epochs,
                       lr=config.lr, weight_decay=config.weight_decay, scaffold=config.scaffold,
                       threshold=config.threshold, n_train=config.n_train, n_test=config.n_test,
                       seed=config.seed, control=True, out=str(out_dir / "run"))
    data = prepare_text(tcfg)
    t0 = time.perf_counter()
    result = fit(tcfg, data=data, progress=False, overwrite=True)
    iso_wall = time.perf_counter() - t0
    x_test, y_test = eval_windows(data.test, config.context_length)
    adaptive, fixed = result.nets["adaptive"], result.nets["control"]
    fixed_params = count_parameters(fixed)
    d_ff_std = matching_d_ff(fixed_params, data.vocab_size, config.d_model, config.n_layers,
                             config.context_length)
    standard, std_hist, std_wall = _train_standard(config, tcfg, data, x_test, y_test, d_ff_std)
    probe = x_test[: config.probe_windows]
    removals = _removal_checks(adaptive, probe, x_test, y_test, config.removal_counts)
    growths = _growth_checks(adaptive, probe, config.removal_counts, config.seed)

    last = result.metrics[-1]
    applied = [c for c in result.changes if not c["refused"]]
    grow = [c for c in applied if c["op"] == "neurogenesis"]
    shrink = [c for c in applied if c["op"] == "neurodegeneration"]
    models = {
        "fixed isotropic": {"params": fixed_params, "test_bpc": last["control"]["test_bpc"],
                            "train_bpc": last["control"]["train_bpc"],
                            "ffn_widths": last["control"]["widths"]},
        "adaptive isotropic": {"params": count_parameters(adaptive), "test_bpc": last["test_bpc"],
                               "train_bpc": last["train_bpc"], "ffn_widths": last["widths"]},
        "standard (pre-LN GELU)": {
            "params": count_parameters(standard), "test_bpc": std_hist[-1]["test_bpc"],
            "train_bpc": std_hist[-1]["train_bpc"], "ffn_widths": [d_ff_std] * config.n_layers},
    }
    assert models["standard (pre-LN GELU)"]["params"] == standard_parameter_count(
        data.vocab_size, config.d_model, config.n_layers, d_ff_std, config.context_length)
    results = {
        "experiment": "transformer", "config": config, "data": {
            "name": data.name, "n_train": data.train.numel(), "n_test": data.test.numel(),
            "vocab_size": data.vocab_size, "unigram_bpc": data.unigram_bpc,
            "unigram_test_bpc": data.unigram_test_bpc, "n_unknown": data.n_unknown},
        "models": models,
        "curves": {"epochs": [m["epoch"] for m in result.metrics],
                   "adaptive": [m["test_bpc"] for m in result.metrics],
                   "fixed": [m["control"]["test_bpc"] for m in result.metrics],
                   "standard": [h["test_bpc"] for h in std_hist],
                   "widths": [m["widths"] for m in result.metrics],
                   "initial_widths": [config.d_ff] * config.n_layers,
                   "spaces": result.metrics[-1].get("spaces")},
        "changes": {"n_growth": len(grow), "neurons_added": sum(c["n"] for c in grow),
                    "n_shrink": len(shrink), "neurons_removed": sum(c["n"] for c in shrink),
                    "max_eps_growth": max((c["eps_scaled"] for c in grow), default=None),
                    "max_eps_shrink": max((c["eps_scaled"] for c in shrink), default=None)},
        "removal_checks": removals,
        "growth_checks": growths,
        "wall_time_s": {"isotropic_pair": iso_wall, "standard": std_wall},
    }
    rows = [[name, f"{m['params']:,}", f"{m['test_bpc']:.3f}", f"{m['train_bpc']:.3f}",
             m["ffn_widths"]] for name, m in models.items()]
    table = (f"Character-level LM on {data.name} ({data.train.numel():,} training / "
             f"{data.test.numel():,} held-out characters, vocabulary {data.vocab_size}); "
             f"{config.epochs} epochs x {config.batches_per_epoch} batches x {config.batch_size} "
             f"windows of {config.context_length}; unigram entropy {data.unigram_bpc:.3f} bpc "
             f"(held-out unigram {data.unigram_test_bpc:.3f})\n\n"
             + md_table(["model", "parameters", "held-out bpc", "train bpc", "FFN widths"], rows)
             + "\n\nRemovals on the trained adaptive model (per-token FFN output change vs bound)"
             "\n\n" + md_table(
                 ["space", "n", "removed σ (max)", "max ‖ΔB‖", "max bound", "max ratio",
                  "within", "held-out bpc after"],
                 [[r["space"], r["n"], f"{max(r['removed_singular_values']):.3g}",
                   f"{r['max_observed']:.3g}", f"{r['max_allowed']:.3g}",
                   "exact" if r["max_ratio"] is None else f"{r['max_ratio']:.3g}",
                   r["within_bound"], f"{r['test_bpc_after']:.3f}"]
                  for r in removals])
             + "\n\nGrowth on the trained adaptive model (float32, logits on the probe)\n\n"
             + md_table(["space", "n", "eps_scaled (%)", "KL per token", "max abs Δlogit"],
                        [[r["space"], r["n"], f"{r['eps_scaled']:.3g}", f"{r['kl']:.3g}",
                          f"{r['max_abs']:.3g}"] for r in growths]))
    results["figures"] = _plot(results, out_dir)
    return write_results(out_dir, results, table)


def _plot(results: dict, out_dir: Path) -> list[str]:
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    models, curves = results["models"], results["curves"]
    unigram = results["data"]["unigram_bpc"]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 3.8))
    colors = {"fixed isotropic": "tab:blue", "adaptive isotropic": "tab:green",
              "standard (pre-LN GELU)": "tab:orange"}
    for name, m in models.items():
        ax1.scatter([m["params"]], [m["test_bpc"]], color=colors[name], label=name, s=40)
    ax1.set(xlabel="parameters (thousands)", ylabel="held-out bits per character",
            title="Held-out bpc against size (final)")
    ax1.xaxis.set_major_formatter(lambda v, pos: f"{v / 1000:.0f}k")
    for key, name in (("fixed", "fixed isotropic"), ("adaptive", "adaptive isotropic"),
                      ("standard", "standard (pre-LN GELU)")):
        ax2.plot(curves["epochs"], curves[key], color=colors[name], label=name)
    ax2.axhline(unigram, color="0.4", ls="--", lw=1, label=f"unigram entropy {unigram:.2f}")
    ax2.set(xlabel="epoch", ylabel="held-out bits per character", title="Learning curves")
    widths = [curves["initial_widths"], *curves["widths"]]  # epoch 0: the initial widths
    epochs = [0, *curves["epochs"]]
    names = curves["spaces"] or [str(k) for k in range(len(widths[0]))]
    for k, name in enumerate(names):
        ax3.step(epochs, [w[k] for w in widths], where="post", label=name)
    ax3.set(xlabel="epoch (0: initial)", ylabel="FFN width",
            title="Adaptive FFN widths per block")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "transformer.png", dpi=90)
    plt.close(fig)
    return ["transformer.png"]
