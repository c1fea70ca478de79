"""Spectral tracking between neuroadapt passes (topology/spectra.py, issue 17): the tracked route
certifies counts only when no strength can have crossed τ, so it decides and changes exactly
what the full route does, and a strength that does cross τ is always counted."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import isoplastic as ip
from isoplastic.linalg import random_orthogonal
from isoplastic.topology import policies, spectra


def _with_spectrum(s: torch.Tensor, cols: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """``U diag(s) Vᵀ`` of shape ``(len(s), cols)`` with random orthogonal ``U``, ``V``."""
    g = torch.Generator().manual_seed(seed)
    m = s.shape[0]
    u = random_orthogonal(m, generator=g, dtype=torch.float64)
    v = random_orthogonal(cols, generator=g, dtype=torch.float64)[:, :m]
    return ((u * s.to(torch.float64)) @ v.T).to(dtype)


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 10_000),
       scale=st.sampled_from([0.0, 1e-9, 1e-6, 1e-4, 1e-2, 0.3]),
       rank_one=st.booleans())
def test_drift_bounds_the_spectral_norm_of_the_change(dtype, seed, scale, rank_one):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(70, 90, generator=g, dtype=torch.float64).to(dtype)
    e = (torch.randn(70, 1, generator=g, dtype=torch.float64)
         @ torch.randn(1, 90, generator=g, dtype=torch.float64) if rank_one
         else torch.randn(70, 90, generator=g, dtype=torch.float64))
    w = (a.double() + scale * e).to(dtype)
    exact = float(torch.linalg.matrix_norm(w.double() - a.double(), ord=2))
    bound = spectra.drift(w, a)
    assert bound >= exact
    if scale == 0:
        assert bound < 1e-15  # only the underflow term
    else:  # and not uselessly loose: Frobenius over spectral is at most sqrt(rank)
        assert bound <= exact * (70 ** 0.5) * 1.01 + 1e-15


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 10_000),
       tau=st.sampled_from([0.05, 0.1, 0.3]),
       step=st.sampled_from([1e-7, 1e-5, 1e-3, 0.05]), down=st.booleans())
def test_a_strength_crossing_tau_between_passes_is_counted(dtype, seed, tau, step, down):
    """Adversarial: one singular value sits just beside τ at the first count and moves across it
    (by 2·step, through a rank-one change along its own singular vectors) before the second;
    the tracked count is the reference count of the new matrix, never the stale one."""
    s = torch.cat([torch.linspace(0.5, 2.0, 60, dtype=torch.float64),
                   torch.tensor([0.01, 0.02, tau + step if down else tau - step],
                                dtype=torch.float64)])
    w0 = _with_spectrum(s, 96, dtype, seed)
    net = ip.IsotropicMLP([96, 63, 5], generator=torch.Generator().manual_seed(seed)).to(dtype)
    with torch.no_grad():
        net.linears[0].weight.copy_(w0)
    c0, _ = spectra.tracked_count(net, 0, tau)
    assert c0 == spectra.reference_count(w0, tau)
    # move the last singular value across τ: W1 = W0 ∓ 2·step u vᵀ
    u, sv, vh = torch.linalg.svd(w0.double(), full_matrices=False)
    i = int(torch.argmin((sv - s[-1]).abs()))
    sign = -1.0 if down else 1.0
    w1 = (w0.double() + sign * 2 * step * torch.outer(u[:, i], vh[i])).to(dtype)
    with torch.no_grad():
        net.linears[0].weight.copy_(w1)
    c1, _ = spectra.tracked_count(net, 0, tau)
    assert c1 == spectra.reference_count(w1, tau)
    assert c1 == c0 + (1 if down else -1) or step <= 1e-5  # tiny steps may stay within round-off


def _train_and_adapt(net, opt, x, y, epochs: int, lrs: list[float]) -> list[tuple]:
    decisions = []
    for e in range(epochs):
        for group in opt.param_groups:
            group["lr"] = lrs[e % len(lrs)]
        for i in range(3):
            opt.zero_grad(set_to_none=True)
            idx = slice(16 * i, 16 * (i + 1))
            (F.cross_entropy(net(x[idx]), y[idx]) + net.psi_penalty()).backward()
            opt.step()
        changes = ip.neuroadapt(net, 2, 0.1, opt, generator=torch.Generator().manual_seed(e))
        decisions.append([(c.op, c.layer, c.n) for c in changes])
    return decisions


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tracked_and_full_routes_make_identical_changes_along_training(dtype, monkeypatch):
    """Short real trajectories (AdamW, neuroadapt after every 3 steps; learning rates alternating
    between ordinary and tiny, so that some passes certify from the tracked spectra and others
    recount): the decisions and every parameter and optimizer moment are bit-identical to
    the run that counts every layer by the full route."""
    torch.manual_seed(0)
    base = ip.IsotropicMLP([72, 80, 70, 6], generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        base.linears[0].weight.mul_(3.0)
        base.linears[0].weight[:6] *= 1e-3  # six near-silent neurons: the first pass removes
    g = torch.Generator().manual_seed(2)
    x = torch.randn(48, 72, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, 6, (48,), generator=g)
    lrs = [1e-3, 0.0, 1e-9]
    measured: dict[str, int] = {"tracked": 0, "full": 0}
    real = spectra.measure
    runs = {}
    for route in ("tracked", "full"):
        def spy(w, route=route):
            measured[route] += 1
            return real(w)

        monkeypatch.setattr(spectra, "measure", spy)
        monkeypatch.setattr(policies, "TRACK", route == "tracked")
        net = copy.deepcopy(base)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, foreach=True)
        runs[route] = (net, opt, _train_and_adapt(net, opt, x, y, 9, lrs))
    (a, oa, da), (b, ob, db) = runs["tracked"], runs["full"]
    assert da == db
    assert any(d for d in da)  # the trajectory did change the network
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(oa.state[p][key], ob.state[q][key])
    assert measured["tracked"] < measured["full"]  # the tracked route did skip decompositions
    for k in range(a.n_hidden):
        assert int((ip.singular_values(a, k) <= 0.1).sum()) == 2


def test_growth_carries_the_tracked_spectrum_exactly():
    net = ip.IsotropicMLP([72, 80, 70, 6], generator=torch.Generator().manual_seed(0))
    ip.neuroadapt(net, 2, 0.1)
    before = {k: spectra.tracked(net)[k].count(0.1) for k in range(2)}
    ip.neurogenesis(net, 0, 3, init_scale=0.05)
    spec = spectra.tracked(net)[0]
    assert spec.route == "predicted" and spec.anchor.shape == net.linears[0].weight.shape
    assert spec.count(0.1) == before[0] + 3
    for k in range(2):
        c, _ = spectra.tracked_count(net, k, 0.1)
        assert c == spectra.reference_count(net.linears[k].weight.detach(), 0.1)


def test_tracked_state_goes_with_the_block():
    import gc
    import weakref

    net = ip.IsotropicMLP([72, 80, 6])
    ip.neuroadapt(net, 2, 0.1)
    assert 0 in spectra.tracked(net)
    n = len(spectra._TRACKED)
    block = weakref.ref(net)
    del net
    gc.collect()
    # The tracked state does not keep its block alive, and its entry leaves with it (other
    # blocks of earlier tests may be collected by the same gc pass: at most n - 1 remain).
    assert block() is None
    assert len(spectra._TRACKED) <= n - 1


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 10_000),
       near=st.sampled_from([0.0, 1e-7, 1e-4, 1e-2]),
       scale=st.sampled_from([0.0, 1e-8, 1e-5, 1e-3, 3e-2, 1.0]),
       tall=st.booleans())
def test_tracked_counts_equal_full_and_svdvals_counts_after_any_change(dtype, seed, near, scale,
                                                                       tall):
    """Random matrices with strengths at distance ``near`` from τ, then random changes of any
    size: whatever the tracked route answers equals the full route's count and ``svdvals``'."""
    tau = 0.1
    rows, cols = (90, 70) if tall else (70, 90)
    r = min(rows, cols)
    s = torch.cat([torch.linspace(0.3, 2.0, r - 4, dtype=torch.float64),
                   torch.tensor([0.0, 0.03, tau - near, tau + near], dtype=torch.float64)])
    w0 = _with_spectrum(s, max(rows, cols), dtype, seed)
    w0 = w0 if not tall else w0.T.contiguous()
    net = ip.IsotropicMLP([cols, rows, 4], generator=torch.Generator().manual_seed(seed)).to(dtype)
    with torch.no_grad():
        net.linears[0].weight.copy_(w0)
    spectra.tracked_count(net, 0, tau)
    g = torch.Generator().manual_seed(seed + 7)
    e = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    w1 = (w0.double() + scale * e / e.norm()).to(dtype)
    with torch.no_grad():
        net.linears[0].weight.copy_(w1)
    c, n = spectra.tracked_count(net, 0, tau)
    assert n == rows
    assert c == spectra.strength_count(w1, tau) == spectra.reference_count(w1, tau)
