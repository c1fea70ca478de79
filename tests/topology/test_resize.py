"""Input and output resizing (topology/resize.py): what each operation promises about the
function, the record it returns, the optimizer state, and its refusals."""

from __future__ import annotations

import re

import pytest
import torch
from reference import assert_identical, snapshot

import isoplastic as ip
from isoplastic.testing import random_isotropic_mlp

DT = torch.float64


def _trained() -> tuple[ip.IsotropicMLP, torch.optim.Optimizer, torch.Tensor]:
    net = random_isotropic_mlp([4, 5, 3], "trainable", "trainable", seed=2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(2), dtype=DT)
    for _ in range(2):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
    return net, opt, x


def _record(rec, op: str, n: int, before: int, after: int) -> None:
    assert (rec.op, rec.layer, rec.n, rec.width_before, rec.width_after) == \
        (op, None, n, before, after)


def test_added_inputs_are_ignored_until_trained_and_their_state_is_zero():
    net, opt, x = _trained()
    y = net(x).detach()
    w0 = net.linears[0].weight
    state = opt.state[w0]["exp_avg"].clone()
    rec = ip.add_inputs(net, 2, opt)
    _record(rec, "add_inputs", 2, 4, 6)
    assert net.widths == [6, 5, 3] and net.linears[0].in_features == 6
    wide = torch.cat([x, torch.randn(6, 2, dtype=DT)], dim=1)  # any values on the new inputs
    assert torch.allclose(net(wide), y, rtol=0, atol=1e-14)
    assert bool((w0[:, 4:] == 0).all()) and bool((opt.state[w0]["exp_avg"][:, 4:] == 0).all())
    assert torch.equal(opt.state[w0]["exp_avg"][:, :4], state)


def test_removed_inputs_drop_their_columns_and_state():
    net, opt, x = _trained()
    w0 = net.linears[0].weight
    keep = [0, 2]
    cols, state = w0.detach()[:, keep].clone(), opt.state[w0]["exp_avg_sq"][:, keep].clone()
    rec = ip.remove_inputs(net, [3, 1, 3], opt)  # duplicates count once
    _record(rec, "remove_inputs", 2, 4, 2)
    assert net.widths == [2, 5, 3]
    assert torch.equal(w0.detach(), cols) and torch.equal(opt.state[w0]["exp_avg_sq"], state)


def test_added_outputs_start_at_zero_and_leave_the_others_unchanged():
    net, opt, x = _trained()
    y = net(x).detach()
    rec = ip.add_outputs(net, 2, opt)
    _record(rec, "add_outputs", 2, 3, 5)
    out = net(x)
    assert net.widths == [4, 5, 5]
    assert torch.allclose(out[:, :3], y, rtol=0, atol=1e-14)
    assert bool((out[:, 3:] == 0).all())


def test_removed_outputs_leave_the_remaining_logits_unchanged():
    net, opt, x = _trained()
    y = net(x).detach()
    rec = ip.remove_outputs(net, [1], opt)
    _record(rec, "remove_outputs", 1, 3, 2)
    assert torch.allclose(net(x), y[:, [0, 2]], rtol=0, atol=1e-14)
    assert opt.state[net.linears[-1].weight]["exp_avg"].shape == (2, 5)


@pytest.mark.parametrize(("call", "message"), [
    (lambda n, o: ip.remove_outputs(n, [], o), "remove_outputs: indices [] must lie in 0..2"),
    (lambda n, o: ip.remove_outputs(n, [0, 1, 2], o),
     "remove_outputs: cannot remove all 3 coordinates"),
    (lambda n, o: ip.remove_inputs(n, [0, 1, 2, 3], o),
     "remove_inputs: cannot remove all 4 coordinates"),
    (lambda n, o: ip.remove_inputs(n, [4], o), "remove_inputs: indices [4] must lie in 0..3"),
    (lambda n, o: ip.add_outputs(n, 0, o), "add_outputs: n=0 must be a positive integer"),
])
def test_bad_resizes_are_refused_whole_and_change_nothing(call, message):
    net, opt, _ = _trained()
    snap = snapshot(net, opt)
    with pytest.raises(ip.TopologyError, match=f"^{re.escape(message)}$"):
        call(net, opt)
    assert_identical(snap, net, opt)


@pytest.mark.parametrize("op", ["add_inputs", "remove_inputs", "add_outputs", "remove_outputs"])
def test_a_composite_model_is_refused_naming_its_blocks(op):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), ip.IsotropicMLP([4, 5, 4]),
                                torch.nn.Linear(4, 2), ip.IsotropicMLP([2, 3, 2]))
    arg = 1 if op.startswith("add") else [0]
    with pytest.raises(ip.TopologyError) as info:
        getattr(ip, op)(model, arg)
    assert str(info.value) == (
        f"{op}: Sequential is a composite model; {op} resizes the inputs or outputs of an "
        f"isoplastic block itself, whose neighbours it cannot see. Call it on the block (one of "
        f"'1', '3') and resize its neighbours to match")
    assert model[1].widths == [4, 5, 4]


def test_resizing_without_the_optimizer_that_holds_state_is_refused_by_name():
    net, opt, _ = _trained()
    snap = snapshot(net, opt)
    with pytest.raises(ip.UnsupportedOptimizerError) as info:
        ip.add_inputs(net, 1)
    assert str(info.value) == (
        "add_inputs: the parameters it changes have state in a Adam optimizer, but no optimizer "
        "was passed; pass optimizer=<that optimizer> so its state moves with them (or clear "
        "their state first: opt.state.pop(p))")
    assert_identical(snap, net, opt)
    with pytest.raises(ip.TopologyError, match="^add_outputs: Linear does not declare hidden "
                                               "spaces; "):
        ip.add_outputs(torch.nn.Linear(2, 2), 1)
