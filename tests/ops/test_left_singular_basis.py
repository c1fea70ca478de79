"""``left_singular_basis``: the float64-Gram route for float32 weights is a valid left singular
basis, at least as accurate as a float32 SVD; float64 weights keep the SVD."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from isoplastic.linalg import left_singular_basis, ordered_svd, random_orthogonal

shapes = st.tuples(st.integers(1, 40), st.integers(1, 60))


def _matrix(m: int, n: int, seed: int, zero_rows: int) -> torch.Tensor:
    """``R @ A`` with ``zero_rows`` exact zero singular values hidden by a random rotation."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, n, generator=g, dtype=torch.float64)
    a[m - min(zero_rows, m - 1):] = 0.0
    return random_orthogonal(m, generator=g) @ a


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), zero_rows=st.integers(0, 3))
def test_gram_route_is_an_orthogonal_basis_that_diagonalises_float32(shape, seed, zero_rows):
    w64 = _matrix(*shape, seed, zero_rows)
    w = w64.float()
    u, s = left_singular_basis(w)
    m, n = shape
    assert u.dtype == torch.float32 and u.shape == (m, m) and s.shape == (min(m, n),)
    assert torch.all(s[:-1] >= s[1:])
    eye = torch.eye(m, dtype=torch.float64)
    assert float((u.double().T @ u.double() - eye).abs().max()) < 1e-6
    rot = u.double().T @ w.double()  # rows σ_i v_iᵀ
    ref = torch.linalg.svdvals(w.double())
    scale = float(ref.max()) if ref.numel() else 1.0
    k = min(m, n)
    # row norms are the singular values, and the rows are orthogonal
    assert torch.allclose(rot[:k].norm(dim=1), ref, atol=1e-6 * scale)
    gram = rot @ rot.T
    off = gram - torch.diag(torch.diag(gram))
    assert float(off.abs().max()) < 1e-6 * scale**2
    # at least as good as float32's own SVD on the rows of (near) zero strength
    u_svd, _, _ = ordered_svd(w, full_v=False)
    rot_svd = u_svd.double().T @ w.double()
    silent = slice(m - min(zero_rows, m - 1), m) if zero_rows else slice(m, m)
    if rot[silent].numel():
        assert float(rot[silent].norm(dim=1).max()) <= max(
            4.0 * float(rot_svd[silent].norm(dim=1).max()), 1e-6 * scale)


@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1))
def test_float64_uses_the_svd_exactly(shape, seed):
    w = _matrix(*shape, seed, zero_rows=1)
    u, s = left_singular_basis(w)
    u_ref, s_ref, _ = ordered_svd(w, full_v=False)
    assert torch.equal(u, u_ref) and torch.equal(s, s_ref)


def test_signs_are_canonical_and_deterministic():
    w = _matrix(12, 30, 3, zero_rows=0).float()
    u1, _ = left_singular_basis(w)
    u2, _ = left_singular_basis(w.clone())
    assert torch.equal(u1, u2)
    idx = u1.abs().argmax(dim=0)
    assert bool((u1.gather(0, idx.unsqueeze(0)) > 0).all())
