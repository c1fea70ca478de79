"""Composite models: every operation, addressed by an ``ip.hidden_spaces`` name, is exact.

A user's module holds isoplastic blocks among its own layers (tests/core/composites.py): a
residual stack of :class:`~isoplastic.IsotropicMLP` blocks between plain ``Linear`` layers, and a
plain ``Conv2d`` stem feeding an :class:`~isoplastic.IsotropicCNN` whose logits feed an
:class:`~isoplastic.IsotropicMLP` head. Hypothesis draws the sizes, the ψ and intrinsic-length
modes of every block, the seeds and the user's optimizer (AdamW with amsgrad, or SGD with Nesterov
momentum, over ``model.parameters()``, its state filled by two training steps, ``.grad``
populated).

For every name in ``ip.hidden_spaces(model)`` each function-preserving operation must

* leave the model's output unchanged: ``max |Δ out| / max |out| ≤ 1e-10`` in float64
  (:data:`isoplastic.testing.FLOAT_TOLERANCE`);
* move the optimizer's state with the parameters: under a rotation ``R`` each state tensor of the
  space equals the dense reference (``m ← m ×_d R`` for first moments and gradients, ``v ← v ×_d
  (R∘R)`` for second moments; tests/reference.py), otherwise every state tensor keeps its
  parameter's shape, ``step`` is kept, and appended coordinates start with zero first moments
  and second moments at the median of the existing ones with ``newborn="population"`` (zero by
  default);
* leave everything outside the owning block (the user's layers, the other blocks: data, gradient,
  optimizer state) bit-identical;
* keep the optimizer pointing at the live parameter objects; a training step afterwards works.

float32 errors of the same checks are reported (``-s`` prints them; ``record_property`` stores
them in a junit report), not asserted.
"""

from __future__ import annotations

import copy

import pytest
import torch
from composites import (
    ConvThenMLP,
    ResidualStack,
    conv_then_mlps,
    fill_optimizer,
    fixed_conv_then_mlp,
    fixed_residual_stack,
    loss_of,
    make_optimizer,
    residual_stacks,
    silence,
    training_step_works,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from reference import assert_identical, snapshot, transport_rotation
from torch import Tensor, nn

import isoplastic as ip
from isoplastic.core import optim_state as ostate
from isoplastic.export import compile_sparse
from isoplastic.testing import FLOAT_TOLERANCE, assert_function_preserved, relative_change

EXACT = FLOAT_TOLERANCE[torch.float64]  # 1e-10
N_EXAMPLES = 4  # per (architecture, operation); the whole file runs in well under 30 s

ARCHS = {"residual": residual_stacks, "conv_mlp": conv_then_mlps}
PER_NAME_OPS = ["reparameterise", "left_diagonalise", "full_diagonalise", "neurogenesis",
                "set_width", "neurodegeneration", "remove_neurons"]


# -- references and bookkeeping -------------------------------------------------------------------
def dense_transport(t: Tensor, dim: int, r: Tensor, second: bool = False) -> Tensor:
    """The dense (Kronecker) reference of tests/reference.py for axis ``dim`` of a tensor of any
    rank: the axis is moved last, the tensor viewed as rows ``(-1, n)`` and every row mapped by
    ``Rᵀ`` (``(R∘R)ᵀ`` for a second moment)."""
    moved = t.movedim(dim, -1)
    flat = moved.reshape(-1, t.shape[dim])
    out = transport_rotation(flat, 1, r, second_moment=second)
    return out.reshape(moved.shape).movedim(-1, dim)


def close(a: Tensor, b: Tensor, what: str) -> None:
    scale = max(1.0, float(b.abs().max()) if b.numel() else 0.0)
    err = float((a - b).abs().max()) if a.numel() else 0.0
    assert a.shape == b.shape and err <= 1e-12 * scale, f"{what}: max error {err:.3e}"


def clone_state(opt: torch.optim.Optimizer, p: Tensor) -> dict:
    return {k: (v.clone() if isinstance(v, Tensor) else v) for k, v in opt.state.get(p, {}).items()}


def frozen(model: nn.Module, opt: torch.optim.Optimizer, params: list[Tensor]) -> list[tuple]:
    """Clones of data, gradient and optimizer state of ``params``."""
    return [(p, p.detach().clone(), None if p.grad is None else p.grad.clone(),
             clone_state(opt, p)) for p in params]


def assert_unchanged(frozen_params: list[tuple], opt: torch.optim.Optimizer, what: str) -> None:
    for p, data, grad, state in frozen_params:
        assert torch.equal(p.detach(), data), f"{what}: a parameter {tuple(p.shape)} changed"
        assert (p.grad is None) == (grad is None)
        assert grad is None or torch.equal(p.grad, grad), f"{what}: a gradient changed"
        now = opt.state.get(p, {})
        assert now.keys() == state.keys(), f"{what}: optimizer state keys changed"
        for key, value in state.items():
            if isinstance(value, Tensor):
                assert torch.equal(now[key], value), f"{what}: optimizer state {key!r} changed"


def outside(model: nn.Module, block: nn.Module) -> list[Tensor]:
    """Every parameter of ``model`` that is not ``block``'s."""
    mine = {id(p) for p in block.parameters()}
    return [p for p in model.parameters() if id(p) not in mine]


def assert_state_kept(opt: torch.optim.Optimizer, before: dict[int, dict], params: list[Tensor]
                      ) -> None:
    """Every state tensor keeps its parameter's shape, the same keys and the same ``step``."""
    for p in params:
        old, now = before.get(id(p), {}), opt.state.get(p, {})
        assert now.keys() == old.keys(), "optimizer state keys changed"
        for key, value in now.items():
            if ostate.STATE_KINDS[key] == ostate.KEEP:
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(old[key])), key
            elif isinstance(value, Tensor):
                assert value.shape == p.shape, f"state {key!r} {tuple(value.shape)} vs param " \
                                               f"{tuple(p.shape)}"


# -- one operation on one named space ---------------------------------------------------------------
def op_call(op: str, name: str, opt: torch.optim.Optimizer, model: nn.Module, gen: torch.Generator):
    """``(call, R or None)``: the operation on space ``name`` as a function of the model."""
    space = ip.hidden_spaces(model)[name]
    if op == "reparameterise":
        r = ip.random_orthogonal(space.size, generator=gen, dtype=space.axes[0].param.dtype)
        return (lambda m: ip.reparameterise(m, name, r, optimizer=opt)), r
    if op == "left_diagonalise":
        return (lambda m: ip.left_diagonalise(m, name, optimizer=opt)), None
    if op == "full_diagonalise":
        return (lambda m: ip.full_diagonalise(m, name, optimizer=opt)), None
    if op == "neurogenesis":
        return (lambda m: ip.neurogenesis(m, name, 2, optimizer=opt, generator=gen,
                                          newborn="population")), None
    if op == "set_width":
        return (lambda m: ip.set_width(m, name, space.size + 1, optimizer=opt)), None
    if op == "neurodegeneration":
        return (lambda m: ip.neurodegeneration(m, name, 1, optimizer=opt)), None
    if op == "remove_neurons":
        return (lambda m: ip.remove_neurons(m, name, [space.size - 1], optimizer=opt)), None
    raise AssertionError(op)


def applicable(op: str, model: nn.Module, name: str) -> bool:
    space = ip.hidden_spaces(model)[name]
    if op == "full_diagonalise":
        return space.block.can_full_diagonalise(space.index)
    if op in ("neurodegeneration", "remove_neurons"):
        return space.size >= 2
    return True


def check_op_on_every_name(model: nn.Module, op: str, opt_kind: str, seed: int) -> int:
    """Run ``op`` on every hidden space of ``model`` in turn (a training step after each) and
    check the properties of the module docstring. Returns how many spaces it ran on."""
    gen = torch.Generator().manual_seed(seed)
    x = model.probe()
    opt = make_optimizer(model, opt_kind)
    fill_optimizer(model, opt, x)
    ran = 0
    for name in list(ip.hidden_spaces(model)):
        if not applicable(op, model, name):
            continue
        if op in ("neurodegeneration", "remove_neurons"):
            silence(model, name, opt)  # an exact removal exists now; the references are taken after
        space = ip.hidden_spaces(model)[name]
        block, width = space.block, space.size
        axes = [(a.param, a.dim, a.role) for a in space.axes]
        params_before = {id(p): (p.detach().clone(), None if p.grad is None else p.grad.clone())
                         for p, _, _ in axes}
        state_before = {id(p): clone_state(opt, p) for p in block.parameters()}
        rest = frozen(model, opt, outside(model, block))
        ids = [id(p) for p in model.parameters()]
        call, r = op_call(op, name, opt, model, gen)

        result = assert_function_preserved(call, model, x, opt, tol=EXACT)

        assert [id(p) for p in model.parameters()] == ids, "parameter objects were replaced"
        assert all(p is q for p, q in zip(opt.param_groups[0]["params"], model.parameters(),
                                          strict=True))
        assert_unchanged(rest, opt, f"{op}({name!r}) outside its block")
        assert_state_kept(opt, state_before, list(block.parameters()))
        if r is not None:  # the dense reference of the rotation, for data, gradient and state
            for p, dim, role in axes:
                data, grad = params_before[id(p)]
                close(p.detach(), dense_transport(data, dim, r), f"{name} {role} data")
                if grad is not None:
                    close(p.grad, dense_transport(grad, dim, r), f"{name} {role} grad")
                for key, value in state_before[id(p)].items():
                    kind = ostate.STATE_KINDS[key]
                    if isinstance(value, Tensor) and kind != ostate.KEEP:
                        ref = dense_transport(value, dim, r, second=kind == ostate.SECOND)
                        close(opt.state[p][key], ref, f"{name} {role} state {key!r}")
        if op in ("neurogenesis", "set_width"):
            n = 2 if op == "neurogenesis" else 1
            assert result.space == name and result.width_after == width + n
            assert ip.hidden_spaces(model)[name].size == width + n
            for p, dim, role in axes:  # appended coordinates: zero first moments, second
                for key, value in opt.state.get(p, {}).items():  # moments the old median
                    if not isinstance(value, Tensor) or value.dim() == 0:
                        continue
                    new_part = value.narrow(dim, width, n)
                    if ostate.STATE_KINDS[key] == ostate.SECOND and op == "neurogenesis":
                        median = value.narrow(dim, 0, width).median(dim=dim, keepdim=True).values
                        assert torch.equal(new_part, median.expand_as(new_part)), f"{role} {key}"
                    else:
                        assert not new_part.any(), f"{role} {key} not zero"
        if op in ("neurodegeneration", "remove_neurons"):
            assert result.space == name and result.width_after == width - 1
            assert ip.hidden_spaces(model)[name].size == width - 1
        if op == "full_diagonalise":
            w = block.hidden_layer(space.index).incoming_matrix()
            off = w.clone()
            m = min(w.shape)
            off[torch.arange(m), torch.arange(m)] = 0
            assert not off.any(), "full_diagonalise left off-diagonal entries"
        training_step_works(model, opt, x)
        ran += 1
    return ran


@pytest.mark.parametrize("op", PER_NAME_OPS)
@pytest.mark.parametrize("arch", list(ARCHS))
@settings(max_examples=N_EXAMPLES)
@given(data=st.data(), opt_kind=st.sampled_from(["adamw", "sgd"]), seed=st.integers(0, 2**20))
def test_every_named_space_operation_is_exact_on_composite_models(arch, op, data, opt_kind, seed):
    model = data.draw(ARCHS[arch]())
    ran = check_op_on_every_name(model, op, opt_kind, seed)
    if op not in CONDITIONAL:
        assert ran == len(ip.hidden_spaces(model))


CONDITIONAL = ("full_diagonalise", "neurodegeneration", "remove_neurons")


@pytest.mark.parametrize("op", CONDITIONAL)
def test_conditional_operations_run_on_the_fixed_models(op):
    """A draw may have no space where full diagonalisation or a removal applies; these have
    several (two full diagonalisations each, a removal in every space)."""
    for model in (fixed_residual_stack(), fixed_conv_then_mlp()):
        expected = 2 if op == "full_diagonalise" else len(ip.hidden_spaces(model))
        assert check_op_on_every_name(model, op, "sgd", 0) >= expected


# -- whole-model operations ---------------------------------------------------------------------------
@pytest.mark.parametrize("arch", list(ARCHS))
@settings(max_examples=N_EXAMPLES)
@given(data=st.data(), opt_kind=st.sampled_from(["adamw", "sgd"]))
def test_sparsify_composite_is_exact_and_reports_names(arch, data, opt_kind):
    model = data.draw(ARCHS[arch]())
    x = model.probe()
    opt = make_optimizer(model, opt_kind)
    fill_optimizer(model, opt, x)
    spaces = ip.hidden_spaces(model)
    names, widths = list(spaces), [s.size for s in spaces.values()]
    in_blocks = {id(p) for s in spaces.values() for p in s.block.parameters()}
    user = frozen(model, opt, [p for p in model.parameters() if id(p) not in in_blocks])
    state_before = {id(p): clone_state(opt, p) for p in model.parameters()}
    report = assert_function_preserved(lambda m: ip.sparsify(m, optimizer=opt), model, x, opt,
                                       tol=EXACT)
    assert [s.size for s in ip.hidden_spaces(model).values()] == widths
    assert_unchanged(user, opt, "sparsify: the user's own layers")
    assert_state_kept(opt, state_before, list(model.parameters()))
    assert report.closed_form_fraction is None
    assert set(report.layers) <= set(names)
    used: set[tuple[int, int]] = set()
    for name in report.layers:
        space = ip.hidden_spaces(model)[name]
        block, k = space.block, space.index
        assert k >= 1 and block.can_full_diagonalise(k)
        assert not {(id(block), k), (id(block), k - 1)} & used, "two choices share a space"
        used |= {(id(block), k), (id(block), k - 1)}
        w = block.hidden_layer(k).incoming_matrix()
        m = min(w.shape)
        off = w.clone()
        off[torch.arange(m), torch.arange(m)] = 0
        assert not off.any(), f"{name} is not diagonal after sparsify"
    if isinstance(model, ResidualStack):
        sparse = compile_sparse(model)
        with torch.no_grad():
            assert relative_change(model(x), sparse(x)) <= EXACT
    else:
        with pytest.raises(ip.TopologyError, match="not a chain of dense layers"):
            compile_sparse(model)
    training_step_works(model, opt, x)


@pytest.mark.parametrize("arch", list(ARCHS))
@settings(max_examples=N_EXAMPLES)
@given(data=st.data(), opt_kind=st.sampled_from(["adamw", "sgd"]))
def test_neuroadapt_composite_is_exact_and_names_each_change(arch, data, opt_kind):
    """Every space is prepared with 0, 1 or 2 silenced (exactly removable) neurons, plus the zero
    rows of layers wider than their input; with ``τ`` below every live singular value and
    ``S = 1`` neuroadapt grows the spaces without scaffold and removes zero rows from the others:
    exact, and afterwards every space holds exactly one strength ``≤ τ``."""
    model = data.draw(ARCHS[arch]())
    x = model.probe()
    opt = make_optimizer(model, opt_kind)
    fill_optimizer(model, opt, x)  # before silencing: a training step would revive zero rows
    zeros = {}
    for name in ip.hidden_spaces(model):
        width = ip.hidden_spaces(model)[name].size
        extra = data.draw(st.integers(0, min(2, width - 1)))
        zeros[name] = len(silence(model, name, opt, extra=extra).zero_rows)
    # A removal in space k leaves k+1 with fan-in live_k + 1 (S = 1); if live_{k+1} exceeded it,
    # W_{k+1} would lose rank and a live row of k+1 (random ψ entry) would become removable:
    # inexact by design (the record's predicted_offset). Such draws are not this test's case.
    for name, space in ip.hidden_spaces(model).items():
        k, block = space.index, space.block
        if zeros[name] >= 2 and k + 1 < block.n_hidden:
            nxt = [n for n, s in ip.hidden_spaces(model).items()
                   if s.block is block and s.index == k + 1][0]
            live_k = space.size - zeros[name]
            live_next = ip.hidden_spaces(model)[nxt].size - zeros[nxt]
            assume(live_next <= live_k + 1)
    order = list(ip.hidden_spaces(model))
    block_order = [id(b) for b in {id(s.block): s.block for s in
                                   ip.hidden_spaces(model).values()}.values()]
    changes = assert_function_preserved(
        lambda m: ip.neuroadapt(m, 1, 1e-9, optimizer=opt), model, x, opt, tol=EXACT)
    spaces = ip.hidden_spaces(model)
    assert list(spaces) == order
    last_width: dict[str, int] = {}
    positions = []
    for ch in changes:
        assert ch.space in spaces, f"{ch.space!r} is not a hidden space name"
        space = spaces[ch.space]
        assert ch.layer == space.index and ch.space.rsplit(".", 1)[1] == str(ch.layer)
        positions.append(block_order.index(id(space.block)))
        last_width[ch.space] = ch.width_after
    assert positions == sorted(positions, reverse=True), "blocks are visited last to first"
    for name, width in last_width.items():
        assert spaces[name].size == width
    for name in spaces:
        assert int((ip.singular_values(model, name) <= 1e-9).sum()) == 1, name
    training_step_works(model, opt, x)


def test_width_schedule_and_scaffold_policy_on_a_composite_model():
    model = fixed_residual_stack()
    x = model.probe()
    opt = make_optimizer(model, "adamw")
    fill_optimizer(model, opt, x)
    names = list(ip.hidden_spaces(model))
    widths = [s.size for s in ip.hidden_spaces(model).values()]
    schedule = ip.WidthSchedule(targets=[[w + 1 + (i % 2) for i, w in enumerate(widths)]])
    changes = assert_function_preserved(lambda m: schedule(m, opt, 0), model, x, opt, tol=EXACT)
    assert [c.space for c in changes] == names[::-1]
    assert [s.size for s in ip.hidden_spaces(model).values()] == schedule.targets[0]
    with pytest.raises(ip.TopologyError, match="names 2 layers but the network has 6"):
        ip.WidthSchedule(targets=[[3, 3]])(model, opt, 0)
    twin, twin_opt = copy.deepcopy((model, opt))
    policy = ip.ScaffoldPolicy(scaffold=3, threshold=0.05,
                               generator=torch.Generator().manual_seed(1))
    changes = policy(model, opt, 0)
    direct = ip.neuroadapt(twin, 3, 0.05, optimizer=twin_opt,
                           generator=torch.Generator().manual_seed(1))
    assert [c.as_dict() for c in changes] == [c.as_dict() for c in direct]
    assert changes and {c.space for c in changes} <= set(names)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
    training_step_works(model, opt, x)


# -- names ------------------------------------------------------------------------------------------
class Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = ip.IsotropicMLP([4, 2, 4], psi="trainable").double()
        self.scale = nn.Linear(4, 4).double()


def nested_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(3, 4),
        ip.IsotropicMLP([4, 5, 4], psi="none"),
        nn.ModuleDict({"a": ip.IsotropicMLP([4, 3, 2, 4]), "b": Wrapper()}),
        nn.Sequential(nn.Identity(), ip.IsotropicCNN((1, 3, 3), [2], 1, head=[3], n_classes=2)),
    ).double()


def test_hidden_spaces_order_and_names_for_nested_modules():
    model = nested_model()
    spaces = ip.hidden_spaces(model)
    assert list(spaces) == ["1.0", "2.a.0", "2.a.1", "2.b.inner.0", "3.1.0", "3.1.1"]
    for name, space in spaces.items():
        prefix, _, k = name.rpartition(".")
        assert space.block is model.get_submodule(prefix) and space.index == int(k)
    assert [s.size for s in spaces.values()] == [5, 3, 2, 2, 2, 3]
    # a nested name addresses exactly its block
    before = {n: s.size for n, s in spaces.items()}
    ip.neurogenesis(model, "2.b.inner.0", 3)
    after = {n: s.size for n, s in ip.hidden_spaces(model).items()}
    assert after == before | {"2.b.inner.0": 5}
    # a bare block keeps its own names, and a block used as the model is named "0", "1", ...
    assert list(ip.hidden_spaces(model[2]["a"])) == ["0", "1"]
    assert list(ip.hidden_spaces(model[2]["b"])) == ["inner.0"]


NAMED_OPS = {
    "reparameterise": lambda m, k, o: ip.reparameterise(m, k, torch.eye(3, dtype=torch.float64),
                                                        optimizer=o),
    "left_diagonalise": lambda m, k, o: ip.left_diagonalise(m, k, optimizer=o),
    "full_diagonalise": lambda m, k, o: ip.full_diagonalise(m, k, optimizer=o),
    "singular_values": lambda m, k, o: ip.singular_values(m, k),
    "neurogenesis": lambda m, k, o: ip.neurogenesis(m, k, 1, optimizer=o),
    "neurodegeneration": lambda m, k, o: ip.neurodegeneration(m, k, 1, optimizer=o),
    "remove_neurons": lambda m, k, o: ip.remove_neurons(m, k, [0], optimizer=o),
    "set_width": lambda m, k, o: ip.set_width(m, k, 2, optimizer=o),
}
RESIDUAL_NAMES = ("'blocks.0.0', 'blocks.0.1', 'blocks.1.0', 'blocks.2.0', 'blocks.2.1', "
                  "'blocks.2.2'")


def trained_fixed_stack() -> tuple[ResidualStack, torch.optim.Optimizer]:
    model = fixed_residual_stack()
    opt = make_optimizer(model, "adamw")
    fill_optimizer(model, opt, model.probe())
    return model, opt


@pytest.mark.parametrize("op", list(NAMED_OPS))
@pytest.mark.parametrize("k", [0, 1])
def test_an_int_on_a_composite_model_is_refused_listing_the_names(op, k):
    model, opt = trained_fixed_stack()
    snap = snapshot(model, opt)
    with pytest.raises(ip.TopologyError, match=(
            rf"{op}: k={k} addresses a hidden layer of a bare isoplastic block, but ResidualStack "
            rf"is a composite model; name the space instead, one of {RESIDUAL_NAMES}$")):
        NAMED_OPS[op](model, k, opt)
    assert_identical(snap, model, opt)


# "blocks.0.01" resolves to space "blocks.0.1" (and is recorded under the wrong name); only the
# names hidden_spaces lists are names.
UNKNOWN = ["blocks.3.0", "blocks.0.2", "blocks.0", "blocks", "0", "inp.0", "mids.0.0",
           "blocks.0.-1", "blocks.0.01", "blocks.0.１", "", ".blocks.0.0", "blocks.0.0 "]


@pytest.mark.parametrize("op", list(NAMED_OPS))
@pytest.mark.parametrize("name", UNKNOWN, ids=repr)
def test_an_unknown_name_is_refused_listing_the_names(op, name):
    model, opt = trained_fixed_stack()
    snap = snapshot(model, opt)
    with pytest.raises(ip.TopologyError, match=(
            rf"{op}: no hidden space named {name!r} in ResidualStack; its hidden spaces are "
            rf"{RESIDUAL_NAMES}$")):
        NAMED_OPS[op](model, name, opt)
    assert_identical(snap, model, opt)


MODEL_OPS = {
    **NAMED_OPS,
    "sparsify": lambda m, k, o: ip.sparsify(m, optimizer=o),
    "neuroadapt": lambda m, k, o: ip.neuroadapt(m, 2, 0.1, optimizer=o),
    "compile_sparse": lambda m, k, o: compile_sparse(m),
    "add_inputs": lambda m, k, o: ip.add_inputs(m, 1, optimizer=o),
    "remove_outputs": lambda m, k, o: ip.remove_outputs(m, [0], optimizer=o),
}


@pytest.mark.parametrize("op", list(MODEL_OPS))
@pytest.mark.parametrize("key", [0, "0"], ids=repr)
def test_a_model_without_blocks_is_refused(op, key):
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    opt = make_optimizer(model, "adamw")
    fill_optimizer(model, opt, torch.randn(5, 3, dtype=torch.float64))
    snap = snapshot(model, opt)
    with pytest.raises(ip.TopologyError, match=rf"{op}: Sequential does not declare hidden spaces"):
        MODEL_OPS[op](model, key, opt)
    assert_identical(snap, model, opt)
    assert ip.hidden_spaces(model) == {}
    with pytest.raises(ip.TopologyError, match="expected a torch.nn.Module .*; got int"):
        ip.hidden_spaces(42)


@pytest.mark.parametrize("op", ["add_inputs", "remove_outputs"])
def test_input_output_resizing_is_refused_on_a_composite_model(op):
    model, opt = trained_fixed_stack()
    snap = snapshot(model, opt)
    with pytest.raises(ip.TopologyError, match=rf"{op}: ResidualStack is a composite model"):
        MODEL_OPS[op](model, None, opt)
    assert_identical(snap, model, opt)


def test_sparsify_report_names_on_a_fixed_composite_and_indices_on_a_bare_block():
    model, opt = trained_fixed_stack()
    report = ip.sparsify(model, optimizer=opt)
    assert report.layers == ["blocks.0.1", "blocks.2.1"]  # blocks.1 has one hidden layer
    cnn = fixed_conv_then_mlp()
    # features: channel spaces 0 (3×3 into 1), 1 (1×1 into 2: diagonalisable), head layer 2;
    # head: 0, 1 (dense: diagonalisable)
    assert ip.sparsify(cnn).layers == ["features.1", "head.1"]
    bare = ip.IsotropicMLP([3, 4, 4, 4, 4, 2]).double()
    assert ip.sparsify(bare).layers == [1, 3]


def test_neuroadapt_names_on_a_fixed_composite():
    model, opt = trained_fixed_stack()
    # Strengths ≤ 0.05 are the zero padding of layers wider than their input (random weights have
    # no small singular value): blocks.0.0 (6 from 4) and blocks.2.2 (6 from 4) hold 2 = S,
    # blocks.2.0 (5 from 4) holds 1, the others 0. Growth appends neurons whose zero rows are
    # counted next time: one pass, blocks last to first, each block from its last layer.
    changes = ip.neuroadapt(model, 2, 0.05, optimizer=opt)
    assert [(c.space, c.op, c.n) for c in changes] == [
        ("blocks.2.1", "neurogenesis", 2), ("blocks.2.0", "neurogenesis", 1),
        ("blocks.1.0", "neurogenesis", 2), ("blocks.0.1", "neurogenesis", 2)]
    assert [c.layer for c in changes] == [1, 0, 0, 1]


# -- float32: reported ----------------------------------------------------------------------------
F32_OPS = ["reparameterise", "left_diagonalise", "full_diagonalise", "neurogenesis",
           "neurodegeneration", "sparsify", "neuroadapt"]


@pytest.mark.parametrize("op", F32_OPS)
@pytest.mark.parametrize("arch", ["residual", "conv_mlp"])
def test_float32_composite_errors_are_reported(arch, op, record_property):
    """The float64 checks above, in float32: the worst relative output change over every space of
    the fixed composites, reported against FLOAT_TOLERANCE[float32] (not asserted; run with -s to
    see it). Asserted: the operation runs and leaves finite outputs."""
    tol = FLOAT_TOLERANCE[torch.float32]
    build = fixed_residual_stack if arch == "residual" else fixed_conv_then_mlp
    model = build(dtype=torch.float32)
    x = model.probe()
    opt = make_optimizer(model, "adamw")
    fill_optimizer(model, opt, x)
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    if op in ("sparsify", "neuroadapt"):
        names = [None]
    else:
        names = [n for n in ip.hidden_spaces(model) if applicable(op, model, n)]
    assert names
    for name in names:
        if op == "sparsify":
            def call(m):
                return ip.sparsify(m, optimizer=opt)
        elif op == "neuroadapt":
            def call(m):
                return ip.neuroadapt(m, 2, 0.05, optimizer=opt)
        else:
            if op == "neurodegeneration":
                silence(model, name, opt)
            call, _ = op_call(op, name, opt, model, gen)
        before = copy.deepcopy(model).eval()
        call(model)
        with torch.no_grad():
            ref, out = before(x), model(x)
        assert torch.isfinite(out).all()
        worst = max(worst, relative_change(ref, out))
    record_property("float32_relative_error", worst)
    print(f"\nfloat32 {arch} {op}: worst relative output change {worst:.2e} "
          f"({worst / tol:.2f} x FLOAT_TOLERANCE[float32] = {tol:.0e})")


def test_composite_builders_are_what_the_tests_claim():
    """The fixtures are not degenerate: biases, ψ and o non-zero, plain layers between blocks."""
    model = fixed_residual_stack()
    assert isinstance(model, ResidualStack) and isinstance(fixed_conv_then_mlp(), ConvThenMLP)
    for space in ip.hidden_spaces(model).values():
        for a in space.axes:
            if a.role in ("bias", "psi"):
                assert a.param.abs().min() > 0
    assert {b.psi_mode.value for b in model.blocks} == {"trainable", "expectation", "constant"}
    assert all(a.o > 0 for b in model.blocks for a in b.activations
               if a.mode.value != "none")
    assert sum(type(m) is nn.Linear for m in model.children()) == 2 and len(model.mids) == 3


# -- training across a shape change -----------------------------------------------------------------
SHAPE_CHANGES = {
    "neurogenesis": lambda m, o: ip.neurogenesis(m, "blocks.0.0", 2, optimizer=o),
    "neurodegeneration": lambda m, o: ip.neurodegeneration(m, "blocks.0.0", 1, optimizer=o),
    "remove_neurons": lambda m, o: ip.remove_neurons(m, "blocks.2.1", [0], optimizer=o),
    "set_width": lambda m, o: ip.set_width(m, "blocks.2.2", 3, optimizer=o),
}


@pytest.mark.parametrize("op", list(SHAPE_CHANGES))
def test_a_training_loop_that_holds_its_last_loss_survives_a_shape_change(op):
    """The usual loop ``for x in data: loss = f(model(x)); loss.backward(); opt.step()``, with a
    structural change between two steps, keeps the previous ``loss`` (and its autograd graph)
    alive while the next forward pass runs. The next backward must still work: the parameters'
    gradient accumulators must not keep the shapes from before the change."""
    model, opt = trained_fixed_stack()
    x = model.probe()
    opt.zero_grad()
    loss = loss_of(model, x)
    loss.backward()
    opt.step()
    SHAPE_CHANGES[op](model, opt)
    opt.zero_grad()
    loss = loss_of(model, x)  # the previous loss is released only after this line
    loss.backward()
    opt.step()
    for p in model.parameters():
        assert p.grad is None or p.grad.shape == p.shape


# Regression (found by these tests, fixed on main in 6401232): replace_values used
# torch.utils.swap_tensors, which refuses while a graph still holds the parameter as a saved
# tensor; the fallback ``t.data = new`` kept the cached gradient accumulator with the old shape
# and the next backward raised "Function TransposeBackward0 returned an invalid gradient".
@pytest.mark.parametrize("alive", ["unbackpropagated_output", "retained_graph"])
@pytest.mark.parametrize("op", ["neurogenesis", "neurodegeneration"])
def test_a_shape_change_while_an_older_graph_still_holds_the_parameters(op, alive):
    model, opt = trained_fixed_stack()
    x = model.probe()
    opt.zero_grad()
    if alive == "unbackpropagated_output":
        kept = model(x)  # e.g. outputs kept for logging, computed with autograd on
    else:
        kept = loss_of(model, x)
        kept.backward(retain_graph=True)
        opt.step()
    SHAPE_CHANGES[op](model, opt)
    opt.zero_grad()
    loss_of(model, x).backward()
    opt.step()
    assert kept is not None
