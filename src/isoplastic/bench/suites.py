"""The benchmark suites behind ``isoplastic bench``; each returns a JSON-ready dict.

Every speed figure is a *ratio within one run*: candidates are timed interleaved with warm-up and
medians (:mod:`.timing`), so the load of a shared machine largely cancels. Absolute medians are
reported alongside for reference only.

1. :func:`activation_and_step` — isotropic activation vs ``tanh`` (forward+backward), and a
   full AdamW training step of :class:`~isoplastic.IsotropicMLP` vs
   :class:`~isoplastic.ElementwiseMLP`; :func:`compiled_step` — the same steps under
   ``torch.compile``, and their recompilation after a structural change.
2. :func:`adaptation_cost` — ``neuroadapt`` and single-call neurogenesis/neurodegeneration vs
   one training epoch of the paper's Exp 0 network (3072-500-500-10, batch 48, 50,000 samples).
3. :func:`sparse_inference` — :func:`~isoplastic.export.compile_sparse` vs the dense network.
4. :func:`pruning_quality` — neurodegeneration vs L2 structured pruning vs training small.
5. :func:`scaling` — time and peak memory of training and adaptation vs width, depth, batch.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import activations as _acts
from ..activations import isotropic as _iso
from ..nn import ElementwiseCNN, ElementwiseMLP, IsotropicCNN, IsotropicMLP
from ..ops.diagonalise import left_diagonalise, sparsify
from ..topology import policies as _policies
from ..topology.grow import neurogenesis
from ..topology.policies import neuroadapt
from ..topology.shrink import neurodegeneration, remove_neurons
from ..verify import function_change
from .timing import interleaved

__all__ = ["activation_and_step", "adaptation_cost", "compiled_step", "pruning_quality",
           "run_all", "scaling", "sparse_inference"]

Log = Callable[[str], None]


def _quiet(msg: str) -> None:
    pass


def _step_fn(net: nn.Module, x: Tensor, y: Tensor, lr: float = 1e-3,
             impl: str = "default", backend: str | None = None) -> Callable[[], None]:
    """One training step as the Trainer takes it: AdamW in torch's default implementation for
    the device (``impl="foreach"`` or ``"fused"``: the multi-tensor or fused kernels).
    ``backend``: the forward pass and loss run under ``torch.compile(fullgraph=True,
    backend=backend)`` (their backward with it); the optimizer step stays eager."""
    kw = {"foreach": True} if impl == "foreach" else {"fused": True} if impl == "fused" else {}
    opt = torch.optim.AdamW(net.parameters(), lr=lr, **kw)

    def loss_of(x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(net(x), y) + net.psi_penalty()

    loss_fn = loss_of if backend is None else torch.compile(loss_of, fullgraph=True,
                                                            backend=backend)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(x, y).backward()
        opt.step()

    step.optimizer = opt  # type: ignore[attr-defined]  # for a structural change in between
    return step


def _size_widths(size: str | int) -> list[int]:
    if size == "3072-in":
        return [3072, 500, 500, 10]
    return [int(size), int(size), int(size), 10]


# --------------------------------------------------------------------------------------------
# 1. activation and training step
# --------------------------------------------------------------------------------------------
def activation_and_step(sizes=(256, 1024, "3072-in"), batches=(48, 256), repeats: int = 15,
                        seed: int = 0, log: Log = _quiet, cnn_kw: dict | None = None) -> dict:
    """Ratios isotropic / element-wise tanh: activation fwd+bwd, and a full AdamW step.

    ``*_reference`` entries time the plain-autograd formula (``fused_kernel(False)``) in the
    same interleaved run, i.e. the implementation before the fused kernel.
    """
    torch.manual_seed(seed)
    rows = []
    for size in sizes:
        widths = _size_widths(size)
        n = widths[1]
        for b in batches:
            z = torch.randn(b, n, requires_grad=True)
            gz = torch.randn(b, n)
            act = _acts.IsotropicTanh("trainable")

            def iso_act(fused: bool, act=act, z=z, gz=gz) -> Callable[[], None]:
                def f() -> None:
                    with _iso.fused_kernel(fused):
                        h, _ = act.forward_with_gain(z)
                    h.backward(gz)
                    z.grad = None
                return f

            def tanh_act(z=z, gz=gz) -> None:
                torch.tanh(z).backward(gz)
                z.grad = None

            inner = 20 if b * n <= 300_000 else 5
            ta = interleaved({"iso": iso_act(True), "iso_reference": iso_act(False),
                              "tanh": tanh_act}, repeats=repeats, warmup=3, inner=inner)
            x = torch.randn(b, widths[0])
            y = torch.randint(0, widths[-1], (b,))
            gen = torch.Generator().manual_seed(seed)
            iso_net = IsotropicMLP(widths, generator=gen)
            ref_net = copy.deepcopy(iso_net)
            el_net = ElementwiseMLP(widths, generator=torch.Generator().manual_seed(seed))
            s_iso, s_ref, s_el = _step_fn(iso_net, x, y), _step_fn(ref_net, x, y), _step_fn(el_net, x, y)

            def ref_step(s_ref=s_ref) -> None:
                with _iso.fused_kernel(False):
                    s_ref()

            # steps of ~1 ms are timed 5 at a time: a single one is at the timer's noise level
            ts = interleaved({"iso": s_iso, "iso_reference": ref_step, "tanh": s_el},
                             repeats=repeats, warmup=5, inner=5 if b * n <= 300_000 else 1)
            row = {
                "size": str(size), "widths": widths, "batch": b,
                "activation_ratio": ta.ratio("iso", "tanh"),
                "activation_ratio_reference": ta.ratio("iso_reference", "tanh"),
                "train_step_ratio": ts.ratio("iso", "tanh"),
                "train_step_ratio_reference": ts.ratio("iso_reference", "tanh"),
                "activation_times": ta.as_dict(), "step_times": ts.as_dict(),
            }
            rows.append(row)
            log(f"  size {size} batch {b}: activation {row['activation_ratio']:.2f}x "
                f"(reference {row['activation_ratio_reference']:.2f}x), train step "
                f"{row['train_step_ratio']:.3f}x (reference {row['train_step_ratio_reference']:.3f}x)")
    cnn = cnn_step(repeats=repeats, seed=seed, log=log, **(cnn_kw or {}))
    return {
        "cnn": cnn,
        "cnn_train_step_ratio": cnn["train_step_ratio"],
        "train_step_ratio": max(r["train_step_ratio"] for r in rows),
        "train_step_ratio_reference": max(r["train_step_ratio_reference"] for r in rows),
        "activation_ratio": max(r["activation_ratio"] for r in rows),
        "rows": rows,
        "smallest_step_by_feature": _step_by_feature(_size_widths(sizes[0]), batches[0],
                                                     repeats, seed),
    }


def cnn_step(in_shape=(1, 28, 28), channels=(16, 32), head=(64,), batch: int = 48,
             repeats: int = 15, seed: int = 0, log: Log = _quiet) -> dict:
    """One AdamW step of :class:`~isoplastic.IsotropicCNN` against the same-shaped
    :class:`~isoplastic.ElementwiseCNN` (3×3 kernels, "same" padding, mean pooling), float32.

    Cost model: the convolutions are shared; the isotropic activation over the channel axis adds
    a reduction ``Σ_c z²`` per position and the product ``g z`` forward, and three passes
    backward, and the ψ term ``ψ ⊗ avgpool(g)`` one batched rank-one update per channel space
    (tanh: one pass each way), so the ratio is bounded by the element-wise passes' share of the
    step."""
    torch.manual_seed(seed)
    x = torch.randn(batch, *in_shape)
    y = torch.randint(0, 10, (batch,))
    kw = dict(kernel_sizes=3, head=list(head), n_classes=10)
    iso = IsotropicCNN(in_shape, list(channels), generator=torch.Generator().manual_seed(seed),
                       **kw)
    el = ElementwiseCNN(in_shape, list(channels), generator=torch.Generator().manual_seed(seed),
                        **kw)
    t = interleaved({"iso": _step_fn(iso, x, y), "tanh": _step_fn(el, x, y)},
                    repeats=repeats, warmup=2)
    out = {"in_shape": list(in_shape), "channels": list(channels), "head": list(head),
           "batch": batch, "train_step_ratio": t.ratio("iso", "tanh"), "step_times": t.as_dict()}
    log(f"  CNN {list(in_shape)} channels {list(channels)} head {list(head)} batch {batch}: "
        f"train step {out['train_step_ratio']:.3f}x")
    return out


#: Modes of :func:`compiled_step`: (optimizer implementation, compiled forward and loss).
COMPILE_MODES = {"eager": ("default", False), "fused": ("fused", False),
                 "compiled": ("default", True), "compiled+fused": ("fused", True)}


def compiled_step(sizes=(256, 1024, "3072-in"), batch: int = 48, repeats: int = 15,
                  seed: int = 0, backend: str = "inductor", cnn_kw: dict | None = None,
                  log: Log = _quiet) -> dict:
    """Training steps under ``torch.compile``: isotropic vs element-wise tanh, same mode.

    Modes (:data:`COMPILE_MODES`, applied to both networks): ``eager`` (torch's default AdamW,
    a loop over the parameter tensors on the CPU), ``fused`` (AdamW's fused kernel, what the
    Trainer uses), ``compiled`` (forward pass and loss under ``torch.compile(fullgraph=True)``,
    their backward compiled with them, default AdamW) and ``compiled+fused``. All eight steps of
    a size are timed interleaved; the ratios divide each mode's isotropic step by the tanh step
    of the same mode, and by the eager tanh step.

    Also, per size: the first call's time (tracing and code generation) and the first step
    after a structural change (one ``neurogenesis`` of hidden layer 0 with the optimizer
    transported): a change of shape makes the compiled function recompile once.
    Compiled graphs are dropped (``torch._dynamo.reset()``) before every size: each size
    compiles four functions, below torch's recompilation limit, so none falls back to eager.
    """
    import torch._dynamo

    torch.manual_seed(seed)
    shapes = [(str(s), "mlp", _size_widths(s)) for s in sizes] + [("cnn", "cnn", None)]
    rows = []
    for label, kind, widths in shapes:
        torch._dynamo.reset()
        if kind == "mlp":
            x = torch.randn(batch, widths[0])
            y = torch.randint(0, widths[-1], (batch,))

            def make(iso: bool, widths=widths) -> nn.Module:
                cls = IsotropicMLP if iso else ElementwiseMLP
                return cls(widths, generator=torch.Generator().manual_seed(seed))
        else:
            kw = {"in_shape": (1, 28, 28), "channels": (16, 32), "head": (64,), **(cnn_kw or {})}
            x = torch.randn(batch, *kw["in_shape"])
            y = torch.randint(0, 10, (batch,))

            def make(iso: bool, kw=kw) -> nn.Module:
                cls = IsotropicCNN if iso else ElementwiseCNN
                return cls(kw["in_shape"], list(kw["channels"]), kernel_sizes=3,
                           head=list(kw["head"]), n_classes=10,
                           generator=torch.Generator().manual_seed(seed))
        fns, first_call, nets = {}, {}, {}
        for net_name in ("iso", "tanh"):
            for mode, (impl, comp) in COMPILE_MODES.items():
                name = f"{net_name} {mode}"
                nets[name] = make(net_name == "iso")
                fns[name] = _step_fn(nets[name], x, y, impl=impl,
                                     backend=backend if comp else None)
                t0 = time.perf_counter()
                fns[name]()
                first_call[name] = time.perf_counter() - t0
        t = interleaved(fns, repeats=repeats, warmup=3,
                        inner=5 if kind == "mlp" and batch * widths[1] <= 300_000 else 1)
        ratios = {mode: t.ratio(f"iso {mode}", f"tanh {mode}") for mode in COMPILE_MODES}
        vs_eager = {mode: t.ratio(f"iso {mode}", "tanh eager") for mode in COMPILE_MODES}
        grown = "iso compiled"
        neurogenesis(nets[grown], 0, 1, fns[grown].optimizer,
                     generator=torch.Generator().manual_seed(seed))
        t0 = time.perf_counter()
        fns[grown]()
        recompile_s = time.perf_counter() - t0
        row = {"size": label, "kind": kind, "widths": widths, "batch": batch,
               "ratios": ratios, "ratios_vs_eager_tanh": vs_eager,
               # how much faster the fused AdamW makes the isotropic step (uncompiled)
               "fused_speedup": t.ratio("iso eager", "iso fused"),
               "first_call_s": first_call, "recompile_after_change_s": recompile_s,
               "recompile_in_steps": recompile_s / t.median(grown), "times": t.as_dict()}
        rows.append(row)
        log(f"  {label} batch {batch}: " + ", ".join(
            f"{m} {ratios[m]:.3f}x (vs eager tanh {vs_eager[m]:.3f}x)" for m in COMPILE_MODES)
            + f"; recompile after a change {recompile_s:.1f} s")
    torch._dynamo.reset()
    mlp = [r for r in rows if r["kind"] == "mlp"]
    cnn = next(r for r in rows if r["kind"] == "cnn")
    return {
        "backend": backend, "rows": rows,
        "train_step_ratio_fused": max(r["ratios"]["fused"] for r in mlp),
        "cnn_train_step_ratio_fused": cnn["ratios"]["fused"],
        "train_step_ratio_compiled": max(r["ratios"]["compiled+fused"] for r in mlp),
        "cnn_train_step_ratio_compiled": cnn["ratios"]["compiled+fused"],
    }


def _step_by_feature(widths: list[int], batch: int, repeats: int, seed: int) -> dict:
    """Train-step ratios against tanh of the isotropic MLP with its features switched off one by
    one (ψ vectors, then the intrinsic length): where the small-size overhead comes from."""
    x = torch.randn(batch, widths[0])
    y = torch.randint(0, widths[-1], (batch,))
    variants = {
        "default (psi trainable+decay, o trainable)": {},
        "psi none": {"psi": "none"},
        "psi none, o none": {"psi": "none", "intrinsic_length": "none"},
    }
    nets: dict[str, torch.nn.Module] = {
        "tanh": ElementwiseMLP(widths, generator=torch.Generator().manual_seed(seed))}
    for name, kw in variants.items():
        nets[name] = IsotropicMLP(widths, generator=torch.Generator().manual_seed(seed), **kw)
    tensors = {name: len(list(net.parameters())) for name, net in nets.items()}
    fns = {name: _step_fn(net, x, y) for name, net in nets.items()}
    first = next(iter(variants))
    levers = {}
    for impl in ("foreach", "fused"):  # the optimizer levers, applied to both networks
        name = f"default, {impl} AdamW (both)"
        fns[name] = _step_fn(copy.deepcopy(nets[first]), x, y, impl=impl)
        fns[f"tanh {impl}"] = _step_fn(copy.deepcopy(nets["tanh"]), x, y, impl=impl)
        tensors[name] = tensors[first]
        levers[name] = impl
    t = interleaved(fns, repeats=repeats, warmup=5, inner=5)
    ratios = {name: t.ratio(name, "tanh") for name in variants}
    for name, impl in levers.items():
        ratios[name] = t.ratio(name, f"tanh {impl}")
    return {"widths": widths, "batch": batch, "ratios": ratios,
            "parameter_tensors": {name: tensors[name] for name in ratios},
            "tanh_parameter_tensors": tensors["tanh"]}


# --------------------------------------------------------------------------------------------
# 2. adaptation cost
# --------------------------------------------------------------------------------------------
def _prepared_exp0(widths: list[int], seed: int) -> IsotropicMLP:
    """Exp 0 net after a few steps, with exactly 2 scaffolds (σ ≤ 0.1) in every hidden layer."""
    torch.manual_seed(seed)
    net = IsotropicMLP(widths, generator=torch.Generator().manual_seed(seed))
    x = torch.randn(48, widths[0])
    y = torch.randint(0, widths[-1], (48,))
    step = _step_fn(net, x, y)
    for _ in range(3):
        step()
    del step  # and its optimizer: the benchmark gives each operation a fresh one
    neuroadapt(net, scaffold=2, threshold=0.1, generator=torch.Generator().manual_seed(seed))
    return net


Trained = tuple[IsotropicMLP, torch.optim.Optimizer]


def _adamw_with_state(net: IsotropicMLP, seed: int) -> torch.optim.Optimizer:
    """AdamW over ``net`` whose state was filled by one step at learning rate 0 (weights
    unchanged), so that every structural change also pays for transporting optimizer state,
    as it does in training."""
    opt = torch.optim.AdamW(net.parameters(), lr=0.0)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, net.widths[0], generator=g)
    y = torch.randint(0, net.widths[-1], (8,), generator=g)
    F.cross_entropy(net(x), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    for group in opt.param_groups:
        group["lr"] = 1e-3
    return opt


def adaptation_cost(widths=(3072, 500, 500, 10), batch: int = 48, epoch_samples: int = 50_000,
                    train_batches: int = 200, ks=(1, 5, 25), repeats: int = 5, seed: int = 0,
                    log: Log = _quiet) -> dict:
    """Structural operations as a fraction of one training epoch of the same network.

    The epoch is ``epoch_samples / batch`` AdamW steps, timed on ``train_batches`` batches of
    random data (interleaved with the operations' own timings is impossible, so the step is
    timed right before, and again right after, and the median of both sets is used). Every
    operation is given an AdamW optimizer with a filled state, which it transports.
    """
    widths = list(widths)
    torch.manual_seed(seed)
    base = _prepared_exp0(widths, seed)
    train_net = copy.deepcopy(base)
    x = torch.randn(batch, widths[0])
    y = torch.randint(0, widths[-1], (batch,))
    step = _step_fn(train_net, x, y)
    fused_step = _step_fn(copy.deepcopy(base), x, y, impl="fused")  # the Trainer's optimizer
    for _ in range(5):
        step()
        fused_step()

    def time_steps(fn: Callable[[], None], n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    steps = time_steps(step, train_batches // 2)
    steps_fused = time_steps(fused_step, train_batches // 2)
    steps_per_epoch = epoch_samples / batch
    n_hidden = len(widths) - 2

    # scenarios: a net needing no change, and nets needing 5 removals in one layer. ``warm``:
    # a pass ran before (untimed), so its tracked spectra are there, as for every pass after
    # the first; the reference and untracked rows count every layer from scratch.
    def variant(extra_layer: int | None, extra: int = 5, warm: bool = True) -> Trained:
        net = copy.deepcopy(base)
        opt = _adamw_with_state(net, seed)
        if warm:
            neuroadapt(net, scaffold=2, threshold=0.1, optimizer=opt)
        if extra_layer is not None:
            neurogenesis(net, extra_layer, extra, opt, init_scale=0.0)
        return net, opt

    work: dict[str, Trained] = {}
    fns: dict[str, Callable[[], object]] = {}

    def add(name: str, make: Callable[[], Trained],
            op: Callable[[IsotropicMLP, torch.optim.Optimizer], object],
            fast: bool = True, track: bool = True) -> None:
        def f() -> None:
            _policies.FAST_COUNT, _policies.TRACK = fast, track
            try:
                op(*work[name])
            finally:
                _policies.FAST_COUNT, _policies.TRACK = True, True
        fns[name] = f
        makers[name] = make

    makers: dict[str, Callable[[], Trained]] = {}
    adapt = lambda net, opt: neuroadapt(net, scaffold=2, threshold=0.1, optimizer=opt)  # noqa: E731
    add("neuroadapt_no_change", lambda: variant(None), adapt)
    add("neuroadapt_no_change_untracked", lambda: variant(None), adapt, track=False)
    add("neuroadapt_no_change_reference", lambda: variant(None), adapt, fast=False)
    for k in range(n_hidden):
        add(f"neuroadapt_remove5_layer{k}", lambda k=k: variant(k), adapt)
        add(f"neuroadapt_remove5_layer{k}_untracked", lambda k=k: variant(k), adapt, track=False)
        add(f"neuroadapt_remove5_layer{k}_reference", lambda k=k: variant(k), adapt, fast=False)
        add(f"neuroadapt_remove5_layer{k}_reflectors", lambda k=k: variant(k),
            lambda net, opt: neuroadapt(net, scaffold=2, threshold=0.1, optimizer=opt,
                                        diagonalise=False))
    for k in range(n_hidden):
        for n in ks:
            add(f"neurodegeneration_layer{k}_n{n}", lambda: variant(None),
                lambda net, opt, k=k, n=n: neurodegeneration(net, k, n, opt))
            add(f"neurogenesis_layer{k}_n{n}", lambda: variant(None),
                lambda net, opt, k=k, n=n: neurogenesis(net, k, n, opt))
            add(f"neurodegeneration_layer{k}_n{n}_reflectors", lambda: variant(None),
                lambda net, opt, k=k, n=n: neurodegeneration(net, k, n, opt, diagonalise=False))
    add("neurogenesis_layer0_n1_ordered", lambda: variant(None),
        lambda net, opt: neurogenesis(net, 0, 1, opt, diagonalise=True))

    def setup(name: str) -> None:
        work[name] = makers[name]()

    # checks: decisions identical with tracked counts, full Gram counts and svdvals counts
    check = {}
    for k in range(n_hidden):
        (a, opt_a), (b, opt_b), (r, opt_r) = variant(k), variant(k), variant(k)
        ca = neuroadapt(a, scaffold=2, threshold=0.1, optimizer=opt_a)
        _policies.TRACK = False
        try:
            cb = neuroadapt(b, scaffold=2, threshold=0.1, optimizer=opt_b)
        finally:
            _policies.TRACK = True
        _policies.FAST_COUNT = False
        try:
            cr = neuroadapt(r, scaffold=2, threshold=0.1, optimizer=opt_r)
        finally:
            _policies.FAST_COUNT = True
        ops = [[(c.op, c.layer, c.n) for c in cs] for cs in (ca, cb, cr)]
        check[f"layer{k}"] = {
            "same_changes": ops[0] == ops[1] == ops[2],
            "changes": ops[0],
            "max_abs_weight_diff": max(float((p - q).detach().abs().max())
                                       for other in (b, r)
                                       for p, q in zip(a.parameters(), other.parameters())),
        }

    t = interleaved(fns, repeats=repeats, warmup=1, setup=setup)
    steps += time_steps(step, train_batches - train_batches // 2)
    steps_fused += time_steps(fused_step, train_batches - train_batches // 2)
    step_s = sorted(steps)[len(steps) // 2]
    epoch_s = step_s * steps_per_epoch
    step_fused_s = sorted(steps_fused)[len(steps_fused) // 2]
    frac = {k: t.median(k) / epoch_s for k in fns}
    clone_t = interleaved({"clone": lambda: [p.data.clone() for p in base.parameters()]},
                          repeats=20, warmup=2)
    parts = _first_layer_parts(base.linears[0].weight.detach(), repeats=max(repeats, 3))
    change5 = max(frac[f"neuroadapt_remove5_layer{k}"] for k in range(n_hidden))
    out = {
        "widths": widths, "batch": batch, "step_s": step_s, "epoch_s": epoch_s,
        # the same step with the fused AdamW (what the Trainer uses): its epoch is shorter, so
        # every fraction above is epoch_s / epoch_fused_s times larger against it
        "step_fused_s": step_fused_s, "epoch_fused_s": step_fused_s * steps_per_epoch,
        "steps_per_epoch": steps_per_epoch, "train_batches_timed": len(steps),
        "neuroadapt_epoch_fraction": change5,
        "neuroadapt_epoch_fraction_reference": max(
            frac[f"neuroadapt_remove5_layer{k}_reference"] for k in range(n_hidden)),
        "neuroadapt_no_change_epoch_fraction": frac["neuroadapt_no_change"],
        "neurogenesis_epoch_fraction": max(frac[f"neurogenesis_layer0_n{n}"] for n in ks),
        "neurodegeneration_epoch_fraction": max(frac[f"neurodegeneration_layer0_n{n}"]
                                                for n in ks),
        # the same removals rotating only the removed directions (diagonalise=False)
        "neuroadapt_reflectors_epoch_fraction": max(
            frac[f"neuroadapt_remove5_layer{k}_reflectors"] for k in range(n_hidden)),
        "neurodegeneration_reflectors_epoch_fraction": max(
            frac[f"neurodegeneration_layer0_n{n}_reflectors"] for n in ks),
        "drift_after_training": _drift_after_training(base, x, y, seed),
        "fractions": frac, "times": t.as_dict(), "decision_check": check,
        "transaction_clone_s": t_med(clone_t, "clone"),
        "rollback_memory": rollback_memory(widths, batch),
        "first_layer_parts_s": parts,
        "first_layer_parts_epoch_fraction": {k: v / epoch_s for k, v in parts.items()},
        "growth_in_k": {
            f"{op}_layer{k}": [frac[f"{op}_layer{k}_n{n}"] / frac[f"{op}_layer{k}_n{ks[0]}"]
                               for n in ks]
            for op in ("neurodegeneration", "neurogenesis") for k in range(n_hidden)
        },
        "ks": list(ks),
    }
    log(f"  epoch ≈ {epoch_s:.2f} s ({step_s * 1e3:.2f} ms/step); neuroadapt removing 5: "
        f"{100 * change5:.3f}% of an epoch (reference "
        f"{100 * out['neuroadapt_epoch_fraction_reference']:.3f}%), no change: "
        f"{100 * frac['neuroadapt_no_change']:.3f}%")
    return out


def _drift_after_training(base: IsotropicMLP, x: Tensor, y: Tensor, seed: int,
                          steps=(1, 10)) -> list[dict]:
    """Whether a tracked count survives training: after a pass, ``s`` AdamW steps (lr 1e-3),
    then per hidden layer the certified drift bound ``‖ΔW‖_F`` against the distance of the
    tracked strengths to τ = 0.1 (the certificate needs drift < gap)."""
    from ..topology import spectra

    net = copy.deepcopy(base)
    opt = _adamw_with_state(net, seed)
    neuroadapt(net, scaffold=2, threshold=0.1, optimizer=opt)
    step = _step_fn(net, x, y)  # its own AdamW: the state above only needed to exist
    rows, done = [], 0
    for s in steps:
        for _ in range(s - done):
            step()
        done = s
        for k in range(net.n_hidden):
            spec = spectra.tracked(net)[k]
            w = net.linears[k].weight.detach()
            d = spectra.drift(w, spec.anchor)
            rows.append({"steps": s, "layer": k, "drift": d, "gap": spec.gap(0.1),
                         "certified": spectra.certified(spec, w, 0.1, d) is not None})
    return rows


def _first_layer_parts(w: Tensor, repeats: int) -> dict[str, float]:
    """Median seconds of the linear algebra one pass spends on the widest layer ``w``: the
    float64 Gram matrix and its eigenvalues (the certified count), its eigenvectors (the
    removal's basis), one rotation ``Rᵀ W`` in ``w``'s dtype (done for W and both Adam moments),
    and, for comparison, a float32 SVD of ``w`` (the basis before the Gram route)."""
    w64 = w.double()
    gram = w64 @ w64.mT
    r = torch.linalg.qr(torch.randn(w.shape[0], w.shape[0], dtype=w.dtype))[0]
    parts = {
        "gram_float64": lambda: w64 @ w64.mT,
        "eigvalsh_float64": lambda: torch.linalg.eigvalsh(gram),
        "eigh_float64": lambda: torch.linalg.eigh(gram),
        "rotation": lambda: r.mT @ w,
        "svd_float32": lambda: torch.linalg.svd(w, full_matrices=False),
    }
    t = interleaved(parts, repeats=repeats, warmup=1)
    return {k: t.median(k) for k in parts}


def t_med(t, name: str) -> float:
    return t.median(name)


# --------------------------------------------------------------------------------------------
# 3. sparse inference
# --------------------------------------------------------------------------------------------
def sparse_inference(width: int = 1024, depths=(4, 6, 8, 12), batch: int = 256,
                     repeats: int = 15, seed: int = 0, log: Log = _quiet) -> dict:
    """Inference time of :func:`compile_sparse` vs the dense net, against the non-zero ratio."""
    from ..export import compile_sparse

    torch.manual_seed(seed)
    rows = []
    for depth in depths:
        widths = [width] * (depth + 1)
        net = IsotropicMLP(widths, generator=torch.Generator().manual_seed(seed)).eval()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.01 * torch.randn_like(p))
        dense_params = sum(p.numel() for p in net.parameters())
        rep = sparsify(net)
        sp = compile_sparse(net)
        x = torch.randn(batch, width)
        with torch.inference_mode():
            err = float((sp(x) - net(x)).abs().max() / net(x).abs().max())

            def run_dense(net=net, x=x) -> None:
                with torch.inference_mode():
                    net(x)

            def run_sparse(sp=sp, x=x) -> None:
                with torch.inference_mode():
                    sp(x)

            t = interleaved({"dense": run_dense, "sparse": run_sparse}, repeats=repeats, warmup=3)
        row = {
            "depth": depth, "widths": widths, "batch": batch,
            "inference_ratio": t.ratio("sparse", "dense"),
            "nonzero_ratio": rep.nonzero_after / rep.nonzero_before,
            "stored_ratio": sp.parameter_count() / dense_params,
            "max_rel_error_float32": err, "times": t.as_dict(),
        }
        row["gap"] = row["inference_ratio"] - row["nonzero_ratio"]
        rows.append(row)
        log(f"  depth {depth}: sparse/dense time {row['inference_ratio']:.3f}, non-zero ratio "
            f"{row['nonzero_ratio']:.3f} (gap {row['gap']:+.3f})")
    last = rows[-1]
    return {"sparse_inference_ratio": last["inference_ratio"], "nonzero_ratio": last["nonzero_ratio"],
            "max_abs_gap": max(abs(r["gap"]) for r in rows), "rows": rows}


# --------------------------------------------------------------------------------------------
# 4. pruning quality
# --------------------------------------------------------------------------------------------
def _load(dataset: str, n_train: int, n_test: int, seed: int):
    from ..data import load_dataset

    if dataset == "auto":
        dataset = "fashion-mnist" if os.path.isdir("/usr/share/datasets/fashion-mnist") else "digits"
    ds = load_dataset(dataset)
    g = torch.Generator().manual_seed(seed)
    tr = torch.randperm(ds.x_train.shape[0], generator=g)[:n_train]
    te = torch.randperm(ds.x_test.shape[0], generator=g)[:n_test]
    xtr, xte = ds.x_train[tr].flatten(1), ds.x_test[te].flatten(1)
    mu, sd = xtr.mean(0), xtr.std(0).clamp_min(1e-3)
    return dataset, (xtr - mu) / sd, ds.y_train[tr], (xte - mu) / sd, ds.y_test[te], ds.n_classes


def _train(net: nn.Module, x: Tensor, y: Tensor, epochs: int, seed: int, lr: float = 1e-3,
           batch: int = 64) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x[idx]), y[idx])
            pen = getattr(net, "psi_penalty", None)
            if pen is not None:
                loss = loss + pen()
            loss.backward()
            opt.step()
    net.eval()


@torch.no_grad()
def _acc(net: nn.Module, x: Tensor, y: Tensor) -> float:
    net.eval()
    return float((net(x).argmax(1) == y).double().mean())


def _n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def _l2_prune(net: ElementwiseMLP, widths: list[int]) -> ElementwiseMLP:
    """Structural L2 pruning: ``prune.ln_structured`` picks the rows (neurons) of each hidden
    layer's incoming weight with the largest L2 norm; the others are then removed physically
    (row, bias entry and outgoing column), giving a genuinely smaller dense network."""
    from torch.nn.utils import prune

    net = copy.deepcopy(net)
    new = ElementwiseMLP([net.widths[0]] + widths + [net.widths[-1]], activation=net.activation_name)
    keeps = []
    for k, w_target in enumerate(widths):
        lin = copy.deepcopy(net.linears[k])
        amount = lin.weight.shape[0] - w_target
        if amount > 0:
            prune.ln_structured(lin, "weight", amount=amount, n=2, dim=0)
            keep = torch.nonzero(lin.weight_mask[:, 0] != 0).flatten()
        else:
            keep = torch.arange(lin.weight.shape[0])
        keeps.append(keep)
    prev = torch.arange(net.widths[0])
    for i, lin in enumerate(net.linears):
        rows = keeps[i] if i < len(keeps) else torch.arange(lin.weight.shape[0])
        new.linears[i].weight.copy_(lin.weight[rows][:, prev])
        new.linears[i].bias.copy_(lin.bias[rows])
        prev = rows
    return new


def _torch_pruning_available() -> bool:
    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        return False
    return True


def _tp_prune(net: ElementwiseMLP, widths: list[int], x: Tensor) -> ElementwiseMLP:
    """Torch-Pruning's magnitude (L2 group) pruner, structurally removing hidden neurons."""
    import torch_pruning as tp

    net = copy.deepcopy(net)
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=x[:2])
    imp = tp.importance.MagnitudeImportance(p=2)
    for k, w_target in enumerate(widths):
        lin = net.linears[k]
        n_remove = lin.weight.shape[0] - w_target
        if n_remove <= 0:
            continue
        scores = imp(dg.get_pruning_group(lin, tp.prune_linear_out_channels,
                                          idxs=list(range(lin.weight.shape[0]))))
        idxs = torch.argsort(scores)[:n_remove].tolist()
        group = dg.get_pruning_group(lin, tp.prune_linear_out_channels, idxs=idxs)
        group.prune()
    net.sync_shapes()
    return net


@torch.no_grad()
def _shrink_iso(net: IsotropicMLP, widths: list[int], criterion: str = "singular_value"
                ) -> IsotropicMLP:
    net = copy.deepcopy(net)
    for k in reversed(range(net.n_hidden)):
        n = net.widths[k + 1] - widths[k]
        if n > 0:
            neurodegeneration(net, k, n, criterion=criterion)
    return net


@torch.no_grad()
def _remove_one(net: IsotropicMLP, k: int, i: int) -> IsotropicMLP:
    """Remove neuron ``i`` of hidden layer ``k`` of a left-diagonalised net, compensating
    through ``o`` and ψ exactly as :func:`neurodegeneration` does."""
    net = copy.deepcopy(net)
    remove_neurons(net, k, [i])
    return net


def _spearman(a: list[float], b: list[float]) -> float:
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    ra = torch.argsort(torch.argsort(ta)).double()
    rb = torch.argsort(torch.argsort(tb)).double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else float("nan")


def pruning_quality(dataset: str = "auto", hidden: int = 128, targets=(96, 64, 32, 16, 8),
                    epochs: int = 8, finetune_epochs: int = 2, n_train: int = 10_000,
                    n_test: int = 2_000, criterion_layer: int = 1, criterion_neurons: int = 64,
                    seed: int = 0, log: Log = _quiet) -> dict:
    """Accuracy vs parameter count: neurodegeneration vs L2 structured pruning vs training small."""
    name, xtr, ytr, xte, yte, n_cls = _load(dataset, n_train, n_test, seed)
    d = xtr.shape[1]
    big = [d, hidden, hidden, n_cls]
    gen = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    torch.manual_seed(seed)
    iso = IsotropicMLP(big, generator=gen())
    _train(iso, xtr, ytr, epochs, seed)
    tanh = ElementwiseMLP(big, activation="tanh", generator=gen())
    _train(tanh, xtr, ytr, epochs, seed)
    relu = ElementwiseMLP(big, activation="relu", generator=gen())
    _train(relu, xtr, ytr, epochs, seed)
    has_tp = _torch_pruning_available()
    curves: dict[str, list[dict]] = {}

    def point(label: str, net: nn.Module, before: nn.Module | None = None) -> None:
        row = {"params": _n_params(net), "accuracy": _acc(net, xte, yte), "width": net.widths[1]}
        if before is not None:
            fc = function_change(before, net, xte)
            row.update(eps_scaled=fc.eps_scaled, agreement=fc.agreement, kl=fc.kl)
        curves.setdefault(label, []).append(row)

    point("isotropic (unpruned)", iso)
    point("tanh (unpruned)", tanh)
    point("relu (unpruned)", relu)
    for h in targets:
        widths = [h, h]
        s_iso = _shrink_iso(iso, widths)
        point("isotropic neurodegeneration", s_iso, iso)
        s_imp = _shrink_iso(iso, widths, criterion="impact")
        point("isotropic neurodegeneration (impact)", s_imp, iso)
        ft = copy.deepcopy(s_iso)
        _train(ft, xtr, ytr, finetune_epochs, seed + 1)
        point("isotropic neurodegeneration + fine-tune", ft)
        for base, label in ((tanh, "tanh"), (relu, "relu")):
            p = _l2_prune(base, widths)
            point(f"{label} L2 structured", p, base)
            pft = copy.deepcopy(p)
            _train(pft, xtr, ytr, finetune_epochs, seed + 1)
            point(f"{label} L2 structured + fine-tune", pft)
        if has_tp:
            p = _tp_prune(tanh, widths, xtr)
            point("tanh Torch-Pruning (L2)", p, tanh)
        small = IsotropicMLP([d, h, h, n_cls], generator=gen())
        _train(small, xtr, ytr, epochs, seed)
        point("isotropic trained small", small)
        small_t = ElementwiseMLP([d, h, h, n_cls], generator=gen())
        _train(small_t, xtr, ytr, epochs, seed)
        point("tanh trained small", small_t)
        log(f"  width {h}: iso {curves['isotropic neurodegeneration'][-1]['accuracy']:.3f} "
            f"(+ft {curves['isotropic neurodegeneration + fine-tune'][-1]['accuracy']:.3f}), "
            f"tanh-L2 {curves['tanh L2 structured'][-1]['accuracy']:.3f} "
            f"(+ft {curves['tanh L2 structured + fine-tune'][-1]['accuracy']:.3f}), "
            f"small {curves['isotropic trained small'][-1]['accuracy']:.3f}")

    # removal criteria in the diagonal basis
    diag = copy.deepcopy(iso)
    for k in range(diag.n_hidden):
        left_diagonalise(diag, k)
    k = min(criterion_layer, diag.n_hidden - 1)
    layer = diag.hidden_layer(k)
    sig = layer.incoming.detach().norm(dim=1)
    out_norm = layer.outgoing.detach().norm(dim=0)
    width = sig.shape[0]
    idx = torch.linspace(0, width - 1, min(criterion_neurons, width)).round().long().unique()
    base_logits = diag(xte)
    base_acc = _acc(diag, xte, yte)
    s_list, i_list, drop_logit, drop_acc = [], [], [], []
    for i in idx.tolist():
        r = _remove_one(diag, k, i)
        fc = function_change(base_logits, r(xte))
        s_list.append(float(sig[i]))
        i_list.append(float(sig[i] * out_norm[i]))
        drop_logit.append(fc.eps_scaled)
        drop_acc.append(base_acc - _acc(r, xte, yte))
    crit = {
        "layer": k, "neurons": len(s_list),
        "spearman_singular_value_vs_logit_change": _spearman(s_list, drop_logit),
        "spearman_impact_vs_logit_change": _spearman(i_list, drop_logit),
        "spearman_singular_value_vs_accuracy_drop": _spearman(s_list, drop_acc),
        "spearman_impact_vs_accuracy_drop": _spearman(i_list, drop_acc),
        "samples": {"sigma": s_list, "impact": i_list, "logit_change_pct": drop_logit,
                    "accuracy_drop": drop_acc},
    }
    crit["winner_logit"] = ("impact" if crit["spearman_impact_vs_logit_change"]
                            > crit["spearman_singular_value_vs_logit_change"] else "singular_value")
    crit["winner_accuracy"] = ("impact" if crit["spearman_impact_vs_accuracy_drop"]
                               > crit["spearman_singular_value_vs_accuracy_drop"]
                               else "singular_value")
    log(f"  criteria (layer {k}): spearman vs logit change: sigma "
        f"{crit['spearman_singular_value_vs_logit_change']:.3f}, impact "
        f"{crit['spearman_impact_vs_logit_change']:.3f} -> {crit['winner_logit']}")
    return {
        "dataset": name, "n_train": int(xtr.shape[0]), "n_test": int(xte.shape[0]),
        "widths": big, "epochs": epochs, "finetune_epochs": finetune_epochs,
        "torch_pruning": "used" if has_tp else
        "not installed: Torch-Pruning baseline skipped (pip install torch-pruning)",
        "curves": curves, "criteria": crit,
    }


# --------------------------------------------------------------------------------------------
# 5. scaling
# --------------------------------------------------------------------------------------------
_WORKER = r"""
import json, resource, sys, time, copy
import torch
torch.set_num_threads(int(sys.argv[5]))
import torch.nn.functional as F
import isoplastic as ip
width, depth, batch, what = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
widths = [width] * (depth + 1) + [10]
torch.manual_seed(0)
net = ip.IsotropicMLP(widths)
x = torch.randn(batch, width); y = torch.randint(0, 10, (batch,))
opt = torch.optim.AdamW(net.parameters(), 1e-3)
def step():
    opt.zero_grad(set_to_none=True)
    (F.cross_entropy(net(x), y) + net.psi_penalty()).backward(); opt.step()
if what == "adapt":
    ip.neuroadapt(net, scaffold=2, threshold=0.1, init_scale=0.0)
    def prep():
        n = copy.deepcopy(net)
        for k in range(n.n_hidden):
            ip.neurogenesis(n, k, 1, init_scale=0.0)
        return n
    run = lambda n: ip.neuroadapt(n, scaffold=2, threshold=0.1)
else:
    prep = lambda: None
    run = lambda n: step()
def _status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith(key + ":"))
try:  # Linux: reset the high-water mark, so the peak is this work's own (not torch's import)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rss0 = _status("VmRSS")
except OSError:
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
n0 = prep(); run(n0) if what == "adapt" else step()
ts = []
for _ in range(int(sys.argv[6])):
    n = prep(); t0 = time.perf_counter(); run(n); ts.append(time.perf_counter() - t0)
try:
    peak = _status("VmHWM")
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
ts.sort()
print(json.dumps({"time_s": ts[len(ts) // 2], "peak_rss_mib": peak,
                  "rss_before_mib": rss0, "peak_growth_mib": peak - rss0}))
"""


_ROLLBACK_WORKER = r"""
import json, resource, sys
import torch
torch.set_num_threads(1)
import torch.nn.functional as F
import isoplastic as ip
from isoplastic.core.change import transaction
widths = [int(v) for v in sys.argv[1].split(",")]; batch = int(sys.argv[2])
torch.manual_seed(0)
net = ip.IsotropicMLP(widths)
ip.neuroadapt(net, scaffold=2, threshold=0.1, init_scale=0.0)
for k in (0, 1):  # five silent extra neurons in two layers: the pass makes two removals
    ip.neurogenesis(net, k, 5, init_scale=0.0)
opt = torch.optim.AdamW(net.parameters(), 1e-3)
x = torch.randn(batch, widths[0]); y = torch.randint(0, widths[-1], (batch,))
for _ in range(2):
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward(); opt.step()
F.cross_entropy(net(x), y).backward()  # gradients stay populated, as in a user's loop
model_bytes = sum(p.numel() * p.element_size() * 2 for p in net.parameters()) + sum(
    v.numel() * v.element_size() for st in opt.state.values() for v in st.values()
    if torch.is_tensor(v))
def _status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rss0 = _status("VmRSS")
except OSError:
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with transaction() as journal:
    changes = ip.neuroadapt(net, scaffold=2, threshold=0.1, optimizer=opt, guard=lambda c: None)
    held = journal.held_bytes()
try:
    peak = _status("VmHWM")
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"changes": [(c.op, c.layer, c.n) for c in changes], "touched_bytes": held,
                  "model_bytes": model_bytes, "peak_growth_bytes": peak - rss0}))
"""


def rollback_memory(widths=(3072, 500, 500, 10), batch: int = 48) -> dict:
    """Peak extra memory of one guarded :func:`~isoplastic.neuroadapt` pass, against the
    tensors it touches.

    Question: does making changes all-or-nothing cost more than the tensors they touch? The
    change pipeline journals the originals of touched tensors by reference (each step replaces a
    tensor instead of writing into it), so the cost model is: extra memory ≈ the touched tensors
    once (data, gradients, optimizer state of the changed layers) plus the decomposition's
    workspace. Goal: at most 2× the touched tensors. Measured in a fresh subprocess whose
    peak-RSS mark is reset before the pass (Linux), on a network with filled AdamW state and
    live gradients, with a guard on every change (the trainer's configuration).
    """
    out = subprocess.run([sys.executable, "-c", _ROLLBACK_WORKER, ",".join(map(str, widths)),
                          str(batch)], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["widths"] = list(widths)
    r["peak_over_touched"] = r["peak_growth_bytes"] / max(r["touched_bytes"], 1)
    r["touched_over_model"] = r["touched_bytes"] / max(r["model_bytes"], 1)
    return r


def _fit_exponent(xs: list[float], ys: list[float]) -> float:
    lx = torch.tensor([math.log(v) for v in xs], dtype=torch.float64)
    ly = torch.tensor([math.log(v) for v in ys], dtype=torch.float64)
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx * ly).sum() / (lx * lx).sum())


def scaling(widths=(128, 256, 512, 1024), depths=(2, 4, 8), batches=(32, 128, 512),
            base=(256, 2, 128), repeats: int = 5, log: Log = _quiet) -> dict:
    """Time and peak RSS of a training step and a neuroadapt pass (one removal per layer).

    Each configuration runs in a fresh subprocess. On Linux the process's peak-RSS mark is reset
    (``/proc/self/clear_refs``) after the network and optimizer are built, so
    ``peak_growth_mib`` = peak RSS during the work − RSS before it: the extra memory the work
    needs (activations, gradients, optimizer state, decompositions). Elsewhere ``ru_maxrss`` is
    used, which cannot see below the high-water mark of importing torch.
    """
    bw, bd, bb = base
    sweeps = {"width": [(w, bd, bb) for w in widths], "depth": [(bw, d, bb) for d in depths],
              "batch": [(bw, bd, b) for b in batches]}
    threads = torch.get_num_threads()
    out: dict = {"base": {"width": bw, "depth": bd, "batch": bb}, "sweeps": {}, "exponents": {}}
    for axis, configs in sweeps.items():
        rows = []
        for w, d, b in configs:
            row = {"width": w, "depth": d, "batch": b}
            for what in ("train", "adapt"):
                if axis == "batch" and what == "adapt":
                    continue  # adaptation does not depend on the batch size
                res = subprocess.run(
                    [sys.executable, "-c", _WORKER, str(w), str(d), str(b), what, str(threads),
                     str(repeats)], capture_output=True, text=True, check=True)
                row[what] = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            log(f"  {axis} sweep w={w} d={d} b={b}: train {row['train']['time_s'] * 1e3:.2f} ms"
                + (f", adapt {row['adapt']['time_s'] * 1e3:.1f} ms" if "adapt" in row else ""))
        out["sweeps"][axis] = rows
        xs = [r[axis] for r in rows]
        for what in ("train", "adapt"):
            if all(what in r for r in rows):
                out["exponents"][f"{what}_time_vs_{axis}"] = _fit_exponent(
                    xs, [r[what]["time_s"] for r in rows])
                growth = [max(r[what]["peak_growth_mib"], 1e-3) for r in rows]
                out["exponents"][f"{what}_peak_memory_vs_{axis}"] = _fit_exponent(xs, growth)
    return out


# --------------------------------------------------------------------------------------------
def _missing_compiler(backend: str) -> str | None:
    """Why ``backend`` cannot compile on this machine (``None`` if it can): the default
    ``"inductor"`` backend generates C++ for the CPU and needs a compiler (``$CXX`` or g++)."""
    if backend != "inductor":
        return None
    import shutil

    cxx = os.environ.get("CXX", "g++")
    return None if shutil.which(cxx) else (f"torch.compile's inductor backend needs a C++ "
                                            f"compiler and {cxx!r} is not on PATH")


def run_all(quick: bool = False, suites=("activation", "compiled", "adaptation", "sparse",
                                         "pruning", "scaling"), log: Log = print,
            tiny: bool = False) -> dict:
    """Run the chosen suites; ``quick`` shrinks repeats and sizes (< 10 min on 2 cores),
    ``tiny`` (tests) uses toy sizes that finish in seconds."""
    from .timing import machine

    res: dict = {"machine": machine(), "quick": quick, "tiny": tiny, "suites": {}}
    t_start = time.perf_counter()
    for s in suites:
        t0 = time.perf_counter()
        log(f"[{s}]")
        if s == "activation":
            kw = (dict(sizes=(16,), batches=(4,), repeats=3,
                       cnn_kw=dict(in_shape=(1, 6, 6), channels=(3, 4), head=(5,), batch=4))
                  if tiny else
                  dict(repeats=7) if quick else dict(repeats=25))
            r = activation_and_step(log=log, **kw)
            res["train_step_ratio"] = r["train_step_ratio"]
            res["cnn_train_step_ratio"] = r["cnn_train_step_ratio"]
            res["activation_ratio"] = r["activation_ratio"]
        elif s == "compiled":
            kw = (dict(sizes=(16,), batch=4, repeats=2, backend="aot_eager",
                       cnn_kw=dict(in_shape=(1, 6, 6), channels=(3, 4), head=(5,)))
                  if tiny else dict(repeats=7) if quick else dict(repeats=25))
            missing = _missing_compiler(kw.get("backend", "inductor"))
            if missing:
                log(f"  skipped: {missing}")
                res["suites"][s] = {"skipped": missing}
                continue
            r = compiled_step(log=log, **kw)
            for key in ("train_step_ratio_fused", "cnn_train_step_ratio_fused",
                        "train_step_ratio_compiled", "cnn_train_step_ratio_compiled"):
                res[key] = r[key]
        elif s == "adaptation":
            kw = (dict(widths=(40, 12, 12, 5), train_batches=6, ks=(1, 2), repeats=2) if tiny else
                  dict(train_batches=60, repeats=3) if quick else dict(train_batches=300, repeats=7))
            r = adaptation_cost(log=log, **kw)
            res["neuroadapt_epoch_fraction"] = r["neuroadapt_epoch_fraction"]
            for key in ("neuroadapt_no_change_epoch_fraction", "neurogenesis_epoch_fraction",
                        "neurodegeneration_epoch_fraction", "neuroadapt_reflectors_epoch_fraction",
                        "neurodegeneration_reflectors_epoch_fraction"):
                res[key] = r[key]
            res["rollback_peak_over_touched"] = r["rollback_memory"]["peak_over_touched"]
        elif s == "sparse":
            kw = (dict(width=32, depths=(4,), batch=8, repeats=3) if tiny else
                  dict(depths=(4, 8, 12), repeats=7) if quick else dict(depths=(4, 6, 8, 10, 12)))
            r = sparse_inference(log=log, **kw)
            res["sparse_inference_ratio"] = r["sparse_inference_ratio"]
            res["nonzero_ratio"] = r["nonzero_ratio"]
        elif s == "pruning":
            kw = (dict(dataset="digits", hidden=16, targets=(8,), epochs=1, finetune_epochs=1,
                       n_train=300, n_test=100, criterion_neurons=8) if tiny else
                  dict(dataset="digits", hidden=96, targets=(64, 32, 16, 8), epochs=15,
                       finetune_epochs=3, n_train=1437, n_test=360, criterion_neurons=48)
                  if quick else dict())
            r = pruning_quality(log=log, **kw)
        elif s == "scaling":
            kw = (dict(widths=(16, 32), depths=(1, 2), batches=(8, 16), base=(16, 1, 8),
                       repeats=1) if tiny else
                  dict(widths=(128, 256, 512), depths=(1, 2, 4), batches=(32, 128, 512),
                       base=(256, 2, 128), repeats=3) if quick else dict())
            r = scaling(log=log, **kw)
        else:
            raise ValueError(f"unknown suite {s!r}; choose from activation, compiled, "
                             "adaptation, sparse, pruning, scaling")
        r["seconds"] = time.perf_counter() - t0
        res["suites"][s] = r
    res["seconds"] = time.perf_counter() - t_start
    return res
