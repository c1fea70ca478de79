"""``REPORT.md``: the paper's checkable claims against our measured figures.

Generated only from the ``OUT/EXP/results.json`` files (never typed by hand). Each claim gets the
paper's figure (or "not published"), our figure and a verdict: holds / does not hold / not tested
(with the reason).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from .registry import MODULES

HOLDS, FAILS, UNTESTED = "holds", "does not hold", "not tested"


def _load(out: Path) -> dict[str, dict]:
    res = {}
    for name in MODULES:
        p = out / name / "results.json"
        if p.is_file():
            res[name] = json.loads(p.read_text())
    return res


def _e(x, d: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{d}e}"


def _ms(s, spec=".3f", scale=1.0) -> str:
    if not s or s.get("mean") is None:
        return "n/a"
    return f"{format(s['mean'] * scale, spec)} ± {format(s['se'] * scale, spec)}"


def _verdict(ok: bool | None) -> str:
    return UNTESTED if ok is None else HOLDS if ok else FAILS


def claims(res: dict[str, dict]) -> list[dict]:
    """One dict per checkable claim of the paper: number, claim, paper, ours, verdict, note."""
    out: list[dict] = []

    def add(n, claim, paper, ours, verdict, note=""):
        out.append({"n": n, "claim": claim, "paper": paper, "ours": ours, "verdict": verdict,
                    "note": note})

    inv = res.get("invariance")
    sym32 = sym64 = None
    if inv:
        s = inv["symmetry"]
        sym32 = s.get("float32", [None])[0] if s.get("float32") else None
        sym64 = s.get("float64", [None])[0] if s.get("float64") else None
    miss = "invariance experiment not run"
    # 1
    if sym32 and sym64:
        a, b = sym32["equivariance_max_abs"], sym64["equivariance_max_abs"]
        add(1, "O(n)-equivariance φ(Rz) = Rφ(z)", "not published (test tolerance ~1e-6)",
            f"max abs error {_e(a)} (float32), {_e(b)} (float64)",
            _verdict(a < 1e-5 and b < 1e-12))
    else:
        add(1, "O(n)-equivariance φ(Rz) = Rφ(z)", "not published", "—", UNTESTED, miss)
    # 2
    if sym32 and sym64:
        r32, l32 = sym32["reparameterise"], sym32["left_diagonalise"]
        r64, l64 = sym64["reparameterise"], sym64["left_diagonalise"]
        ok = (max(r32["max_abs"], l32["max_abs"]) < 1e-4 and r32["agreement"] == 1.0
              and l32["agreement"] == 1.0 and max(r64["max_abs"], l64["max_abs"]) < 1e-10)
        add(2, "Orthogonal reparameterisation / left diagonalisation leave logits unchanged",
            "not published; third party: max |Δlogit| 3.06e-5 (float32), 100 % same predictions",
            f"max |Δlogit| reparam {_e(r32['max_abs'])} / left {_e(l32['max_abs'])} (float32, "
            f"agreement {100 * min(r32['agreement'], l32['agreement']):.0f} %); "
            f"{_e(r64['max_abs'])} / {_e(l64['max_abs'])} (float64)", _verdict(ok))
    else:
        add(2, "Reparameterisation leaves logits unchanged", "3.06e-5 (third party)", "—",
            UNTESTED, miss)
    # 3
    if sym32 and sym64:
        f32, f64 = sym32["full_diagonalise"], sym64["full_diagonalise"]
        row0 = inv["variants"].get("trainable/trainable+decay") or next(iter(inv["variants"].values()))
        e32 = row0["float32"]["0"]["eps_scaled"]["mean"]
        e64 = row0.get("float64", {}).get("0", {}).get("eps_scaled", {}).get("mean")
        ok = (f32["offdiag_max_abs"] == 0 and f64["offdiag_max_abs"] == 0 and f32["descending"]
              and f32["nonnegative"] and f64["max_abs"] < 1e-10)
        add(3, "Full diagonalisation keeps logits and makes W_l rectangular diagonal, "
               "descending, non-negative", "not published (exact by construction)",
            f"ε_scaled {_e(e32)} % (float32), {_e(e64)} % (float64); off-diagonal max "
            f"{_e(f32['offdiag_max_abs'])}; descending={f32['descending']}, "
            f"non-negative={f32['nonnegative']}", _verdict(ok))
    else:
        add(3, "Full diagonalisation exact", "not published", "—", UNTESTED, miss)
    # 4
    if inv and sym64:
        summ = inv["summary"]
        pre = max(sym32["neurogenesis"]["new_preactivation_max_abs"],
                  sym64["neurogenesis"]["new_preactivation_max_abs"])
        ok = summ["max_eps_exact_ops_float64"] < 1e-9 and pre == 0
        add(4, "Neurogenesis leaves outputs identical; new neuron's activation exactly 0",
            "\"computationally identical\"; third party max |Δlogit| 3.1e-5 (float32)",
            f"max ε_scaled over rows 0 and +k: {_e(summ['max_eps_exact_ops_float32'])} % "
            f"(float32), {_e(summ['max_eps_exact_ops_float64'])} % (float64); max |Δlogit| "
            f"{_e(sym32['neurogenesis']['max_abs'])} (float32); new pre-activations max "
            f"|z| = {pre:g}", _verdict(ok))
    else:
        add(4, "Neurogenesis exact", "3.1e-5 (third party)", "—", UNTESTED, miss)
    # 5
    if inv:
        summ = inv["summary"]
        main = "trainable/trainable+decay"
        sw = summ["sigma_sweep"].get(main)
        rho = summ.get("spearman_eps_vs_removed_sigma_float32")
        mono = summ.get("eps_monotone_in_k_float32", {})
        if sw:
            ok = sw["eps_at_sigma0"] is not None and sw["eps_at_sigma0"] < 1e-9 \
                and sw["eps_decreases_with_sigma"]
            pts = inv["sigma_sweep"][main]["float64"]
            add(5, "Neurodegeneration of a σ = 0 neuron is exact with o += b*², ψ += b*w*; "
                   "error grows with σ (and k)", "not published (\"arbitrarily well "
                   "approximated\")",
                f"σ sweep (float64, b* = {inv['config']['sweep_bias']}): ε_scaled "
                + ", ".join(f"{_e(p['eps_scaled'])} @σ={p['sigma']:.1g}" for p in pts)
                + f"; trained −k rows: Spearman(ε, removed ∑σ) = "
                  f"{'n/a' if rho is None else f'{rho:.2f}'}, ε monotone in k for "
                  f"{sum(mono.values())}/{len(mono)} variants", _verdict(ok))
        else:
            add(5, "σ = 0 removal exact", "not published", "—", UNTESTED,
                "main variant not run")
    else:
        add(5, "σ = 0 removal exact", "not published", "—", UNTESTED, miss)
    # 6
    if inv:
        summ = inv["summary"]
        sw = summ["sigma_sweep"]
        lacking = {k: v["eps_at_sigma0"] for k, v in sw.items()
                   if k.startswith("none/") or k.endswith("/none") or k.endswith("/expectation")}
        full = {k: v["eps_at_sigma0"] for k, v in sw.items() if k not in lacking}
        big = summ.get("eps_largest_removal_float32", {})
        row = summ.get("largest_removal_row")
        if lacking:
            ok = all(v > 1e-6 for v in lacking.values()) and all(v < 1e-9 for v in full.values())
            trained = ", ".join(f"{k}: {v:.3g}" for k, v in big.items())
            spread = max(big.values()) / max(min(big.values()), 1e-300) if big else None
            note = ("the σ = 0 comparison isolates the compensation"
                    + (f"; on the trained nets the −k rows differ by at most {spread:.2f}× across "
                       "variants, because the removed neurons' σ (not their bias) dominates the "
                       "error" if spread is not None and spread < 1.25 else ""))
            add(6, "Without the o update (o NONE) or without ψ (ψ NONE), σ = 0 removal is not "
                   "exact when b* ≠ 0; compensated variants beat NONE",
                "not published (Table 1/4 values not found)",
                "σ = 0 removal ε_scaled (float64): "
                + ", ".join(f"{k} {_e(v)}" for k, v in {**full, **lacking}.items())
                + f"; trained nets, row {row} ε_scaled % (float32): {trained}", _verdict(ok), note)
        else:
            add(6, "o / ψ compensation needed", "not published", "—", UNTESTED,
                "no NONE variant run")
    else:
        add(6, "o / ψ compensation needed", "not published", "—", UNTESTED, miss)
    # 7
    sp = res.get("sparsify")
    if sp:
        s = sp["summary"]
        ok = (s["max_abs_zero_fraction_error"] < 1e-9 and s["max_abs_delta_accuracy_pp"] == 0
              and s["max_eps_scaled_float64"] < 1e-9)
        add(7, "Alternating full diagonalisation keeps function exactly and zeroes the closed-form "
               "fraction, → 50 % with depth/width", "50 % asymptotically (abstract); table values "
               "(13.9–37.1 % for the CIFAR nets) are inferred, not published",
            f"{len(sp['runs'])} runs: max |Δa| {s['max_abs_delta_accuracy_pp']:.2f} pp, max "
            f"ε_scaled {_e(s['max_eps_scaled_float32'])} % (float32) / "
            f"{_e(s['max_eps_scaled_float64'])} % (float64), max KL {_e(s['max_kl'])}; "
            f"measured − predicted zero fraction ≤ {_e(s['max_abs_zero_fraction_error'])}; "
            f"largest fraction {100 * s['largest_predicted_fraction']:.1f} %", _verdict(ok))
    else:
        add(7, "Sparsification", "50 % asymptotic", "—", UNTESTED, "sparsify not run")
    # 8
    tm = res.get("timing")
    if tm:
        fr = tm["fraction_of_epoch_percent"]
        f1042 = tm["fraction_of_1042_batch_epoch_percent"]
        t = tm["times_s"]
        ok = max(f1042.values()) <= 0.6  # within 3x of the paper's ~0.2 %
        add(8, "Neuroadaptation op ≈ 0.03–0.04 s vs ≈ 17.5 s per epoch (≈ 0.2 % of an epoch)",
            "0.030 s (+1) / 0.037 s (−1) vs 17.52 s epoch, ≈ 0.2 % (RTX 3080, CIFAR-10 "
            "3072-500-500-10, 1042 batches)",
            f"{tm['dataset']} {tm['architecture']}, {tm['device']}: +1 {t['neurogenesis']['mean']:.4f} s,"
            f" −1 {t['neurodegeneration']['mean']:.4f} s vs {t['epoch']['mean']:.2f} s epoch of "
            f"{tm['batches_per_epoch']} batches = {fr['neurogenesis']['mean']:.2f} % / "
            f"{fr['neurodegeneration']['mean']:.2f} %; scaled to a 1042-batch epoch "
            f"{f1042['neurogenesis']:.3f} % / {f1042['neurodegeneration']:.3f} %", _verdict(ok),
            "verdict on the 1042-batch equivalent (holds if ≤ 0.6 %, i.e. within 3× of the "
            "paper's 0.2 %); our quick epochs are shorter, so the raw fraction is larger"
            + (f"; the left singular basis of W_1 alone (the decomposition each op makes) "
               f"takes {t['basis']['mean']:.4f} s here, "
               f"{100 * t['basis']['mean'] / t['neurogenesis']['mean']:.0f} % of the op: on a "
               "CPU the decomposition is dear relative to a training batch"
               if "basis" in t else ""))
    else:
        add(8, "Neuroadaptation cost", "≈ 0.2 % of an epoch", "—", UNTESTED, "timing not run")
    # 9, 10
    ta = res.get("tasks")
    if ta:
        b = ta["buffer"]
        ok = b["fraction_layers_exactly_S"] == 1.0 and (b["max_eps_neurogenesis"] or 0) < 1e-3
        add(9, "The scaffold buffer leaves exactly S singular values ≤ τ per layer after every "
               "call; growth exact, removal approximate", "not published (S = 5, τ = 0.95 in Exp 3)",
            f"{100 * b['fraction_layers_exactly_S']:.0f} % of (epoch, layer) pairs hold exactly "
            f"S ({b['settings']}); {b['n_neurogenesis']} growth calls, max "
            f"ε_scaled {_e(b['max_eps_neurogenesis'])} %; {b['n_neurodegeneration']} removals, max "
            f"ε_scaled {_e(b['max_eps_neurodegeneration'])} %", _verdict(ok))
        tr = ta["width_tracking"]
        ctrl = []
        for p in ta["phases"]:
            for nm, a in p["accuracy_adaptive"].items():
                ctrl.append(100 * (a["mean"] - p["accuracy_control"][nm]["mean"]))
        add(10, "In scheduled multi-task training the total hidden width rises when tasks are "
                "added and falls when one is removed", "qualitative only (abstract); numbers not "
                "published; direction vs control not published",
            "; ".join(f"{t['direction']} ({'+'.join(t['to'])}): width "
                      f"{t['width_change']['mean']:+.1f} ± {t['width_change']['se']:.1f}"
                      for t in tr)
            + f"; adaptive − control accuracy at phase ends: mean {sum(ctrl) / len(ctrl):+.2f} pp "
              f"(range {min(ctrl):+.1f} to {max(ctrl):+.1f})", _verdict(ta["width_tracks_tasks"]),
            "digits split into 3 tasks (0–3, 4–6, 7–9) stands in for MNIST / Fashion-MNIST / "
            "EMNIST A–J" if ta["config"]["tasks"] == "digits" else "")
    else:
        add(9, "Scaffold buffer", "not published", "—", UNTESTED, "tasks not run")
        add(10, "Width tracks tasks", "qualitative", "—", UNTESTED, "tasks not run")
    # 11
    ab = res.get("abundance")
    if ab:
        comp = ab["overabundance"]
        n_ok = sum(c["widest_at_least_static"] for c in comp)
        add(11, "Starting over-abundant and shrinking gives ≥ accuracy than starting at the "
                "final width", "v1 Fig. 4 (third party): 32 → 16/24 beat static 16/24; v2 Table 2 "
                "values not published",
            "widest start − static: " + ", ".join(
                f"target {c['target']}: {c['difference_pp']:+.2f} pp" for c in comp)
            + f"; best start per target: {ab['best_start_per_target']}",
            _verdict(n_ok == len(comp)) if comp else UNTESTED,
            f"{n_ok}/{len(comp)} targets; {ab['dataset']} stands in for CIFAR-10" if comp else "")
    else:
        add(11, "Over-abundance", "v1 Fig. 4", "—", UNTESTED, "abundance not run")
    # 12
    if sym32:
        g = sym32["scaffold_incoming_grad_norm"]
        ok = g["0.0"] == 0.0 and g["0.01"] > 0
        add(12, "A scaffold neuron with zero outgoing weights gets exactly zero gradient on its "
                "incoming row; with 0.01-scale random outgoing weights it learns",
            "not published (third party: exactly zero)",
            f"‖∂L/∂w_new‖ = {g['0.0']:g} (c = 0), {g['0.01']:.3g} (c ~ 0.01·N(0,1))", _verdict(ok))
    else:
        add(12, "Scaffold gradient", "not published", "—", UNTESTED, miss)
    # 13
    _claim13(add, res.get("compare"), res.get("quality"))
    # 14
    if tm and tm["dataset"] == "cifar10" and tm["architecture"] == [3072, 500, 500, 10]:
        acc = tm["final_test_accuracy"]
        add(14, "Iso-tanh 3072-500-500-10 on CIFAR-10 reaches ≈ 44 % by ~30 epochs", "≈ 44.0 %",
            f"{100 * acc:.1f} %", _verdict(abs(acc - 0.44) <= 0.03))
    else:
        ours = (f"{tm['dataset']} {tm['architecture']}: {100 * tm['final_test_accuracy']:.1f} % "
                "(not comparable)") if tm else "—"
        add(14, "Iso-tanh 3072-500-500-10 on CIFAR-10 reaches ≈ 44 % by ~30 epochs", "≈ 44.0 %",
            ours, UNTESTED, "CIFAR-10 is not available offline; run `reproduce timing --scale "
            "paper --data-dir DIR` with the CIFAR-10 binary files")
    # 15
    if inv and inv["order"]["runs"]:
        od = inv["order"]
        a, b = od["trained_earlier_first_eps"], od["trained_later_first_eps"]
        z_e, z_l = od.get("silent_layer0_earlier_first_eps"), od.get("silent_layer0_later_first_eps")
        trained_ok = a["mean"] > b["mean"]
        silent_ok = z_e is not None and z_e["mean"] > z_l["mean"]
        within = abs(a["mean"] - b["mean"]) <= a["se"] + b["se"]
        note = ("on the trained nets the two orders differ by less than one SE (the removed "
                "biases, hence the ψ increments, are tiny); " if within else "") + (
            "with silent layer-0 neurons (σ = 0, b* = 0.5) the earlier-first order is worse, as "
            "the rule says" if silent_ok else "even with silent layer-0 neurons the earlier-first "
            "order is not worse")
        add(15, "Adjusting the earlier hidden layer before the later one changes the function more "
                "than the reverse (ψ leakage)", "code note only; no figure published",
            f"trained nets, −{od['k']} per layer (float64): earlier first {_ms(a, '.3g')} %, "
            f"later first {_ms(b, '.3g')} %"
            + (f"; with {od['k']} silent layer-0 neurons: earlier first {_ms(z_e, '.3g')} % vs "
               f"later first {_ms(z_l, '.3g')} %" if z_e else ""),
            HOLDS if silent_ok and (trained_ok or within) else FAILS, note)
    else:
        add(15, "Layer order rule", "code note", "—", UNTESTED, miss)
    return out


#: Display names of the quality study's models in claim 13.
_QUALITY_NAMES = {"isotropic": "isotropic MLP", "gs-all": "one-group gs-all", "tanh": "tanh",
                  "relu": "ReLU", "gelu-ln": "GELU+LayerNorm"}


def _claim13(add: Callable[..., None], cp: dict | None, q: dict | None) -> None:
    """Claim 13, isotropic against element-wise tanh MLPs.

    ``compare`` trains both at lr 1e-3 from the same initial weights (untuned). When the
    ``quality`` experiment ran the isotropic MLP and tanh, the verdict is judged on it instead:
    every model at its rate and depth chosen on validation (fair, tuned baselines), the isotropic
    MLP's best test accuracy against tanh's best (holds if not below), with ReLU and
    GELU+LayerNorm beside them.
    """
    paper = ("Table 7 values not published; third party (v1, lr 0.08): isotropic +14–16 pp on "
             "CIFAR-10 width 24")
    untuned = None
    if cp:
        untuned = (f"isotropic better in {cp['isotropic_wins']}/{cp['n_cells']} settings ("
                   + ", ".join(f"{k}: {c['difference_pp']['mean']:+.2f} pp"
                               for k, c in cp["cells"].items()) + ")")
    cmp = (q or {}).get("comparison") or {}
    iso = cmp.get("isotropic", [])
    if iso and "tanh" in cmp.get("baselines", []):
        best, diff, cfg = cmp["best"], cmp["difference_pp"], q["config"]
        main = iso[0]  # the library's IsotropicMLP when run, else the one-group network
        models = [*iso, *cmp["baselines"]]
        tuned = (f"tuned ({q['data']['dataset']}, width {cfg['width']}, {cfg['epochs']} epochs, "
                 f"{cfg['repeats']} seeds; rate from {cfg['lrs']} and depth from "
                 f"{cfg['depths']} chosen on validation; test %): " + ", ".join(
                     f"{_QUALITY_NAMES.get(m, m)} {_ms(best[m]['test_pct'], '.2f')} (depth "
                     f"{best[m]['depth']}, lr {best[m]['lr']:g})" for m in models))
        ours = tuned + (f"; untuned (compare: lr 1e-3, same init, no o, no ψ): {untuned}"
                        if untuned else "")
        gaps = {b: diff[f"{main} - {b}"] for b in cmp["baselines"]}
        below_all = all(g["mean"] < 0 for g in gaps.values())
        note = ("verdict against the third party's direction (isotropic ≥ tanh), judged on the "
                f"tuned comparison (`isoplastic reproduce quality`): the "
                f"{_QUALITY_NAMES.get(main, main)}'s best minus each baseline's best: "
                + ", ".join(f"{_QUALITY_NAMES.get(b, b)} {g['mean']:+.2f} ± {g['se']:.2f} pp"
                            for b, g in gaps.items())
                + "; it is " + ("below every" if below_all else "not below every")
                + " element-wise baseline. docs/quality.md (\"The function class of an isotropic "
                  "MLP\") derives its decision rule: a linear classifier plus one scalar feature "
                  "per layer, whatever the width. The paper's own direction is unknown")
        add(13, "Isotropic vs element-wise tanh MLPs (each at its own rate and depth, chosen on "
                "validation)", paper, ours, _verdict(gaps["tanh"]["mean"] >= 0), note)
    elif cp:
        add(13, "Isotropic vs element-wise tanh MLPs (same init, no o, no ψ)", paper, untuned,
            _verdict(cp["isotropic_wins"] * 2 > cp["n_cells"]),
            "verdict against the third party's direction (isotropic ≥ element-wise); the paper's "
            f"own direction is unknown; data sets: {', '.join(cp['datasets'])}; untuned; run "
            "`isoplastic reproduce quality` for the tuned comparison")
    else:
        add(13, "Iso vs element-wise", "not published", "—", UNTESTED,
            "compare not run; `isoplastic reproduce quality` runs the tuned comparison")


def write_report(out: str | Path, *, dest: str | Path | None = None,
                 link: Callable[[str, str], str] | None = None,
                 runtimes: dict | None = None) -> Path:
    """Write ``REPORT.md`` (into ``dest``, default ``out``) from ``out/*/results.json``.

    ``link(exp, figure)`` gives the markdown path of a figure (default ``exp/figure``).
    """
    out = Path(out)
    dest = Path(dest) if dest is not None else out
    link = link or (lambda exp, fig: f"{exp}/{fig}")
    res = _load(out)
    if runtimes is None and (out / "runtimes.json").is_file():
        runtimes = json.loads((out / "runtimes.json").read_text())
    cl = claims(res)
    lines = ["# Reproduction report: arXiv 2602.23405 (isotropic activations, adaptive topology)",
             "",
             "Generated by `isoplastic reproduce` from the `results.json` files of each "
             "experiment; every number below is read from those files.", ""]
    if runtimes:
        total = runtimes.get("total_s")
        lines += ["Runtime: " + ", ".join(f"{k} {v:.0f} s" for k, v in runtimes.items()
                                          if k not in ("total_s", "scale", "machine"))
                  + (f"; total {total:.0f} s" if total is not None else "")
                  + (f" (scale `{runtimes['scale']}`)" if "scale" in runtimes else "")
                  + (f"; {runtimes['machine']}" if "machine" in runtimes else ""), ""]
    counts = {v: sum(c["verdict"] == v for c in cl) for v in (HOLDS, FAILS, UNTESTED)}
    lines += ["## Claims of the paper", "",
              f"{counts[HOLDS]} hold, {counts[FAILS]} do not hold, {counts[UNTESTED]} not tested.",
              "",
              "| # | claim | paper | ours | verdict |", "|---|---|---|---|---|"]
    for c in cl:
        verdict = f"**{c['verdict']}**" + (f" — {c['note']}" if c["note"] else "")
        cells = [str(c["n"]), c["claim"], c["paper"], c["ours"], verdict]
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    lines += ["", "Stand-ins: the quick scale runs offline on the 8×8 digits (always) and a "
              "Fashion-MNIST subset when the Debian package is installed; digits (and the digits "
              "split into three tasks) stand in for EMNIST A–J, CIFAR-10/100 and Caltech256. The "
              "paper scale (`--scale paper --data-dir DIR`) runs the same code on the paper's "
              "data sets and architectures.", ""]
    for name in MODULES:
        if name not in res:
            continue
        lines += [f"## {name}", ""]
        table = out / name / "table.md"
        if table.is_file():
            lines += [table.read_text().rstrip(), ""]
        for fig in res[name].get("figures", []):
            lines += [f"![{name}: {fig}]({link(name, fig)})", ""]
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    if dest == out:
        (dest / "claims.json").write_text(json.dumps(cl, indent=1) + "\n")
    return path


def export_docs(out: str | Path, docs: str | Path) -> Path:
    """Copy the figures to ``docs/figures/EXP_fig.png`` and write ``docs/REPORT.md`` linking them."""
    out, docs = Path(out), Path(docs)
    figdir = docs / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    for name in MODULES:
        p = out / name / "results.json"
        if not p.is_file():
            continue
        for fig in json.loads(p.read_text()).get("figures", []):
            shutil.copyfile(out / name / fig, figdir / f"{name}_{fig}")
    return write_report(out, dest=docs, link=lambda exp, fig: f"figures/{exp}_{fig}")


__all__ = ["claims", "export_docs", "write_report"]
