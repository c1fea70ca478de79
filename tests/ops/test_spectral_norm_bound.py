"""spectral_norm_bound: a certified upper bound of ‖W‖₂, within 1e-6 of it, whatever the
estimate it starts from."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from isoplastic import linalg
from isoplastic.testing.strategies import seeds


def exact_norm(w: torch.Tensor) -> float:
    return float(torch.linalg.svdvals(w.to(torch.float64))[0]) if w.numel() else 0.0


@st.composite
def matrices(draw):
    p, q = draw(st.integers(1, 70)), draw(st.integers(1, 70))
    g = torch.Generator().manual_seed(draw(seeds()))
    a = torch.randn(p, q, generator=g, dtype=torch.float64) * 10.0 ** draw(st.integers(-3, 3))
    kind = draw(st.sampled_from(["gaussian", "clustered", "rank_one", "low_rank"]))
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    if kind == "clustered":  # the top singular values equal: the slowest case for Lanczos
        s = torch.full_like(s, float(s[0]))
        s[-1] *= 0.5
    elif kind == "rank_one":
        s[1:] = 0.0
    elif kind == "low_rank":
        s[len(s) // 2:] = 0.0
    a = (u * s) @ vh
    return a.to(draw(st.sampled_from([torch.float64, torch.float32, torch.bfloat16])))


@settings(max_examples=80, deadline=None)
@given(w=matrices())
def test_bound_is_above_the_norm_and_within_1e6_of_it(w):
    exact = exact_norm(w)
    bound = linalg.spectral_norm_bound(w)
    assert bound >= exact * (1 - 1e-14)
    assert bound <= exact * (1 + 2e-6) + 1e-300


def test_zero_matrix_has_bound_zero():
    assert linalg.spectral_norm_bound(torch.zeros(4, 7)) == 0.0


@pytest.mark.parametrize("scale", [0.0, 0.5, 2.0, 1e6])
def test_the_certificate_not_the_estimate_makes_it_an_upper_bound(scale, monkeypatch):
    """A wrong estimate θ (too small: the Cholesky factorisation fails and eigvalsh is taken;
    too large: a looser bound) never gives a value below the norm."""
    w = torch.randn(40, 30, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = exact_norm(w)
    true_estimate = linalg._top_ritz_value
    monkeypatch.setattr(linalg, "_top_ritz_value", lambda g: scale * true_estimate(g))
    bound = linalg.spectral_norm_bound(w)
    assert bound >= exact * (1 - 1e-14)
    if scale <= 1.0:
        assert bound <= exact * (1 + 2e-6)
    else:  # θ(1 + δ) certifies at once: the bound is sqrt of it
        assert bound <= exact * (scale * (1 + 1e-9)) ** 0.5
