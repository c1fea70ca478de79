r"""Certified scaffold counts: the full route, and spectral tracking between passes.

A scaffold count of hidden layer ``k`` is ``c = #{i : s_i ≤ τ}`` over the ``n_k`` neuron strengths
``s`` of its incoming matrix ``W`` (``(n_k, fan_in)``; the singular values, padded with exact zeros
when ``n_k > fan_in``). Two routes give the same ``c``:

**Full route** (:func:`measure`): the strengths come from ``eigvalsh(W Wᵀ)`` of the smaller Gram
matrix in float64 (``svdvals`` below 4096 entries). Each computed strength is within the route's
tolerance ``t(W) = 16 sqrt(max(m, n)) eps_W σ_max + 4 sqrt(max(m, n) eps_64) σ_max`` of the exact
one; when some strength lies within ``t`` of ``τ`` the reference ``svdvals`` count is used, so the
count equals ``(singular_values(net, k) <= τ).sum()``.

**Tracked route** (:func:`tracked_count`). Each layer keeps, from its last full count, a copy
``A`` of the matrix (the *anchor*), its computed strengths ``ŝ`` and their error bound ``e``
(``|ŝ_i − s_i(A)| ≤ e``, sorted pairing). For the current ``W`` the drift
``δ = ‖W − A‖_F ≥ ‖W − A‖₂`` bounds how far every strength moved (Weyl's inequality for singular
values: ``|s_i(W) − s_i(A)| ≤ ‖W − A‖₂``). If

.. math:: \min_i |ŝ_i − τ| > e + δ + t(W)

then every exact strength of ``W`` is more than ``t(W)`` away from ``τ``: the count is
``#{ŝ_i ≤ τ}`` and it is the count the full route (and ``svdvals``) would return, without a
decomposition. The Frobenius norm is used because it is an *upper* bound of the spectral norm
at the cost of one pass over ``W − A`` (power iteration would give a lower bound, which certifies
nothing); it is computed with float64 accumulation and inflated by the float subtraction's
relative error. When ``δ = 0`` (``W`` equals the anchor bit for bit) the full route's own answer
for ``A`` is the answer for ``W``. Otherwise, when the certificate fails (a strength may have
crossed ``τ``), the layer is counted again by the full route, which becomes the new anchor.

The anchors follow :func:`~isoplastic.neuroadapt`'s own changes without a decomposition (see
:func:`grown` and :func:`reduced`); any other write to a weight (training, a rotation, a user's
edit) is simply part of the drift, and any change of shape makes the layer count afresh. The cost
is one copy of every hidden layer's incoming matrix, kept between passes (per block, weakly: it
goes with the block).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.change import operation
from ..core.model import IsoplasticBlock
from ..linalg import decomposable

_GRAM_MIN_SIZE = 64 * 64
_TRACKABLE = (torch.float32, torch.float64)


def _rounding(w: Tensor, sigma_max: float) -> float:
    """``16 sqrt(max(m, n)) eps_w σ_max``: a generous bound on how far ``w``'s own rounding
    (or that of a rotation computed in ``w``'s dtype) moves its singular values."""
    return 16.0 * max(w.shape) ** 0.5 * torch.finfo(w.dtype).eps * sigma_max


def tolerance(w: Tensor, sigma_max: float) -> float:
    """``t(W)``: the full route's bound on the error of one computed strength of ``w``."""
    return (_rounding(w, sigma_max)
            + 4.0 * (max(w.shape) * torch.finfo(torch.float64).eps) ** 0.5 * sigma_max)


@dataclass
class Spectrum:
    """The strengths of one anchor matrix (see the module docstring).

    Attributes:
        anchor: a copy of the matrix the strengths belong to, ``(n_k, fan_in)``.
        values: computed strengths, float64, ascending, ``(r,)``.
        zeros: strengths that are exactly zero by construction (rows beyond the rank,
            appended silent neurons); ``r + zeros = n_k``.
        error: ``|values_i − s_i(anchor)| ≤ error`` for every ``i`` (sorted pairing).
        sigma_max: an upper bound of ``‖anchor‖₂`` up to ``error``.
        route: ``"gram"`` or ``"svd"`` (computed from the anchor by the full route) or
            ``"predicted"`` (carried through a change without a decomposition).
        gram: the float64 ``anchor anchorᵀ`` the count formed, held only until the removal
            decided in the same visit has used it.
    """

    anchor: Tensor
    values: Tensor
    zeros: int
    error: float
    sigma_max: float
    route: str
    gram: Tensor | None = None
    drift: float = 0.0  # ‖W − anchor‖ bound when W was last counted from this spectrum

    def count(self, threshold: float) -> int:
        """``#{ŝ_i ≤ τ}`` plus the exact zeros."""
        return int((self.values <= threshold).sum()) + self.zeros

    def gap(self, threshold: float) -> float:
        """``min |ŝ_i − τ|`` over the computed strengths (``inf`` when there are none)."""
        return float((self.values - threshold).abs().min()) if self.values.numel() else math.inf


@torch.no_grad()
def measure(w: Tensor) -> Spectrum:
    """The full route's strengths of ``w`` (``(m, n)``), kept as the tracked spectrum."""
    m, n = w.shape
    if w.numel() < _GRAM_MIN_SIZE or not w.is_floating_point():
        s = torch.linalg.svdvals(decomposable(w)).to(torch.float64)
        smax = float(s.max()) if s.numel() else 0.0
        return Spectrum(w.clone(), s.flip(0), max(m - n, 0), _rounding(w, smax), smax, "svd")
    w64 = w.to(torch.float64)
    gram = w64 @ w64.mT if m <= n else w64.mT @ w64
    lam = torch.linalg.eigvalsh(gram)  # ascending
    sig = lam.clamp_min(0.0).sqrt()
    smax = float(sig.max()) if sig.numel() else 0.0
    left = gram if m <= n and w.dtype != torch.float64 else None
    return Spectrum(w.clone(), sig, max(m - n, 0), tolerance(w, smax), smax, "gram", left)


def reference_count(w: Tensor, threshold: float) -> int:
    """``#{s ≤ τ}`` from ``svdvals`` (the definition), padded strengths included."""
    s = torch.linalg.svdvals(decomposable(w))
    return int((s <= threshold).sum()) + max(w.shape[0] - s.shape[0], 0)


def full_count(spec: Spectrum, w: Tensor, threshold: float) -> int:
    """The full route's count of ``w`` from its own spectrum ``spec`` (``route`` gram or svd).

    The spectrum's own count when every computed strength lies more than ``spec.error`` from
    ``τ`` (and ``σ_max`` is finite), else the reference count: a strength exactly ``spec.error``
    from ``τ`` may belong to an exact one at ``τ``. The svd route too: its float64 copies of
    float32 strengths meet ``τ`` itself, the reference's float32 strengths ``τ`` rounded to
    float32, and the two differ on a strength within that rounding of ``τ``."""
    if spec.gap(threshold) > spec.error and math.isfinite(spec.sigma_max):
        return spec.count(threshold)
    return reference_count(w, threshold)


@operation
def strength_count(w: Tensor, threshold: float) -> int:
    """Number of neuron strengths ``≤ threshold`` of an incoming matrix ``w`` (``(n_k, fan_in)``).

    Equal to ``int((neuron_strengths(svdvals(w), n_k) <= threshold).sum())`` (padding zeros
    included). For matrices with at least 4096 entries the singular values are taken as
    ``sqrt(eigvalsh(w w^T))`` of the smaller Gram matrix in float64 (a 500 × 3072 layer: ~45 ms
    instead of ~170 ms for ``svdvals``). Its error in ``σ`` is at most about
    ``sqrt(n eps_64) σ_max``; the reference's own error is about ``sqrt(n) eps_w σ_max``. If any
    singular value lies within a generous multiple of both of ``threshold``, where the two
    could disagree, the reference ``svdvals`` count is returned instead.
    """
    return full_count(measure(w), w, threshold)


@torch.no_grad()
def drift(w: Tensor, anchor: Tensor) -> float:
    """A rigorous upper bound of ``‖w − anchor‖₂`` (same shape and dtype), from the Frobenius
    norm of the difference computed in ``w``'s dtype, one pass.

    With ``u`` the unit round-off and ``N`` entries, every computed difference is within a factor
    ``1 ± u`` of the exact one and the computed sum of ``N`` non-negative squares within
    ``γ = (N+2)u / (1 − (N+2)u)`` relative of the exact sum, whatever the summation order;
    squares that underflow lose at most ``N · tiny``; the square root and the differences'
    rounding stay below ``1 + 4u``. So ``‖D‖₂ ≤ ‖D‖_F ≤ (fl‖D‖_F² / (1 − γ) + N tiny)^{1/2}
    (1 + 4u)``. ``inf`` when the norm overflowed (or for
    ``N u ≥ 1/4``, where that bound is useless). Never 0: equal matrices get the underflow
    term ``sqrt(N tiny)`` (≈ 1e-16 for a 500 × 3072 float32 matrix)."""
    fin = torch.finfo(w.dtype)
    u, n = fin.eps / 2, w.numel()
    if (n + 1) * u >= 0.25:
        return math.inf
    norm = float(torch.linalg.vector_norm(w - anchor))
    if not math.isfinite(norm):
        return math.inf
    gamma = (n + 2) * u / (1 - (n + 2) * u)
    return math.sqrt(norm * norm / (1 - gamma) + n * fin.tiny) * (1 + 4 * u)


def certified(spec: Spectrum, w: Tensor, threshold: float, delta: float) -> int | None:
    """The count of ``w`` from ``spec`` when ``‖w − spec.anchor‖₂ ≤ delta`` certifies it
    (the module docstring's inequality), else ``None``.

    The inequality is ``gap > e + δ + t(w)``, with ``t`` taken at ``σ_max + e + δ`` (a bound of
    ``‖w‖₂``); the exact zeros count as strengths at 0 (when there are some, a ``τ`` within the
    margin of 0 certifies nothing). Short of a certificate, a spectrum the full route computed
    from a matrix equal to ``w`` gives the full route's own count, a predicted one ``None``."""
    if not (math.isfinite(delta) and math.isfinite(spec.sigma_max)):
        return None
    margin = spec.error + delta + tolerance(w, spec.sigma_max + spec.error + delta)
    # the exact zeros count as strengths at 0: the full route computes them with round-off too
    gap = min(spec.gap(threshold), threshold if spec.zeros else math.inf)
    if gap > margin:
        return spec.count(threshold)
    if spec.route != "predicted" and torch.equal(w, spec.anchor):
        return full_count(spec, w, threshold)  # the full route's own answer for this matrix
    return None


# ---------------------------------------------------------------------------------------------
# the tracked spectra of every block, between neuroadapt passes
# ---------------------------------------------------------------------------------------------
_TRACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # modules hash by identity


def tracked(block: IsoplasticBlock) -> dict[int, Spectrum]:
    """The tracked spectra of ``block``'s hidden layers (created empty on first use)."""
    entry = _TRACKED.get(block)
    if entry is None:
        entry = {}
        _TRACKED[block] = entry
    return entry


def forget(block: IsoplasticBlock, k: int | None = None) -> None:
    """Drop the tracked spectrum of layer ``k`` (every layer when ``None``)."""
    entry = _TRACKED.get(block)
    if entry is not None:
        if k is None:
            entry.clear()
        else:
            entry.pop(k, None)


def tracked_count(block: IsoplasticBlock, k: int, threshold: float, track: bool = True
                  ) -> tuple[int, int]:
    """``(count, n_k)``: the certified count of hidden layer ``k``, from the tracked spectrum
    when its certificate holds, else by the full route (whose spectrum is then tracked).
    ``track=False`` always takes the full route (and still records the spectrum)."""
    w = block.hidden_layer(k).incoming_matrix()
    spectra = tracked(block)
    spec = spectra.get(k)
    if (track and spec is not None and spec.anchor.shape == w.shape
            and spec.anchor.dtype == w.dtype and spec.anchor.device == w.device
            and w.dtype in _TRACKABLE):
        delta = drift(w, spec.anchor)
        c = certified(spec, w, threshold, delta)
        if c is not None:
            spec.drift = delta
            return c, int(w.shape[0])
    spec = measure(w)
    spectra[k] = spec
    return full_count(spec, w, threshold), int(w.shape[0])


def exact_anchor(block: IsoplasticBlock, k: int) -> Spectrum | None:
    """Layer ``k``'s spectrum if it was computed (not predicted) from a matrix equal to the
    current ``W_k``: its Gram matrix and ``σ_max`` may then stand in for ``W_k``'s."""
    spec = tracked(block).get(k)
    if spec is None or spec.route == "predicted":
        return None
    w = block.hidden_layer(k).incoming_matrix()
    if spec.anchor.shape != w.shape or not torch.equal(w, spec.anchor):
        return None
    return spec


@torch.no_grad()
def grown(block: IsoplasticBlock, k: int, n: int) -> None:
    """Carry the spectra through ``n`` silent neurons appended to layer ``k`` (no rotation).

    ``W_k``'s anchor gains ``n`` zero rows (strengths: ``n`` exact zeros more); ``W_{k+1}``'s
    anchor gains ``n`` zero columns (strengths unchanged; the new outgoing columns are drift)."""
    spectra = tracked(block)
    spec = spectra.get(k)
    if spec is not None:
        a = spec.anchor
        spec.anchor = torch.cat([a, a.new_zeros(n, a.shape[1])])
        spec.zeros += n
        spec.gram, spec.route = None, "predicted"
    nxt = spectra.get(k + 1)
    if nxt is not None:
        a = nxt.anchor
        nxt.anchor = torch.cat([a, a.new_zeros(a.shape[0], n)], dim=1)
        nxt.gram, nxt.route = None, "predicted"


@torch.no_grad()
def reduced(block: IsoplasticBlock, k: int, n: int) -> None:
    """Carry layer ``k``'s spectrum through the removal of its ``n`` weakest strengths
    (:func:`~isoplastic.neurodegeneration`: an orthogonal change of basis that puts the removed
    singular directions on the removed coordinates, then their deletion).

    The kept strengths are the ``n_k − n`` largest of the matrix before, moved by at most the
    basis's and the rotation's round-off (:func:`tolerance`): the new anchor is the new ``W_k``
    and the error grows by that
    and by the drift of the old ``W_k`` from its anchor when it was counted (the removal is
    decided right after the count). ``W_{k+1}`` lost columns: its
    spectrum is dropped (counted again when next needed)."""
    spectra = tracked(block)
    spec = spectra.get(k)
    spectra.pop(k + 1, None)
    if spec is None:
        return
    w = block.hidden_layer(k).incoming_matrix()
    delta = spec.drift
    if not math.isfinite(delta) or w.shape[0] != spec.values.numel() + spec.zeros - n:
        spectra.pop(k, None)
        return
    # the n smallest go: the exact zeros first, then the smallest computed strengths
    from_zeros = min(n, spec.zeros)
    values = spec.values[n - from_zeros:]
    # the basis came from the float64 Gram's eigenvectors (backward stable: UᵀGU = Λ + F,
    # ‖F‖ ≲ n eps_64 ‖G‖) and the rotation rounds in w's dtype: the full route's tolerance
    error = spec.error + delta + tolerance(w, spec.sigma_max + spec.error + delta)
    spectra[k] = Spectrum(w.clone(), values, spec.zeros - from_zeros, error, spec.sigma_max,
                          "predicted")
