"""The activation and the models trace as one graph: ``torch.compile(fullgraph=True)``,
``torch.export`` and ``torch._dynamo.explain`` (no Python branch on tensor values), with the
branch-free formulas exact where the eager path branches."""

from __future__ import annotations

import math
import os
import shutil

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import isoplastic as ip
from isoplastic.activations import isotropic as iso
from isoplastic.activations.profiles import log1p_profile

# dynamo itself instantiates torch.autograd.Function while tracing a custom Function (torch's
# own deprecation warning about torch's own code, not about isoplastic's)
pytestmark = pytest.mark.filterwarnings(
    "ignore:<class 'torch.autograd.function.Function'> should not be instantiated"
    ":DeprecationWarning")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    # every test compiles new module instances: start from an empty cache so none of them hits
    # dynamo's recompile limit (which would fall back to eager)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def branch_free(monkeypatch):
    """Run eager code on the formulas compiled code uses (no host read of tensor values)."""
    monkeypatch.setattr(iso, "_may_branch", lambda: False)


def hard_batch(n: int = 6, dtype=torch.float32, generator=None) -> torch.Tensor:
    """Rows in every regime: zero, inside the small ball, at its edge, ordinary, and (float32)
    with ‖z‖² beyond the dtype's range (limit B2)."""
    z = torch.randn(6, n, generator=generator, dtype=dtype)
    z = z / z.norm(dim=1, keepdim=True)
    scale = torch.tensor([0.0, 1e-5, 1e-3, 0.7, 3.0, 1e30 if dtype == torch.float32 else 1e160],
                         dtype=dtype)
    return z * scale[:, None]


def grads_of(fn, params, *args):
    for p in params:
        p.grad = None
    out = fn(*args)
    loss = (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum()
    loss.backward()
    return out.detach(), [p.grad.clone() for p in params]


def models():
    gen = torch.Generator().manual_seed(0)
    mlp = ip.IsotropicMLP([32, 64, 64, 10], generator=gen)
    cnn = ip.IsotropicCNN((3, 8, 8), [4, 6], head=[12], n_classes=5, generator=gen)
    return [("mlp", mlp, torch.randn(8, 32, generator=gen)),
            ("cnn", cnn, torch.randn(4, 3, 8, 8, generator=gen))]


@pytest.mark.parametrize("name,model,x", models(), ids=["mlp", "cnn"])
def test_explain_reports_no_graph_break(name, model, x):
    report = torch._dynamo.explain(model)(x)
    assert report.graph_break_count == 0, report.break_reasons
    assert report.graph_count == 1


@pytest.mark.parametrize("name,model,x", models(), ids=["mlp", "cnn"])
def test_fullgraph_aot_eager_forward_backward_equals_eager(name, model, x):
    params = list(model.parameters())
    out_e, g_e = grads_of(model, params, x)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out_c, g_c = grads_of(compiled, params, x)
    # the compiled graph selects with torch.where what eager selects in Python: same values,
    # gradients from an algebraically equal slope formula
    torch.testing.assert_close(out_c, out_e, rtol=1e-6, atol=1e-7)
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,model,x", models(), ids=["mlp", "cnn"])
def test_export_equals_eager_also_on_inputs_of_other_regimes(name, model, x):
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    exported = program.module()
    torch.testing.assert_close(exported(x), model(x), rtol=1e-6, atol=1e-7)
    # the graph holds every branch: a zero input and a huge one are handled as in eager
    for scale in (0.0, 1e30):
        xs = x * scale
        ref = model(xs)
        assert torch.isfinite(ref).all()
        torch.testing.assert_close(exported(xs), ref, rtol=1e-6, atol=1e-7)
    # and any batch size (a last, partial batch)
    torch.testing.assert_close(exported(x[:-1]), model(x[:-1]), rtol=1e-6, atol=1e-7)


ACTIVATIONS = [
    ("none", "series", None), ("constant", "series", None), ("trainable", "series", None),
    ("constant", "paper", None), ("trainable", "paper", None), ("constant", "series", "log1p"),
]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("mode,small_ball,profile", ACTIVATIONS)
def test_every_activation_path_compiles_fullgraph_and_equals_eager(mode, small_ball, profile,
                                                                   fused):
    prof = log1p_profile() if profile == "log1p" else None
    act = ip.IsotropicActivation(prof, intrinsic_length=mode, small_ball=small_ball)
    if mode == "constant":
        act.o = -0.02 if small_ball == "paper" else 0.3  # o < 0: |‖z‖² + o| and the paper's |o|
    z = hard_batch(generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    params = [z] + list(act.parameters())

    def both(zz):
        h, g = act.forward_with_gain(zz)
        return torch.cat([h, g], dim=-1)

    with iso.fused_kernel(fused):
        out_e, g_e = grads_of(both, params, z)
        compiled = torch.compile(both, fullgraph=True, backend="aot_eager")  # raises on a break
        out_c, g_c = grads_of(compiled, params, z)
    assert torch.isfinite(out_c).all() and all(torch.isfinite(g).all() for g in g_c)
    torch.testing.assert_close(out_c, out_e, rtol=1e-6, atol=0)
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


MODES_AND_O = [("none", 0.0), ("constant", 0.0), ("constant", -0.2), ("constant", 0.5),
               ("trainable", 1e-6), ("trainable", 0.5)]


@pytest.mark.parametrize("mode,o", MODES_AND_O)
@pytest.mark.parametrize("radius", [0.0, 1e-8, 0.999e-3, 1.001e-3, 1e-2, 0.5])
def test_branch_free_formulas_pass_gradcheck_and_match_eager_values(branch_free, mode, o,
                                                                    radius):
    """What compiled code computes, run eagerly in float64: at z = 0, on both sides of the
    small-ball switch, for every intrinsic-length mode — values bit-identical to the branching
    path, first and second derivatives checked against finite differences."""
    act = ip.IsotropicTanh(intrinsic_length=mode).double()
    act.o = o
    z = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    z = (z / z.norm(dim=1, keepdim=True) * radius).requires_grad_(True)
    h, g = act.forward_with_gain(z)
    iso._may_branch = lambda: True  # the eager path, for comparison (the fixture restores it)
    h_e, g_e = act.forward_with_gain(z)
    iso._may_branch = lambda: False
    assert torch.equal(h, h_e) and torch.equal(g, g_e)
    assert gradcheck(act.forward_with_gain, (z,))
    assert gradgradcheck(act.forward_with_gain, (z,))
    if mode == "trainable":
        def f(lo, zz):
            return iso._IsotropicTanhFn.apply(zz, lo, -1, act.eps ** 2, True, True)

        lo = act.log_o.detach().clone().requires_grad_(True)
        assert gradcheck(f, (lo, z)) and gradgradcheck(f, (lo, z))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("mode", ["none", "constant", "trainable"])
def test_branch_free_huge_norm_float32_is_unit_length_with_finite_gradients(branch_free, fused,
                                                                            mode):
    act = ip.IsotropicTanh(intrinsic_length=mode)
    z = hard_batch(generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    with iso.fused_kernel(fused):
        h, g = act.forward_with_gain(z)
    assert torch.equal(g.detach() * z.detach(), h.detach())
    assert math.isclose(float(h[5].detach().norm()), 1.0, abs_tol=1e-3)
    assert torch.isfinite(h).all()
    (h * torch.randn_like(h)).sum().backward()
    assert torch.isfinite(z.grad).all()
    if mode == "trainable":
        assert torch.isfinite(act.log_o.grad).all()


def test_fused_kernel_context_restores_the_flag_on_error():
    assert iso.FUSED is True
    with pytest.raises(RuntimeError), iso.fused_kernel(False):
        assert iso.FUSED is False
        with iso.fused_kernel(True):
            assert iso.FUSED is True
        assert iso.FUSED is False
        raise RuntimeError("inside")
    assert iso.FUSED is True


def _cxx() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


@pytest.mark.slow  # inductor compiles C++ for each graph: ~30-40 s per model on 2 cores
# torch's own modules loaded by inductor use the deprecated torch.jit.script_method
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.skipif(_cxx() is None, reason="inductor on CPU needs a C++ compiler (none on PATH)")
@pytest.mark.parametrize("name,model,x", models(), ids=["mlp", "cnn"])
def test_fullgraph_inductor_forward_backward_equals_eager(name, model, x):
    params = list(model.parameters())
    out_e, g_e = grads_of(model, params, x)
    compiled = torch.compile(model, fullgraph=True)
    out_c, g_c = grads_of(compiled, params, x)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _loop_through_changes(backend: str | None, steps: int = 12) -> tuple[list[float], nn.Module]:
    """A plain float64 loop (AdamW, previous loss alive) whose forward pass and loss run under
    ``torch.compile(backend=...)`` (``None``: eager), with a neurogenesis, a neurodegeneration
    and a neuroadapt pass between steps, each transporting the optimizer's state."""
    torch.manual_seed(0)
    net = ip.IsotropicMLP([12, 8, 8, 4]).double()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    x = torch.randn(16, 12, dtype=torch.float64)
    y = torch.randint(0, 4, (16,))

    def loss_of(x, y):
        return torch.nn.functional.cross_entropy(net(x), y) + net.psi_penalty()

    fn = loss_of if backend is None else torch.compile(loss_of, fullgraph=True, backend=backend)
    changes = {3: lambda: ip.neurogenesis(net, 0, 3, opt,
                                          generator=torch.Generator().manual_seed(1)),
               6: lambda: ip.neurodegeneration(net, 1, 2, opt),
               9: lambda: ip.neuroadapt(net, 2, 0.1, opt,
                                        generator=torch.Generator().manual_seed(2))}
    losses, loss = [], None
    for step in range(steps):
        if step in changes:
            changes[step]()
        opt.zero_grad(set_to_none=True)
        loss = fn(x, y)  # the previous loss stays alive until here
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses, net


@pytest.mark.parametrize("backend", [
    "aot_eager",
    pytest.param("inductor", marks=[
        pytest.mark.slow,  # inductor compiles C++ for every shape the changes produce
        pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated"
                                   ":DeprecationWarning"),
        pytest.mark.skipif(_cxx() is None, reason="inductor on CPU needs a C++ compiler")])])
def test_compiled_loop_through_structural_changes_matches_eager_in_float64(backend):
    """Every change of shape recompiles the loss at its next call, and the compiled loop follows
    the eager one step for step: the same widths, losses and weights to float64 round-off."""
    eager_losses, eager = _loop_through_changes(None)
    losses, net = _loop_through_changes(backend)
    assert net.widths == eager.widths and net.widths != [12, 8, 8, 4]
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(eager_losses),
                               rtol=1e-12, atol=1e-12)
    for a, b in zip(net.parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
