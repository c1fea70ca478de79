"""Sparsification: exact function, measured zero fraction equals the closed form, its limits."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import closed_form_percent, probe, sparsify_loop

import isoplastic as ip
from isoplastic.ops.diagonalise import weight_zero_fraction
from isoplastic.testing import FLOAT_TOLERANCE, assert_function_preserved, random_isotropic_mlp
from isoplastic.testing.strategies import isotropic_mlps, seeds, widths_lists


@settings(max_examples=25)
@given(net=isotropic_mlps(widths=widths_lists(min_hidden=1, max_hidden=5)))
def test_sparsify_preserves_function_and_equals_full_diagonalise_loop(net, float_dtype):
    net = net.to(float_dtype)
    x = probe(net)
    loop = copy.deepcopy(net)
    report = assert_function_preserved(ip.sparsify, net, x, tol=FLOAT_TOLERANCE[float_dtype])
    layers = sparsify_loop(loop)
    assert report.layers == layers
    for p, q in zip(net.parameters(), loop.parameters(), strict=True):
        assert torch.equal(p, q)


@settings(max_examples=25)
@given(n0=st.integers(1, 6), n=st.integers(2, 6), hidden=st.integers(1, 6), n_out=st.integers(1, 6),
       seed=seeds())
def test_measured_zero_fraction_equals_closed_form_for_equal_widths(n0, n, hidden, n_out, seed):
    widths = [n0] + [n] * hidden + [n_out]
    net = random_isotropic_mlp(widths, "trainable", "trainable", seed=seed)
    report = ip.sparsify(net)
    expected = ip.sparsity_closed_form(widths)
    assert report.closed_form_fraction == expected
    assert report.weight_zero_fraction == pytest.approx(expected, abs=1e-15)
    assert weight_zero_fraction(net) == pytest.approx(expected, abs=1e-15)
    assert report.nonzero_after <= report.nonzero_before


def test_closed_form_tends_to_one_half_with_depth_and_width():
    prev_gap = None
    for depth in range(2, 41, 2):
        gap = 0.5 - ip.sparsity_closed_form([500] * (depth + 2))
        assert gap > 0
        if prev_gap is not None:
            assert gap < prev_gap
        prev_gap = gap
    gaps_by_width = [0.5 - ip.sparsity_closed_form([n] * 42) for n in (10, 100, 500, 5000)]
    assert gaps_by_width == sorted(gaps_by_width, reverse=True)
    assert abs(ip.sparsity_closed_form([500] * 1002) - 0.5) < 2e-3
    assert abs(ip.sparsity_closed_form([5000] * 10_002) - 0.5) < 2e-4


@pytest.mark.parametrize("n0,hidden,n_out,percent", [
    (3072, [500] * 2, 10, 13.9), (3072, [500] * 3, 10, 12.2), (3072, [500] * 4, 10, 21.8),
    (3072, [500] * 5, 10, 19.6), (3072, [500] * 6, 10, 26.8), (3072, [1000] * 2, 10, 24.5),
    (3072, [1000] * 3, 10, 19.7), (3072, [1000] * 4, 10, 32.9), (3072, [1000] * 5, 10, 28.2),
    (3072, [1000] * 6, 10, 37.1),
])
def test_closed_form_matches_paper_table(n0, hidden, n_out, percent):
    value = 100 * ip.sparsity_closed_form([n0, *hidden, n_out])
    assert value == pytest.approx(percent, abs=0.05)
    assert value == pytest.approx(closed_form_percent(n0, hidden, n_out), rel=1e-12)
