"""The fuzzing engine shared by ``tests/reliability/test_rel_fuzz.py`` and ``scripts/fuzz.py``.

:func:`run_sequence` builds a random isotropic network (:class:`~isoplastic.IsotropicMLP` or
:class:`~isoplastic.IsotropicCNN`, float64, random widths, modes, non-zero biases/ψ/o) and a random
optimizer (SGD with momentum, Adam, AdamW), then applies a sequence of structural operations, each
followed by one optimizer step. After every operation it checks:

* **exact** operations (reparameterise, left/full diagonalisation, sparsify, neurogenesis,
  add/remove inputs, add/remove outputs): the logits (on the coordinates that survive) change by
  at most ``EXACT_TOL = 1e-9`` relative to ``max |logit|``; ``remove_inputs`` is compared against
  the network before the change evaluated with those input features set to zero (what an exact
  removal means);
* **approximate** operations (neurodegeneration, and every removal made inside neuroadapt, each
  checked on its own through a policy ``guard``): for every probe input ``x``::

      ‖Δ z_{k+1}(x)‖ ≤ predicted_bound · ‖h_{k-1}(x)‖ + predicted_offset + τ(x)

  the library's own bound (``topology/shrink.py``) plus a derived round-off term ``τ``
  (:func:`roundoff`), where ``z_{k+1}`` is the pre-activation after hidden layer ``k`` (the
  logits for the last one) and ``h_{k-1}`` its input (``x`` for ``k = 0``). Any input over it
  fails the run, naming the seed and the operations that led there. It applies to every dense
  hidden layer in every ψ / intrinsic-length mode (``predicted_offset`` covers the modes without
  exact compensation); for CNNs to head layers ``k > n_conv``;
* **invariants**: every parameter, gradient and optimizer-state tensor is finite; every state
  tensor has its parameter's shape; ``param_groups`` hold exactly the live parameters; every
  ``ROUNDTRIP_EVERY`` operations, ``state_dict()`` loads (strict) into a fresh network built from
  ``net.config()`` and reproduces the logits bit for bit;
* **refusals**: an operation the current topology cannot take (``full_diagonalise`` on a
  one-hidden-layer net, removing the last neuron/input/output…) must raise
  :class:`~isoplastic.IsoplasticError` and leave model and optimizer bit-identical.

:class:`Stats` counts operations run, checks made and the worst observed ratios.
"""

from __future__ import annotations

import copy
import math
import random
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from reference import assert_identical, snapshot

import isoplastic as ip
from isoplastic.nn.conv import IsotropicCNN
from isoplastic.testing import assert_optimizer_consistent

EXACT_TOL = 1e-9
ROUNDTRIP_EVERY = 5
OPS = ("reparameterise", "left_diagonalise", "full_diagonalise", "sparsify", "neurogenesis",
       "neurodegeneration", "neuroadapt", "add_inputs", "remove_inputs", "add_outputs",
       "remove_outputs")
OPTIMIZERS = ("sgd_momentum", "adam", "adamw")
BATCH = 24


@dataclass
class Stats:
    sequences: int = 0
    ops: Counter = field(default_factory=Counter)          # operations attempted, per name
    refused: Counter = field(default_factory=Counter)      # raised as expected, state unchanged
    exact_checks: int = 0
    bound_checks: int = 0
    library_bound_exceeded: int = 0                        # removals over the bound (the run fails)
    bound_skipped: int = 0                                 # approximate change, bound n/a
    roundtrips: int = 0
    steps: int = 0
    worst_exact: float = 0.0                               # max relative logit change
    worst_bound_ratio: float = 0.0                         # max_x observed / (bound + τ)
    archs: Counter = field(default_factory=Counter)
    optimizers: Counter = field(default_factory=Counter)

    @property
    def n_ops(self) -> int:
        return sum(self.ops.values())

    def merge(self, other: Stats) -> None:
        self.sequences += other.sequences
        self.ops.update(other.ops)
        self.refused.update(other.refused)
        for name in ("exact_checks", "bound_checks", "library_bound_exceeded", "bound_skipped",
                     "roundtrips", "steps"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.worst_exact = max(self.worst_exact, other.worst_exact)
        self.worst_bound_ratio = max(self.worst_bound_ratio, other.worst_bound_ratio)
        self.archs.update(other.archs)
        self.optimizers.update(other.optimizers)


# -- building random networks ------------------------------------------------------------------

@torch.no_grad()
def _randomise(net: torch.nn.Module, gen: torch.Generator) -> None:
    """Gaussian weights (std 1.5/√fan_in), non-zero biases and ψ, o in [0.05, 1]."""
    for name, p in net.named_parameters():
        if name.endswith("weight"):
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 1.5
                    / math.sqrt(fan_in))
        elif name.endswith("bias") or name.startswith("psi."):
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    for act in net.activations:
        if act.mode.value != "none":
            act.o = 0.05 + 0.95 * float(torch.rand((), generator=gen, dtype=torch.float64))


def build_net(rng: random.Random, gen: torch.Generator, arch: str) -> torch.nn.Module:
    il = rng.choice(("constant", "trainable", "trainable", "none"))
    psi = rng.choice(("trainable", "trainable+decay", "constant", "none", "expectation"))
    if arch == "mlp":
        widths = [rng.randint(1, 6)] + [rng.randint(1, 7) for _ in range(rng.randint(1, 3))]
        widths.append(rng.randint(2, 5))
        net = ip.IsotropicMLP(widths, intrinsic_length=il, psi=psi)
    else:
        k = rng.choice((1, 3))
        convs = rng.randint(1, 2)
        channels = [rng.randint(1, 4) for _ in range(convs)]
        kernels = [rng.choice((1, k)) for _ in range(convs)]
        padding = rng.choice(("same", "valid"))
        # 'valid' convolutions shrink the map by k - 1 each: keep it at least 1 x 1
        shrink = sum(kk - 1 for kk in kernels) if padding == "valid" else 0
        net = IsotropicCNN((rng.randint(1, 3), rng.randint(3, 5) + shrink,
                            rng.randint(3, 5) + shrink),
                           channels=channels, kernel_sizes=kernels,
                           head=[rng.randint(1, 5) for _ in range(rng.randint(0, 2))],
                           n_classes=rng.randint(2, 4), intrinsic_length=il, psi=psi,
                           padding=padding, pooling=rng.choice(("mean", "flatten")))
    net = net.double()
    _randomise(net, gen)
    return net


def rebuild(net: torch.nn.Module) -> torch.nn.Module:
    """A fresh network of the current architecture, from ``net.config()``."""
    return type(net)(**net.config()).double()


def make_optimizer(rng: random.Random, net: torch.nn.Module) -> tuple[str, torch.optim.Optimizer]:
    name = rng.choice(OPTIMIZERS)
    params = net.parameters()
    if name == "sgd_momentum":
        return name, torch.optim.SGD(params, lr=1e-2, momentum=0.9, nesterov=rng.random() < 0.5,
                                     weight_decay=rng.choice((0.0, 1e-3)))
    if name == "adam":
        return name, torch.optim.Adam(params, lr=1e-2, amsgrad=rng.random() < 0.5)
    return name, torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-2,
                                   amsgrad=rng.random() < 0.5)


# -- measurements ------------------------------------------------------------------------------

def _logits(net: torch.nn.Module, x: torch.Tensor, call=None):
    """``call(x)`` (default ``net(x)``) in eval mode without gradients; the mode is restored."""
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            return (call or net)(x)
    finally:
        net.train(was)


def relative(before: torch.Tensor, after: torch.Tensor) -> float:
    denom = max(float(before.abs().max()) if before.numel() else 0.0, 1e-300)
    return float((after - before).abs().max()) / denom if before.numel() else 0.0


def _trace(net: torch.nn.Module, x: torch.Tensor) -> tuple[list, list, torch.Tensor]:
    """(inputs, outputs) of every activation (pre-activations ``z_k`` and ``h_k``), and the
    logits. The MLP reports them itself (:meth:`IsotropicMLP.trace`); the CNN calls
    ``act.forward_with_gain``, so that is wrapped per instance."""
    if isinstance(net, ip.IsotropicMLP):
        t = _logits(net, x, net.trace)
        return t["pre"], t["post"], t["logits"]
    ins, outs = [], []
    for act in net.activations:
        def wrapped(z, _orig=act.forward_with_gain):
            h, g = _orig(z)
            ins.append(z)
            outs.append(h)
            return h, g
        act.forward_with_gain = wrapped
    try:
        logits = _logits(net, x)
    finally:
        for act in net.activations:
            del act.forward_with_gain
    return ins, outs, logits


def _first_hidden_dense(net: torch.nn.Module) -> int:
    """Smallest ``k`` whose incoming map and input ``h_{k-1}`` are dense vectors."""
    return 0 if isinstance(net, ip.IsotropicMLP) else net.n_conv + 1


def bound_applies(net: torch.nn.Module, k: int) -> bool:
    """The library's bound is stated per input for dense layers, in every ψ and intrinsic-length
    mode (the offset covers the modes without the exact compensation); conv layers are skipped
    (there ``h_{k-1}`` is a feature map, and the bound is per patch)."""
    return k >= _first_hidden_dense(net)


# Unit round-off of float64 and the constant of the round-off term below.
U64 = 2.0 ** -53
ROUNDOFF_C = 1e3


def roundoff(before: torch.nn.Module, k: int, x: torch.Tensor) -> torch.Tensor:
    r"""Per-input allowance for floating-point error, shape ``(batch,)``.

    The removal is computed in float64. Mathematically only layer ``k`` (rotated into its singular
    basis, its weakest rows deleted, ``o_k`` and ψ/bias folds) and the next map change; the layers
    before are untouched, so ``h_{k-1}(x)`` is bit-identical before and after. The measured
    ``Δz_{k+1}(x)`` therefore carries (a) the backward error of the SVD rotation,
    ``≲ c·n·u·‖W_k‖₂`` in the rotated weights, hence ``≲ c·n·u·‖W_k‖₂‖h_{k-1}(x)‖`` in ``z_k``;
    (b) the rounding of the two forward passes of ``z_k`` and ``z_{k+1}`` (dot products of length
    ``≤ n``: ``≤ n·u`` times the magnitudes of their summands, bounded by ``‖z_k‖ + ‖W_k‖₂‖h‖``
    and ``‖z_{k+1}‖ + ‖W_{k+1}‖₂``, since ``‖φ(z)‖ ≤ 1``); the isotropic activation is
    1-Lipschitz, so an error in ``z_k`` reaches ``z_{k+1}`` multiplied by at most
    ``‖W_{k+1}‖₂``. Together::

        τ(x) = C · n · u · (1 + ‖W_{k+1}‖₂) · (1 + ‖W_k‖₂ ‖h_{k-1}(x)‖ + ‖z_k(x)‖ + ‖z_{k+1}(x)‖)

    with ``u = 2⁻⁵³``, ``n`` the largest dimension of ``W_k`` and ``W_{k+1}``, and ``C = 10³``
    for the SVD's backward-error constant and the few operations per entry (folds, gains).
    At the sizes fuzzed (``n ≤ ~100``, norms ``≤ ~10²``) ``τ`` is below ``10⁻⁸``, orders of
    magnitude under any bound violation that matters, so the check bites on the bound itself.
    """
    pre, outs, logits = _trace(before, x)
    h_prev = (x if k == 0 else outs[k - 1]).flatten(1)
    z_next = logits if k + 1 >= before.n_hidden else pre[k + 1].flatten(1)
    layer = before.hidden_layer(k)
    w_in = layer.incoming_matrix().detach()
    w_out = layer.outgoing.detach()
    n = max(*w_in.shape, *w_out.shape)
    norm_in = float(torch.linalg.matrix_norm(w_in, ord=2))
    norm_out = float(torch.linalg.matrix_norm(w_out, ord=2))
    size = 1.0 + norm_in * h_prev.norm(dim=1) + pre[k].flatten(1).norm(dim=1) + z_next.norm(dim=1)
    return ROUNDOFF_C * n * U64 * (1.0 + norm_out) * size


def removal_allowance(before: torch.nn.Module, k: int, x: torch.Tensor,
                      change: ip.StructuralChange) -> torch.Tensor:
    """The library's own bound, per input: ``predicted_bound · ‖h_{k-1}(x)‖ + predicted_offset``,
    shape ``(batch,)`` (``topology/shrink.py``; the offset already holds the removed ψ entries'
    term ``Σ|ψ*|(‖W_D‖₂ + ‖W_{k+1}‖₂)`` and the terms of the modes without exact compensation)."""
    _, outs, _ = _trace(before, x)
    h_prev = (x if k == 0 else outs[k - 1]).flatten(1)
    return change.predicted_bound * h_prev.norm(dim=1) + change.predicted_offset


def next_preactivation(net: torch.nn.Module, k: int, x: torch.Tensor) -> torch.Tensor:
    ins, _, logits = _trace(net, x)
    return logits if k + 1 >= net.n_hidden else ins[k + 1].flatten(1)


def check_removal(stats: Stats, before: torch.nn.Module, after: torch.nn.Module, k: int, n: int,
                  x: torch.Tensor, change: ip.StructuralChange, where: str) -> None:
    """Fail unless ``‖Δz_{k+1}(x)‖ ≤ predicted_bound·‖h_{k-1}(x)‖ + predicted_offset + τ(x)``
    for every probe input ``x`` (``τ``: :func:`roundoff`). ``where`` names the seed and
    operation, and the test's hypothesis report gives the whole op list."""
    if not bound_applies(before, k):
        stats.bound_skipped += 1
        return
    allowed = removal_allowance(before, k, x, change)
    slack = roundoff(before, k, x)
    delta = next_preactivation(after, k, x) - next_preactivation(before, k, x)
    observed = delta.norm(dim=1)
    stats.bound_checks += 1
    ratio = float((observed / (allowed + slack)).max()) if delta.numel() else 0.0
    stats.worst_bound_ratio = max(stats.worst_bound_ratio, ratio)
    bad = observed > allowed + slack
    if bool(bad.any()):
        stats.library_bound_exceeded += 1
        i = int(torch.argmax(observed - allowed - slack))
        raise AssertionError(
            f"{where}: removal of {n} neuron(s) in layer {k} changed the next pre-activation of "
            f"probe input {i} by {float(observed[i]):.6e} > library bound "
            f"{float(allowed[i]):.6e} + round-off {float(slack[i]):.1e} "
            f"(predicted_bound {change.predicted_bound:.3e}, predicted_offset "
            f"{change.predicted_offset:.3e}, removed σ {change.removed_singular_values}); "
            f"{int(bad.sum())} of {bad.numel()} inputs over the bound")


def check_invariants(net: torch.nn.Module, opt: torch.optim.Optimizer, where: str) -> None:
    for name, p in net.named_parameters():
        assert torch.isfinite(p).all(), f"{where}: parameter {name} is not finite"
        assert p.grad is None or torch.isfinite(p.grad).all(), f"{where}: grad of {name}"
    for name, b in net.named_buffers():
        assert torch.isfinite(b).all(), f"{where}: buffer {name} is not finite"
    assert_optimizer_consistent(net, opt)
    live = list(net.parameters())
    grouped = [p for g in opt.param_groups for p in g["params"]]
    assert len(grouped) == len(live) and {id(p) for p in grouped} == {id(p) for p in live}, where
    for p, state in opt.state.items():
        for key, v in state.items():
            if isinstance(v, torch.Tensor):
                assert torch.isfinite(v).all(), f"{where}: optimizer state {key} is not finite"
                if v.dim() > 0:
                    assert v.shape == p.shape, f"{where}: state {key} {v.shape} vs {p.shape}"


def check_roundtrip(net: torch.nn.Module, x: torch.Tensor, where: str) -> None:
    fresh = rebuild(net)
    fresh.load_state_dict(net.state_dict(), strict=True)
    assert fresh.widths == net.widths, where
    for (name, a), (_, b) in zip(net.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), f"{where}: {name} differs after the state_dict round trip"
    # tensors are bit-identical; strides of size-1 axes may differ, which can change the
    # summation order of a convolution in the last bit, hence 1e-12 and not torch.equal
    err = relative(_logits(net, x), _logits(fresh, x))
    assert err <= 1e-12, f"{where}: rebuilt network's logits differ by {err:.3e}"


# -- one sequence ------------------------------------------------------------------------------

def run_sequence(seed: int, ops: list[str], arch: str = "mlp") -> Stats:
    """Build a random net from ``seed`` and apply ``ops`` (each followed by one optimizer step).

    A failed check is re-raised with the call that reproduces it (seed, architecture and the
    operations up to the failing one)."""
    done: list[str] = []
    try:
        return _run_sequence(seed, ops, arch, done)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nreproduce: fuzzlib.run_sequence({seed}, {done!r}, "
                             f"{arch!r})") from exc


def _run_sequence(seed: int, ops: list[str], arch: str, done: list[str]) -> Stats:
    stats = Stats(sequences=1)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    net = build_net(rng, gen, arch)
    opt_name, opt = make_optimizer(rng, net)
    stats.archs[arch] = 1
    stats.optimizers[opt_name] = 1
    cnn = arch == "cnn"

    def inputs(n_features: int) -> torch.Tensor:
        if cnn:
            return torch.randn(BATCH, n_features, *net.in_hw, generator=gen, dtype=torch.float64)
        return torch.randn(BATCH, n_features, generator=gen, dtype=torch.float64)

    x = inputs(net.widths[0])
    y = torch.randint(0, net.widths[-1], (BATCH,), generator=gen)

    def step() -> None:
        net.train()
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y) + net.psi_penalty()
        loss.backward()
        opt.step()
        stats.steps += 1

    step()
    for i, name in enumerate(ops):
        where = f"seed={seed} arch={arch} op#{i} {name} widths={net.widths} opt={opt_name}"
        stats.ops[name] += 1
        done.append(name)
        h = net.n_hidden
        k = rng.randrange(h)
        width = net.widths[k + 1]
        exact_ref = None          # (logits before, how to compare after)
        before_net = copy.deepcopy(net)
        before_logits = _logits(net, x)
        snap = snapshot(net, opt)
        new_x = x
        may_refuse = False  # set by the branches whose random arguments can be invalid
        try:
            if name == "reparameterise":
                ip.reparameterise(net, k, ip.random_orthogonal(width, generator=gen,
                                                               dtype=torch.float64), opt)
                exact_ref = "same"
            elif name == "left_diagonalise":
                ip.left_diagonalise(net, k, opt)
                exact_ref = "same"
            elif name == "full_diagonalise":
                kk = rng.randrange(h + 1)
                may_refuse = not 1 <= kk <= h - 1 or (
                    net.hidden_layer(kk).incoming_matrix().shape[1]
                    != net.hidden_space(kk - 1).size)
                ip.full_diagonalise(net, kk, opt)
                exact_ref = "same"
            elif name == "sparsify":
                ip.sparsify(net, opt)
                exact_ref = "same"
            elif name == "neurogenesis":
                ip.neurogenesis(net, k, rng.randint(1, 3), opt, generator=gen,
                                init_scale=rng.choice((0.0, 0.01, 0.5)))
                exact_ref = "same"
            elif name == "neurodegeneration":
                n = rng.randint(1, max(1, width - 1)) if rng.random() < 0.8 else width
                may_refuse = n >= width
                if net.psi_mode.value == "expectation":
                    net.train()
                    with torch.no_grad():
                        net(x)  # records the mean gains the expectation fold needs
                    before_net = copy.deepcopy(net)
                    snap = snapshot(net, opt)
                change = ip.neurodegeneration(net, k, n, opt)
                check_removal(stats, before_net, net, k, n, x, change, where)
            elif name == "neuroadapt":
                if net.psi_mode.value == "expectation":
                    net.train()
                    with torch.no_grad():
                        net(x)
                    before_net = copy.deepcopy(net)
                    snap = snapshot(net, opt)
                state = {"before": copy.deepcopy(net)}

                def guard(change, state=state, where=where, x=x):
                    if change.op == "neurogenesis":
                        ref, now = _logits(state["before"], x), _logits(net, x)
                        err = relative(ref, now)
                        stats.exact_checks += 1
                        stats.worst_exact = max(stats.worst_exact, err)
                        assert err <= EXACT_TOL, f"{where}: neuroadapt growth changed f by {err}"
                    else:
                        check_removal(stats, state["before"], net, change.layer, change.n, x,
                                      change, where + " (inside neuroadapt)")
                    state["before"] = copy.deepcopy(net)

                ip.neuroadapt(net, rng.randint(0, 2), rng.choice((0.05, 0.3, 1.0)), opt,
                              generator=gen, guard=guard)
            elif name == "add_inputs":
                n = rng.randint(1, 2)
                ip.add_inputs(net, n, opt)
                new_x = torch.cat([x, inputs(n)], dim=1)
                exact_ref = "same"
            elif name == "remove_inputs":
                n_in = net.widths[0]
                idx = sorted(rng.sample(range(n_in), rng.randint(1, n_in)))
                may_refuse = len(idx) == n_in
                zeroed = x.clone()
                zeroed[:, idx] = 0
                before_logits = _logits(before_net, zeroed)
                ip.remove_inputs(net, idx, opt)
                keep = [j for j in range(n_in) if j not in idx]
                new_x = x[:, keep]
                exact_ref = "same"
            elif name == "add_outputs":
                ip.add_outputs(net, rng.randint(1, 2), opt)
                exact_ref = "prefix"
            else:  # remove_outputs
                n_out = net.widths[-1]
                idx = sorted(rng.sample(range(n_out), rng.randint(1, n_out)))
                may_refuse = len(idx) == n_out
                ip.remove_outputs(net, idx, opt)
                keep = [j for j in range(n_out) if j not in idx]
                before_logits = before_logits[:, keep]
                exact_ref = "same"
        except ip.IsoplasticError as exc:
            if not may_refuse:
                raise AssertionError(f"{where}: valid operation refused: {exc}") from exc
            # refused: nothing may have changed
            assert_identical(snap, net, opt)
            stats.refused[name] += 1
            check_invariants(net, opt, where)
            step()
            continue
        x = new_x
        if exact_ref is not None:
            after = _logits(net, x)
            if exact_ref == "prefix":
                after = after[:, : before_logits.shape[1]]
                # new logits start at exactly 0 apart from psi/bias: zero rows, zero bias/psi
            err = relative(before_logits, after)
            stats.exact_checks += 1
            stats.worst_exact = max(stats.worst_exact, err)
            assert err <= EXACT_TOL, f"{where}: exact operation changed the logits by {err:.3e}"
        n_out = net.widths[-1]
        y = torch.remainder(y, n_out)
        check_invariants(net, opt, where)
        if (i + 1) % ROUNDTRIP_EVERY == 0 or i == len(ops) - 1:
            check_roundtrip(net, x, where)
            stats.roundtrips += 1
        step()
        check_invariants(net, opt, where + " (after step)")
    return stats
