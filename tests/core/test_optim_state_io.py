"""Optimizer-state I/O (core/optim_state.py): every refusal names the optimizer, the entry and the
fix; loading without metadata, with per-group lists and with restored defaults; the digest's
inputs; a ``None`` buffer skips only itself.

Written for the survivors of ``make mutate`` on ``core/optim_state.py``: each test states a
property of the documented behaviour (the refusal's whole message is part of it: bad input must
name the problem and its fix), not the text of a mutant.
"""

from __future__ import annotations

import copy

import pytest
import torch

import isoplastic as ip
from isoplastic.core import optim_state as ostate
from isoplastic.errors import NonFiniteError, OptimizerStateError, UnsupportedOptimizerError
from isoplastic.testing import random_isotropic_mlp

O = torch.optim
REGISTER = "isoplastic.register_optimizer(cls, {{{}: 'first' | 'second' | 'keep'}})"


def _mlp(seed: int = 0):
    return random_isotropic_mlp([4, 3, 2], "trainable", "trainable", seed=seed)


def _trained(cls=O.Adam, seed: int = 0, **kw):
    net = _mlp(seed)
    opt = cls(net.parameters(), **({"lr": 1e-2} | kw))
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for _ in range(2):
        opt.zero_grad()
        (net(x).square().mean() + net.psi_penalty()).backward()
        opt.step()
    return net, opt


def _supported() -> str:
    return ", ".join(c.__name__ for c in ostate.SUPPORTED_OPTIMIZERS)


def _raises(error: type, message: str, fn, *args, **kw) -> None:
    """``fn(*args, **kw)`` raises ``error`` with exactly ``message``."""
    with pytest.raises(error) as info:
        fn(*args, **kw)
    assert str(info.value) == message


# -- refusals name the optimizer, the entry and the fix -----------------------------------------

def test_unsupported_class_is_named_with_the_supported_list_and_the_fix():
    net = _mlp()
    opt = O.Adamax(net.parameters())
    expected = (f"isoplastic cannot save, load, hash or move the state of Adamax; supported "
                f"optimizers: {_supported()}. Register a new one with "
                + REGISTER.format("state_key"))
    for fn in (ostate.state_tensors, ostate.state_digest):
        _raises(UnsupportedOptimizerError, expected, fn, opt)
    _raises(UnsupportedOptimizerError, expected, ostate.load_state_tensors, opt, {})
    assert ", " in _supported() and "SGD" in _supported() and "Adadelta" in _supported()


@pytest.mark.parametrize("with_optimizer", [True, False])
def test_unknown_key_names_its_owner_and_the_fix(with_optimizer):
    net, opt = _trained()
    owner = "Adam" if with_optimizer else "the optimizer"
    expected = (f"{owner} holds state 'mystery', whose kind is unknown; classify it with "
                + REGISTER.format("key"))
    _raises(UnsupportedOptimizerError, expected, ostate.state_kind, "mystery",
            opt if with_optimizer else None)
    if with_optimizer:  # the same words from saving and loading
        first = ostate.optimizer_params(opt)[0]
        opt.state[first]["mystery"] = torch.zeros(())
        _raises(UnsupportedOptimizerError, expected, ostate.state_tensors, opt)
        del opt.state[first]["mystery"]
        _raises(UnsupportedOptimizerError, expected, ostate.load_state_tensors, opt,
                {"0.mystery": torch.zeros(())})


def test_wrong_shapes_and_types_are_refused_naming_class_entry_and_cause():
    net, opt = _trained()
    first = ostate.optimizer_params(opt)[0]  # linears[0].weight, (3, 4)
    state = opt.state[first]
    step, exp_avg = state["step"], state["exp_avg"]
    state["step"] = torch.zeros(2)
    _raises(OptimizerStateError,
            "Adam state 0.step has shape (2,), but its key is of kind 'keep' (a scalar that no "
            "change of basis touches), which must be 0-dim; the state was made by a different "
            "optimizer or the key is misclassified", ostate.state_tensors, opt)
    state["step"], state["exp_avg"] = step, exp_avg[:1]
    _raises(OptimizerStateError,
            "Adam state 0.exp_avg has shape (1, 4) but its parameter has (3, 4); per-element "
            "state ('first' moment) must have the parameter's shape - the state belongs to other "
            "parameters or other widths", ostate.state_tensors, opt)
    state["exp_avg"], state["step"] = exp_avg, "2"
    _raises(OptimizerStateError,
            "Adam state 0.step is a str; only tensors and, for 'keep' keys, plain numbers can be "
            "saved", ostate.state_tensors, opt)
    state["step"] = step
    tensors = ostate.state_tensors(opt) | {"0.exp_avg": exp_avg.float()}
    _raises(OptimizerStateError,
            "Adam state 0.exp_avg has dtype torch.float32 but its parameter has torch.float64; "
            "convert the model and the state to one dtype before loading",
            ostate.load_state_tensors, opt, tensors)


def test_hyper_parameters_json_cannot_hold_are_refused_wherever_they_sit():
    net, opt = _trained(O.RMSprop)
    opt.param_groups[0]["lr"] = torch.tensor(0.1)
    _raises(OptimizerStateError,
            "RMSprop parameter group 0 has lr=Tensor; saved hyper-parameters must be numbers, "
            "strings, None or tuples of them (e.g. a float learning rate, not a tensor)",
            ostate.state_meta, opt)
    opt.param_groups[0]["lr"] = 0.1
    opt.defaults["alpha"] = torch.tensor(0.9)
    with pytest.raises(OptimizerStateError, match="^RMSprop defaults has alpha=Tensor; "):
        ostate.state_meta(opt)
    opt.defaults["alpha"] = (0.9, torch.tensor(0.1))  # inside a tuple too
    with pytest.raises(OptimizerStateError, match="^RMSprop defaults has alpha=tuple; "):
        ostate.state_meta(opt)
    opt.defaults["alpha"] = (0.9, (None, "x", True, 2))  # nested plain values are fine
    assert ostate.state_meta(opt)["defaults"]["alpha"] == (0.9, (None, "x", True, 2))


def test_load_refusals_name_the_saved_class_and_the_group_sizes():
    net, opt = _trained(O.NAdam)
    tensors, meta = ostate.state_tensors(opt), ostate.state_meta(opt)
    _raises(OptimizerStateError,
            "the saved optimizer is 'NAdam', not Adam; build a NAdam (or use optimizer_from_meta)",
            ostate.load_state_tensors, O.Adam(net.parameters()), tensors, meta)
    params = list(net.parameters())
    split = O.NAdam([{"params": params[:2]}, {"params": params[2:]}])
    _raises(OptimizerStateError,
            f"the saved NAdam has parameter groups of sizes [{len(params)}] but this one has "
            f"[2, {len(params) - 2}]; build it over the same parameters in the same groups",
            ostate.load_state_tensors, split, tensors, meta)
    with pytest.raises(OptimizerStateError,
                       match=r"^the saved NAdam has parameter groups of sizes \[\d+\], but "
                             r"\[2, \d+\] were given$"):
        ostate.optimizer_from_meta([params[:2], params[2:]], meta)


@pytest.mark.parametrize("name", ["exp_avg", "a.exp_avg", "-1.exp_avg", "0.", "1"])
def test_every_malformed_state_name_is_an_optimizer_state_error(name):
    net, opt = _trained()
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(OptimizerStateError, match="is not '<parameter index>.<state key>'"):
        ostate.load_state_tensors(opt, {name: torch.zeros(())})
    assert str(opt.state_dict()) == str(before)


def test_a_parameter_index_one_past_the_end_is_refused():
    net, opt = _trained()
    n = len(ostate.optimizer_params(opt))
    with pytest.raises(OptimizerStateError,
                       match=f"is for parameter {n}, but the Adam has {n} parameters"):
        ostate.load_state_tensors(opt, {f"{n}.step": torch.zeros(())})


def test_a_number_for_a_per_element_key_is_refused():
    net, opt = _trained()
    meta = ostate.state_meta(opt) | {"scalars": {"0": {"exp_avg": 1.0}}}
    _raises(OptimizerStateError,
            "optimizer state 0.exp_avg is a number, but 'exp_avg' is a per-element ('first') key",
            ostate.load_state_tensors, opt, ostate.state_tensors(opt), meta)


# -- what loading restores ----------------------------------------------------------------------

def test_loading_without_metadata_sets_the_state_and_keeps_the_hyper_parameters():
    net, opt = _trained(O.Adam, lr=1e-2)
    twin = O.Adam(copy.deepcopy(net).parameters(), lr=0.5, betas=(0.8, 0.9))
    ostate.load_state_tensors(twin, ostate.state_tensors(opt))
    assert twin.param_groups[0]["lr"] == 0.5 and twin.defaults["betas"] == (0.8, 0.9)
    for p, q in zip(ostate.optimizer_params(opt), ostate.optimizer_params(twin), strict=True):
        assert opt.state[p].keys() == twin.state[q].keys()
        assert all(torch.equal(v, twin.state[q][k]) for k, v in opt.state[p].items())


def test_loading_with_metadata_restores_defaults_and_groups():
    net, opt = _trained(O.Adam, lr=1e-2, betas=(0.8, 0.95), weight_decay=1e-3)
    twin = O.Adam(copy.deepcopy(net).parameters(), lr=0.5)
    ostate.load_state_tensors(twin, ostate.state_tensors(opt), ostate.state_meta(opt))
    assert twin.defaults == opt.defaults
    assert twin.param_groups[0]["betas"] == (0.8, 0.95)  # a JSON list back to a tuple


def test_optimizer_from_meta_takes_one_list_per_group_as_well_as_a_flat_list():
    net = _mlp()
    params = list(net.parameters())
    opt = O.SGD([{"params": params[:3], "lr": 0.1}, {"params": params[3:], "momentum": 0.5}],
                lr=0.01, momentum=0.9)
    meta = ostate.state_meta(opt)
    by_group = ostate.optimizer_from_meta([params[:3], params[3:]], meta)
    flat = ostate.optimizer_from_meta(params, meta)
    for rebuilt in (by_group, flat):
        assert [len(g["params"]) for g in rebuilt.param_groups] == [3, len(params) - 3]
        assert [g["momentum"] for g in rebuilt.param_groups] == [0.9, 0.5]
        assert rebuilt.defaults == opt.defaults


def test_a_none_buffer_is_skipped_alone():
    net, opt = _trained(O.Adam)
    first = ostate.optimizer_params(opt)[0]
    opt.state[first]["exp_avg"] = None
    names = set(ostate.state_tensors(opt))
    assert "0.exp_avg" not in names and {"0.exp_avg_sq", "0.step"} <= names


# -- the digest ------------------------------------------------------------------------------

def test_digest_tells_classes_apart_even_with_equal_groups_and_state():
    net = _mlp()
    adam = O.Adam(net.parameters(), decoupled_weight_decay=True, weight_decay=1e-2)
    adamw = O.AdamW(net.parameters())
    assert adam.param_groups[0].keys() == adamw.param_groups[0].keys()
    assert ostate.state_digest(adam) != ostate.state_digest(adamw)


def test_digest_ignores_parameter_values_and_sees_plain_number_scalars():
    net, opt = _trained(O.SGD, momentum=0.9)
    d0 = ostate.state_digest(opt)
    with torch.no_grad():
        net.linears[0].weight.add_(1.0)  # the parameters are not part of the optimizer's state
    assert ostate.state_digest(opt) == d0
    first = ostate.optimizer_params(opt)[0]
    opt.state[first]["step"] = 3
    d3 = ostate.state_digest(opt)
    opt.state[first]["step"] = 4
    assert d3 != d0 and ostate.state_digest(opt) != d3


# -- registering an optimizer -------------------------------------------------------------------

def test_register_optimizer_makes_a_class_transportable_by_its_kinds(monkeypatch):
    monkeypatch.setattr(ostate, "SUPPORTED_OPTIMIZERS", list(ostate.SUPPORTED_OPTIMIZERS))
    monkeypatch.setattr(ostate, "STATE_KINDS", dict(ostate.STATE_KINDS))
    with pytest.raises(ValueError, match=r"^state kind 'third' for key 'exp_inf'; use 'first', "
                                         r"'second' or 'keep'$"):
        ostate.register_optimizer(O.Adamax, {"exp_inf": "third"})
    assert O.Adamax not in ostate.SUPPORTED_OPTIMIZERS
    for _ in range(2):  # registering twice lists the class once
        ostate.register_optimizer(O.Adamax, {"exp_avg": "first", "exp_inf": "second",
                                             "step": "keep"})
    assert ostate.SUPPORTED_OPTIMIZERS.count(O.Adamax) == 1
    assert ostate.STATE_KINDS["exp_inf"] == "second"
    net, opt = _trained(O.Adamax)
    w = net.linears[0].weight
    before = {k: v.clone() for k, v in opt.state[w].items()}
    r = ip.random_orthogonal(3, generator=torch.Generator().manual_seed(0))
    ip.reparameterise(net, 0, r, opt)  # W_0 ← Rᵀ W_0: its rows are the space's coordinates
    assert torch.allclose(opt.state[w]["exp_avg"], r.T @ before["exp_avg"], atol=1e-14)
    assert torch.allclose(opt.state[w]["exp_inf"], (r * r).T @ before["exp_inf"], atol=1e-14)
    assert torch.equal(opt.state[w]["step"], before["step"])
    assert "0.exp_inf" in ostate.state_tensors(opt)


# -- transport refusals and low-precision contraction --------------------------------------------

def test_transport_refusals_name_the_optimizer_the_key_the_shapes_and_the_fix():
    net, opt = _trained()
    first = ostate.optimizer_params(opt)[0]  # linears[0].weight, (3, 4)
    r = torch.eye(3, dtype=torch.float64)
    cases = [
        ("mystery", torch.zeros(3, 4, dtype=torch.float64), UnsupportedOptimizerError,
         "Adam holds state 'mystery', whose transport is unknown; classify it with "
         + REGISTER.format("key")),
        ("exp_avg", torch.zeros(2, 4, dtype=torch.float64), UnsupportedOptimizerError,
         "Adam state 'exp_avg' has shape (2, 4) but its parameter has shape (3, 4); only "
         "per-element state can be moved"),
        ("exp_avg_sq", torch.full((3, 4), float("nan"), dtype=torch.float64), NonFiniteError,
         "Adam state 'exp_avg_sq' of a parameter of shape (3, 4) holds NaN or Inf; a structural "
         "change would spread it. Reset the optimizer (or restore it from a checkpoint) first"),
    ]
    for key, value, error, message in cases:
        old = opt.state[first].get(key)
        opt.state[first][key] = value
        _raises(error, message, ip.reparameterise, net, 0, r, opt)
        if old is None:
            del opt.state[first][key]
        else:
            opt.state[first][key] = old
    ip.reparameterise(net, 0, r, opt)  # restored: accepted
    other = O.Adamax(net.parameters())
    _raises(UnsupportedOptimizerError,
            "isoplastic cannot transport the state of Adamax through a change of basis; supported "
            f"optimizers: {_supported()}. Register a new one with " + REGISTER.format("state_key"),
            ip.reparameterise, net, 0, r, other)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_low_precision_state_is_contracted_in_float32_and_rounded_once(dtype, dim):
    g = torch.Generator().manual_seed(dim)
    t = torch.randn(5, 5, 5, generator=g).to(dtype)
    r = ip.random_orthogonal(5, generator=g, dtype=torch.float32)
    out = ostate.Rotation(r).apply(t, dim, ostate.FIRST)
    ref = torch.tensordot(t.float(), r, dims=([dim], [0])).movedim(-1, dim).to(dtype)
    assert out.dtype == dtype and out.shape == t.shape
    assert torch.equal(out, ref)  # one rounding of the float32 result, not one per term
    second = ostate.Rotation(r).apply(t.abs(), dim, ostate.SECOND)
    ref2 = torch.tensordot(t.abs().float(), r * r, dims=([dim], [0])).movedim(-1, dim).to(dtype)
    assert torch.equal(second, ref2)


def test_saving_keeps_each_state_tensors_dtype_and_only_loading_checks_it():
    net, opt = _trained()  # float64 moments
    net.float()  # the model cast after training: its moments stay float64
    tensors = ostate.state_tensors(opt)
    assert tensors["0.exp_avg"].dtype == torch.float64
    assert len(ostate.state_digest(opt)) == 32
    with pytest.raises(OptimizerStateError, match="^Adam state 0.exp_avg has dtype torch.float64 "
                                                  "but its parameter has torch.float32; "):
        ostate.load_state_tensors(O.Adam(net.parameters()), tensors)


def test_coordinate_maps_keep_the_state_dtype_and_start_newborns_as_documented():
    g = torch.Generator().manual_seed(3)
    t32 = torch.rand(3, 4, generator=g)
    r64 = ip.random_orthogonal(3, generator=g)  # a float64 rotation on float32 state
    moved = ostate.Rotation(r64).apply(t32, 0, ostate.FIRST)
    assert moved.dtype == torch.float32
    assert torch.allclose(moved, r64.float().T @ t32, atol=1e-6)
    # the default newborn state is zero, for second moments too
    assert torch.equal(ostate.Insertion(2).apply(t32, 0, ostate.SECOND)[3:], torch.zeros(2, 4))
    # "population": the median over the existing coordinates, also when there is only one
    one = t32[:1]
    grown = ostate.Insertion(2, "population").apply(one, 0, ostate.SECOND)
    assert torch.equal(grown, one.expand(3, 4))
    assert torch.equal(ostate.Insertion(1, "population").apply(one, 0, ostate.FIRST)[1:],
                       torch.zeros(1, 4))  # first moments start at zero in every mode
    with pytest.raises(ValueError, match=r"^newborn='median'; choose one of "
                                         r"\('population', 'zero'\)$"):
        ostate.Insertion(1, "median")
