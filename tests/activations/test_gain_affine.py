"""``IsotropicActivation.gain_affine(z, u, b) = (b + g(z) ⊙ u, g(z))``: for isotropic tanh one
autograd node (the gain's fused kernel with the product inside), whose values and first
derivatives are bit-identical to the composition ``torch.addcmul(b, u, act.gain(z))``, on every
path of the kernel (closed form, small-ball series, overflowing ``‖z‖²``), with derivatives of
every order through the reference formula."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck

import isoplastic as ip
from isoplastic.activations import isotropic as iso
from isoplastic.activations.profiles import log1p_profile
from isoplastic.testing.strategies import seeds

MODES = [("none", 0.0), ("constant", 0.3), ("constant", -0.3), ("trainable", 0.01),
         ("trainable", 0.5)]
FUSED = "_IsotropicTanhFnBackward"
HUGE = {torch.float32: 1e20, torch.float64: 1e160}  # ‖z‖² overflows the dtype


def _act(mode: str, o: float, dtype: torch.dtype, profile=None, **kw) -> ip.IsotropicActivation:
    act = ip.IsotropicActivation(profile, intrinsic_length=mode, **kw).to(dtype)
    act.o = o
    return act


def _inputs(seed: int, dtype: torch.dtype, batch: int, n: int, m: int, small: bool, huge: bool):
    """``z`` ``(batch, n)`` (with a zero row and a small-ball row if ``small``, a row whose
    ‖z‖² overflows if ``huge``), ``u`` ``(batch, m)``, ``b`` ``(m,)`` and output gradients."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, n, dtype=torch.float64, generator=gen)
    if small:
        z[0] = 0.0
        z[1] *= 1e-5 / z[1].norm()
    if huge:
        z[-1] *= HUGE[dtype] / z[-1].norm()
    u = torch.randn(batch, m, dtype=torch.float64, generator=gen)
    b = torch.randn(m, dtype=torch.float64, generator=gen)
    g_out = torch.randn(batch, m, dtype=torch.float64, generator=gen)
    g_g = torch.randn(batch, 1, dtype=torch.float64, generator=gen)
    return [t.to(dtype) for t in (z, u, b, g_out, g_g)]


def _run(act, z, u, b, g_out, g_g, use_g: bool, fused_call: bool, wants):
    """Values and gradients of ``L = ⟨g_out, out⟩ (+ ⟨g_g, g⟩)`` for the inputs in ``wants``."""
    z, u, b = (t.detach().clone().requires_grad_(w) for t, w in zip((z, u, b), wants))
    if fused_call:
        out, g = act.gain_affine(z, u, b)
    else:
        g = act.gain(z)
        out = torch.addcmul(b, u, g)
    loss = (out * g_out).sum() + ((g * g_g).sum() if use_g else 0.0)
    leaves = [t for t in (z, u, b) if t.requires_grad] + list(act.parameters())
    grads = torch.autograd.grad(loss, leaves) if leaves else ()
    return out.detach(), g.detach(), grads


@settings(max_examples=40, deadline=None)
@given(seed=seeds(), mode=st.sampled_from(MODES), dtype=st.sampled_from([torch.float32,
                                                                           torch.float64]),
       shape=st.tuples(st.integers(2, 6), st.integers(1, 5), st.integers(1, 5)),
       small=st.booleans(), huge=st.booleans(), use_g=st.booleans(),
       wants=st.tuples(st.booleans(), st.booleans(), st.booleans()))
def test_values_and_gradients_are_bit_identical_to_the_composition(seed, mode, dtype, shape,
                                                                   small, huge, use_g, wants):
    """The same bits as ``addcmul(b, u, gain(z))`` and its autograd gradients, for every subset
    of ``z, u, b`` needing a gradient, with and without ``g`` used beyond the product."""
    batch, n, m = shape
    act = _act(*mode, dtype)
    tensors = _inputs(seed, dtype, max(batch, 3), n, m, small, huge)
    out, g, grads = _run(act, *tensors, use_g, True, wants)
    out_c, g_c, grads_c = _run(act, *tensors, use_g, False, wants)
    assert torch.equal(out, out_c) and torch.equal(g, g_c)
    assert len(grads) == len(grads_c)
    for a, c in zip(grads, grads_c):
        assert torch.equal(a, c)


def test_isotropic_tanh_gives_one_node_and_other_cases_the_composition():
    """Isotropic tanh (series small ball, equal float dtypes): output and gain come from one
    fused node with the trainable log o as a direct input. The paper's branch, other profiles,
    ``fused_kernel(False)``, half precision and mixed dtypes compose ``gain`` and ``addcmul``,
    with the same values."""
    z, u, b, _, _ = _inputs(0, torch.float64, 4, 3, 2, True, False)
    z.requires_grad_(True)
    act = _act("trainable", 0.5, torch.float64)
    out, g = act.gain_affine(z, u, b)
    assert type(out.grad_fn).__name__ == FUSED and out.grad_fn is g.grad_fn
    assert any(f is not None and getattr(f, "variable", None) is act.log_o
               for f, _ in out.grad_fn.next_functions)
    cases = [(_act("constant", 0.3, torch.float64, small_ball="paper"), z, u, b),
             (_act("constant", 0.3, torch.float64, log1p_profile()), z, u, b),
             (act, z.bfloat16(), u.bfloat16(), b.bfloat16()),
             (act, z, u.float(), b.float())]
    for other, zz, uu, bb in cases:
        out, g = other.gain_affine(zz, uu, bb)
        assert type(out.grad_fn).__name__ != FUSED
        assert torch.equal(out, torch.addcmul(bb, uu, other.gain(zz).to(uu.dtype)))
    with iso.fused_kernel(False):
        out, g = act.gain_affine(z, u, b)
        assert type(out.grad_fn).__name__ != FUSED
        assert torch.equal(out, torch.addcmul(b, u, act.gain(z)))


@pytest.mark.parametrize("mode,o", [("none", 0.0), ("constant", -0.3), ("trainable", 0.5)])
def test_derivatives_of_every_order_through_the_reference_formula(mode, o):
    """gradcheck and gradgradcheck in float64 over ``z`` (a zero and a small-ball row
    included), ``u`` and ``b``; with a graph of the backward the first derivatives (also of
    the trainable log o) are those of the plain backward, to round-off."""
    act = _act(mode, o, torch.float64)
    z, u, b, g_out, _ = _inputs(3, torch.float64, 4, 3, 2, True, False)
    z, u, b = (t.requires_grad_(True) for t in (z, u, b))

    def f(zz, uu, bb):
        return act.gain_affine(zz, uu, bb)

    assert gradcheck(f, (z, u, b))
    assert gradgradcheck(f, (z, u, b))
    leaves = [z, u, b] + list(act.parameters())
    plain = torch.autograd.grad((f(z, u, b)[0] * g_out).sum(), leaves)
    graph = torch.autograd.grad((f(z, u, b)[0] * g_out).sum(), leaves, create_graph=True)
    # ∂L/∂b = Σ g_out is a constant; every other derivative depends on z
    assert all(a.requires_grad for i, a in enumerate(graph) if i != 2)
    for a, c in zip(graph, plain):
        torch.testing.assert_close(a.detach(), c, rtol=1e-13, atol=1e-13)
