"""Neurodegeneration by Householder reflectors (``diagonalise=False``) against the full rotation
into the left singular basis (the default): the same function, removed singular values, biases
and bound; the optimizer state transported exactly as the dense rotation by the same reflectors
would; the reflectors' first and second transports equal the dense ``H`` and ``H∘H`` products
(Kronecker reference); a failure in the middle leaves model and optimizer bit-identical."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_identical, probe, snapshot, transport_rotation

import isoplastic as ip
from isoplastic.core import optim_state as ostate
from isoplastic.linalg import left_singular_basis
from isoplastic.testing import random_isotropic_mlp, relative_change
from isoplastic.testing.strategies import seeds, widths_lists
from isoplastic.topology.shrink import _pivots

MODES = st.sampled_from(["none", "constant", "trainable"])
PSI = st.sampled_from(["none", "constant", "trainable", "trainable+decay"])


def orthonormal(n: int, k: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, k, generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    return q


@settings(max_examples=60)
@given(n=st.integers(2, 12), data=st.data(), seed=seeds(), dim=st.integers(0, 1),
       other=st.integers(1, 5))
def test_reflectors_transport_equals_the_dense_products(n, data, seed, dim, other):
    k = data.draw(st.integers(1, n - 1))
    positions = sorted(data.draw(st.permutations(range(n)))[:k])
    q = orthonormal(n, k, seed)
    h = ostate.Reflectors.spanning(q, positions)
    r = h.dense()
    eye = torch.eye(n, dtype=torch.float64)
    assert float((r.T @ r - eye).abs().max()) <= 1e-14
    # the columns at `positions` span q: projecting them onto span(q) changes nothing
    assert torch.allclose(q @ (q.T @ r[:, positions]), r[:, positions], atol=1e-14, rtol=0)
    g = torch.Generator().manual_seed(seed + 1)
    shape = (n, other) if dim == 0 else (other, n)
    t = torch.randn(shape, generator=g, dtype=torch.float64)
    v = torch.rand(shape, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(
        -8, 1, shape, generator=g)  # second moments spanning 8 decades
    first = h.apply(t, dim, ostate.FIRST)
    second = h.apply(v, dim, ostate.SECOND)
    assert torch.allclose(first, transport_rotation(t, dim, r), atol=1e-13, rtol=0)
    dense2 = transport_rotation(v, dim, r, second_moment=True)
    assert torch.allclose(second, dense2, atol=1e-14 * float(v.max()), rtol=0)
    assert bool((second >= 0).all())
    one_d = torch.rand(n, generator=g, dtype=torch.float64)
    assert torch.allclose(h.apply(one_d, 0, ostate.SECOND),
                          transport_rotation(one_d, 0, r, second_moment=True), atol=1e-14, rtol=0)


@settings(max_examples=40)
@given(n=st.integers(20, 120), k=st.integers(1, 6), seed=seeds(),
       spread=st.sampled_from([0.0, 1e-3, 0.3, None]))
def test_float32_second_moments_stay_non_negative_within_the_low_rank_round_off(n, k, seed,
                                                                                 spread):
    """float32 second moments spanning 10 decades, removed directions near coordinate axes
    (``spread``: the perturbation of axis vectors; None: random directions), the removal's own
    pivoted positions: every entry is at least its own term ``v_i (1 − g_i)²`` (never negative),
    and its error against the float64 dense product stays within float32 round-off of
    ``Σ_j v_j (Σ_a |V_ja| |M_ai|)²``, the low-rank sum taken in absolute values."""
    g = torch.Generator().manual_seed(seed)
    if spread is None:
        q = orthonormal(n, k, seed)
    else:
        axes = torch.zeros(n, k, dtype=torch.float64)
        axes[torch.randperm(n, generator=g)[:k], torch.arange(k)] = 1.0
        q, _ = torch.linalg.qr(axes + spread * torch.randn(n, k, generator=g, dtype=torch.float64))
    h = ostate.Reflectors.spanning(q, _pivots(q))
    v = (torch.rand(n, 4, generator=g, dtype=torch.float64)
         * 10.0 ** torch.randint(-10, 1, (n, 4), generator=g)).float()
    got = h.apply(v, 0, ostate.SECOND).double()
    exact = ostate.Rotation(h.dense()).apply(v.double(), 0, ostate.SECOND)
    vm = h.v.abs() @ h.m.abs()  # (n, n): Σ_a |V_ja| |M_ai|
    own = v.double() * (1.0 - (h.v * h.m.mT).sum(1, keepdim=True)) ** 2
    assert bool((got >= own * (1 - 1e-6)).all())
    scale = exact + ostate.Rotation(vm).apply(v.double(), 0, ostate.SECOND)
    assert bool(((got - exact).abs() <= 8 * n * torch.finfo(torch.float32).eps * scale).all())


def test_second_moments_stay_non_negative_where_a_kept_coordinate_is_reflected_away():
    """Reflectors that swap a kept coordinate 1 (``H_11 = 0``) with the removed 0 (not the
    pivoted choice): the tiny moment coordinate 1 receives must not come out negative."""
    n = 200
    q = torch.zeros(n, 1, dtype=torch.float64)
    q[1, 0] = 1.0
    h = ostate.Reflectors.spanning(q, [0])
    v = torch.full((n, 3), 1e-12, dtype=torch.float32)
    v[1] = 1.0
    got = h.apply(v, 0, ostate.SECOND)
    assert bool((got >= 0).all())
    assert torch.equal(got[0], v[1])  # the large moment went to the removed coordinate
    assert _pivots(q) == [1]  # the removal itself would remove coordinate 1: H = I
    assert torch.equal(ostate.Reflectors.spanning(q, [1]).apply(v, 0, ostate.SECOND), v)


def trained(net: ip.IsotropicMLP, seed: int) -> torch.optim.Optimizer:
    """AdamW (amsgrad: a second second-moment key) after two steps, with ``.grad`` populated."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, amsgrad=True)
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        opt.zero_grad()
        x = torch.randn(6, net.widths[0], generator=g, dtype=net.linears[0].weight.dtype)
        y = torch.randint(0, net.widths[-1], (6,), generator=g)
        net.train()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    return opt


@st.composite
def cases(draw):
    widths = draw(widths_lists(min_hidden=1, max_hidden=3, min_width=2, max_width=9))
    net = random_isotropic_mlp(widths, draw(MODES), draw(PSI), seed=draw(seeds()))
    k = draw(st.integers(0, net.n_hidden - 1))
    n = draw(st.integers(1, net.widths[k + 1] - 1))
    criterion = draw(st.sampled_from(["singular_value", "impact"]))
    return net, k, n, criterion


@settings(max_examples=60, deadline=None)
@given(case=cases(), seed=seeds())
def test_reflectors_and_full_rotation_give_the_same_removal(case, seed):
    net, k, n, criterion = case
    opt = trained(net, seed)
    full, opt_full = copy.deepcopy((net, opt))
    x = probe(net)
    with torch.no_grad():
        before = net(x)
    a = ip.neurodegeneration(net, k, n, opt, criterion=criterion, diagonalise=False)
    b = ip.neurodegeneration(full, k, n, opt_full, criterion=criterion)
    assert a.removed_singular_values == b.removed_singular_values  # the same decomposition
    assert a.removed_bias == pytest.approx(b.removed_bias, rel=1e-12, abs=1e-14)
    assert a.predicted_bound == pytest.approx(b.predicted_bound, rel=1e-10, abs=1e-14)
    assert a.predicted_offset == pytest.approx(b.predicted_offset, rel=1e-10, abs=1e-14)
    assert net.widths == full.widths
    with torch.no_grad():
        after, after_full = net(x), full(x)
    scale = float((before - after_full).norm()) + float(after_full.norm())
    assert float((after - after_full).norm()) <= 1e-10 * scale
    for act, other in zip(net.activations, full.activations):
        assert act.o == pytest.approx(other.o, rel=1e-12)
    # the kept neurons span the same space: the kept incoming rows have the same singular values
    sv, sv_full = ip.singular_values(net, k), ip.singular_values(full, k)
    assert torch.allclose(sv, sv_full, atol=1e-12 * float(sv_full.max()), rtol=0)


@settings(max_examples=40, deadline=None)
@given(case=cases(), seed=seeds())
def test_optimizer_state_is_the_dense_rotation_by_the_same_reflectors(case, seed):
    net, k, n, _ = case
    opt = trained(net, seed)
    layer = net.hidden_layer(k)
    u, _ = left_singular_basis(layer.incoming_matrix().detach())
    q = u[:, net.widths[k + 1] - n:]
    positions = _pivots(q)
    r = ostate.Reflectors.spanning(q, positions).dense()
    keep = [i for i in range(net.widths[k + 1]) if i not in positions]
    axes = [(a.param, a.dim) for a in layer.space.axes]
    expected = {}
    axes = [(p, dim) for p, dim in axes if p.requires_grad]  # a constant ψ has no state
    for p, dim in axes:
        for key, value in opt.state[p].items():
            if ostate.STATE_KINDS[key] == ostate.KEEP:
                continue
            moved = transport_rotation(value, dim, r, ostate.STATE_KINDS[key] == ostate.SECOND)
            expected[(id(p), key)] = moved.index_select(dim, torch.tensor(keep))
        expected[(id(p), "grad")] = transport_rotation(p.grad, dim, r).index_select(
            dim, torch.tensor(keep))
    ip.neurodegeneration(net, k, n, opt, diagonalise=False)
    for p, _ in axes:
        moved = {key: value for key, value in opt.state[p].items()
                 if ostate.STATE_KINDS[key] != ostate.KEEP}
        assert len(moved) == 3  # exp_avg, exp_avg_sq, max_exp_avg_sq
        for key, value in [*moved.items(), ("grad", p.grad)]:
            want = expected[(id(p), key)]
            assert torch.allclose(value, want, atol=1e-13 * (1 + float(want.abs().max())),
                                  rtol=0), key


@pytest.mark.parametrize("fail_at", [1, 2, 5])
def test_a_failure_while_applying_the_reflectors_leaves_model_and_optimizer_untouched(
        fail_at, monkeypatch):
    net = random_isotropic_mlp([5, 7, 6, 3], "trainable", "trainable", seed=3)
    opt = trained(net, 4)
    snap = snapshot(net, opt)
    calls = []
    original = ostate.Reflectors.apply

    def failing(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == fail_at:
            raise RuntimeError("injected")
        return out

    monkeypatch.setattr(ostate.Reflectors, "apply", failing)
    with pytest.raises(RuntimeError, match="injected"):
        ip.neurodegeneration(net, 1, 2, opt, diagonalise=False)
    assert_identical(snap, net, opt)


def test_float32_removal_by_reflectors_matches_the_full_rotation():
    """float32: both routes change the function by the same round-off (rows of σ = 0 removed)."""
    net = random_isotropic_mlp([40, 60, 50, 5], "trainable", "trainable", seed=5,
                               dtype=torch.float32)
    with torch.no_grad():
        net.linears[0].weight[:4] *= 1e-6  # four near-silent neurons
    opt = trained(net, 6)
    full, opt_full = copy.deepcopy((net, opt))
    x = probe(net).to(torch.float32)
    with torch.no_grad():
        before = net(x)
    a = ip.neurodegeneration(net, 0, 4, opt, diagonalise=False)
    b = ip.neurodegeneration(full, 0, 4, opt_full)
    assert a.removed_singular_values == b.removed_singular_values
    with torch.no_grad():
        assert relative_change(full(x), net(x)) <= 1e-5
        assert relative_change(before, net(x)) <= 1e-4
    assert a.predicted_bound == pytest.approx(b.predicted_bound, rel=1e-5)


@settings(max_examples=15, deadline=None)
@given(seed=seeds(), scaffold=st.integers(1, 2))
def test_neuroadapt_by_reflectors_makes_the_same_changes_to_the_same_function(seed, scaffold):
    """One neuroadapt pass (removals in several layers, float64, widths above the Gram route's
    size) by reflectors and by the full rotation: the same changes, records and function."""
    net = random_isotropic_mlp([70, 72, 66, 4], "trainable", "trainable", seed=seed)
    with torch.no_grad():  # near-silent neurons: 4 in layer 0, 3 in layer 1
        net.linears[0].weight[:4] *= 1e-3
        net.linears[1].weight[-3:] *= 1e-3
    opt = trained(net, seed)
    full, opt_full = copy.deepcopy((net, opt))
    x = probe(net)
    ca = ip.neuroadapt(net, scaffold, 0.1, opt, diagonalise=False)
    cb = ip.neuroadapt(full, scaffold, 0.1, opt_full)
    assert [(c.op, c.layer, c.n) for c in ca] == [(c.op, c.layer, c.n) for c in cb]
    assert any(c.op == "neurodegeneration" for c in ca)
    for a, b in zip(ca, cb):
        assert a.removed_singular_values == pytest.approx(b.removed_singular_values, abs=1e-12)
        assert a.predicted_bound == pytest.approx(b.predicted_bound, rel=1e-9, abs=1e-14)
    with torch.no_grad():
        assert relative_change(full(x), net(x)) <= 1e-10
