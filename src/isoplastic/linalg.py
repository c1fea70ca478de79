"""Small linear-algebra helpers shared by every operation.

* :func:`random_orthogonal` draws R from the Haar measure on O(n) (QR with sign correction).
* :func:`ordered_svd` returns a full SVD with descending singular values and a deterministic
  sign convention, so the same matrix always yields the same basis (needed for reproducible
  and distributed structural changes).
* :func:`left_singular_basis` returns just ``(U, S)``, the cheapest accurate way for the weight's
  dtype (SVD in float64, the float64 Gram matrix's eigenvectors for float32 and below).
* :func:`spectral_norm_bound` returns a certified upper bound of ``‖W‖₂`` within a relative
  ``1e-6`` (usually ``1e-11`` or less), from the float64 Gram matrix, a Lanczos estimate and one
  Cholesky factorisation (no SVD).
* :func:`all_finite` tells whether a tensor holds no NaN or Inf, with one reduction.
* :func:`orthogonality_error` measures ``max |RᵀR - I|``; :data:`ORTHO_TOL` holds the tolerance
  accepted for each dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Largest accepted ``max |RᵀR - I|`` for an orthogonal matrix, per dtype (scaled by sqrt(n)).
ORTHO_TOL: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.bfloat16: 5e-2,
    torch.float16: 5e-3,
}


def random_orthogonal(
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Haar-random orthogonal matrix, shape ``(n, n)``.

    ``A = QR`` of a Gaussian matrix, then ``Q ← Q · diag(sign(diag(R)))`` so the distribution is
    uniform on O(n) (plain QR is biased by LAPACK's sign choice).
    """
    a = torch.randn(n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    d = torch.sign(torch.diagonal(r))
    d[d == 0] = 1.0
    return (q * d).to(dtype=dtype, device=device)


def orthogonality_error(r: Tensor) -> float:
    """``max |RᵀR - I|`` for a square matrix ``r`` of shape ``(n, n)``."""
    eye = torch.eye(r.shape[0], dtype=r.dtype, device=r.device)
    return float((r.T @ r - eye).abs().max()) if r.numel() else 0.0


def ortho_tolerance(r: Tensor) -> float:
    """Tolerance on :func:`orthogonality_error` for ``r``'s dtype and size."""
    base = ORTHO_TOL.get(r.dtype, 1e-4)
    return base * max(1.0, float(r.shape[0]) ** 0.5)


def _canonical_signs(u: Tensor) -> Tensor:
    """Sign of each column chosen so that its entry of largest magnitude is positive."""
    idx = u.abs().argmax(dim=0)
    s = torch.sign(u.gather(0, idx.unsqueeze(0)).squeeze(0))
    s[s == 0] = 1.0
    return s


def ordered_svd(w: Tensor, full_v: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Full SVD ``W = U diag(S) Vᵀ`` with descending ``S`` and canonical signs.

    Args:
        w: matrix of shape ``(m, n)``.
        full_v: return the complete ``(n, n)`` basis ``V``; with ``False`` and ``m < n`` only its
            first ``m`` columns are computed (all that left diagonalisation needs, and much
            cheaper for wide first layers such as 500 × 3072).

    Returns:
        ``U`` of shape ``(m, m)``, ``S`` of shape ``(min(m, n),)`` and ``V`` of shape ``(n, n)``
        (or ``(n, m)``; ``V``, not ``Vᵀ``). Each column of ``U`` is flipped so its largest-magnitude
        entry is positive, and the matching column of ``V`` with it, which keeps ``U diag(S) Vᵀ``
        intact. Columns of ``V`` beyond ``min(m, n)`` get the same canonical sign rule on their own.
    """
    m, n = w.shape
    if w.dtype in (torch.float16, torch.bfloat16):  # no half-precision SVD: decompose in float32
        w = w.to(torch.float32)
    u, s, vh = torch.linalg.svd(w, full_matrices=full_v or m > n)
    v = vh.mT
    k = s.shape[0]
    su = _canonical_signs(u)
    u = u * su
    v = v.clone()
    v[:, :k] = v[:, :k] * su[:k]
    if v.shape[1] > k:
        v[:, k:] = v[:, k:] * _canonical_signs(v[:, k:])
    return u, s, v


def left_singular_basis(w: Tensor, gram: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""Left singular vectors and values of ``w``: ``W = U diag(S) Vᵀ`` without ``V``.

    float64 (and any dtype other than float32, float16 and bfloat16) uses
    :func:`ordered_svd`. float32, float16 and bfloat16 weights use the eigenvectors of the Gram
    matrix ``G = W Wᵀ`` formed and decomposed in float64 (``S = sqrt(max(λ, 0))``): the entries
    of ``W`` are exact in float64, so ``G`` carries only float64 round-off, and the rotated rows
    ``UᵀW`` are then at least as orthogonal, and the rows of zero singular value at least as
    small, as with a float32 SVD (for a 500 × 3072 layer: zero rows ~6e-7 against ~2e-6, row
    orthogonality ~3e-7 against ~1e-5), at about a quarter of the cost (45 ms against 190 ms on
    one CPU thread). The small singular values themselves are only known to about
    ``sqrt(eps_64) σ_max`` this way; callers that need them exactly use :func:`ordered_svd`.

    Args:
        w: matrix of shape ``(m, n)``.
        gram: ``W Wᵀ`` already formed in float64 (shape ``(m, m)``), used by the Gram route
            instead of forming it again; ignored for float64 ``w``.

    Returns:
        ``U`` of shape ``(m, m)`` with canonical column signs (as :func:`ordered_svd`) and ``S``
        of shape ``(min(m, n),)``, descending; in ``w``'s dtype, except float32 for float16 and
        bfloat16 ``w`` (a half-precision basis would be orthogonal to only ~3 digits; rotations
        contract half-precision tensors in float32 anyway).
    """
    if w.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        u, s, _ = ordered_svd(w, full_v=False)
        return u, s
    if gram is None or gram.shape != (w.shape[0], w.shape[0]) or gram.dtype != torch.float64:
        w64 = w.to(torch.float64)
        gram = w64 @ w64.mT
    lam, u = torch.linalg.eigh(gram)  # ascending
    u = u.flip(1)
    lam = lam.flip(0)[: min(w.shape)]
    u = u * _canonical_signs(u)
    out = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype
    return u.to(out), lam.clamp_min(0.0).sqrt().to(out)


def _top_ritz_value(g: Tensor, steps: int = 40) -> float:
    """An estimate (from below) of ``λ_max`` of the symmetric PSD ``g`` (``(s, s)``): the
    largest Ritz value of ``steps`` Lanczos steps with full reorthogonalisation, from a fixed
    pseudo-random start (deterministic)."""
    s = g.shape[0]
    k = min(steps, s)
    start = torch.randn(s, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    basis = torch.zeros(s, k, dtype=g.dtype, device=g.device)
    basis[:, 0] = start.to(g.device) / start.norm()
    alpha, beta = [], []
    for j in range(k):
        z = g @ basis[:, j]
        alpha.append(float(basis[:, j] @ z))
        done = basis[:, : j + 1]
        for _ in range(2):  # full reorthogonalisation, twice is enough
            z = z - done @ (done.mT @ z)
        b = float(z.norm())
        if j == k - 1 or b <= 1e-12 * max(abs(a) for a in alpha):
            break
        beta.append(b)
        basis[:, j + 1] = z / b
    t = torch.diag(torch.tensor(alpha, dtype=torch.float64))
    if beta:
        off = torch.tensor(beta[: len(alpha) - 1], dtype=torch.float64)
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    return float(torch.linalg.eigvalsh(t)[-1])


def spectral_norm_bound(w: Tensor) -> float:
    r"""A certified upper bound of ``‖w‖₂`` (``w`` finite, ``(p, q)``), at most a relative
    ``1e-6`` above it (about ``s² u`` when the estimate has converged), at a fraction of an
    SVD's cost.

    ``G`` is the smaller Gram matrix (``s × s``, inner dimension ``m = max(p, q)``) formed in
    float64 (``w``'s entries are exact there), ``θ`` an estimate of ``λ_max(G)`` from below
    (:func:`_top_ritz_value`). For ``μ = θ (1 + δ)``, ``δ = 16 s u``, ``10⁻¹⁰`` then ``10⁻⁶``,
    a Cholesky factorisation of ``A = fl(μ I − Ĝ)`` that succeeds certifies (backward error of
    Cholesky: ``R̃ᵀR̃ = A + ΔA``, ``|ΔA| ≤ γ_{s+1}|R̃ᵀ||R̃|``, so ``λ_min(A) ≥ −γ_{s+1}‖R̃‖_F²``
    with ``‖R̃‖_F² = tr(A + ΔA) ≤ s μ (1+u) / (1 − γ_{s+1})``)

    .. math::
        ‖w‖_2^2 = λ_{max}(G) ≤ μ + γ_{s+1} \frac{s μ (1+u)}{1 − γ_{s+1}} + u (μ + \max_i Ĝ_{ii})
            + γ_m ‖w‖_F^2,

    the last two terms for the rounding of ``A``'s diagonal and of ``Ĝ`` itself
    (``|Ĝ − G| ≤ γ_m |w||w|ᵀ``, ``γ_n = n u / (1 − n u)``, ``u = 2⁻⁵³``), barring underflow. If
    no ``δ`` certifies, ``θ`` is taken from ``eigvalsh(Ĝ)`` and the steps repeated; the
    Frobenius norm (always an upper bound) is the last resort (it never was in the tests).
    """
    w64 = w.detach().to(torch.float64)
    p, q = w64.shape
    g = w64 @ w64.mT if p <= q else w64.mT @ w64
    s, m = g.shape[0], max(p, q)
    u = 2.0 ** -53

    def gamma(n: int) -> float:
        return n * u / (1 - n * u)

    diag = g.diagonal()
    fro2 = float(diag.sum()) * (1 + 2 * gamma(m + s))  # ≥ ‖w‖_F² (sums of squares)
    if fro2 == 0.0 or not math.isfinite(fro2):
        return 0.0 if fro2 == 0.0 else math.inf
    top = float(diag.max())
    eye = torch.eye(s, dtype=g.dtype, device=g.device)

    def certified(mu: float) -> float | None:
        _, info = torch.linalg.cholesky_ex(mu * eye - g)
        if int(info) != 0:
            return None
        chol = gamma(s + 1) * s * mu * (1 + u) / (1 - gamma(s + 1))
        lam = (mu + chol + u * (mu + top) + gamma(m) * fro2) * (1 + 8 * u)
        return math.sqrt(lam) * (1 + 2 * u)

    estimates = (f() for f in (lambda: _top_ritz_value(g),
                               lambda: float(torch.linalg.eigvalsh(g)[-1])))  # lazily
    for theta in estimates:
        for delta in (16 * s * u, 1e-10, 1e-6):
            bound = certified(max(theta, 0.0) * (1 + delta) + delta * u * fro2)
            if bound is not None:
                return bound
    return math.sqrt(fro2) * (1 + 2 * u)


def decomposable(w: Tensor) -> Tensor:
    """``w`` in a dtype LAPACK decomposes: float32 for float16 and bfloat16, else ``w`` itself."""
    return w.to(torch.float32) if w.dtype in (torch.float16, torch.bfloat16) else w


def all_finite(t: Tensor) -> bool:
    """``True`` iff no entry of ``t`` is NaN or ±Inf.

    A NaN or an infinity makes the sum non-finite, so a finite sum (one reduction, no
    ``t``-sized boolean temporary) proves every entry finite; only a non-finite sum, which
    finite entries can also produce by overflow, is checked entry by entry.
    """
    if not t.is_floating_point() and not t.is_complex():
        return True
    if t.numel() == 0 or bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())
