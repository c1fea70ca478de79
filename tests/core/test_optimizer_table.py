"""Every optimizer in ``SUPPORTED_OPTIMIZERS``, through everything that touches its state.

The cases are generated from the list itself: an optimizer added to it without an entry in
:data:`CONFIGS` gets a failing case, not a silently missing one. For each configuration:

* its state keys after a few real steps are exactly the ones torch 2.13 creates, all in the table;
* transport under a rotation (``reparameterise``), neurogenesis and neurodegeneration of an
  ``IsotropicMLP`` hidden layer, an ``IsotropicCNN`` channel space and three named spaces of the
  composite models of tests/core/composites.py (a block of a residual stack, the CNN feature
  extractor and the MLP head of a CNN→MLP model), float64, against a dense Kronecker reference
  (tests/reference.py): first moments move like the parameter, second moments by ``C∘C``, new
  coordinates get zeros, removed ones are dropped, ``keep`` scalars are unchanged, and the state
  of every other parameter (the user's own layers included) is bit-identical;
* a checkpoint round trip (``save_checkpoint`` / ``load_checkpoint``) restores every state tensor
  bit-identically, in an optimizer of the saved class;
* N steps, a structural change, save, load into fresh objects, M steps == N + M steps;
* the distributed digest and device move, without launching processes.
"""

from __future__ import annotations

import copy

import pytest
import torch
from composites import fixed_conv_then_mlp, fixed_residual_stack, loss_of
from reference import dense_rotation

import isoplastic as ip
from isoplastic.core import optim_state as ostate
from isoplastic.errors import OptimizerStateError
from isoplastic.nn.conv import IsotropicCNN
from isoplastic.testing import random_isotropic_mlp
from isoplastic.train import CheckpointError, TrainConfig, load_checkpoint
from isoplastic.train.checkpoint import load_optimizer_state, optimizer_tensors, save_checkpoint
from isoplastic.train.distributed import state_digest as arms_digest

DT = torch.float64
O = torch.optim
ADAM_KEYS = {"step", "exp_avg", "exp_avg_sq"}

# class -> [(constructor arguments, the state keys torch 2.13 creates for them)]
CONFIGS: dict[type, list[tuple[dict, set[str]]]] = {
    O.SGD: [({"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}, {"momentum_buffer"}),
            ({"lr": 0.05, "momentum": 0.9, "nesterov": True}, {"momentum_buffer"})],
    O.Adam: [({"lr": 1e-2}, ADAM_KEYS)],
    O.AdamW: [({"lr": 1e-2}, ADAM_KEYS),
              ({"lr": 1e-2, "amsgrad": True}, ADAM_KEYS | {"max_exp_avg_sq"})],
    O.RMSprop: [({"lr": 1e-2}, {"step", "square_avg"}),
                ({"lr": 1e-2, "centered": True, "momentum": 0.9},
                 {"step", "square_avg", "grad_avg", "momentum_buffer"})],
    O.Adagrad: [({"lr": 0.05}, {"step", "sum"})],
    O.NAdam: [({"lr": 1e-2}, ADAM_KEYS | {"mu_product"})],
    O.RAdam: [({"lr": 1e-2}, ADAM_KEYS)],
    O.Adadelta: [({"lr": 1.0}, {"step", "square_avg", "acc_delta"})],
}
BUILTIN_KINDS = dict(ostate.STATE_KINDS)  # before any test registers an optimizer


def _cases() -> list:
    out = []
    for cls in list(ostate.SUPPORTED_OPTIMIZERS):
        configs = CONFIGS.get(cls, [(None, set())])
        for i, (kw, keys) in enumerate(configs):
            out.append(pytest.param(cls, kw, keys, id=f"{cls.__name__}-{i}"))
    return out


CASES = _cases()


def _make(cls: type, kw: dict | None, params) -> torch.optim.Optimizer:
    if kw is None:
        pytest.fail(f"{cls.__name__} is in SUPPORTED_OPTIMIZERS but has no entry in CONFIGS of "
                    "tests/core/test_optimizer_table.py; add its constructor arguments and keys")
    return cls(params, **kw)


# -- networks and training -------------------------------------------------------------------

def _mlp(seed: int = 0) -> ip.IsotropicMLP:
    return random_isotropic_mlp([7, 5, 4, 3], "trainable", "trainable", seed=seed)


def _cnn(seed: int = 0) -> IsotropicCNN:
    """Channels 4 → 5 → 3 of 3×3 kernels, ψ trainable, every parameter random (float64)."""
    g = torch.Generator().manual_seed(seed)
    net = IsotropicCNN((2, 5, 5), [4, 5, 3], [3, 3, 3], head=[], n_classes=3,
                       intrinsic_length="trainable", psi="trainable", generator=g).to(DT)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=DT))
    return net


def _batch(net, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed batch of training step ``step`` (independent of everything but the index)."""
    g = torch.Generator().manual_seed(1000 + step)
    shape = (8, 2, 5, 5) if isinstance(net, IsotropicCNN) else (8, 7)
    return torch.randn(shape, generator=g, dtype=DT), torch.randint(0, 3, (8,), generator=g)


def _steps(net, opt, first: int, n: int) -> None:
    for s in range(first, first + n):
        opt.zero_grad()
        if isinstance(net, ip.IsoplasticBlock):
            x, y = _batch(net, s)
            (torch.nn.functional.cross_entropy(net(x), y) + net.psi_penalty()).backward()
        else:  # a composite model of tests/core/composites.py: its own probe and loss
            loss_of(net, net.probe(seed=1000 + s)).backward()
        opt.step()


def _state(opt) -> dict:
    return {p: {k: v.clone() for k, v in opt.state[p].items()} for p in opt.state}


# -- the table covers torch's keys -----------------------------------------------------------

def test_every_supported_optimizer_has_a_configuration():
    missing = [c.__name__ for c in ostate.SUPPORTED_OPTIMIZERS if c not in CONFIGS]
    assert not missing, f"add {missing} to CONFIGS"


def test_configurations_exercise_every_key_of_the_table():
    used = set().union(*(keys for configs in CONFIGS.values() for _, keys in configs))
    assert used == set(BUILTIN_KINDS)


@pytest.mark.parametrize(("cls", "kw", "keys"), CASES)
def test_state_keys_after_real_steps_are_known_and_classified(cls, kw, keys):
    net = _mlp()
    opt = _make(cls, kw, net.parameters())
    _steps(net, opt, 0, 2)
    for p in net.parameters():
        assert set(opt.state[p]) == keys, f"{cls.__name__} now creates {set(opt.state[p])}"
        for key, value in opt.state[p].items():
            if ostate.STATE_KINDS[key] == ostate.KEEP:  # a scalar, whatever the parameter
                assert value.dim() == 0, key
            else:  # per element (also for the 0-dim intrinsic lengths o)
                assert value.shape == p.shape and value.dtype == p.dtype, key


# -- transport against the dense reference ---------------------------------------------------

def _dense_along(t: torch.Tensor, dim: int, c: torch.Tensor) -> torch.Tensor:
    """``t ×_dim c`` (``c``: (n_old, n_new)) by the reference's Kronecker matrix, any rank."""
    moved = t.movedim(dim, 0)
    flat = moved.reshape(moved.shape[0], -1)
    m = dense_rotation(tuple(flat.shape), 0, c)
    return (m @ flat.reshape(-1)).reshape(c.shape[1], *moved.shape[1:]).movedim(0, dim)


def _axes(model, key: int | str) -> list[tuple[torch.Tensor, int]]:
    """(parameter, axis) pairs of hidden space ``key``, written out from the architecture: an
    index of a bare block, or a composite's space name ``"<block path>.<k>"``."""
    net, k = (model, key) if isinstance(key, int) else \
        (model.get_submodule(key.rpartition(".")[0]), int(key.rpartition(".")[2]))
    layers = net.convs if isinstance(net, IsotropicCNN) else net.linears
    out = [(layers[k].weight, 0), (layers[k].bias, 0)]
    if len(net.psi) and k >= 1:
        out.append((net.psi[k - 1], 0))
    return [*out, (layers[k + 1].weight, 1)]


def _coordinate_map(w_old: torch.Tensor, w_new: torch.Tensor, n: int) -> torch.Tensor:
    """``C`` (n_old, n) with ``W_new[:n] = Cᵀ W_old`` (the incoming weight, rows = coordinates,
    full row rank), recovered with the pseudo-inverse: the map the operation applied."""
    a, b = w_old.reshape(w_old.shape[0], -1), w_new.reshape(w_new.shape[0], -1)[:n]
    c = (b @ torch.linalg.pinv(a)).T
    assert torch.allclose(c.T @ c, torch.eye(n, dtype=DT), atol=1e-10)  # orthonormal columns
    return c


# model -> (builder, the hidden space operated on). The composite spaces each have a ψ axis or a
# kernel coupling of their own: blocks.0.1 (6 → 5 inside a residual block, ψ trainable),
# features.0 (3×3 conv channels read by a 1×1 conv), head.1 (the MLP head's second space, ψ).
NETS = {"mlp": (_mlp, 1), "cnn": (_cnn, 1),
        "residual": (fixed_residual_stack, "blocks.0.1"),
        "conv_mlp-features": (fixed_conv_then_mlp, "features.0"),
        "conv_mlp-head": (fixed_conv_then_mlp, "head.1")}


@pytest.mark.parametrize(("cls", "kw", "keys"), CASES)
@pytest.mark.parametrize("net_kind", list(NETS))
@pytest.mark.parametrize("op", ["rotate", "grow", "shrink"])
def test_transport_matches_dense_reference(cls, kw, keys, net_kind, op):
    make, k = NETS[net_kind]
    net = make()
    opt = _make(cls, kw, net.parameters())
    _steps(net, opt, 0, 3)
    axes = _axes(net, k)
    before, params = _state(opt), {p: p.detach().clone() for p in net.parameters()}
    w_in = axes[0][0]
    n_old = w_in.shape[0]
    r = ip.random_orthogonal(n_old, generator=torch.Generator().manual_seed(5))
    if op == "rotate":
        ip.reparameterise(net, k, r, optimizer=opt)
    elif op == "grow":
        ip.neurogenesis(net, k, 2, optimizer=opt, generator=torch.Generator().manual_seed(6))
    else:
        ip.neurodegeneration(net, k, 2, optimizer=opt)
    n_new = w_in.shape[0]
    kept = min(n_old, n_new)
    c = _coordinate_map(params[w_in], w_in.detach(), kept)
    if op == "rotate":
        assert torch.allclose(c, r, atol=1e-12)

    def close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        err = float((actual - expected).abs().max()) if expected.numel() else 0.0
        assert err <= 1e-12 * max(scale, 1e-300), f"{what}: error {err:.1e} at scale {scale:.1e}"

    on_axes = {p for p, _ in axes}
    for p, dim in axes:
        old = p.detach().narrow(dim, 0, kept)
        if p is not w_in:  # the parameter itself moved by the same map (w_in defined it)
            close(old, _dense_along(params[p], dim, c), f"parameter {tuple(p.shape)}")
        assert set(opt.state[p]) == set(before[p])
        for key, value in opt.state[p].items():
            kind = ostate.STATE_KINDS[key]
            if kind == ostate.KEEP:
                assert torch.equal(value, before[p][key]), key
                continue
            assert value.shape == p.shape, key
            cc = c * c if kind == ostate.SECOND else c
            close(value.narrow(dim, 0, kept), _dense_along(before[p][key], dim, cc),
                  f"{key} of {tuple(p.shape)} along {dim}")
            if n_new > kept:  # newborns start at zero (newborn="zero", the default)
                assert bool((value.narrow(dim, kept, n_new - kept) == 0).all()), key
    for p in net.parameters():  # state outside the space is bit-identical (values may compensate)
        if p not in on_axes:  # (a frozen parameter, e.g. a constant ψ, has no state at all)
            state, old = opt.state.get(p, {}), before.get(p, {})
            assert set(state) == set(old)
            assert all(torch.equal(v, old[key]) for key, v in state.items())


# -- checkpoints -----------------------------------------------------------------------------

CONFIG = TrainConfig(dtype="float64", widths=[5, 4])


def _changed_mlp(cls, kw) -> tuple[ip.IsotropicMLP, torch.optim.Optimizer]:
    net = _mlp(seed=1)
    opt = _make(cls, kw, net.parameters())
    _steps(net, opt, 0, 2)
    ip.neurogenesis(net, 1, 2, optimizer=opt, generator=torch.Generator().manual_seed(0))
    ip.neurodegeneration(net, 0, 1, optimizer=opt)
    _steps(net, opt, 2, 1)
    return net, opt


def _assert_same_optimizer(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    assert type(a) is type(b)
    pa, pb = ostate.optimizer_params(a), ostate.optimizer_params(b)
    assert [p.shape for p in pa] == [p.shape for p in pb]
    for x, y in zip(pa, pb, strict=True):
        assert a.state[x].keys() == b.state[y].keys()
        for key in a.state[x]:
            u, v = a.state[x][key], b.state[y][key]
            assert u.dtype == v.dtype and u.device == v.device and torch.equal(u, v), key
    for ga, gb in zip(a.param_groups, b.param_groups, strict=True):
        assert {k: v for k, v in ga.items() if k != "params"} == \
            {k: v for k, v in gb.items() if k != "params"}
    assert a.defaults == b.defaults


@pytest.mark.parametrize(("cls", "kw", "keys"), CASES)
def test_checkpoint_round_trip_restores_every_state_tensor(tmp_path, cls, kw, keys):
    net, opt = _changed_mlp(cls, kw)
    save_checkpoint(tmp_path, CONFIG, 1, {"adaptive": net}, {"adaptive": opt})
    ckpt = load_checkpoint(tmp_path)
    loaded = ckpt.optimizers["adaptive"]
    _assert_same_optimizer(opt, loaded)
    assert ostate.optimizer_params(loaded) == list(ckpt.nets["adaptive"].parameters())
    assert set().union(*(opt.state[p].keys() for p in opt.state)) == keys


@pytest.mark.parametrize(("cls", "kw", "keys"), CASES)
def test_resume_after_structural_change_is_bit_identical(tmp_path, cls, kw, keys):
    net, opt = _changed_mlp(cls, kw)
    save_checkpoint(tmp_path, CONFIG, 1, {"adaptive": net}, {"adaptive": opt})
    ckpt = load_checkpoint(tmp_path)
    net2, opt2 = ckpt.nets["adaptive"], ckpt.optimizers["adaptive"]
    _steps(net, opt, 3, 3)  # uninterrupted
    _steps(net2, opt2, 3, 3)  # resumed from fresh objects
    assert net.widths == net2.widths == [7, 4, 6, 3]
    for (name, p), q in zip(net.named_parameters(), net2.parameters(), strict=True):
        assert torch.equal(p, q), name
    _assert_same_optimizer(opt, opt2)


def test_saved_state_with_wrong_shape_is_a_checkpoint_error_and_changes_nothing():
    net, opt = _changed_mlp(O.NAdam, CONFIGS[O.NAdam][0][0])
    tensors, meta = optimizer_tensors(opt)
    assert tensors["optim.0.mu_product"].shape == ()  # the scalar that used to be refused
    target = copy.deepcopy(opt)
    before = _state(target)
    bad = dict(tensors) | {"optim.0.exp_avg": torch.zeros(2, 2, dtype=DT)}
    with pytest.raises(CheckpointError, match=r"optim\.0\.exp_avg has shape \(2, 2\)"):
        load_optimizer_state(target, bad, meta)
    assert all(torch.equal(v, before[p][k]) for p in before for k, v in target.state[p].items())


# -- load validation -------------------------------------------------------------------------

def _corrupt(tensors: dict, case: str, bias: int) -> dict:
    """``tensors`` with one defect; ``bias``: position of a (5,)-shaped parameter."""
    t = dict(tensors)
    if case == "unknown key":
        t["0.mystery"] = torch.zeros(())
    elif case == "shape":
        t[f"{bias}.exp_avg"] = t[f"{bias}.exp_avg"][:1]
    elif case == "scalar shape":
        t["0.step"] = torch.zeros(2)
    elif case == "dtype":
        t["0.exp_avg_sq"] = t["0.exp_avg_sq"].float()
    elif case == "index":
        t["99.exp_avg"] = t["0.exp_avg"]
    elif case == "name":
        t["exp_avg"] = t["0.exp_avg"]
    return t


@pytest.mark.parametrize(("case", "error", "match"), [
    ("unknown key", ip.UnsupportedOptimizerError, "'mystery'.*register_optimizer"),
    ("shape", OptimizerStateError, r"\d\.exp_avg has shape \(1,\) but its parameter has \(5,\)"),
    ("scalar shape", OptimizerStateError, "kind 'keep'.*0-dim"),
    ("dtype", OptimizerStateError, "dtype torch.float32 but its parameter has torch.float64"),
    ("index", OptimizerStateError, "parameter 99.*has 10 parameters"),
    ("name", OptimizerStateError, "not '<parameter index>.<state key>'"),
])
def test_load_state_tensors_validates_everything_first(case, error, match):
    net = _mlp()
    opt = O.Adam(net.parameters(), lr=1e-2)
    _steps(net, opt, 0, 2)
    tensors, meta = ostate.state_tensors(opt), ostate.state_meta(opt)
    other = _mlp(seed=3)
    target = O.Adam(other.parameters(), lr=0.5)
    _steps(other, target, 0, 1)
    before, lr = _state(target), target.param_groups[0]["lr"]
    bias = next(i for i, p in enumerate(ostate.optimizer_params(opt)) if p is net.linears[0].bias)
    with pytest.raises(error, match=match):
        ostate.load_state_tensors(target, _corrupt(tensors, case, bias), meta)
    assert target.param_groups[0]["lr"] == lr  # hyper-parameters untouched too
    assert all(torch.equal(v, before[p][k]) for p in before for k, v in target.state[p].items())


def test_load_refuses_another_class_and_unsupported_optimizers():
    net = _mlp()
    opt = O.NAdam(net.parameters())
    _steps(net, opt, 0, 1)
    with pytest.raises(OptimizerStateError, match="saved optimizer is 'NAdam', not Adam"):
        ostate.load_state_tensors(O.Adam(net.parameters()), ostate.state_tensors(opt),
                                  ostate.state_meta(opt))
    with pytest.raises(ip.UnsupportedOptimizerError, match="Adamax.*register_optimizer"):
        ostate.state_tensors(O.Adamax(net.parameters()))
    meta = ostate.state_meta(opt) | {"class": "LBFGS"}
    with pytest.raises(ip.UnsupportedOptimizerError, match="'LBFGS' is not supported"):
        ostate.optimizer_from_meta(list(net.parameters()), meta)


def test_plain_number_scalars_round_trip_and_absent_buffers_are_skipped():
    net = _mlp()
    opt = O.SGD(net.parameters(), lr=0.1, momentum=0.9)
    _steps(net, opt, 0, 1)
    first, last = ostate.optimizer_params(opt)[0], ostate.optimizer_params(opt)[-1]
    opt.state[first]["step"] = 3  # a 'keep' value held as a Python number
    opt.state[last]["momentum_buffer"] = None  # not created yet
    tensors, meta = ostate.state_tensors(opt), ostate.state_meta(opt)
    assert meta["scalars"] == {"0": {"step": 3}} and "9.momentum_buffer" not in tensors
    twin = O.SGD(copy.deepcopy(net).parameters())
    ostate.load_state_tensors(twin, tensors, meta)
    twin_first = ostate.optimizer_params(twin)[0]
    assert twin.state[twin_first]["step"] == 3 and twin.param_groups[0]["momentum"] == 0.9
    opt.state[first]["step"] = "3"
    with pytest.raises(OptimizerStateError, match="0.step is a str"):
        ostate.state_tensors(opt)


def test_optimizer_from_meta_splits_groups_and_restores_hyper_parameters():
    net = _mlp()
    params = list(net.parameters())
    opt = O.RMSprop([{"params": params[:3], "lr": 0.1}, {"params": params[3:], "momentum": 0.5}],
                    lr=0.01, centered=True)
    rebuilt = ostate.optimizer_from_meta(params, ostate.state_meta(opt))
    assert type(rebuilt) is O.RMSprop
    assert [[id(p) for p in g["params"]] for g in rebuilt.param_groups] == \
        [[id(p) for p in g["params"]] for g in opt.param_groups]
    _assert_same_optimizer(opt, rebuilt)
    with pytest.raises(OptimizerStateError, match="groups of"):
        ostate.optimizer_from_meta(params[:-1], ostate.state_meta(opt))
    opt.param_groups[1]["lr"] = torch.tensor(0.1)  # JSON could not hold it exactly
    with pytest.raises(OptimizerStateError, match="parameter group 1 has lr=Tensor"):
        ostate.state_meta(opt)


# -- distributed helpers (no processes) --------------------------------------------------------

@pytest.mark.parametrize(("cls", "kw", "keys"), CASES)
def test_state_digest_sees_every_state_entry_and_hyper_parameter(cls, kw, keys):
    net = _mlp()
    opt = _make(cls, kw, net.parameters())
    _steps(net, opt, 0, 2)
    twin = _make(cls, kw, copy.deepcopy(net).parameters())
    ostate.load_state_tensors(twin, ostate.state_tensors(opt), ostate.state_meta(opt))
    d0 = ostate.state_digest(opt)
    assert d0 == ostate.state_digest(twin) and len(d0) == 32
    for p in list(opt.state)[:2]:
        for key, value in opt.state[p].items():
            old = value.clone()
            flat = value.view(-1)
            flat[0] = torch.nextafter(flat[0], flat[0] + 1)  # one ulp of one entry
            assert ostate.state_digest(opt) != d0, key
            value.copy_(old)
    assert ostate.state_digest(opt) == d0
    opt.param_groups[0]["lr"] *= 1.5
    assert ostate.state_digest(opt) != d0


def test_arms_digest_includes_the_optimizer_scalars():
    net = _mlp()
    opt = O.NAdam(net.parameters())
    _steps(net, opt, 0, 2)
    d0 = arms_digest({"adaptive": net}, {"adaptive": opt})
    p = next(iter(opt.state))
    opt.state[p]["mu_product"] *= 1.0 + 1e-6
    assert arms_digest({"adaptive": net}, {"adaptive": opt}) != d0


@pytest.mark.parametrize("capturable", [False, True])
def test_move_state_moves_moments_and_keeps_scalars_by_torch_rule(capturable):
    net = _mlp()
    opt = O.NAdam(net.parameters())
    _steps(net, opt, 0, 1)
    opt.param_groups[0]["capturable"] = capturable
    ostate.move_state(opt, "meta")  # a device that exists on every machine
    for state in opt.state.values():
        for key, value in state.items():
            scalar = ostate.STATE_KINDS[key] == ostate.KEEP
            expected = "cpu" if scalar and not capturable else "meta"
            assert value.device.type == expected, key


@pytest.mark.parametrize("capturable", [False, True])
def test_load_places_state_by_the_loaded_groups(capturable):
    net = _mlp()
    opt = O.NAdam(net.parameters())
    _steps(net, opt, 0, 1)
    opt.param_groups[0]["capturable"] = capturable
    params = [torch.nn.Parameter(torch.empty_like(p, device="meta")) for p in net.parameters()]
    target = O.NAdam(params)  # built with capturable=False; the saved groups decide
    ostate.load_state_tensors(target, ostate.state_tensors(opt), ostate.state_meta(opt))
    assert target.param_groups[0]["capturable"] is capturable
    for state in target.state.values():
        for key, value in state.items():
            scalar = ostate.STATE_KINDS[key] == ostate.KEEP
            assert value.device.type == ("cpu" if scalar and not capturable else "meta"), key


def test_move_state_refuses_an_unknown_key_before_moving_anything():
    net = _mlp()
    opt = O.Adam(net.parameters())
    _steps(net, opt, 0, 1)
    opt.state[net.linears[-1].bias]["mystery"] = torch.zeros(3, dtype=DT)
    with pytest.raises(ip.UnsupportedOptimizerError, match="'mystery'"):
        ostate.move_state(opt, "meta")
    assert all(v.device.type == "cpu" for s in opt.state.values() for v in s.values())
