"""neuroadapt's fast route (certified Gram counts, counts predicted after its own changes, the
count's Gram reused as the removal basis) decides and changes exactly what the plain ``svdvals``
route does, on layers large enough (>= 4096 entries) to take it."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import isoplastic as ip
from isoplastic.linalg import all_finite
from isoplastic.topology import policies, spectra
from isoplastic.topology.shrink import remove_weakest


def _net(widths: list[int], dtype: torch.dtype, silent: list[int], seed: int) -> ip.IsotropicMLP:
    """A net whose hidden layer k has ``silent[k]`` near-silent neurons (rows scaled to ~1e-3)."""
    net = ip.IsotropicMLP(widths, generator=torch.Generator().manual_seed(seed)).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for k, n in enumerate(silent):
            lin = net.linears[k]
            lin.weight.mul_(3.0)
            rows = torch.randperm(lin.weight.shape[0], generator=g)[:n]
            lin.weight[rows] *= 1e-3
    return net


def _adapt(net, opt, fast: bool, **kw):
    policies.FAST_COUNT = fast
    try:
        return ip.neuroadapt(net, optimizer=opt, generator=torch.Generator().manual_seed(0), **kw)
    finally:
        policies.FAST_COUNT = True


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), dtype=st.sampled_from([torch.float32, torch.float64]),
       hidden=st.lists(st.integers(64, 90), min_size=1, max_size=3),
       silent=st.lists(st.integers(0, 7), min_size=3, max_size=3),
       scaffold=st.integers(1, 3), threshold=st.sampled_from([0.05, 0.1, 0.3]))
def test_fast_route_makes_the_same_changes_as_svdvals(seed, dtype, hidden, silent, scaffold,
                                                       threshold):
    widths = [72, *hidden, 6]
    base = _net(widths, dtype, silent[: len(hidden)], seed)
    a, b = base, copy.deepcopy(base)
    oa = torch.optim.AdamW(a.parameters(), lr=1e-3)
    ob = torch.optim.AdamW(b.parameters(), lr=1e-3)
    x = torch.randn(4, 72, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    for net, opt in ((a, oa), (b, ob)):
        net(x).sum().backward()
        opt.step()
    ca = _adapt(a, oa, True, scaffold=scaffold, threshold=threshold)
    cb = _adapt(b, ob, False, scaffold=scaffold, threshold=threshold)
    assert [(c.op, c.layer, c.n) for c in ca] == [(c.op, c.layer, c.n) for c in cb]
    for x, y in zip(ca, cb):
        assert x.predicted_bound == pytest.approx(y.predicted_bound, rel=1e-4, abs=1e-12)
    for p, q in zip(a.parameters(), b.parameters()):
        assert p.shape == q.shape
        assert torch.allclose(p, q, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)
    for k in range(a.n_hidden):
        assert int((ip.singular_values(a, k) <= threshold).sum()) == scaffold


def test_removal_with_the_counts_gram_equals_neurodegeneration():
    net = _net([72, 80, 70, 6], torch.float32, [5, 0], seed=3)
    other = copy.deepcopy(net)
    w = net.linears[0].weight.detach().double()
    norm = float(torch.linalg.matrix_norm(net.linears[1].weight.detach().double(), 2))
    ca = remove_weakest(net, 0, 3, None, gram=w @ w.T, next_norm=norm)
    cb = ip.neurodegeneration(other, 0, 3)
    for p, q in zip(net.parameters(), other.parameters()):
        assert torch.equal(p, q)
    assert ca.removed_singular_values == cb.removed_singular_values
    assert ca.predicted_bound == pytest.approx(cb.predicted_bound, rel=1e-5)


def test_all_finite_is_exact_including_overflowing_sums():
    big = torch.full((4,), 3e38, dtype=torch.float32)  # finite entries, infinite sum
    assert all_finite(big)
    assert all_finite(torch.zeros(0)) and all_finite(torch.arange(5))
    for bad in (float("nan"), float("inf"), float("-inf")):
        t = torch.ones(10, 10)
        t[3, 4] = bad
        assert not all_finite(t)
    t = torch.ones(6)
    t[0], t[1] = float("inf"), float("-inf")  # sum NaN
    assert not all_finite(t)


def test_a_removal_is_not_followed_by_a_recount_of_its_own_layer(monkeypatch):
    net = _net([72, 80, 70, 6], torch.float32, [6, 0], seed=5)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    counted = []
    real = spectra.measure

    def spy(w):
        counted.append(tuple(w.shape))
        return real(w)

    monkeypatch.setattr(spectra, "measure", spy)
    changes = ip.neuroadapt(net, 2, 0.1, opt)
    (removal,) = [c for c in changes if c.layer == 0]
    assert removal.op == "neurodegeneration"
    # layer 0 is counted once: its count after the removal is predicted, not recomputed
    assert counted.count((80, 72)) == 1 and (80 - removal.n, 72) not in counted
    for k in range(net.n_hidden):
        assert int((ip.singular_values(net, k) <= 0.1).sum()) == 2
