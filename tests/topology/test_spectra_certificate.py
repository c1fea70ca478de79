"""The certificate of topology/spectra.py, piece by piece: its error bounds against the documented
formulas, ``≤ τ`` at a strength equal to τ, the margin ``e + δ + t(W)`` at its boundary, the exact
zeros as strengths at 0, the full route's fallback at exactly its error, the anchor's own count,
and the bookkeeping of tracked spectra (reuse, :func:`exact_anchor`, :func:`forget`).

Adversarial spectra are built to be consistent with their error bound (``|ŝ_i − s_i| ≤ e``), with
the exact strength sitting where trusting the computed one would give a wrong count."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import isoplastic as ip
from isoplastic.testing import random_isotropic_mlp
from isoplastic.topology import spectra
from isoplastic.topology.spectra import Spectrum

DT = torch.float64
EPS = {torch.float32: torch.finfo(torch.float32).eps, torch.float64: torch.finfo(torch.float64).eps}


def _signed_permutation(n: int, g: torch.Generator) -> torch.Tensor:
    """A random orthogonal matrix with one ±1 per row: products with it are exact."""
    p = torch.eye(n, dtype=DT)[torch.randperm(n, generator=g)]
    return p * (torch.randint(0, 2, (n,), generator=g) * 2 - 1).to(DT)


def _exact(s: list[float], shape: tuple[int, int], seed: int) -> torch.Tensor:
    """``P [diag(s) | 0] Q`` of ``shape`` with random signed permutations: singular values ``s``
    (and zeros beyond them) exactly, in float64."""
    g = torch.Generator().manual_seed(seed)
    core = torch.zeros(shape, dtype=DT)
    core[torch.arange(len(s)), torch.arange(len(s))] = torch.tensor(s, dtype=DT)
    return _signed_permutation(shape[0], g) @ core @ _signed_permutation(shape[1], g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 7), (9, 2), (64, 70)])
def test_error_bounds_are_the_documented_formulas(dtype, shape):
    """``t(W) = 16 sqrt(max(m, n)) eps_W σ + 4 sqrt(max(m, n) eps_64) σ``; the svd route's own
    error is its first term at ``σ_max``, the Gram route's (4096 entries and more) all of it."""
    big = max(shape)
    w = torch.randn(shape, generator=torch.Generator().manual_seed(big), dtype=DT).to(dtype)
    rounding = 16.0 * math.sqrt(big) * EPS[dtype]
    floor64 = 4.0 * math.sqrt(big * EPS[torch.float64])
    for sigma in (0.3, 2.5):
        assert spectra.tolerance(w, sigma) == pytest.approx((rounding + floor64) * sigma, rel=1e-14)
    spec = spectra.measure(w)
    assert spec.route == ("gram" if w.numel() >= 4096 else "svd")
    assert spec.sigma_max == pytest.approx(float(torch.linalg.svdvals(w.double()).max()),
                                           rel=1e-5)
    own = rounding if spec.route == "svd" else rounding + floor64
    assert spec.error == pytest.approx(own * spec.sigma_max, rel=1e-14)


@pytest.mark.parametrize("shape,seed", [((5, 4), 0), ((4, 6), 1), ((70, 64), 2)])
def test_a_strength_equal_to_tau_is_counted(shape, seed):
    """The count is ``#{s ≤ τ}`` (padding zeros included), also at ``τ`` equal to a strength."""
    s = [3.0, 2.0, 1.0, 0.5] + [0.25] * (min(shape) - 4)
    w = _exact(s, shape, seed)
    assert torch.equal(torch.linalg.svdvals(w)[:4], torch.tensor(s[:4], dtype=DT))
    pad = max(shape[0] - shape[1], 0)
    small = len(s) - 4
    for tau, below in ((3.0, len(s)), (2.0, len(s) - 1), (1.0, len(s) - 2), (0.5, small + 1),
                       (0.4, small), (0.0, 0)):
        expected = below + pad
        assert spectra.reference_count(w, tau) == expected
        assert spectra.strength_count(w, tau) == expected
        spec = spectra.measure(w)
        assert spectra.full_count(spec, w, tau) == expected
        if spec.route == "svd":  # its strengths are the exact ones here
            assert spec.count(tau) == expected


def test_the_certificate_holds_exactly_when_the_gap_exceeds_the_margin():
    """Certified iff ``min |ŝ_i − τ| > e + δ + t(W)``, ``t`` at ``σ_max + e + δ``. At equality the
    exact strength of ``W`` may sit at τ (here ``τ = 0``), so equality certifies nothing."""
    g = torch.Generator().manual_seed(11)
    a = torch.randn(4, 6, generator=g, dtype=DT)
    w = a + 1e-3 * torch.randn(4, 6, generator=g, dtype=DT)
    delta = spectra.drift(w, a)
    sigma, e = float(torch.linalg.svdvals(a).max()), 1e-3
    big = 16.0 * math.sqrt(6) * EPS[DT] + 4.0 * math.sqrt(6 * EPS[DT])
    margin = e + delta + spectra.tolerance(w, sigma + e + delta)
    assert margin == pytest.approx(e + delta + big * (sigma + e + delta), rel=1e-14)

    def spec(lowest: float) -> Spectrum:
        return Spectrum(a.clone(), torch.tensor([lowest, sigma], dtype=DT), 0, e, sigma, "gram")

    assert spectra.certified(spec(margin), w, 0.0, delta) is None
    above = math.nextafter(margin, math.inf)
    assert spectra.certified(spec(above), w, 0.0, delta) == 0
    assert spectra.certified(spec(above), w, 1.0, delta) == 1


def test_exact_zeros_are_strengths_at_zero_for_the_certificate():
    """Silent neurons from neurogenesis are exact zeros of the tracked spectrum, but the full
    route computes them with round-off: a τ within the margin of 0 certifies nothing then,
    while without zeros the same τ is certified far from every strength."""
    net = random_isotropic_mlp([6, 3, 4, 2], "trainable", "trainable", seed=5)
    w = net.linears[0].weight.detach().clone()
    tiny = 1e-12
    spectra.forget(net)
    assert spectra.tracked_count(net, 0, tiny) == (0, 3)
    spec = spectra.tracked(net)[0]
    moved = w + 1e-9 * torch.ones_like(w)  # not the anchor: no shortcut
    assert spectra.certified(spec, moved, tiny, spectra.drift(moved, w)) == 0
    ip.neurogenesis(net, 0, n=2)
    grown = net.linears[0].weight.detach()
    assert spec.zeros == 2 and spec.route == "predicted" and torch.equal(spec.anchor, grown)
    delta = spectra.drift(grown, spec.anchor)
    assert spectra.certified(spec, grown, tiny, delta) is None
    half = float(spec.values.min()) / 2
    assert spectra.certified(spec, grown, half, delta) == 2 == spectra.reference_count(grown, half)
    assert spectra.tracked_count(net, 0, tiny) == (spectra.reference_count(grown, tiny), 5)


@pytest.mark.parametrize("shape", [(4, 6), (64, 80)])
def test_an_uncertified_count_of_the_anchor_itself_is_the_full_routes_own(shape):
    """τ exactly at a computed strength: no certificate, but ``W`` equal to the anchor the full
    route computed has that route's own count; a predicted spectrum has none."""
    w = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=DT)
    spec = spectra.measure(w)
    tau = float(spec.values[1])
    delta = spectra.drift(w, w)
    assert spectra.certified(spec, w, tau, delta) == spectra.reference_count(w, tau) == 2
    predicted = dataclasses.replace(spec, route="predicted")
    assert spectra.certified(predicted, w, tau, delta) is None


def test_the_full_route_falls_back_to_svdvals_for_a_strength_within_its_error():
    """A Gram spectrum that puts the exact strength 0.5 at ``0.5 + e`` (within its error ``e``):
    at τ = 0.5 only the reference count is right (1); just below 0.5 the spectrum is trusted."""
    w = _exact([1.0, 0.5], (2, 3), seed=4)
    e = 2.0 ** -20
    spec = Spectrum(w.clone(), torch.tensor([0.5 + e, 1.0], dtype=DT), 0, e, 1.0, "gram")
    assert spectra.full_count(spec, w, 0.5) == spectra.reference_count(w, 0.5) == 1
    below = math.nextafter(0.5, 0.0)
    assert spectra.full_count(spec, w, below) == spec.count(below) == 0
    assert spectra.reference_count(w, below) == 0


def test_tracked_count_reuses_a_certified_spectrum_by_default():
    net = random_isotropic_mlp([5, 6, 4, 3], "trainable", "trainable", seed=8)
    lin = net.linears[0]
    s = torch.linalg.svdvals(lin.weight.detach())
    tau = float(s[2] + s[3]) / 2  # between two strengths, far from both
    assert spectra.tracked_count(net, 0, tau) == (spectra.reference_count(lin.weight, tau), 6)
    spec = spectra.tracked(net)[0]
    with torch.no_grad():  # a small step of training: drift, certified
        lin.weight.add_(1e-6 * torch.randn(lin.weight.shape, dtype=DT,
                                           generator=torch.Generator().manual_seed(0)))
    w = lin.weight.detach()
    assert spectra.tracked_count(net, 0, tau) == (spectra.reference_count(w, tau), 6)
    assert spectra.tracked(net)[0] is spec  # no decomposition: the same anchor
    assert spec.drift == spectra.drift(w, spec.anchor) > 0
    assert spectra.tracked_count(net, 0, tau, track=False) == (spectra.reference_count(w, tau), 6)
    fresh = spectra.tracked(net)[0]
    assert fresh is not spec and torch.equal(fresh.anchor, w)


def test_exact_anchor_is_the_computed_spectrum_of_the_current_weight_only():
    net = random_isotropic_mlp([5, 6, 4, 3], "trainable", "trainable", seed=9)
    assert spectra.exact_anchor(net, 0) is None  # never counted
    spectra.tracked_count(net, 0, 0.1)
    spec = spectra.tracked(net)[0]
    assert spec.route == "svd" and spectra.exact_anchor(net, 0) is spec
    assert spectra.exact_anchor(net, 1) is None  # layer 1 was not counted
    weight = net.linears[0].weight
    keep = weight.detach().clone()
    with torch.no_grad():
        weight[2, 3] += 1e-3  # any write makes the anchor inexact
    assert spectra.exact_anchor(net, 0) is None
    with torch.no_grad():
        weight.copy_(keep)
    assert spectra.exact_anchor(net, 0) is spec
    spectra.tracked(net)[0] = dataclasses.replace(spec, route="predicted")
    assert spectra.exact_anchor(net, 0) is None  # predicted, though equal
    spectra.tracked(net)[0] = spec
    spectra.grown(net, 0, 1)  # the anchor gained a row the weight has not
    assert spectra.exact_anchor(net, 0) is None


def test_forget_drops_one_layer_or_every_layer():
    net = random_isotropic_mlp([4, 5, 5, 3], "trainable", "trainable", seed=10)
    untracked = random_isotropic_mlp([4, 5, 3], "trainable", "trainable", seed=10)
    spectra.forget(untracked)  # nothing tracked: nothing to drop
    spectra.forget(untracked, 0)
    assert spectra.tracked(untracked) == {}
    for k in (0, 1):
        spectra.tracked_count(net, k, 0.1)
    spectra.forget(net, 1)
    assert list(spectra.tracked(net)) == [0]
    spectra.forget(net, 1)  # already gone
    assert list(spectra.tracked(net)) == [0]
    spectra.forget(net)
    assert spectra.tracked(net) == {}


def test_a_matrix_without_columns_has_only_padding_strengths():
    spec = spectra.measure(torch.zeros(2, 0, dtype=DT))
    assert spec.values.numel() == 0 and spec.zeros == 2
    assert spec.gap(0.3) == math.inf and spec.count(0.3) == 2
    assert spectra.strength_count(torch.zeros(2, 0, dtype=DT), 0.3) == 2


def test_a_float32_strength_at_the_rounded_threshold_is_counted_as_singular_values_does():
    """The count is ``(singular_values(net, k) <= τ).sum()``, which compares float32 strengths
    with τ in float32: a strength equal to ``float32(0.1)`` (just above the float64 0.1) is
    counted at ``τ = 0.1`` by every route."""
    w = torch.diag(torch.tensor([1.0, 0.1], dtype=torch.float32))
    net = ip.IsotropicMLP([2, 2, 2])
    with torch.no_grad():
        net.linears[0].weight.copy_(w)
    strengths = ip.singular_values(net, 0)
    assert float(strengths[1]) > 0.1 and int((strengths <= 0.1).sum()) == 1
    assert spectra.reference_count(w, 0.1) == 1
    assert spectra.strength_count(w, 0.1) == 1
    assert spectra.tracked_count(net, 0, 0.1) == (1, 2)
    assert spectra.tracked_count(net, 0, 0.1) == (1, 2)  # from the tracked spectrum
