"""Optimizer-state transport: exact for SGD momentum, first/second-moment rules for Adam(W)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_identical, loss_fn, probe, snapshot, train, transport_rotation

import isoplastic as ip
from isoplastic.testing import random_isotropic_mlp
from isoplastic.testing.strategies import isotropic_mlps, seeds


def space_params(net: ip.IsotropicMLP, k: int) -> list[tuple[torch.Tensor, int]]:
    """(parameter, axis) pairs living in hidden space k."""
    out = [(net.linears[k].weight, 0), (net.linears[k].bias, 0)]
    if len(net.psi) and k >= 1:
        out.append((net.psi[k - 1], 0))
    out.append((net.linears[k + 1].weight, 1))
    return out


@settings(max_examples=12)
@given(net=isotropic_mlps(), data=st.data(), nesterov=st.booleans())
def test_sgd_momentum_rotate_then_train_equals_train_then_rotate(net, data, nesterov):
    k = data.draw(st.integers(0, net.n_hidden - 1))
    r = ip.random_orthogonal(net.widths[k + 1],
                             generator=torch.Generator().manual_seed(data.draw(seeds())))
    a, b = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    x = probe(net)
    other = copy.deepcopy(net)
    kw = dict(lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=nesterov)
    opt1 = torch.optim.SGD(net.parameters(), **kw)
    opt2 = torch.optim.SGD(other.parameters(), **kw)
    # path 1: train a steps, rotate (transporting momentum), train b more
    train(net, opt1, x, a)
    ip.reparameterise(net, k, r, opt1)
    for s in range(b):
        opt1.zero_grad()
        loss_fn(net, x, seed=a + s).backward()
        opt1.step()
    # path 2: train a + b steps, then rotate
    train(other, opt2, x, a + b)
    ip.reparameterise(other, k, r, opt2)
    for (n1, p), q in zip(net.named_parameters(), other.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-10, rtol=0), n1
        if p in opt1.state:
            assert torch.allclose(opt1.state[p]["momentum_buffer"],
                                  opt2.state[q]["momentum_buffer"], atol=1e-10, rtol=0), n1
    # the intrinsic length is not rotated: log o followed the same trajectory in both paths
    for act1, act2 in zip(net.activations, other.activations, strict=True):
        assert act1.o == pytest.approx(act2.o, rel=1e-10)


@pytest.mark.parametrize("cls,kw", [(torch.optim.Adam, {}), (torch.optim.AdamW, {"amsgrad": True}),
                                    (torch.optim.Adam, {"amsgrad": True})])
@pytest.mark.parametrize("k", [0, 1])
def test_adam_moments_transported_by_dense_reference_rules(cls, kw, k):
    net = random_isotropic_mlp([4, 5, 6, 3], "trainable", "trainable", seed=3)
    x = probe(net)
    opt = cls(net.parameters(), lr=1e-2, **kw)
    train(net, opt, x, 3)
    r = ip.random_orthogonal(net.widths[k + 1], generator=torch.Generator().manual_seed(k))
    before = {p: {key: v.clone() for key, v in opt.state[p].items()} for p in opt.state}
    params_before = {p: p.detach().clone() for p in net.parameters()}
    ip.reparameterise(net, k, r, opt)
    moved = set()
    for p, dim in space_params(net, k):
        moved.add(p)
        st_b, st_a = before[p], opt.state[p]
        assert torch.equal(st_a["step"], st_b["step"])
        assert torch.allclose(p.detach(), transport_rotation(params_before[p], dim, r), atol=1e-13)
        assert torch.allclose(st_a["exp_avg"], transport_rotation(st_b["exp_avg"], dim, r),
                              atol=1e-15)
        assert torch.allclose(st_a["exp_avg_sq"],
                              transport_rotation(st_b["exp_avg_sq"], dim, r, second_moment=True),
                              atol=1e-15)
        if "max_exp_avg_sq" in st_b:
            assert torch.allclose(
                st_a["max_exp_avg_sq"],
                transport_rotation(st_b["max_exp_avg_sq"], dim, r, second_moment=True), atol=1e-15)
    for p in net.parameters():  # everything outside the space is untouched
        if p not in moved:
            assert torch.equal(p.detach(), params_before[p])
            for key, v in opt.state[p].items():
                assert torch.equal(v, before[p][key])


@pytest.mark.parametrize("psi", ["trainable", "none"])
@pytest.mark.parametrize("newborn", ["population", "zero"])
def test_growth_gives_newborn_state_and_keeps_step_and_live_params(psi, newborn):
    net = random_isotropic_mlp([4, 5, 6, 3], "trainable", psi, seed=4)
    x = probe(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    train(net, opt, x, 2)
    k, width = 1, 6
    before = {p: {key: v.clone() for key, v in opt.state[p].items()} for p in opt.state}
    ids = [id(p) for p in opt.param_groups[0]["params"]]
    ip.neurogenesis(net, k, 2, opt, diagonalise=False, newborn=newborn)
    assert [id(p) for p in opt.param_groups[0]["params"]] == ids
    assert all(a is b for a, b in zip(opt.param_groups[0]["params"], net.parameters(), strict=True))
    for p, dim in space_params(net, k):
        for key in ("exp_avg", "exp_avg_sq"):
            new = opt.state[p][key].narrow(dim, width, 2)
            old = opt.state[p][key].narrow(dim, 0, width)
            assert torch.equal(old, before[p][key])
            if key == "exp_avg_sq" and newborn == "population":
                median = old.median(dim=dim, keepdim=True).values.expand_as(new)
                assert torch.equal(new, median) and bool((new > 0).all())
            else:
                assert bool((new == 0).all())
        assert torch.equal(opt.state[p]["step"], before[p]["step"])
    assert math.isfinite(train(net, opt, x, 2))  # training continues
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_shrink_drops_removed_state_after_rotation():
    net = random_isotropic_mlp([6, 5, 4, 3], "trainable", "trainable", seed=5)
    x = probe(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    train(net, opt, x, 2)
    k = 1
    u, _, _ = ip.ordered_svd(net.linears[k].weight.detach())
    before = {p: {key: v.clone() for key, v in opt.state[p].items()} for p in opt.state}
    pairs = space_params(net, k)
    ip.neurodegeneration(net, k, 2, opt)
    for p, dim in pairs:
        exp_avg = transport_rotation(before[p]["exp_avg"], dim, u).narrow(dim, 0, 2)
        exp_avg_sq = transport_rotation(before[p]["exp_avg_sq"], dim, u, True).narrow(dim, 0, 2)
        assert torch.allclose(opt.state[p]["exp_avg"], exp_avg, atol=1e-14)
        assert torch.allclose(opt.state[p]["exp_avg_sq"], exp_avg_sq, atol=1e-14)
        assert torch.equal(opt.state[p]["step"], before[p]["step"])
    assert all(a is b for a, b in zip(opt.param_groups[0]["params"], net.parameters(), strict=True))


def _rprop(net, x):
    opt = torch.optim.Rprop(net.parameters(), lr=1e-2)
    train(net, opt, x, 1)
    return opt


def _lbfgs(net, x):
    opt = torch.optim.LBFGS(net.parameters(), lr=0.1, max_iter=2)

    def closure():
        opt.zero_grad()
        loss = net(x).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return opt


OPS = {
    "reparameterise": lambda n, o: ip.reparameterise(n, 0, torch.eye(5, dtype=torch.float64), o),
    "left_diagonalise": lambda n, o: ip.left_diagonalise(n, 0, o),
    "full_diagonalise": lambda n, o: ip.full_diagonalise(n, 1, o),
    "sparsify": lambda n, o: ip.sparsify(n, o),
    "neurogenesis": lambda n, o: ip.neurogenesis(n, 1, 1, o),
    "neurodegeneration": lambda n, o: ip.neurodegeneration(n, 0, 1, o),
    "neuroadapt": lambda n, o: ip.neuroadapt(n, 2, 0.1, o),
    "add_inputs": lambda n, o: ip.add_inputs(n, 1, o),
    "remove_outputs": lambda n, o: ip.remove_outputs(n, [0], o),
}


@pytest.mark.parametrize("make_opt", [_rprop, _lbfgs], ids=["Rprop", "LBFGS"])
@pytest.mark.parametrize("op", list(OPS), ids=list(OPS))
def test_unknown_optimizer_refused_and_nothing_changes(make_opt, op):
    net = random_isotropic_mlp([4, 5, 6, 3], "trainable", "trainable", seed=6)
    opt = make_opt(net, probe(net))
    snap = snapshot(net, opt)
    name = type(opt).__name__
    with pytest.raises(ip.UnsupportedOptimizerError, match=f"cannot transport the state of {name}"):
        OPS[op](net, opt)
    assert_identical(snap, net, opt)


def test_unknown_state_key_of_supported_optimizer_refused():
    net = random_isotropic_mlp([4, 5, 6, 3], "constant", "none", seed=7)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    train(net, opt, probe(net), 1)
    opt.state[net.linears[0].weight]["mystery"] = torch.zeros(5, 4, dtype=torch.float64)
    snap = snapshot(net, opt)
    with pytest.raises(ip.UnsupportedOptimizerError, match="holds state 'mystery'"):
        ip.left_diagonalise(net, 0, opt)
    assert_identical(snap, net, opt)
