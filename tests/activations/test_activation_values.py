"""Isotropic tanh against its textbook formula (mpmath, rounded once to float64): values and
gradients on every path (fused kernel and reference formula, the closed form, the small-ball
series, the switch between them, the scaled radius where ‖z‖² overflows), float16/bfloat16
evaluated in float32, the paper's small-ball branch, and the constructor's defaults and refusals.

Tolerances are counted in roundings of the dtype (``ε`` = its machine epsilon): a float64 gain
``tanh(√q)/√q`` is a sum of ``n`` squares (``n − 1`` additions, one more for ``o``), a square
root, ``tanh`` and a division, each within one rounding, and ``g`` moves by at most half of
``q``'s relative error; the closed-form slope ``((1 − t²)/ρ − t/ρ²)/(2ρ)`` cancels two terms of
size ``1/ρ`` to a result of size ``ρ/3``, so its relative error is about ``ε/ρ²`` (at most
``25 ε`` for the ``ρ ≥ 0.2`` rows used where gradients are compared with ``1e-13``).
"""

from __future__ import annotations

import math
import re

import mpmath
import pytest
import torch
from activation_textbook import isotropic_tanh, slope

import isoplastic as ip
from isoplastic.activations import isotropic as iso
from isoplastic.activations.profiles import TanhProfile, log1p_profile

EPS64 = torch.finfo(torch.float64).eps
EPS32 = torch.finfo(torch.float32).eps
N = 4  # features per row
VALUE_RTOL64 = (N + 4) * EPS64  # n + 1 roundings of q (halved in g), sqrt, tanh, division
GRAD_RTOL64 = 1e-13  # the closed-form slope: ≲ 25 ε of cancellation at ρ ≥ 0.2 (see above)

MODES = [("none", 0.0), ("constant", 0.0), ("constant", 0.3), ("constant", -0.3),
         ("trainable", 0.01), ("trainable", 0.5)]
# zero, inside the small ball, ‖z‖² + o = -1e-8 for o = -0.3 (inside, on the negative side),
# and ordinary rows
MIXED_RADII = [0.0, 1e-5, 0.2, math.sqrt(0.3 - 1e-8), 0.7, 3.0]
ORDINARY_RADII = [0.2, 0.7, 3.0]  # no row in the small ball for any o above: the closed form


def rows_at(radii, n: int = N, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """Rows of random direction with the given norms (the norm computed in float64)."""
    z = torch.randn(len(radii), n, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(seed))
    z = z / z.norm(dim=1, keepdim=True) * torch.tensor(radii, dtype=torch.float64)[:, None]
    return z.to(dtype)


def make(mode: str, o: float, dtype=torch.float64, profile=None, **kw) -> ip.IsotropicActivation:
    act = ip.IsotropicActivation(profile, intrinsic_length=mode, **kw).to(dtype)
    act.o = o
    return act


def loss_grads(act, z, gh, gg):
    """``∂L/∂z`` and ``∂L/∂ log o`` (or ``None``) of ``L = ⟨gh, h⟩ + ⟨gg, g⟩``."""
    z = z.detach().clone().requires_grad_(True)
    h, g = act.forward_with_gain(z)
    params = [z] + list(act.parameters())
    grads = torch.autograd.grad((h * gh).sum() + (g * gg).sum(), params)
    return h.detach(), g.detach(), grads[0], (grads[1] if len(grads) > 1 else None)


# -- values and gradients ----------------------------------------------------------------------

@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("radii", [MIXED_RADII, ORDINARY_RADII], ids=["mixed", "ordinary"])
@pytest.mark.parametrize("mode,o", MODES)
def test_values_and_gradients_match_the_textbook_in_float64(mode, o, radii, fused):
    """φ = g z with g = tanh(ρ)/ρ, ρ² = |‖z‖² + o|, and ∂L/∂z = g ∂L/∂h + 2 sign·g'(q) S z,
    ∂L/∂log o = o Σ sign·g'(q) S, on every path: the fused kernel with and without small-ball rows
    (branch-free slope or the one reusing tanh ρ) and the reference formula."""
    act = make(mode, o)
    z = rows_at(radii)
    gh = torch.randn(z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    gg = torch.randn(len(radii), 1, dtype=torch.float64,
                     generator=torch.Generator().manual_seed(2))
    h_t, g_t, dz_t, do_t = isotropic_tanh(z, act.o, gh, gg)
    with iso.fused_kernel(fused):
        h, g, dz, dlog_o = loss_grads(act, z, gh, gg)
        # every entry point gives the same values, bit for bit
        with torch.no_grad():
            assert torch.equal(act(z), h) and torch.equal(act.gain(z), g)
    assert torch.equal(h, g * z)
    torch.testing.assert_close(g, g_t, rtol=VALUE_RTOL64, atol=0)
    torch.testing.assert_close(h, h_t, rtol=VALUE_RTOL64 + EPS64, atol=0)
    torch.testing.assert_close(dz, dz_t, rtol=GRAD_RTOL64, atol=GRAD_RTOL64)
    if mode == "trainable":
        assert math.isclose(float(dlog_o), act.o * do_t, rel_tol=GRAD_RTOL64)
    else:
        assert dlog_o is None


@pytest.mark.parametrize("mode,o", MODES)
def test_both_kernels_and_the_reference_formula_give_the_same_values(mode, o):
    """The fused kernel's forward is bit-identical to the plain-autograd reference formula
    (``_reference_tanh``, whose default handles a negative ``o``) and to ``fused_kernel(False)``,
    for rows in every regime, float32 and float64, feature axis last or first."""
    for dtype, huge in ((torch.float64, 1e160), (torch.float32, 1e30)):
        act = make(mode, o, dtype)
        z = rows_at(MIXED_RADII + [1e-3, huge], dtype=dtype)
        o_t = None if mode == "none" else act.o_tensor().detach()
        h_ref, g_ref = iso._reference_tanh(z, o_t, -1, act.eps ** 2)
        with torch.no_grad():
            h, g = act.forward_with_gain(z)
            with iso.fused_kernel(False):
                h_plain, g_plain = act.forward_with_gain(z)
        assert torch.equal(h, h_ref) and torch.equal(g, g_ref)
        assert torch.equal(h_plain, h_ref) and torch.equal(g_plain, g_ref)
        # the feature axis first (a convolution's layout, dim=1 of (batch, C, ...))
        act_t = ip.IsotropicTanh(intrinsic_length=mode, dim=0).to(dtype)
        act_t.o = o
        h_t, g_t = iso._reference_tanh(z.T.contiguous(), o_t, 0, act.eps ** 2)
        with torch.no_grad():
            assert torch.equal(act_t(z.T.contiguous()), h.T) and torch.equal(h_t, h.T)
            assert torch.equal(g_t, g.T)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("mode,o", [("none", 0.0), ("constant", 0.0), ("trainable", 0.5)])
def test_gain_and_gradient_are_continuous_across_the_small_ball_switch(mode, o, fused):
    """Rows on both sides of ‖z‖² + o = eps² and on it agree with the textbook to round-off."""
    eps = 1e-3
    act = make(mode, o)
    radii = [0.0] + [math.sqrt(max(eps * eps * s - o, 0.0)) for s in (1 - 1e-9, 1.0, 1 + 1e-9)]
    z = rows_at(radii)
    gh = torch.randn(z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    h_t, g_t, dz_t, _ = isotropic_tanh(z, act.o, gh)
    with iso.fused_kernel(fused):
        h, g, dz, _ = loss_grads(act, z, gh, torch.zeros(len(radii), 1, dtype=torch.float64))
    torch.testing.assert_close(g, g_t, rtol=VALUE_RTOL64, atol=0)
    # the g' term of these rows is 2 g' ⟨gh, z⟩ z ~ 7e-7: even the closed form's 1e-10 relative
    # cancellation error at q = 1e-6 stays below 1e-16
    torch.testing.assert_close(dz, dz_t, rtol=GRAD_RTOL64, atol=GRAD_RTOL64)


@pytest.mark.parametrize("fused", [True, False])
def test_the_closed_form_holds_from_q_equal_eps_squared_on(fused):
    """The series replaces the closed form only for q < eps² (strictly): at q = eps² the gain and
    its slope are tanh(ρ)/ρ's. With eps = 0.1 the truncated series would be off by ~9e-13 there
    (its next term 1382 q⁵/155925), its slope by ~1e-9: far above round-off."""
    eps = 0.1
    act = ip.IsotropicTanh(eps=eps).double()
    z = torch.tensor([[0.0, 0.0, 0.0], [eps, 0.0, 0.0], [0.0, -eps, 0.0]], dtype=torch.float64)
    assert float((z[1] * z[1]).sum()) == eps * eps  # the row lies on the switch exactly
    gh = torch.randn(z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    _, g_t, dz_t, _ = isotropic_tanh(z, 0.0, gh)
    with iso.fused_kernel(fused):
        _, g, dz, _ = loss_grads(act, z, gh, torch.zeros(3, 1, dtype=torch.float64))
    torch.testing.assert_close(g[1:], g_t[1:], rtol=VALUE_RTOL64, atol=0)
    torch.testing.assert_close(dz[1:], dz_t[1:], rtol=GRAD_RTOL64, atol=GRAD_RTOL64)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("mode,o", [("none", 0.0), ("constant", 0.0), ("constant", 0.3),
                                    ("constant", -0.3), ("trainable", 0.5)])
def test_hessian_of_the_gain_at_the_origin(mode, o, fused):
    """At z = 0, d²g/dz² = 2 sign(o) g'(|o|) I (sign +1 at o = 0): q = |‖z‖² + o| has
    derivative +1 in ‖z‖² at 0, so o = 0 gives the series' -2/3 I."""
    act = make(mode, o)
    with iso.fused_kernel(fused):
        hess = torch.autograd.functional.hessian(lambda v: act.gain(v[None]).sum(),
                                                 torch.zeros(N, dtype=torch.float64))
    sign = -1.0 if o < 0 else 1.0
    expected = 2 * sign * float(slope(abs(act.o))) * torch.eye(N, dtype=torch.float64)
    torch.testing.assert_close(hess, expected, rtol=GRAD_RTOL64, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode,o", MODES)
def test_branch_free_formulas_give_the_eager_values(monkeypatch, mode, o, dtype):
    """What compiled code computes (no host read of tensor values: every branch evaluated and
    selected with torch.where), run eagerly: the same values bit for bit as the eager path, on
    batches with and without small-ball or overflowing rows, and the textbook gradients."""
    act = make(mode, o, dtype)
    huge = 1e30 if dtype == torch.float32 else 1e160
    for radii in (MIXED_RADII + [1e-3, huge], ORDINARY_RADII):
        z = rows_at(radii, dtype=dtype)
        with torch.no_grad():
            eager = act.forward_with_gain(z)
            monkeypatch.setattr(iso, "_may_branch", lambda: False)
            branch_free = act.forward_with_gain(z)
            monkeypatch.undo()
        assert torch.equal(eager[0], branch_free[0]) and torch.equal(eager[1], branch_free[1])
    if dtype == torch.float64:
        z = rows_at(ORDINARY_RADII)
        gh = torch.randn(z.shape, dtype=dtype, generator=torch.Generator().manual_seed(12))
        gg = torch.randn(len(ORDINARY_RADII), 1, dtype=dtype,
                         generator=torch.Generator().manual_seed(13))
        _, _, dz_t, do_t = isotropic_tanh(z, act.o, gh, gg)
        monkeypatch.setattr(iso, "_may_branch", lambda: False)
        _, _, dz, dlog_o = loss_grads(act, z, gh, gg)
        torch.testing.assert_close(dz, dz_t, rtol=GRAD_RTOL64, atol=GRAD_RTOL64)
        if mode == "trainable":
            assert math.isclose(float(dlog_o), act.o * do_t, rel_tol=GRAD_RTOL64)


def test_isotropic_tanh_takes_the_fused_kernel_with_log_o_inside():
    """Isotropic tanh with the exact series runs as one fused autograd node, whose inputs are z
    and (trainable o, same dtype) the parameter log o itself, exponentiated inside; the paper's
    branch, other profiles and fused_kernel(False) take the plain-autograd formula."""
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    fused_name = "_IsotropicTanhFnBackward"
    for act in (ip.IsotropicTanh().double(), ip.IsotropicActivation().double()):
        for out in (act(z), act.gain(z), act.forward_with_gain(z)[0]):
            assert type(out.grad_fn).__name__ == fused_name
    act = ip.IsotropicTanh(intrinsic_length="trainable").double()
    inputs = [f for f, _ in act(z).grad_fn.next_functions]
    assert inputs[1] is not None and inputs[1].variable is act.log_o
    others = [ip.IsotropicTanh(small_ball="paper").double(),
              ip.IsotropicActivation(log1p_profile()).double()]
    for act in others:
        assert type(act(z).grad_fn).__name__ != fused_name
    with iso.fused_kernel(False):
        assert type(ip.IsotropicTanh().double()(z).grad_fn).__name__ != fused_name


@pytest.mark.parametrize("fused", [True, False])
def test_gradient_where_the_squared_norm_cancels_o_exactly(fused):
    """‖z‖² + o = 0 exactly (o = -1/4, z = ±e/2): q = |‖z‖² + o| has derivative +1 there, so
    ∂L/∂z = g ∂L/∂h + 2 g'(0) S z with g'(0) = -1/3, as on the positive side."""
    act = make("constant", -0.25)
    z = torch.tensor([[0.5, 0.0, 0.0], [0.0, -0.5, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 2.0]],
                     dtype=torch.float64)
    assert ((z * z).sum(dim=1) - 0.25).tolist()[:2] == [0.0, 0.0]
    gh = torch.randn(z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    gg = torch.randn(4, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    _, g_t, dz_t, _ = isotropic_tanh(z, act.o, gh, gg)
    with iso.fused_kernel(fused):
        _, g, dz, _ = loss_grads(act, z, gh, gg)
    torch.testing.assert_close(g, g_t, rtol=VALUE_RTOL64, atol=0)
    torch.testing.assert_close(dz, dz_t, rtol=GRAD_RTOL64, atol=GRAD_RTOL64)


# -- derivatives with a graph of the backward (double backward) --------------------------------

def _modules():
    yield "none", make("none", 0.0)
    yield "constant o < 0", make("constant", -0.3)
    yield "trainable", make("trainable", 0.5)
    yield "trainable float32, input float64", make("trainable", 0.5, torch.float32)


@pytest.mark.parametrize("output", ["h", "g", "both"])
@pytest.mark.parametrize("case", range(4), ids=[name for name, _ in _modules()])
def test_first_derivatives_are_the_same_with_a_graph_of_the_backward(case, output):
    """``create_graph=True`` re-derives the gradient through the reference formula: the same
    first derivatives (to the slope formulas' round-off) for z and for the trainable o."""
    _, act = list(_modules())[case]
    z = rows_at([0.0, 1e-5, math.sqrt(0.3 - 1e-8), 0.7, 3.0]).requires_grad_(True)
    gh = torch.randn(z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    gg = torch.randn(5, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    params = [z] + list(act.parameters())

    def loss():
        if output == "h":
            return (act(z) * gh).sum()
        if output == "g":
            return (act.gain(z) * gg).sum()
        h, g = act.forward_with_gain(z)
        return (h * gh).sum() + (g * gg).sum()

    plain = torch.autograd.grad(loss(), params)
    graph = torch.autograd.grad(loss(), params, create_graph=True)
    assert len(graph) == len(plain) and all(g.requires_grad for g in graph)
    for a, b in zip(graph, plain):
        torch.testing.assert_close(a.detach().double(), b.double(), rtol=GRAD_RTOL64,
                                   atol=GRAD_RTOL64)


def test_a_graph_of_the_backward_for_o_alone():
    """The fused kernel differentiated for the intrinsic length only (z needs no gradient),
    with a graph: d/d log o and its own derivative, as the reference formula gives them."""
    act = make("trainable", 0.5)
    z = rows_at([0.0, 0.7, 3.0])
    (d1,) = torch.autograd.grad(act(z).sum(), act.log_o, create_graph=True)
    (d2,) = torch.autograd.grad(d1, act.log_o)
    log_o = act.log_o.detach().clone().requires_grad_(True)
    (r1,) = torch.autograd.grad(iso._reference_tanh(z, log_o.exp(), -1, act.eps ** 2)[0].sum(),
                                log_o, create_graph=True)
    (r2,) = torch.autograd.grad(r1, log_o)
    torch.testing.assert_close(d1.detach(), r1.detach(), rtol=GRAD_RTOL64, atol=0)
    torch.testing.assert_close(d2, r2, rtol=GRAD_RTOL64, atol=0)


# -- ‖z‖² beyond the dtype's range: the scaled radius ------------------------------------------

HUGE = {torch.float32: ([1.0, 1.5e19, 3e19, 1e20], 2e38),
        torch.float64: ([1.0, 1e154, 2e154, 1e160], 1e308)}


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kind", ["tanh", "paper", "log1p"])
@pytest.mark.parametrize("mode,o_sign", [("none", 0), ("constant", 1), ("constant", -1),
                                         ("trainable", 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gain_where_the_squared_norm_overflows_is_the_textbook_one(dtype, mode, o_sign, kind,
                                                                   fused):
    """Rows whose ‖z‖² + o overflows the dtype (o itself near the largest float included) get
    g = s(ρ)/ρ at ρ = sqrt(|‖z‖² + o|), within the roundings of the sum of squares: the scaled
    radius is as accurate as an unscaled sum. Gradients stay finite."""
    radii, o_big = HUGE[dtype]
    eps = torch.finfo(dtype).eps
    profile = log1p_profile() if kind == "log1p" else None
    act = make(mode, o_sign * o_big, dtype, profile=profile,
               small_ball="paper" if kind == "paper" else "series")
    z = rows_at(radii, dtype=dtype).requires_grad_(True)
    with iso.fused_kernel(fused):
        h, g = act.forward_with_gain(z)
        ((h * torch.randn_like(h)).sum() + g.sum()).backward()
    kw = {"gain_of": lambda q: mpmath.log1p(mpmath.sqrt(q)) / mpmath.sqrt(q)} if profile else {}
    _, g_t, _, _ = isotropic_tanh(z, act.o, **kw)
    # n products, n - 1 sums and o: n + 1 roundings of the terms of q, relative to q magnified
    # by κ = (‖z‖² + |o|)/|‖z‖² + o| and halved in ρ; then sqrt, s and the division, and the
    # paper branch squares its clamped radius once more (two roundings)
    norm2 = [sum(mpmath.mpf(v) ** 2 for v in row) for row in z.detach().double().tolist()]
    kappa = torch.tensor([[float((n2 + abs(act.o)) / abs(n2 + act.o))] for n2 in norm2],
                         dtype=torch.float64)
    rtol = ((N + 1) / 2 * kappa + 5) * eps
    assert ((g.detach().double() - g_t).abs() <= rtol * g_t).all(), (g, g_t)
    assert torch.equal(h.detach(), (g * z).detach())
    assert torch.isfinite(z.grad).all()
    for p in act.parameters():
        assert torch.isfinite(p.grad).all()
    if kind == "tanh":  # the reference formula (a graph of the backward runs it) agrees bitwise
        o_t = None if mode == "none" else act.o_tensor().detach()
        h_ref, g_ref = iso._reference_tanh(z.detach(), o_t, -1, act.eps ** 2)
        assert torch.equal(h_ref, h.detach()) and torch.equal(g_ref, g.detach())


# -- float16 / bfloat16 ---------------------------------------------------------------------------

HALF_CASES = [("none", 0.0, "series", None), ("trainable", 0.5, "series", None),
              ("constant", -0.02, "paper", None), ("constant", 0.3, "series", "log1p")]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("case", HALF_CASES, ids=lambda c: "-".join(str(x) for x in c))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_evaluated_in_float32_and_cast_back(dtype, case, fused):
    """float16/bfloat16 inputs give exactly the float32 evaluation rounded to their dtype (for
    the output, the gain and both), also for ‖z‖ = 300, whose square overflows float16."""
    mode, o, small_ball, profile = case
    act = make(mode, o, torch.float32, small_ball=small_ball,
               profile=log1p_profile() if profile else None)
    z = torch.randn(5, 6, generator=torch.Generator().manual_seed(7))
    z = (z * torch.tensor([0.0, 1e-4, 0.14, 1.0, 300.0])[:, None]).to(dtype)
    with iso.fused_kernel(fused), torch.no_grad():
        h32, g32 = act.forward_with_gain(z.float())
        h, g = act.forward_with_gain(z)
        assert h.dtype == g.dtype == dtype
        assert torch.equal(h, h32.to(dtype)) and torch.equal(g, g32.to(dtype))
        assert torch.equal(act(z), h32.to(dtype))
        assert torch.equal(act.gain(z), g32.to(dtype))


@pytest.mark.parametrize("small_ball", ["series", "paper"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_module_computes_in_float32(dtype, small_ball):
    """A module converted to float16/bfloat16 (its o stored in that dtype) computes like a float32
    module holding the same o: the intrinsic length is promoted, not the other way round."""
    ref = make("constant", 0.0, torch.float32, small_ball=small_ball)
    half = make("constant", 0.0, dtype, small_ball=small_ball)
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(8)).to(dtype)
    for o in torch.linspace(-0.5, -0.011, 60).tolist():
        half.o = o
        ref.o = float(half.o_buffer)
        # ‖z‖² + o ≈ 0: every row inside the small ball, where the paper's gain depends on o
        zz = (z.float() / z.float().norm(dim=1, keepdim=True) * math.sqrt(-ref.o)).to(dtype)
        with torch.no_grad():
            assert torch.equal(half(zz), ref(zz))
            assert torch.equal(half.gain(zz), ref.gain(zz))


# -- the paper's small-ball branch --------------------------------------------------------------

def test_paper_branch_holds_on_the_closed_ball_with_the_author_constant():
    """small_ball="paper": g = tanh(√|o|)/√|o| if |o| > 0.01 else 1 for q ≤ eps² (the edge
    included), with no gradient to o; outside, tanh(ρ)/ρ."""
    eps = 1e-3
    act = make("none", 0.0, small_ball="paper")
    z = torch.tensor([[0.0, 0.0], [0.5 * eps, 0.0], [eps, 0.0], [0.0, -eps]], dtype=torch.float64)
    assert float((z[2] * z[2]).sum()) == eps * eps
    assert torch.equal(act.gain(z), torch.ones(4, 1, dtype=torch.float64))
    for o, expected in ((-0.01, 1.0), (-0.02, math.tanh(0.02 ** 0.5) / 0.02 ** 0.5)):
        act_o = make("constant", o, small_ball="paper")
        zz = torch.tensor([[(-o) ** 0.5, 0.0]], dtype=torch.float64)  # ‖z‖² + o = 0 to round-off
        assert math.isclose(float(act_o.gain(zz)), expected, rel_tol=EPS64)
    # no gradient to o inside the ball, and a Jacobian g I (the gain is a constant there),
    # also at z = 0 for o = 0, where ρ = 0
    z0 = torch.zeros(3, 5, dtype=torch.float64, requires_grad=True)
    gh = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    (act(z0) * gh).sum().backward()
    assert torch.equal(z0.grad, gh)
    act_t = make("trainable", 1e-8, small_ball="paper")
    z0 = torch.zeros(3, 5, dtype=torch.float64, requires_grad=True)
    gh = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    (act_t(z0) * gh).sum().backward()
    assert torch.equal(z0.grad, gh)
    assert float(act_t.log_o.grad) == 0.0


# -- construction, defaults, repr, refusals -----------------------------------------------------

def test_isotropic_tanh_defaults():
    """IsotropicTanh(): isotropic tanh, o = 0 fixed, eps = 1e-3, last axis, the exact series."""
    act = ip.IsotropicTanh()
    assert type(act.profile) is TanhProfile and act.mode is iso.IntrinsicLength.NONE
    assert (act.eps, act.dim, act.small_ball, act.o) == (1e-3, -1, "series", 0.0)
    assert not list(act.parameters()) and not list(act.buffers())
    assert repr(act) == "IsotropicTanh(profile=tanh, intrinsic_length=none, eps=0.001, dim=-1)"
    ip_default = ip.IsotropicActivation()
    assert type(ip_default.profile) is TanhProfile and ip_default.small_ball == "series"


@pytest.mark.parametrize("mode", ["constant", "trainable"])
def test_o_init_and_the_repr_of_a_stored_intrinsic_length(mode):
    act = ip.IsotropicTanh(intrinsic_length=mode, o_init=0.25, eps=0.01, dim=1).double()
    assert math.isclose(act.o, 0.25, rel_tol=EPS32)  # stored in float32 (log o), then converted
    assert repr(act) == (f"IsotropicTanh(profile=tanh, intrinsic_length={mode}, o=0.25, "
                         "eps=0.01, dim=1)")
    custom = ip.IsotropicActivation(log1p_profile(), intrinsic_length=mode)
    assert math.isclose(custom.o, iso.O_INIT, rel_tol=1e-6)
    assert repr(custom) == (f"IsotropicActivation(profile=log1p, intrinsic_length={mode}, "
                            "o=1e-06, eps=0.001, dim=-1)")


@pytest.mark.parametrize("kwargs,message", [
    ({"eps": 0.0}, "eps=0.0 must be positive (the small-ball radius, e.g. 1e-3)"),
    ({"eps": -1e-3}, "eps=-0.001 must be positive (the small-ball radius, e.g. 1e-3)"),
    ({"small_ball": "Paper"}, "small_ball='Paper'; choose 'series' or 'paper'"),
    ({"intrinsic_length": "trainable", "o_init": 0.0},
     "o_init=0.0 must be > 0 for trainable (stored as log o)"),
    ({"intrinsic_length": "fixed"},
     "intrinsic_length='fixed' is not a known mode; choose one of 'none', 'constant', 'trainable'"),
])
def test_constructor_refusals_name_the_problem_and_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ip.IsotropicTanh(**kwargs)


def test_small_positive_eps_and_o_init_are_accepted():
    act = ip.IsotropicTanh(intrinsic_length="trainable", eps=0.5, o_init=0.5)
    assert act.eps == 0.5 and math.isclose(act.o, 0.5, rel_tol=1e-7)
    assert ip.IsotropicTanh(intrinsic_length="constant", o_init=0.0).o == 0.0


def test_o_setter_refusals_are_whole():
    none = ip.IsotropicTanh()
    with pytest.raises(ValueError, match="^" + re.escape(
            "this activation has intrinsic_length='none' (o fixed at 0); construct it with "
            "intrinsic_length='constant' or 'trainable' to set o") + "$"):
        none.o = 0.1
    trainable = ip.IsotropicTanh(intrinsic_length="trainable")
    with pytest.raises(ValueError, match="^" + re.escape(
            "o=-0.5: a trainable intrinsic length is stored as log o and must be > 0") + "$"):
        trainable.o = -0.5
    with pytest.raises(ValueError, match="^" + re.escape(
            "intrinsic length o=inf must be finite") + "$"):
        trainable.o = math.inf
