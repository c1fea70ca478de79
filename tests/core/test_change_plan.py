"""The Change pipeline at its own level (core/change.py): the printed plan lists every step and
every tensor it touches with its shape, and every refusal of a plan says what is wrong and what to
do, whole, leaving the model as it was.

The operations' tests reach these paths through ``ip.*`` calls and check the error type or a
fragment; ``make mutate`` showed that the printed plan and most of the words were never read.
"""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from reference import assert_identical, snapshot

import isoplastic as ip
from isoplastic.core import Change
from isoplastic.core import optim_state as ostate
from isoplastic.core.space import HiddenSpace
from isoplastic.errors import NonFiniteError, TopologyError
from isoplastic.linalg import ortho_tolerance
from isoplastic.testing import random_isotropic_mlp

DT = torch.float64


def _net() -> ip.IsotropicMLP:
    return random_isotropic_mlp([4, 3, 3, 2], "trainable", "trainable", seed=1)


def _space(net: ip.IsotropicMLP, k: int = 1) -> HiddenSpace:
    return ip.hidden_spaces(net)[str(k)]


AXES = """\
    Linear.weight(3, 3)[dim 0, incoming]
    Linear.bias(3,)[dim 0, bias]
    ParameterList.0(3,)[dim 0, psi]
    Linear.weight(2, 3)[dim 1, outgoing]"""


def test_printed_plan_lists_every_step_and_every_tensor_with_its_shape():
    net = _net()
    space = _space(net)
    change = (Change("demo").rotate(space, torch.eye(3, dtype=DT)).insert(space, 2)
              .remove(space, [0, 4]).assign(net.linears[0].bias, torch.zeros(3, dtype=DT))
              .fold(space, lambda layer: []))
    assert str(change) == repr(change) == "\n".join([
        "demo (5 steps):",
        "  rotate hidden layer 1 by R(3, 3)", AXES,
        "  insert 2 coordinate(s) into hidden layer 1", AXES,
        "  remove coordinates [0, 4] of hidden layer 1", AXES,
        "  assign a tensor (3,)",
        "  fold the removed coordinates into the tensors after hidden layer 1"])
    assert str(Change("one").insert(space, 1)).splitlines()[0] == "one (1 step):"
    assert str(Change("none")) == "none (0 steps):"
    assert space.describe() == "hidden layer 1 (width 3):\n" + AXES.replace("    ", "  ")


def _refused(error: type, message: str, net: ip.IsotropicMLP, plan) -> None:
    """``plan()`` (building and applying a change) raises ``error`` whose whole message matches
    the regular expression ``message``, and nothing in ``net`` changed."""
    snap = snapshot(net, None)
    with pytest.raises(error) as info:
        plan()
    assert re.fullmatch(message, str(info.value)), str(info.value)
    assert_identical(snap, net, None)


def test_bad_rotations_are_refused_with_the_shape_to_pass():
    net = _net()
    space = _space(net)
    _refused(TopologyError, re.escape("demo: R has shape (2, 2); hidden layer 1 has 3 "
                                      "coordinates, so pass an orthogonal matrix of shape (3, 3)"),
             net, lambda: Change("demo").rotate(space, torch.eye(2, dtype=DT)))
    _refused(TopologyError, re.escape("demo: R has shape list; hidden layer 1 has 3 coordinates, "
                                      "so pass an orthogonal matrix of shape (3, 3)"),
             net, lambda: Change("demo").rotate(space, [[1.0]]))
    _refused(TopologyError, re.escape("demo: hidden layer 1: R has dtype torch.int64; pass a "
                                      "floating-point matrix"),
             net, lambda: Change("demo").rotate(space, torch.eye(3, dtype=torch.long)))
    nan = torch.eye(3, dtype=DT)
    nan[1, 2] = math.nan
    _refused(TopologyError, re.escape("demo: hidden layer 1: R holds NaN or Inf"),
             net, lambda: Change("demo").rotate(space, nan))
    skew = torch.eye(3, dtype=DT)
    skew[0, 1] = 0.5
    _refused(TopologyError,
             r"demo: hidden layer 1: R is not orthogonal \(max \|RᵀR − I\| = 0\.5 > [0-9.e-]+ for "
             r"torch\.float64\); build one with isoplastic\.random_orthogonal or torch\.linalg\.qr",
             net, lambda: Change("demo").rotate(space, skew))


def test_bad_insertions_removals_and_assignments_are_refused_whole():
    net = _net()
    space = _space(net)
    _refused(TopologyError, re.escape("demo: newborn='median'; choose one of "
                                      "('population', 'zero')"),
             net, lambda: Change("demo").insert(space, 1, newborn="median"))
    _refused(TopologyError, re.escape("demo: hidden layer 1: no indices to remove"),
             net, lambda: Change("demo").remove(space, []))
    _refused(TopologyError, re.escape("demo: hidden layer 1 has 3 coordinates, and removing 3 "
                                      "would disconnect it; keep at least one (remove at most 2)"),
             net, lambda: Change("demo").remove(space, [0, 1, 2]))
    _refused(TopologyError, re.escape("demo: n=0 must be a positive integer"),
             net, lambda: Change("demo").insert(space, 0))
    _refused(TopologyError, re.escape("demo: hidden layer 1: indices [7] must lie in 0..2"),
             net, lambda: Change("demo").remove(space, [7]))
    # the planned width follows the steps: after inserting 2, five coordinates exist; after
    # removing one of them, four
    assert len(Change("demo").insert(space, 2).remove(space, [0, 1, 2, 3]).steps) == 2
    _refused(TopologyError, re.escape("demo: hidden layer 1 has 2 coordinates, and removing 2 "
                                      "would disconnect it; keep at least one (remove at most 1)"),
             net, lambda: Change("demo").remove(space, [0]).remove(space, [0, 1]))
    bad = torch.zeros(3, dtype=DT)
    bad[0] = math.inf
    _refused(NonFiniteError, re.escape("demo: the new value of a tensor of shape (3,) holds NaN "
                                       "or Inf; nothing was changed"),
             net, lambda: Change("demo").assign(net.linears[0].bias, bad))
    _refused(TopologyError, re.escape("demo: a tensor of shape (3,) cannot take a value of shape "
                                      "(4,)"),
             net, lambda: Change("demo").assign(net.linears[0].bias,
                                                torch.zeros(4, dtype=DT)).apply())
    _refused(TopologyError, re.escape("demo: input belongs to no block; a compensation reads "
                                      "the block's hidden layer"),  # not a hidden space
             net, lambda: Change("demo").fold(net.input_space(), lambda layer: []))
    free = HiddenSpace("free", _space(net).axes)
    _refused(TopologyError, re.escape("demo: free belongs to no block; a compensation reads the "
                                      "block's hidden layer"),
             net, lambda: Change("demo").fold(free, lambda layer: []))


def test_non_finite_state_around_a_plan_is_refused_before_anything_changes():
    net = _net()
    space = _space(net)
    log_o = net.activations[1].log_o  # trainable: o = exp(log o), out of the setter's reach
    before = log_o.detach().clone()
    with torch.no_grad():
        log_o.fill_(math.inf)
    _refused(NonFiniteError, re.escape("demo: hidden layer 1 has intrinsic length inf; restore "
                                       "the model from a checkpoint first"),
             net, lambda: Change("demo").insert(space, 1).apply())
    with torch.no_grad():
        log_o.copy_(before)
    with torch.no_grad():
        net.psi[1][0] = math.nan
    _refused(NonFiniteError, re.escape("demo: the ψ vector or bias after hidden layer 1 holds NaN "
                                       "or Inf; a removal would fold into it. Restore the model "
                                       "from a checkpoint first"),
             net, lambda: Change("demo").fold(space, lambda layer: []).apply())


@pytest.mark.parametrize("into", ["tensor", "intrinsic length"])
def test_a_compensation_that_overflows_rolls_back_the_whole_change(into):
    net = _net()
    space = _space(net)

    def compute(layer):
        if into == "tensor":
            return [(layer.next_bias, torch.full_like(layer.next_bias, math.inf))]
        return [(layer.activation, math.nan)]

    message = ("demo: a compensation came out NaN or Inf (overflow); nothing was changed"
               if into == "tensor" else
               "demo: an intrinsic length came out nan (NaN or Inf); nothing was changed")
    # the removal before the fold ran (and resized the space) when the fold failed: undone too
    _refused(NonFiniteError, re.escape(message), net,
             lambda: Change("demo").remove(space, [0]).fold(space, compute).apply())
    assert net.widths == [4, 3, 3, 2]


def test_backpropagating_a_graph_from_before_a_resize_says_what_to_do():
    net = _net()
    x = torch.randn(3, 4, dtype=DT)
    stale = net(x).square().sum()  # its graph holds the parameters at their old shapes
    ip.neurogenesis(net, 0, 1)
    with pytest.raises(RuntimeError) as info:
        stale.backward()
    assert str(info.value) == (
        "this autograd graph was built before a structural change resized one of its parameters "
        "(isoplastic renews a resized parameter's gradient accumulator); run the forward pass "
        "again after the change and backpropagate the new loss")


def test_a_journal_counts_each_storage_once():
    from isoplastic.core.change import Journal
    a = torch.nn.Parameter(torch.zeros(10, dtype=DT))
    a.grad = a.detach()  # the gradient shares the parameter's storage
    b = torch.nn.Parameter(torch.zeros(4, dtype=DT))
    journal = Journal()
    journal.record(a)
    journal.record(b)
    journal.record(a)  # a second record of the same tensor adds nothing
    assert journal.n_tensors == 2
    assert journal.held_bytes() == (10 + 4) * 8


def test_a_change_that_keeps_shapes_keeps_live_graphs_usable():
    """Only a resize gives a parameter a fresh tensor (and marks graphs that hold the old one
    stale); a rotation writes the values in place of the old ones, so a loss computed before it
    still backpropagates, into gradients of the parameters' shapes."""
    net = _net()
    loss = net(torch.randn(3, 4, dtype=DT)).square().sum()
    ip.reparameterise(net, 1, ip.random_orthogonal(3, generator=torch.Generator().manual_seed(0)))
    loss.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.parameters()
               if p.requires_grad)


def test_state_entries_that_are_not_tensors_are_left_as_they_are():
    """A momentum buffer not created yet (``None``, as torch's SGD has stored it) moves with
    nothing: every change leaves it ``None`` and the next step creates it at the new shape."""
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    w = net.linears[1].weight
    opt.state[w]["momentum_buffer"] = None
    ip.neurogenesis(net, 1, 2, opt)
    ip.reparameterise(net, 1, ip.random_orthogonal(5, generator=torch.Generator().manual_seed(1)),
                      opt)
    assert opt.state[w] == {"momentum_buffer": None}
    net(torch.randn(3, 4, dtype=DT)).square().sum().backward()
    opt.step()  # and training goes on
    assert opt.state[w]["momentum_buffer"].shape == w.shape


def test_an_assignment_copies_its_value_into_the_targets_dtype():
    # the target keeps its dtype and owns its values: the caller's tensor is neither cast into
    # the model nor aliased by it
    net = random_isotropic_mlp([4, 3, 3, 2], "trainable", "trainable", seed=1).float()
    bias = net.linears[0].bias
    value = torch.tensor([1.0, 2.0, 3.0], dtype=DT)
    Change("demo").assign(bias, value).apply()
    assert bias.dtype == torch.float32 and torch.equal(bias.detach(), value.float())
    value.zero_()
    assert torch.equal(bias.detach(), torch.tensor([1.0, 2.0, 3.0]))
    same_dtype = torch.tensor([4.0, 5.0, 6.0])
    Change("demo").assign(bias, same_dtype).apply()
    same_dtype.zero_()
    assert torch.equal(bias.detach(), torch.tensor([4.0, 5.0, 6.0]))


def test_a_mirror_replays_the_rotations_planned_after_an_assignment():
    # an assignment is not replayed (its value is this model's), the steps after it are
    net = _net()
    twin = copy.deepcopy(net)
    ip.mirror(net, twin)
    before = net.linears[1].weight.detach().clone()
    r = ip.random_orthogonal(3, generator=torch.Generator().manual_seed(5), dtype=DT)
    (Change("demo").assign(net.linears[0].bias, net.linears[0].bias.detach().clone())
     .rotate(_space(net, 1), r).apply())
    assert not torch.equal(net.linears[1].weight.detach(), before)  # the rotation ran
    for p, q in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_change_without_a_name_is_called_change():
    assert str(Change()) == "change (0 steps):"


def test_params_lists_every_parameter_its_spaces_move_once():
    net = _net()
    change = Change("demo").rotate(_space(net, 0), torch.eye(3, dtype=DT)).rotate(
        _space(net, 1), torch.eye(3, dtype=DT))
    expected = [*_space(net, 0).params(), *_space(net, 1).params()]
    distinct = list({id(p): p for p in expected}.values())
    assert [id(p) for p in change.params()] == [id(p) for p in distinct]
    assert len(distinct) < len(expected)  # the weight between the spaces is on both


def test_one_change_over_two_blocks_refreshes_both():
    model = torch.nn.Sequential(random_isotropic_mlp([4, 3, 3], "trainable", "trainable", seed=1),
                                random_isotropic_mlp([3, 4, 2], "trainable", "trainable", seed=2))
    spaces = ip.hidden_spaces(model)
    Change("demo").insert(spaces["0.0"], 2).insert(spaces["1.0"], 1).apply()
    assert (model[0].widths, model[1].widths) == ([4, 5, 3], [3, 5, 2])


def test_a_rotation_at_exactly_the_orthogonality_tolerance_is_accepted_one_step_above_refused():
    # R = I + e·E₀₁: RᵀR − I has e at (0, 1) exactly and 1 + e² − 1 = 0 on the diagonal (e² is
    # below half an ulp of 1), so max |RᵀR − I| = e exactly; the test is err > tol
    net = _net()
    tol = ortho_tolerance(torch.eye(3, dtype=DT))
    r = torch.eye(3, dtype=DT)
    r[0, 1] = tol
    Change("demo").rotate(_space(net, 0), r)
    r[0, 1] = math.nextafter(tol, 1.0)
    with pytest.raises(TopologyError, match="R is not orthogonal"):
        Change("demo").rotate(_space(net, 0), r)


def test_a_mirror_that_cannot_take_the_change_is_named_as_the_mirror():
    net = _net()
    twin = copy.deepcopy(net)
    ip.mirror(net, twin)
    with torch.no_grad():
        twin.activations[0].log_o.fill_(float("inf"))  # o = inf, as an overflowed EMA could hold
    before = snapshot(net)
    with pytest.raises(NonFiniteError) as info:
        ip.neurogenesis(net, 0, 1)
    assert str(info.value) == ("neurogenesis(net, k=0) (mirror): hidden layer 0 has intrinsic "
                               "length inf; restore the model from a checkpoint first")
    assert_identical(before, net)


def test_a_change_that_leaves_any_touched_block_inconsistent_is_rolled_back_whole():
    # every block the change touched is checked after the steps, not only the last one
    model = torch.nn.Sequential(random_isotropic_mlp([4, 3, 3], "trainable", "trainable", seed=1),
                                random_isotropic_mlp([3, 4, 2], "trainable", "trainable", seed=2))
    spaces = ip.hidden_spaces(model)
    before = snapshot(model)
    change = (Change("demo")
              .fold(spaces["0.0"], lambda layer: [(layer.next_bias, torch.zeros(5, dtype=DT))])
              .insert(spaces["1.0"], 1))
    with pytest.raises(TopologyError, match=re.escape(
            "linears[1] has weight (3, 3) and bias (5,), inconsistent with widths [4, 3, 3]")):
        change.apply()
    assert_identical(before, model)


def _reflectors(n: int, k: int = 1) -> ostate.Reflectors:
    q, _ = torch.linalg.qr(torch.randn(n, k, generator=torch.Generator().manual_seed(2), dtype=DT))
    return ostate.Reflectors.spanning(q, list(range(k)))


def test_bad_structured_rotations_are_refused_whole():
    net = _net()
    space = _space(net)
    _refused(TopologyError, re.escape("demo: the Reflectors map has size 4; hidden layer 1 has 3 "
                                      "coordinates, so build one of size 3"),
             net, lambda: Change("demo").rotate(space, _reflectors(4)))
    nan = _reflectors(3)
    nan.v[1, 0] = math.nan
    _refused(TopologyError, re.escape("demo: hidden layer 1: R holds NaN or Inf"),
             net, lambda: Change("demo").rotate(space, nan))
    skew = _reflectors(3)
    skew = ostate.Reflectors(skew.v, 0.5 * skew.t)  # τ halved: not a reflection
    _refused(TopologyError,
             r"demo: hidden layer 1: R is not orthogonal \(max \|RᵀR − I\| = [0-9.e-]+ > "
             r"[0-9.e-]+ for torch\.float64\); build one with Reflectors\.spanning",
             net, lambda: Change("demo").rotate(space, skew))


def test_a_structured_rotation_is_the_dense_one_for_model_optimizer_and_mirror():
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net(torch.randn(5, 4, dtype=DT)).square().sum().backward()
    opt.step()
    dense, opt_dense = copy.deepcopy((net, opt))
    for p, q in zip(net.parameters(), dense.parameters(), strict=True):
        q.grad = p.grad.clone()
    twin = copy.deepcopy(net)
    ip.mirror(net, twin)
    h = _reflectors(3, 1)
    change = Change("demo", opt).rotate(_space(net), h)
    assert str(change).splitlines()[1] == ("  rotate hidden layer 1 by 1 Householder "
                                           "reflector(s) (3, 3)")
    change.apply()
    Change("demo", opt_dense).rotate(_space(dense), h.dense()).apply()
    for p, q, t in zip(net.parameters(), dense.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-15, rtol=1e-13) and torch.equal(p, t)
        assert torch.allclose(p.grad, q.grad, atol=1e-15, rtol=1e-13)
        for key, value in opt.state[p].items():
            assert torch.allclose(value, opt_dense.state[q][key], atol=1e-15, rtol=1e-13), key
