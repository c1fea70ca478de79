"""Failure injection: every structural change is all-or-nothing, whatever fails and wherever.

For each primitive (``HiddenSpace.rotate/insert/remove`` of ``ip.hidden_spaces(model)[name]``),
each named operation, the whole-model operations and (bare block) input/output resizing, on a
bare :class:`~isoplastic.IsotropicMLP` and on two composite models (tests/core/composites.py),
each with a trained optimizer and populated ``.grad``, inject

(a) an optimizer-state key isoplastic does not know, on the space's last-touched parameter
    → :class:`~isoplastic.UnsupportedOptimizerError`;
(b) a non-orthogonal ``R`` (rotate, reparameterise) → :class:`~isoplastic.TopologyError`;
(c) NaN in a touched weight, or in an optimizer state tensor → :class:`~isoplastic.NonFiniteError`;
(d) a bad index, count or name → :class:`~isoplastic.TopologyError` (an optimizer isoplastic
    cannot transport → :class:`~isoplastic.UnsupportedOptimizerError`);
(e) a ``RuntimeError`` in the middle of the apply phase: raised right after the n-th call of
    ``HiddenSpace.apply_map``, of a coordinate map (``Rotation/Reflectors/Insertion/Removal
    .apply``, ``Rotation`` also used while planning a removal), of ``Change._run`` (one step:
    rotate, insert, remove, assign, set the intrinsic length) or of a block's
    ``check_invariants`` (after the last step of a change), for n = 2, 3 and the last call; for
    :func:`~isoplastic.neuroadapt` also right after its second (and its last) change.

After each: the right error, and parameters, gradients, buffers, optimizer state (same keys,
``torch.equal``), the size attributes of every layer and the model's output bit-identical to
before; the model still runs forward and a training step.

Also: a guarded neuroadapt leaves exactly the accepted changes applied, and the journal of a
change holds the originals of the tensors it touches only (data, gradient, optimizer state; by
reference).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from composites import (
    fill_optimizer,
    fixed_conv_then_mlp,
    fixed_residual_stack,
    silence,
    training_step_works,
)
from reference import assert_identical, probe, same, snapshot
from torch import Tensor, nn

import isoplastic as ip
from isoplastic.core import change as core_change
from isoplastic.core import optim_state as ostate
from isoplastic.core import space as core_space
from isoplastic.nn.conv import ChannelLinear
from isoplastic.nn.mlp import AffineStack
from isoplastic.testing import random_isotropic_mlp


# -- the models under test ---------------------------------------------------------------------------
@dataclass
class Case:
    model: nn.Module
    opt: torch.optim.Optimizer
    x: Tensor
    name: str  # the hidden space the named operations act on (local index 1: has a ψ axis)


def build(case: str) -> Case:
    """A trained model with ``.grad`` populated; every parameter, bias, ψ and ``o`` non-zero."""
    if case == "bare":
        model = random_isotropic_mlp([4, 5, 5, 3], "trainable", "trainable", seed=8)
        x, name = probe(model), "1"
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, amsgrad=True)
    elif case == "residual":
        model = fixed_residual_stack()
        x, name = model.probe(), "blocks.2.1"
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, amsgrad=True)
    else:
        model = fixed_conv_then_mlp()
        x, name = model.probe(), "features.1"  # a channel space behind a 1×1 convolution
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    fill_optimizer(model, opt, x)
    return Case(model, opt, x, name)


CASES = ["bare", "residual", "conv_mlp"]


def sizes(model: nn.Module) -> list[tuple]:
    """The derived size attributes of every layer (refreshed by ``sync_shapes``)."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            out.append((name, m.in_features, m.out_features))
        elif isinstance(m, nn.Conv2d):
            out.append((name, m.in_channels, m.out_channels))
        elif isinstance(m, ChannelLinear):
            out.append((name, m.in_channels, m.positions, m.out_features))
    return out


def widths(model: nn.Module) -> dict[str, int]:
    return {n: s.size for n, s in ip.hidden_spaces(model).items()}


@dataclass
class Before:
    snap: dict
    sizes: list[tuple]
    widths: dict[str, int]
    out: Tensor


def capture(c: Case) -> Before:
    c.model.eval()
    with torch.no_grad():
        out = c.model(c.x)
    c.model.train()
    return Before(snapshot(c.model, c.opt), sizes(c.model), widths(c.model), out)


def assert_untouched(before: Before, c: Case) -> None:
    """Bit-identical parameters, gradients, buffers and optimizer state (same keys, same
    parameter objects), sizes, widths and outputs."""
    assert_identical(before.snap, c.model, c.opt)
    assert sizes(c.model) == before.sizes, "layer size attributes were not restored"
    assert widths(c.model) == before.widths
    for block in c.model.modules():
        if isinstance(block, ip.IsoplasticBlock):
            block.check_invariants()
    c.model.eval()
    with torch.no_grad():
        assert same(c.model(c.x), before.out), "the model's output changed"
    c.model.train()


def still_trains(c: Case) -> None:
    training_step_works(c.model, c.opt, c.x)


# -- the operations ---------------------------------------------------------------------------------
def ortho(model: nn.Module, name: str) -> Tensor:
    n = ip.hidden_spaces(model)[name].size
    return ip.random_orthogonal(n, generator=torch.Generator().manual_seed(n))


Op = Callable[[nn.Module, str, torch.optim.Optimizer], object]
OPS: dict[str, Op] = {
    "rotate": lambda m, n, o: ip.hidden_spaces(m)[n].rotate(ortho(m, n), o),
    "insert": lambda m, n, o: ip.hidden_spaces(m)[n].insert(2, o),
    "remove": lambda m, n, o: ip.hidden_spaces(m)[n].remove([0, 2], o),
    "reparameterise": lambda m, n, o: ip.reparameterise(m, n, ortho(m, n), optimizer=o),
    "left_diagonalise": lambda m, n, o: ip.left_diagonalise(m, n, optimizer=o),
    "full_diagonalise": lambda m, n, o: ip.full_diagonalise(m, n, optimizer=o),
    "neurogenesis": lambda m, n, o: ip.neurogenesis(m, n, 2, optimizer=o),
    "neurodegeneration": lambda m, n, o: ip.neurodegeneration(m, n, 2, optimizer=o),
    "remove_neurons": lambda m, n, o: ip.remove_neurons(m, n, [1, 0], optimizer=o),
    "set_width": lambda m, n, o: ip.set_width(m, n, ip.hidden_spaces(m)[n].size + 3,
                                              optimizer=o),
    "sparsify": lambda m, n, o: ip.sparsify(m, optimizer=o),
    "neuroadapt": lambda m, n, o: ip.neuroadapt(m, 2, 0.05, optimizer=o),
}
RESIZE_OPS: dict[str, Op] = {  # bare blocks only
    "add_inputs": lambda m, n, o: ip.add_inputs(m, 2, optimizer=o),
    "remove_inputs": lambda m, n, o: ip.remove_inputs(m, [0, 3], optimizer=o),
    "add_outputs": lambda m, n, o: ip.add_outputs(m, 1, optimizer=o),
    "remove_outputs": lambda m, n, o: ip.remove_outputs(m, [1], optimizer=o),
}
ALL_OPS = {**OPS, **RESIZE_OPS}
ROTATIONS = ("rotate", "reparameterise")


def combos(resize: bool = True) -> list[tuple[str, str]]:
    out = [(case, op) for case in CASES for op in OPS]
    if resize:
        out += [("bare", op) for op in RESIZE_OPS]
    return out


def touched_space(c: Case, op: str) -> ip.HiddenSpace:
    """The space whose tensors ``op`` moves (for the whole-model operations: the case's space,
    one of those they validate and change)."""
    if op in ("add_inputs", "remove_inputs"):
        return c.model.input_space()
    if op in ("add_outputs", "remove_outputs"):
        return c.model.output_space()
    return ip.hidden_spaces(c.model)[c.name]


def state_key(opt: torch.optim.Optimizer, p: Tensor) -> str:
    return next(k for k, v in opt.state[p].items() if isinstance(v, Tensor) and v.dim() > 0)


# -- (a) unknown optimizer state, (b) non-orthogonal R, (c) NaN ------------------------------------------
@pytest.mark.parametrize("case,op", combos())
def test_unknown_optimizer_state_key_on_the_last_touched_parameter(case, op):
    c = build(case)
    p = touched_space(c, op).axes[-1].param  # the outgoing weight (output resizing: its ψ)
    c.opt.state[p]["mystery"] = torch.zeros_like(p)
    before = capture(c)
    with pytest.raises(ip.UnsupportedOptimizerError, match="holds state 'mystery', whose "
                                                           "transport is unknown"):
        ALL_OPS[op](c.model, c.name, c.opt)
    assert_untouched(before, c)
    still_trains(c)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("op", ROTATIONS)
@pytest.mark.parametrize("bad", ["scaled", "perturbed", "reflection-and-scale"])
def test_non_orthogonal_rotation(case, op, bad):
    c = build(case)
    r = ortho(c.model, c.name)
    r = {"scaled": r * (1 + 1e-6), "perturbed": r + 1e-7 * torch.ones_like(r),
         "reflection-and-scale": -2 * r}[bad]
    before = capture(c)
    with pytest.raises(ip.TopologyError, match="R is not orthogonal"):
        if op == "rotate":
            ip.hidden_spaces(c.model)[c.name].rotate(r, c.opt)
        else:
            ip.reparameterise(c.model, c.name, r, optimizer=c.opt)
    assert_untouched(before, c)
    still_trains(c)


@pytest.mark.parametrize("where", ["weight", "state"])
@pytest.mark.parametrize("case,op", combos())
def test_nan_in_a_touched_weight_or_its_optimizer_state(case, op, where):
    c = build(case)
    space = touched_space(c, op)
    if where == "weight":  # the last-touched axis: the outgoing weight
        target = space.axes[-1].param.data
    else:  # a moment of the first-touched parameter
        p = space.axes[0].param
        target = c.opt.state[p][state_key(c.opt, p)]
    saved = target.view(-1)[0].clone()
    target.view(-1)[0] = float("nan")
    before = capture(c)
    with pytest.raises(ip.NonFiniteError, match="holds NaN or Inf; a structural change would "
                                                "spread it"):
        ALL_OPS[op](c.model, c.name, c.opt)
    assert_untouched(before, c)
    target.view(-1)[0] = saved  # repaired: the model must train again
    still_trains(c)


# -- (d) bad index, count or name --------------------------------------------------------------------
BAD_CALLS: dict[str, tuple[Op, type, str]] = {
    "rotate": (lambda m, n, o: ip.hidden_spaces(m)[n].rotate(
        torch.eye(ip.hidden_spaces(m)[n].size + 1, dtype=torch.float64), o),
        ip.TopologyError, "R has shape"),
    "insert": (lambda m, n, o: ip.hidden_spaces(m)[n].insert(0, o), ip.TopologyError,
               "n=0 must be a positive integer"),
    "remove": (lambda m, n, o: ip.hidden_spaces(m)[n].remove([0, ip.hidden_spaces(m)[n].size], o),
               ip.TopologyError, "must lie in 0.."),
    "reparameterise": (lambda m, n, o: ip.reparameterise(m, n + "9", ortho(m, n), optimizer=o),
                       ip.TopologyError, "no hidden space named"),
    "left_diagonalise": (lambda m, n, o: ip.left_diagonalise(m, n + "9", optimizer=o),
                         ip.TopologyError, "no hidden space named"),
    "full_diagonalise": (lambda m, n, o: ip.full_diagonalise(m, n[:-1] + "0", optimizer=o),
                         ip.TopologyError, r"hidden layer k=0 is out of range"),
    "neurogenesis": (lambda m, n, o: ip.neurogenesis(m, n, 0, optimizer=o), ip.TopologyError,
                     "n=0 must be a positive integer"),
    "neurodegeneration": (lambda m, n, o: ip.neurodegeneration(
        m, n, ip.hidden_spaces(m)[n].size, optimizer=o), ip.TopologyError,
        "would disconnect the network"),
    "remove_neurons": (lambda m, n, o: ip.remove_neurons(m, n, [0, -1], optimizer=o),
                       ip.TopologyError, "must lie in 0.."),
    "set_width": (lambda m, n, o: ip.set_width(m, "nope." + n, 3, optimizer=o),
                  ip.TopologyError, "no hidden space named"),
    "sparsify": (lambda m, n, o: ip.sparsify(m, optimizer=torch.optim.LBFGS(m.parameters())),
                 ip.UnsupportedOptimizerError, "cannot transport the state of LBFGS"),
    "neuroadapt": (lambda m, n, o: ip.neuroadapt(m, 2, 0.05, optimizer=o, layers=[n, n + "9"]),
                   ip.TopologyError, "no hidden space named"),
    "add_inputs": (lambda m, n, o: ip.add_inputs(m, -1, optimizer=o), ip.TopologyError,
                   "n=-1 must be a positive integer"),
    "remove_inputs": (lambda m, n, o: ip.remove_inputs(m, [0, 4], optimizer=o), ip.TopologyError,
                      "must lie in 0..3"),
    "add_outputs": (lambda m, n, o: ip.add_outputs(m, 1.0, optimizer=o), ip.TopologyError,
                    "n=1.0 must be a positive integer"),
    "remove_outputs": (lambda m, n, o: ip.remove_outputs(m, [0, 1, 2], optimizer=o),
                       ip.TopologyError, "cannot remove all 3"),
}


@pytest.mark.parametrize("case,op", combos())
def test_bad_index_count_or_name(case, op):
    c = build(case)
    call, error, match = BAD_CALLS[op]
    before = capture(c)
    with pytest.raises(error, match=match):
        call(c.model, c.name, c.opt)
    assert_untouched(before, c)
    still_trains(c)


# -- (e) a failure in the middle of the apply phase ----------------------------------------------------
TARGETS: dict[str, list[tuple[type, str]]] = {
    "apply_map": [(core_space.HiddenSpace, "apply_map")],
    "coordinate_map": [(ostate.Rotation, "apply"), (ostate.Reflectors, "apply"),
                       (ostate.Insertion, "apply"), (ostate.Removal, "apply")],
    "step": [(core_change.Change, "_run")],
    "invariants": [(AffineStack, "check_invariants"), (ip.IsotropicCNN, "check_invariants")],
    "change": [(core_change.Change, "apply")],  # whole changes: only inside a transaction
}


class Injected(RuntimeError):
    pass


@dataclass
class Counter:
    calls: int = 0
    fail_at: int | None = None


def install(monkeypatch: pytest.MonkeyPatch, target: str, counter: Counter) -> None:
    """Wrap every method of ``target``: run the real call, count it, and raise
    :class:`Injected` right after the ``fail_at``-th (its effects are then in place)."""
    for cls, attr in TARGETS[target]:
        original = getattr(cls, attr)

        def wrapper(self, *args, __original=original, **kwargs):
            result = __original(self, *args, **kwargs)
            counter.calls += 1
            if counter.calls == counter.fail_at:
                raise Injected(f"injected failure after call {counter.calls}")
            return result

        monkeypatch.setattr(cls, attr, wrapper)


def count_calls(case: str, op: str, target: str) -> int:
    """How often ``op`` calls the target's methods (on a fresh copy of the case)."""
    c = build(case)
    counter = Counter()
    with pytest.MonkeyPatch.context() as mp:
        install(mp, target, counter)
        ALL_OPS[op](c.model, c.name, c.opt)
    return counter.calls


def injection_points(calls: int) -> list[int]:
    return sorted({min(2, calls), min(3, calls), calls}) if calls else []


@pytest.mark.parametrize("target", ["apply_map", "coordinate_map", "step", "invariants"])
@pytest.mark.parametrize("case,op", combos())
def test_failure_in_the_middle_of_apply(case, op, target, monkeypatch):
    calls = count_calls(case, op, target)
    assert calls >= 1, f"{op} never reached {target}"
    for fail_at in injection_points(calls):
        c = build(case)
        before = capture(c)
        counter = Counter(fail_at=fail_at)
        with monkeypatch.context() as mp:
            install(mp, target, counter)
            with pytest.raises(Injected, match=f"after call {fail_at}$"):
                ALL_OPS[op](c.model, c.name, c.opt)
        assert_untouched(before, c)
        still_trains(c)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("policy", ["neuroadapt", "width_schedule", "guarded_neuroadapt"])
def test_failure_after_a_whole_change_inside_a_policy_pass(case, policy, monkeypatch):
    """A policy applies several changes in one transaction: a failure right after its second (or
    its last) change, or a guard raising something other than ChangeRefused, undoes them all."""
    def run(c: Case, failing_guard: bool = False):
        if policy == "width_schedule":
            targets = [w + 1 for w in widths(c.model).values()]
            return ip.WidthSchedule(targets=[targets])(c.model, c.opt, 0)
        if not failing_guard:
            return ip.neuroadapt(c.model, 2, 0.05, optimizer=c.opt)
        seen = []

        def guard(change):  # accepts the first change, fails on the second
            seen.append(change)
            if len(seen) == 2:
                raise Injected("injected failure after call 2")
        return ip.neuroadapt(c.model, 2, 0.05, optimizer=c.opt, guard=guard)

    counter = Counter()
    with monkeypatch.context() as mp:
        install(mp, "change", counter)
        assert len(run(build(case))) >= 2, "the pass must make at least two changes"
    points = [2] if policy == "guarded_neuroadapt" else injection_points(counter.calls)
    for fail_at in points:
        c = build(case)
        before = capture(c)
        with monkeypatch.context() as mp:
            if policy != "guarded_neuroadapt":
                install(mp, "change", Counter(fail_at=fail_at))
            with pytest.raises(Injected, match=f"after call {fail_at}$"):
                run(c, failing_guard=policy == "guarded_neuroadapt")
        assert_untouched(before, c)
        still_trains(c)


# -- guarded neuroadapt: exactly the accepted changes ------------------------------------------------------
def adapt_case(case: str) -> Case:
    """A case where neuroadapt(S=1, τ=1e-9, init_scale=0) both grows and removes: space 0 gets
    three removable zero rows (one per silenced row, plus the padding of a layer wider than its
    input), every other space none."""
    c = build(case)
    names = list(ip.hidden_spaces(c.model))
    silence(c.model, names[0], c.opt, extra=2)
    for name in names[1:]:
        silence(c.model, name, c.opt, extra=0)  # zero rows only where a layer is wider than its input
    return c


def replay(model: nn.Module, opt: torch.optim.Optimizer, changes: list[ip.StructuralChange]
           ) -> None:
    for ch in changes:
        if ch.op == "neurogenesis":
            ip.neurogenesis(model, ch.space, ch.n, optimizer=opt, init_scale=0.0,
                            diagonalise=False)
        else:
            ip.neurodegeneration(model, ch.space, ch.n, optimizer=opt)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("refuse", ["none", "first", "second", "odd", "removals", "all"])
def test_guarded_neuroadapt_leaves_exactly_the_accepted_changes(case, refuse):
    c = adapt_case(case)
    twin_model, twin_opt = copy.deepcopy((c.model, c.opt))
    for p, q in zip(c.model.parameters(), twin_model.parameters(), strict=True):
        q.grad = None if p.grad is None else p.grad.clone()  # deepcopy drops .grad
    seen: list[ip.StructuralChange] = []

    def guard(change):
        i = len(seen)
        seen.append(change)
        if (refuse == "all" or (refuse == "first" and i == 0) or (refuse == "second" and i == 1)
                or (refuse == "odd" and i % 2) or (refuse == "removals"
                                                  and change.op == "neurodegeneration")):
            raise ip.ChangeRefused("refused by the test", info={"i": i})

    refused: list[ip.StructuralChange] = []
    accepted = ip.neuroadapt(c.model, 1, 1e-9, optimizer=c.opt, init_scale=0.0, guard=guard,
                             refused=refused)
    assert {ch.op for ch in seen} == {"neurogenesis", "neurodegeneration"}
    # every change the guard saw is either accepted or refused, in the order seen
    order = [id(ch) for ch in seen]
    assert sorted(map(id, accepted + refused)) == sorted(order)
    assert [id(ch) for ch in accepted] == [i for i in order if i in set(map(id, accepted))]
    if refuse == "none":
        assert not refused
    if refuse == "all":
        assert not accepted
    # the same accepted changes, applied one by one to the untouched twin, give the same model
    replay(twin_model, twin_opt, accepted)
    assert widths(c.model) == widths(twin_model)
    for (name, p), q in zip(c.model.named_parameters(), twin_model.parameters(), strict=True):
        assert torch.equal(p, q), f"{name} differs from the replay of the accepted changes"
        assert (p.grad is None and q.grad is None) or torch.equal(p.grad, q.grad), name
        s1, s2 = c.opt.state.get(p, {}), twin_opt.state.get(q, {})
        assert s1.keys() == s2.keys()
        assert all(torch.equal(torch.as_tensor(s1[k]), torch.as_tensor(s2[k])) for k in s1), name
    for b1, b2 in zip(c.model.buffers(), twin_model.buffers(), strict=True):
        assert torch.equal(b1, b2)
    still_trains(c)


# -- the journal holds only the originals of touched tensors -------------------------------------------------
def storage_bytes(tensors: list[Tensor | None]) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is not None and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()
    return total


def originals(params: list[Tensor], opt: torch.optim.Optimizer) -> list[Tensor | None]:
    """Data, gradient and optimizer-state tensors of ``params`` (what a journal may hold)."""
    out: list[Tensor | None] = []
    for p in params:
        out += [p.data, p.grad]
        out += [v for v in opt.state.get(p, {}).values() if isinstance(v, Tensor)]
    return out


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_journal_of_neurogenesis_keeps_only_the_touched_space(k):
    """5 affine layers (4 hidden spaces of 64): neurogenesis in space k holds the originals of its
    incoming weight and bias, its ψ and the outgoing weight (data, gradients, optimizer state),
    nothing else."""
    net = random_isotropic_mlp([32, 64, 64, 64, 64, 10], "trainable", "trainable", seed=1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    fill_optimizer(net, opt, probe(net))
    space = ip.hidden_spaces(net)[str(k)]
    touched = space.params()
    assert len(touched) == (4 if k >= 1 else 3)
    expected = storage_bytes(originals(touched, opt))
    everything = storage_bytes(originals(list(net.parameters()), opt))
    with ip.transaction() as journal:
        ip.neurogenesis(net, k, 3, optimizer=opt)
    assert journal.n_tensors == len(touched)
    assert journal.held_bytes() == expected < everything


def test_journal_of_a_removal_adds_only_its_compensation_targets():
    """Neurodegeneration in space 1 also records what its fold may write: ψ_1 and the next bias
    (``linears[2].bias``, by reference; it is written only in ψ mode ``"expectation"``) and the
    intrinsic length of space 1 (copied: it is set in place, 8 bytes); nothing else."""
    net = random_isotropic_mlp([32, 64, 64, 64, 64, 10], "trainable", "trainable", seed=1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    fill_optimizer(net, opt, probe(net))
    log_o = net.activations[1].log_o
    touched = ip.hidden_spaces(net)["1"].params() + [net.psi[1], net.linears[2].bias]
    expected = storage_bytes(originals(touched, opt) + [log_o.grad]
                             + [v for v in opt.state[log_o].values()])
    with ip.transaction() as journal:
        ip.neurodegeneration(net, 1, 2, optimizer=opt)
    assert journal.n_tensors == len(touched) + 1
    assert journal.held_bytes() == expected + log_o.numel() * log_o.element_size()


def test_journal_on_a_composite_model_keeps_only_the_touched_block_space():
    c = build("residual")
    touched = ip.hidden_spaces(c.model)["blocks.2.1"].params()
    expected = storage_bytes(originals(touched, c.opt))
    with ip.transaction() as journal:
        ip.neurogenesis(c.model, "blocks.2.1", 2, optimizer=c.opt)
    assert journal.n_tensors == 4
    assert journal.held_bytes() == expected


def test_journal_holds_references_and_a_rollback_reattaches_the_very_originals():
    """No copies: after a rolled-back change every touched parameter holds its original storage,
    gradient object and optimizer-state tensors again (identity, not equality)."""
    net = random_isotropic_mlp([32, 64, 64, 10], "trainable", "trainable", seed=1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, amsgrad=True)
    fill_optimizer(net, opt, probe(net))
    touched = ip.hidden_spaces(net)["1"].params()
    ptrs = [p.untyped_storage().data_ptr() for p in touched]
    grads = [p.grad for p in touched]
    states = [dict(opt.state[p]) for p in touched]
    with pytest.raises(Injected), ip.transaction():
        ip.neurogenesis(net, 1, 3, optimizer=opt)
        assert [p.untyped_storage().data_ptr() for p in touched] != ptrs
        raise Injected("roll back")
    assert [p.untyped_storage().data_ptr() for p in touched] == ptrs
    assert all(p.grad is g for p, g in zip(touched, grads, strict=True))
    for p, state in zip(touched, states, strict=True):
        assert all(opt.state[p][key] is value for key, value in state.items())


def test_a_rolled_back_transaction_restores_every_change_in_it_on_a_composite():
    """Several changes on several blocks of one model, then a failure in the body: all undone."""
    c = build("residual")
    before = capture(c)
    with pytest.raises(Injected), ip.transaction() as journal:
        ip.neurogenesis(c.model, "blocks.0.0", 2, optimizer=c.opt)
        ip.hidden_spaces(c.model)["blocks.2.1"].rotate(ortho(c.model, "blocks.2.1"), c.opt)
        ip.sparsify(c.model, optimizer=c.opt)
        ip.neurodegeneration(c.model, "blocks.1.0", 1, optimizer=c.opt)
        raise Injected("injected failure in the transaction body")
    assert journal.n_tensors > 0
    assert_untouched(before, c)
    still_trains(c)
