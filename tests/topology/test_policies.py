"""The topology policies' promises (:mod:`isoplastic.topology.policies`): which neurons
:func:`~isoplastic.neuroadapt` adds and removes (``S`` and ``τ`` semantics, the pass order and
cap, the layer selection, guards and records), :func:`~isoplastic.set_width`,
:class:`~isoplastic.ScaffoldPolicy`, :class:`~isoplastic.WidthSchedule` and its linear schedule,
and the whole text of their refusals.

Networks with prescribed strengths are built as ``W_k = diag(s) Qᵀ`` (orthonormal rows ``Q``),
so the singular values of every hidden layer are known exactly and the left singular basis is
the standard one (up to signs)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import isoplastic as ip
from isoplastic.errors import NonFiniteError, UnsupportedOptimizerError
from isoplastic.testing import random_isotropic_mlp
from isoplastic.topology import policies
from isoplastic.topology.record import StructuralChange

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _orthonormal_rows(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(cols, cols, generator=gen, dtype=torch.float64))
    return q[:rows]


def _prescribe(block: ip.IsotropicMLP, strengths: list[list[float]], seed: int = 0) -> None:
    """Give hidden layer ``k`` of ``block`` the singular values ``strengths[k]`` (one per neuron;
    needs ``n_k <= n_{k-1}``)."""
    gen = _gen(seed)
    with torch.no_grad():
        for k, s in enumerate(strengths):
            lin = block.linears[k]
            rows, cols = lin.weight.shape
            assert len(s) == rows <= cols
            w = torch.diag(torch.tensor(s, dtype=torch.float64)) @ _orthonormal_rows(rows, cols, gen)
            lin.weight.copy_(w.to(lin.weight.dtype))


def _mlp(strengths: list[list[float]], n_in: int | None = None, n_out: int = 3, seed: int = 0,
         dtype: torch.dtype = torch.float64) -> ip.IsotropicMLP:
    widths = [n_in or len(strengths[0])] + [len(s) for s in strengths] + [n_out]
    net = random_isotropic_mlp(widths, "trainable", "trainable", seed=seed, dtype=dtype)
    _prescribe(net, strengths, seed)
    return net


def _counts(net: ip.IsotropicMLP, threshold: float) -> list[int]:
    return [int((ip.singular_values(net, k) <= threshold).sum()) for k in range(net.n_hidden)]


def _trained(net: nn.Module, n_in: int) -> torch.optim.Optimizer:
    """An Adam optimizer that has taken one step on ``net`` (so it holds moments)."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randn(5, n_in, generator=_gen(11), dtype=torch.float64)
    net(x).pow(2).sum().backward()
    opt.step()
    opt.zero_grad()
    return opt


def _twin(net: nn.Module, opt: torch.optim.Optimizer | None):
    """A deep copy of ``net`` and an optimizer over it holding a copy of ``opt``'s state."""
    other = copy.deepcopy(net)
    if opt is None:
        return other, None
    other_opt = type(opt)(other.parameters(), **opt.defaults)
    other_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    return other, other_opt


def _assert_same(a: nn.Module, a_opt, b: nn.Module, b_opt) -> None:
    """Bit-identical parameters and optimizer state."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys()
    for name in pa:
        assert torch.equal(pa[name], pb[name]), name
    if a_opt is not None:
        for (na, p), q in zip(a.named_parameters(), b.parameters()):
            sa, sb = a_opt.state.get(p, {}), b_opt.state.get(q, {})
            assert sa.keys() == sb.keys(), na
            for key in sa:
                assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), (na, key)


def _refuse_layer(layer: int, seen: list[StructuralChange] | None = None):
    """A guard refusing (without naming the change) every change of hidden layer ``layer``."""
    def guard(change: StructuralChange) -> None:
        if seen is not None:
            seen.append(change)
        if change.layer == layer:
            raise ip.ChangeRefused(f"layer {layer} stays")
    return guard


# ---------------------------------------------------------------------------------------------
# neuroadapt: S and τ
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_threshold_is_inclusive_a_silent_neuron_counts_as_scaffold_at_tau_zero(monkeypatch, fast):
    """``c = #{i : σ_i ≤ τ}``: with τ = 0 the exactly-zero strength of a grown neuron is a
    scaffold, so a second call changes nothing (with the certified and the plain count). Zero
    outgoing weights (``init_scale=0``) keep the next layer's grown neuron silent."""
    monkeypatch.setattr(policies, "FAST_COUNT", fast)
    net = _mlp([[2.0, 1.5, 1.0], [2.0, 1.0, 0.5]], n_in=4)
    first = ip.neuroadapt(net, 1, 0.0, init_scale=0.0)
    assert [(c.op, c.layer, c.n) for c in first] == [("neurogenesis", 1, 1), ("neurogenesis", 0, 1)]
    assert _counts(net, 0.0) == [1, 1]
    assert ip.neuroadapt(net, 1, 0.0, init_scale=0.0) == []
    assert net.widths == [4, 4, 4, 3]


def test_defaults_are_the_papers_two_scaffolds_below_one_tenth():
    """``neuroadapt(net)`` is ``neuroadapt(net, scaffold=2, threshold=0.1)``."""
    # layer 0: two strengths <= 0.1 (kept as they are); layer 1: one (one neuron grown);
    # layer 2: three (the weakest removed). Strengths in (0.1, 1.1] are not scaffolds.
    strengths = [[2.0, 0.5, 0.09, 0.01], [2.0, 1.0, 0.6, 0.05], [1.5, 0.08, 0.06, 0.02]]
    net = _mlp(strengths, n_in=5)
    changes = ip.neuroadapt(net)
    assert [(c.op, c.layer, c.n) for c in changes] == [("neurodegeneration", 2, 1),
                                                      ("neurogenesis", 1, 1)]
    assert _counts(net, 0.1) == [2, 2, 2]
    assert net.widths == [5, 4, 5, 3, 3]


def _growth_chain(n_hidden: int, threshold: float = 0.5) -> ip.IsotropicMLP:
    """Layer 0 lacks its one scaffold; every later layer has exactly one, just below τ, which
    the outgoing weights of a neuron grown in the layer before lift above τ: pass ``p`` grows
    layer ``p - 1`` only."""
    strengths = [[2.0, 2.0, 2.0, 2.0]] + [[2.0, 2.0, 2.0, threshold - 1e-3]] * (n_hidden - 1)
    return _mlp(strengths, n_in=4, seed=1)


def _chain_adapt(net: ip.IsotropicMLP, **kwargs) -> list[StructuralChange]:
    return ip.neuroadapt(net, 1, 0.5, init_scale=1.0, generator=_gen(0), **kwargs)


@pytest.mark.parametrize("max_passes", [1, 2, 3, 5])
def test_passes_repeat_until_stable_at_most_max_passes(max_passes):
    """Each pass runs from the last hidden layer to the first; a change to layer ``k`` moves
    ``W_{k+1}``, so it is seen by the next pass, and there are at most ``max_passes`` passes."""
    net = _growth_chain(5)
    changes = _chain_adapt(net, max_passes=max_passes)
    assert [(c.op, c.layer) for c in changes] == [("neurogenesis", k)
                                                  for k in range(min(max_passes, 5))]
    if max_passes >= 5:
        assert _counts(net, 0.5) == [1] * 5


def test_default_cap_is_four_passes():
    """``max_passes`` defaults to 4: a chain that needs five passes stops one layer short."""
    net = _growth_chain(5)
    changes = _chain_adapt(net)
    assert [c.layer for c in changes] == [0, 1, 2, 3]
    assert _counts(net, 0.5) == [1, 1, 1, 1, 0]


def test_layers_are_visited_last_to_first_in_every_pass():
    """With every layer short of scaffolds, the first pass's changes come last layer first,
    whether all layers or an explicit selection is adapted."""
    strengths = [[3.0, 2.0, 2.0, 2.0], [2.0, 2.0, 2.0, 2.0], [2.0, 2.0, 2.0, 2.0]]
    for layers in (None, [0, 2, 1]):
        net = _mlp(strengths, n_in=4)
        changes = ip.neuroadapt(net, 1, 0.5, layers=layers)
        assert [c.layer for c in changes[:3]] == [2, 1, 0]
        assert [c.space for c in changes[:3]] == ["2", "1", "0"]


def test_growth_is_neurogenesis_without_diagonalisation_with_the_callers_settings():
    """A layer short of ``S`` scaffolds gets ``S − c`` neurons from
    ``neurogenesis(..., diagonalise=False)`` with the caller's ``init_scale``, ``generator``,
    ``newborn`` and optimizer: replaying the records on a twin gives the same bits."""
    net = _mlp([[2.0, 2.0, 2.0, 0.3], [2.0, 2.0, 2.0]], n_in=5)
    opt = _trained(net, 5)
    twin, twin_opt = _twin(net, opt)
    changes = ip.neuroadapt(net, 3, 0.5, opt, init_scale=0.7, generator=_gen(4),
                            newborn="population")
    assert [(c.op, c.layer, c.n) for c in changes[:2]] == [("neurogenesis", 1, 3),
                                                          ("neurogenesis", 0, 2)]
    gen = _gen(4)
    for c in changes:
        assert c.op == "neurogenesis"
        ip.neurogenesis(twin, c.layer, c.n, twin_opt, init_scale=0.7, generator=gen,
                        diagonalise=False, newborn="population")
    _assert_same(net, opt, twin, twin_opt)


def test_removal_drops_the_c_minus_s_weakest_and_keeps_at_least_one_neuron():
    """``c > S`` removes the ``c − S`` weakest strengths (but never a layer's last neuron)."""
    net = _mlp([[2.0, 2.0, 2.0, 0.1], [3.0, 0.4, 0.2, 0.1]], n_in=4)
    changes = ip.neuroadapt(net, 1, 0.5)
    assert [(c.op, c.layer, c.n) for c in changes] == [("neurodegeneration", 1, 2)]
    assert changes[0].removed_singular_values == pytest.approx([0.2, 0.1], rel=1e-12)
    assert net.widths == [4, 4, 2, 3]
    assert _counts(net, 0.5) == [1, 1]
    net = _mlp([[0.3, 0.2, 0.1, 0.05]], n_in=4)
    changes = ip.neuroadapt(net, 1, 0.5)
    assert [(c.op, c.layer, c.n) for c in changes] == [("neurodegeneration", 0, 3)]
    assert changes[0].removed_singular_values == pytest.approx([0.2, 0.1, 0.05], rel=1e-12)
    assert net.widths == [4, 1, 3]


def test_removal_bound_uses_the_norm_of_the_next_layers_matrix():
    """The record's ``predicted_bound`` is ``Σσ* · (‖W*‖ + ‖W_{k+1}‖₂)`` for the next layer's
    matrix, also when neighbouring layers' spectra are known from an earlier call."""
    strengths = [[5.0, 5.0, 5.0, 0.1], [1.5, 1.2, 0.2, 0.1], [1.0, 1.0, 1.0, 0.1],
                 [3.0, 3.0, 3.0, 0.1]]
    net = _mlp(strengths, n_in=4, seed=2)
    assert ip.neuroadapt(net, 1, 0.5, layers=[0]) == []  # an earlier epoch counted layer 0
    w_next = net.linears[2].weight.detach().clone()
    changes = ip.neuroadapt(net, 1, 0.5)
    first = changes[0]
    assert (first.op, first.layer, first.n) == ("neurodegeneration", 1, 1)
    sigma = first.removed_singular_values
    assert sigma == pytest.approx([0.1], rel=1e-12)
    # the weakest neuron of W_1 = diag(s) Qᵀ is its last coordinate
    expected = sigma[0] * (float(w_next[:, 3].norm())
                           + float(torch.linalg.matrix_norm(w_next, ord=2)))
    assert first.predicted_bound == pytest.approx(expected, rel=1e-9)


def test_counts_carried_from_an_earlier_call_still_decide_float32_removals():
    """In float32 (where a count keeps its Gram matrix for the removal), a call whose counts
    come from the spectra of an earlier call removes the right neurons."""
    net = _mlp([[2.0, 2.0, 2.0, 0.05], [2.0, 1.0, 0.3, 0.05]], n_in=4, dtype=torch.float32)
    assert ip.neuroadapt(net, 1, 0.1) == []
    changes = ip.neuroadapt(net, 1, 0.5)
    assert [(c.op, c.layer, c.n) for c in changes] == [("neurodegeneration", 1, 1)]
    assert changes[0].removed_singular_values == pytest.approx([0.05], rel=1e-5)
    assert _counts(net, 0.5) == [1, 1]


# ---------------------------------------------------------------------------------------------
# neuroadapt: layer selection, composite models
# ---------------------------------------------------------------------------------------------


def test_layers_restricts_the_adaptation_to_the_named_layers():
    strengths = [[2.0, 2.0, 2.0, 2.0], [2.0, 2.0, 2.0, 2.0], [2.0, 2.0, 2.0, 2.0]]
    net = _mlp(strengths, n_in=4)
    changes = ip.neuroadapt(net, 1, 0.5, layers=[1])
    assert [(c.layer, c.space) for c in changes] == [(1, "1")]
    assert net.widths == [4, 4, 5, 4, 3]


def _composite() -> nn.Sequential:
    a = _mlp([[2.0, 2.0, 2.0, 2.0], [2.0, 2.0, 2.0, 2.0]], n_in=4, n_out=3, seed=0)
    b = _mlp([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]], n_in=3, n_out=2, seed=1)
    return nn.Sequential(a, nn.Tanh(), b)


def test_composite_model_every_block_last_block_first_each_change_named_by_its_space():
    model = _composite()
    changes = ip.neuroadapt(model, 1, 0.5)
    assert [c.space for c in changes] == ["2.1", "2.0", "0.1", "0.0"]
    assert [c.layer for c in changes] == [1, 0, 1, 0]
    assert model[0].widths == [4, 5, 5, 3] and model[2].widths == [3, 4, 4, 2]


def test_composite_model_layers_selects_spaces_by_name_in_any_block():
    model = _composite()
    changes = ip.neuroadapt(model, 1, 0.5, layers=["0.1"])
    assert [c.space for c in changes] == ["0.1"]
    assert model[0].widths == [4, 4, 5, 3] and model[2].widths == [3, 3, 3, 2]


# ---------------------------------------------------------------------------------------------
# neuroadapt: guards
# ---------------------------------------------------------------------------------------------


def test_refused_layer_is_not_revisited_and_does_not_stop_later_passes():
    """A guard's refusal rolls that change back, records it in ``refused`` (filled in by the
    policy when the guard did not name it) and blocks that layer only: later passes still
    adapt the other layers."""
    strengths = [[2.0, 2.0, 2.0, 2.0], [2.0, 2.0, 2.0, 0.499], [2.0, 2.0, 2.0, 2.0]]
    net = _mlp(strengths, n_in=4, seed=1)
    seen: list[StructuralChange] = []
    refused: list[StructuralChange] = []
    changes = _chain_adapt(net, guard=_refuse_layer(2, seen), refused=refused)
    assert [c.layer for c in seen] == [2, 0, 1]
    assert [(c.op, c.layer, c.n) for c in changes] == [("neurogenesis", 0, 1),
                                                      ("neurogenesis", 1, 1)]
    assert [(c.op, c.layer, c.space) for c in refused] == [("neurogenesis", 2, "2")]
    assert refused[0] is seen[0]
    assert _counts(net, 0.5)[:2] == [1, 1] and net.widths[3] == 4


def test_refusal_without_a_refused_list_is_dropped_quietly():
    net = _mlp([[2.0, 2.0, 2.0, 2.0]], n_in=4)
    before = copy.deepcopy(net.state_dict())
    assert ip.neuroadapt(net, 1, 0.5, guard=_refuse_layer(0)) == []
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_change_refused_carries_its_message_change_and_a_copy_of_info():
    info = {"drift": 0.5}
    record = StructuralChange(op="neurogenesis", layer=0, n=1, width_before=2, width_after=3)
    exc = ip.ChangeRefused("too far", change=record, info=info)
    assert str(exc) == "too far" and exc.change is record
    assert exc.info == {"drift": 0.5} and exc.info is not info
    plain = ip.ChangeRefused()
    assert str(plain) == "structural change refused"
    assert plain.change is None and plain.info == {}
    assert isinstance(plain, ip.IsoplasticError)


# ---------------------------------------------------------------------------------------------
# neuroadapt: refusals
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scaffold", [True, 1.5, -1])
def test_scaffold_must_be_a_non_negative_integer(scaffold):
    net = _mlp([[2.0, 2.0, 2.0]], n_in=3)
    with pytest.raises(ip.TopologyError) as err:
        ip.neuroadapt(net, scaffold, 0.1)
    assert str(err.value) == f"neuroadapt: scaffold={scaffold!r} must be an integer >= 0"
    assert net.widths == [3, 3, 3]


def test_threshold_zero_is_allowed_and_negative_refused():
    net = _mlp([[2.0, 2.0, 2.0]], n_in=3)
    with pytest.raises(ip.TopologyError) as err:
        ip.neuroadapt(net, 1, -0.5)
    assert str(err.value) == "neuroadapt: threshold=-0.5 must be >= 0"
    assert [c.n for c in ip.neuroadapt(net, 1, 0.0)] == [1]


def test_a_model_without_blocks_is_refused_by_name():
    with pytest.raises(ip.TopologyError) as err:
        ip.neuroadapt(nn.Linear(2, 2), 1, 0.1)
    assert str(err.value) == (
        "neuroadapt: Linear does not declare hidden spaces; structural operations work on "
        "isoplastic.IsotropicMLP, isoplastic.IsotropicCNN, models that contain them, or modules "
        "subclassing isoplastic.core.IsoplasticBlock")


def test_an_unknown_layer_is_refused_by_name():
    net = _mlp([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]], n_in=3)
    with pytest.raises(ip.TopologyError) as err:
        ip.neuroadapt(net, 1, 0.1, layers=[2])
    assert str(err.value) == ("neuroadapt: hidden layer k=2 is out of range; this network has 2 "
                              "hidden layers and neuroadapt accepts k in 0..1")


def test_a_non_finite_intrinsic_length_is_refused_before_counting():
    net = _mlp([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]], n_in=3)
    with torch.no_grad():
        net.activations[1].log_o.fill_(math.inf)
    with pytest.raises(NonFiniteError) as err:
        ip.neuroadapt(net, 1, 0.5)
    assert str(err.value) == ("neuroadapt: hidden layer 1 has intrinsic length inf; restore the "
                              "model from a checkpoint first")
    assert net.widths == [3, 3, 3, 3]


def test_an_optimizer_that_cannot_be_transported_is_refused_even_when_nothing_would_change():
    net = _mlp([[2.0, 2.0, 0.1]], n_in=3)
    opt = torch.optim.LBFGS(net.parameters())
    with pytest.raises(UnsupportedOptimizerError, match="^isoplastic cannot transport the state "
                       "of LBFGS through a change of basis; supported optimizers: "):
        ip.neuroadapt(net, 1, 0.5, opt)


def test_optimizer_state_of_untouched_layers_is_not_checked():
    """The count pass checks the model and the optimizer's class only; each change checks the
    state it moves, so a bad moment of a layer left alone does not stop the others."""
    net = _mlp([[2.0, 2.0, 0.1], [2.0, 2.0, 2.0]], n_in=3)
    opt = _trained(net, 3)
    with torch.no_grad():
        opt.state[net.linears[0].weight]["exp_avg_sq"].fill_(math.nan)
    changes = ip.neuroadapt(net, 1, 0.5, opt)
    assert [(c.op, c.layer) for c in changes] == [("neurogenesis", 1)]


# ---------------------------------------------------------------------------------------------
# set_width
# ---------------------------------------------------------------------------------------------


def test_set_width_up_is_neurogenesis_without_diagonalisation():
    net = random_isotropic_mlp([5, 4, 3, 2], seed=3)
    opt = _trained(net, 5)
    twin, twin_opt = _twin(net, opt)
    change = ip.set_width(net, 1, 6, opt, init_scale=0.4, generator=_gen(2), newborn="population")
    expected = ip.neurogenesis(twin, 1, 3, twin_opt, init_scale=0.4, generator=_gen(2),
                               diagonalise=False, newborn="population")
    assert change == expected
    assert (change.op, change.n, change.width_after, change.space) == ("neurogenesis", 3, 6, "1")
    _assert_same(net, opt, twin, twin_opt)


def test_set_width_growth_keeps_every_existing_entry_by_default():
    net = random_isotropic_mlp([5, 4, 3, 2], seed=3)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    ip.set_width(net, 0, 5)
    assert torch.equal(net.linears[0].weight.detach()[:4], before["linears.0.weight"])
    assert torch.equal(net.linears[1].weight.detach()[:, :4], before["linears.1.weight"])


def test_set_width_down_is_neurodegeneration():
    net = random_isotropic_mlp([5, 4, 3, 2], seed=3)
    opt = _trained(net, 5)
    twin, twin_opt = _twin(net, opt)
    change = ip.set_width(net, 0, 1, opt)
    expected = ip.neurodegeneration(twin, 0, 3, twin_opt)
    assert change == expected
    assert (change.op, change.n, change.width_after, change.space) == ("neurodegeneration", 3, 1,
                                                                       "0")
    _assert_same(net, opt, twin, twin_opt)


def test_set_width_to_the_current_width_changes_nothing():
    net = random_isotropic_mlp([5, 4, 3, 2], seed=3)
    before = copy.deepcopy(net.state_dict())
    assert ip.set_width(net, 1, 3) is None
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_set_width_names_the_space_of_a_composite_model():
    model = _composite()
    change = ip.set_width(model, "2.1", 5)
    assert (change.space, change.layer, change.n) == ("2.1", 1, 2)
    assert model[2].widths == [3, 3, 5, 2]


@pytest.mark.parametrize("width", [0, True, 2.0])
def test_set_width_refuses_a_width_that_is_not_a_positive_integer(width):
    net = random_isotropic_mlp([5, 4, 3, 2], seed=3)
    with pytest.raises(ip.TopologyError) as err:
        ip.set_width(net, 0, width)
    assert str(err.value) == f"set_width: width={width!r} must be a positive integer"
    assert net.widths == [5, 4, 3, 2]


def test_set_width_refuses_an_unknown_layer_by_name():
    net = random_isotropic_mlp([5, 4, 3, 2], seed=3)
    with pytest.raises(ip.TopologyError) as err:
        ip.set_width(net, 2, 3)
    assert str(err.value) == ("set_width: hidden layer k=2 is out of range; this network has 2 "
                              "hidden layers and set_width accepts k in 0..1")


def test_set_width_checks_the_space_before_anything_even_at_the_current_width():
    net = random_isotropic_mlp([5, 4, 3, 2], seed=3)
    with pytest.raises(UnsupportedOptimizerError, match="^isoplastic cannot transport the state "
                       "of LBFGS through a change of basis"):
        ip.set_width(net, 0, 4, torch.optim.LBFGS(net.parameters()))
    with torch.no_grad():
        net.activations[0].log_o.fill_(math.inf)
    with pytest.raises(NonFiniteError) as err:
        ip.set_width(net, 0, 4)
    assert str(err.value) == ("set_width: hidden layer 0 has intrinsic length inf; restore the "
                              "model from a checkpoint first")


# ---------------------------------------------------------------------------------------------
# policies for the trainer
# ---------------------------------------------------------------------------------------------


def test_fixed_topology_never_changes_the_network():
    net = random_isotropic_mlp([5, 4, 3, 2], seed=3)
    assert ip.FixedTopology()(net, None, 0) == []
    assert net.widths == [5, 4, 3, 2]


def test_scaffold_policy_is_neuroadapt_every_few_epochs_with_its_settings():
    """``ScaffoldPolicy`` runs ``neuroadapt`` with its own settings after epochs
    ``every − 1, 2·every − 1, …`` and nothing else; refusals collect in ``policy.refused``."""
    strengths = [[2.0, 2.0, 2.0, 0.3], [2.0, 2.0, 2.0, 2.0], [2.0, 0.1, 0.05, 0.01]]
    net = _mlp(strengths, n_in=5)
    opt = _trained(net, 5)
    twin, twin_opt = _twin(net, opt)
    policy = ip.ScaffoldPolicy(scaffold=2, threshold=0.5, init_scale=0.7, every=3,
                               generator=_gen(5), guard=_refuse_layer(0), newborn="population")
    for epoch in (0, 1, 3, 4):
        assert policy(net, opt, epoch) == []
        _assert_same(net, opt, twin, twin_opt)
    changes = policy(net, opt, 2)
    refused: list[StructuralChange] = []
    expected = ip.neuroadapt(twin, 2, 0.5, twin_opt, init_scale=0.7, generator=_gen(5),
                             guard=_refuse_layer(0), refused=refused, newborn="population")
    assert [(c.op, c.layer, c.n) for c in changes[:2]] == [("neurodegeneration", 2, 1),
                                                          ("neurogenesis", 1, 2)]
    assert changes == expected and policy.refused == refused
    assert [(c.op, c.layer, c.n) for c in refused] == [("neurogenesis", 0, 1)]
    _assert_same(net, opt, twin, twin_opt)


def test_width_schedule_without_targets_does_nothing():
    net = random_isotropic_mlp([5, 4, 3, 2], seed=3)
    assert ip.WidthSchedule()(net, None, 0) == []
    assert net.widths == [5, 4, 3, 2]


def test_width_schedule_moves_every_space_to_its_target_later_layers_first():
    """Each target is reached by :func:`set_width` with the schedule's settings, the last layer
    first; the last entry of ``targets`` holds for later epochs."""
    net = random_isotropic_mlp([5, 4, 3, 2], seed=3)
    opt = _trained(net, 5)
    twin, twin_opt = _twin(net, opt)
    schedule = ip.WidthSchedule(targets=[[4, 3], [2, 6]], init_scale=0.4, generator=_gen(3),
                                newborn="population")
    assert schedule(net, opt, 0) == []
    changes = schedule(net, opt, 7)
    gen = _gen(3)
    expected = [ip.set_width(twin, k, w, twin_opt, init_scale=0.4, generator=gen,
                             newborn="population") for k, w in ((1, 6), (0, 2))]
    assert changes == expected
    assert [(c.op, c.layer) for c in changes] == [("neurogenesis", 1), ("neurodegeneration", 0)]
    assert net.widths == [5, 2, 6, 2]
    _assert_same(net, opt, twin, twin_opt)


def test_width_schedule_on_a_composite_model_addresses_spaces_by_name():
    model = _composite()
    changes = ip.WidthSchedule(targets=[[4, 5, 3, 2]])(model, None, 0)
    assert [c.space for c in changes] == ["2.1", "0.1"]
    assert model[0].widths == [4, 4, 5, 3] and model[2].widths == [3, 3, 2, 2]


def test_width_schedule_guard_refuses_per_layer():
    net = random_isotropic_mlp([5, 4, 3, 2], seed=3)
    schedule = ip.WidthSchedule(targets=[[6, 6]], guard=_refuse_layer(1))
    changes = schedule(net, None, 0)
    assert [(c.op, c.layer) for c in changes] == [("neurogenesis", 0)]
    assert [(c.op, c.layer, c.n, c.space) for c in schedule.refused] == [("neurogenesis", 1, 3,
                                                                          "1")]
    assert net.widths == [5, 6, 3, 2]


def test_width_schedule_target_of_the_wrong_length_is_refused():
    net = random_isotropic_mlp([5, 4, 3, 2], seed=3)
    with pytest.raises(ip.TopologyError) as err:
        ip.WidthSchedule(targets=[[4]])(net, None, 0)
    assert str(err.value) == ("WidthSchedule: target [4] names 1 layers but the network has 2 "
                              "hidden layers")


@settings(max_examples=60, deadline=None)
@given(start=st.lists(st.integers(1, 40), min_size=1, max_size=3), data=st.data(),
       hold_start=st.integers(0, 4), ramp=st.integers(0, 5), hold_end=st.integers(0, 3))
def test_linear_schedule_holds_ramps_linearly_and_holds(start, data, hold_start, ramp, hold_end):
    """``hold_start`` epochs at ``start``, ``ramp`` epochs of rounded linear steps
    ``start + (target − start)·j/ramp`` (``j = 1..ramp``), then ``target``."""
    target = data.draw(st.lists(st.integers(1, 40), min_size=len(start), max_size=len(start)))
    schedule = ip.WidthSchedule.linear(start, target, hold_start, ramp, hold_end)
    expected = ([list(start)] * hold_start
                + [[round(a + (b - a) * j / ramp) for a, b in zip(start, target)]
                   for j in range(1, ramp + 1)]
                + [list(target)] * hold_end)
    assert schedule.targets == expected
    for epoch in range(len(expected) + 3):
        if expected:
            assert schedule.target(epoch) == expected[min(epoch, len(expected) - 1)]


def test_linear_schedule_needs_one_width_per_space():
    with pytest.raises(ip.TopologyError) as err:
        ip.WidthSchedule.linear([4, 4], [8], 1, 1, 1)
    assert str(err.value) == ("WidthSchedule.linear: start has 2 widths but target has 1; give one "
                              "width per hidden space in both")


def test_a_pass_that_changes_nothing_reads_no_optimizer_state():
    # the up-front check covers the tensors the counts read; optimizer state is checked by each
    # change for what it moves, so a bad moment blocks a change, not a pass that makes none
    net = random_isotropic_mlp([4, 6, 5, 3], "trainable", "trainable", seed=2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(8, 4, dtype=torch.float64)).sum().backward()
    opt.step()
    ip.neuroadapt(net, 2, 0.1, opt, generator=torch.Generator().manual_seed(0))
    opt.state[net.linears[0].weight]["exp_avg"][0, 0] = float("nan")
    assert ip.neuroadapt(net, 2, 0.1, opt) == []
    with pytest.raises(NonFiniteError, match="Adam state 'exp_avg' of a parameter of shape"):
        ip.neurogenesis(net, 0, 1, opt)
