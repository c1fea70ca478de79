"""The bench harness on toy sizes (no timing assertions), and the fused activation path."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import isoplastic as ip
from isoplastic.activations import isotropic as iso
from isoplastic.activations.profiles import TanhProfile
from isoplastic.bench import suites
from isoplastic.topology.policies import strength_count


@pytest.mark.slow  # 7 s
def test_quick_harness_on_tiny_sizes_returns_required_finite_keys():
    res = suites.run_all(tiny=True, suites=("activation", "adaptation", "sparse"), log=lambda m: None)
    for key in ("train_step_ratio", "neuroadapt_epoch_fraction", "sparse_inference_ratio",
                "nonzero_ratio", "neuroadapt_reflectors_epoch_fraction",
                "neurodegeneration_reflectors_epoch_fraction"):
        assert isinstance(res[key], float) and math.isfinite(res[key]) and res[key] > 0, key
    assert res["suites"]["activation"]["rows"][0]["batch"] == 4
    assert all(v["same_changes"] for v in res["suites"]["adaptation"]["decision_check"].values())
    assert res["suites"]["sparse"]["rows"][0]["max_rel_error_float32"] < 1e-5


def test_pruning_suite_on_tiny_sizes():
    r = suites.pruning_quality(dataset="digits", hidden=12, targets=(6,), epochs=1,
                               finetune_epochs=1, n_train=200, n_test=80, criterion_neurons=6)
    assert "isotropic neurodegeneration" in r["curves"] and "tanh L2 structured" in r["curves"]
    pts = r["curves"]["tanh L2 structured"]
    assert pts[0]["width"] == 6 and 0.0 <= pts[0]["accuracy"] <= 1.0
    assert r["criteria"]["winner_logit"] in ("impact", "singular_value")


def test_report_renders_from_results(tmp_path):
    pytest.importorskip("matplotlib")
    from isoplastic.cli.bench import write_report

    res = suites.run_all(tiny=True, suites=("activation", "sparse"), log=lambda m: None)
    out = tmp_path / "bench.md"
    write_report(res, out)
    text = out.read_text()
    assert "train_step_ratio" in text and (tmp_path / "figures" / "bench_sparse.png").exists()


# dynamo instantiates torch.autograd.Function while tracing a custom Function (torch's own
# deprecation warning about torch's own code)
@pytest.mark.filterwarnings("ignore:<class 'torch.autograd.function.Function'> should not be "
                            "instantiated:DeprecationWarning")
def test_compiled_suite_on_tiny_sizes_renders(tmp_path, monkeypatch):
    """The compiled-step suite (aot_eager: no C++ compiler needed) gives finite ratios for every
    mode, a recompilation after the structural change, and its report section; a machine
    without a compiler for inductor gets a skip record naming the missing compiler."""
    pytest.importorskip("matplotlib")
    from isoplastic.cli.bench import write_report

    res = suites.run_all(tiny=True, suites=("compiled",), log=lambda m: None)
    c = res["suites"]["compiled"]
    assert [r["kind"] for r in c["rows"]] == ["mlp", "cnn"]
    for r in c["rows"]:
        assert set(r["ratios"]) == set(suites.COMPILE_MODES)
        assert all(math.isfinite(v) and v > 0 for v in r["ratios"].values())
        assert r["recompile_after_change_s"] > 0
    assert res["train_step_ratio_compiled"] == c["rows"][0]["ratios"]["compiled+fused"]
    out = tmp_path / "bench.md"
    write_report(res, out)
    assert "### 1b. Fused and compiled training step" in out.read_text()
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    assert "'no-such-compiler-xyz' is not on PATH" in suites._missing_compiler("inductor")
    assert suites._missing_compiler("aot_eager") is None


def _reference(z, o, q_switch=1e-6):
    sq = (z * z).sum(-1, keepdim=True)
    if o is not None:
        sq = sq + o
    g = TanhProfile().gain(sq.abs(), q_switch)
    return g * z, g


@pytest.mark.parametrize("mode,o", [("none", 0.0), ("constant", 0.3), ("constant", -0.2),
                                    ("trainable", 1e-6), ("trainable", 0.5)])
@pytest.mark.parametrize("radius", [0.0, 0.9e-3, 1.1e-3, 0.5, 3.0])
def test_fused_activation_equals_reference_and_passes_gradcheck(mode, o, radius):
    act = ip.IsotropicTanh(intrinsic_length=mode).double()
    if mode != "none":
        act.o = o
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64)
    z = (z / z.norm(dim=1, keepdim=True) * radius).requires_grad_()
    h, gain = act.forward_with_gain(z)
    ot = None if mode == "none" else act.o_tensor()
    h_ref, g_ref = _reference(z, ot)
    assert torch.equal(h, h_ref) and torch.equal(gain, g_ref)  # bit-identical values
    w, v = torch.randn_like(h), torch.randn_like(gain)
    params = [z] + ([act.log_o] if mode == "trainable" else [])
    fast = torch.autograd.grad((h * w).sum() + (gain * v).sum(), params)
    ref = torch.autograd.grad((h_ref * w).sum() + (g_ref * v).sum(), params)
    for a, b in zip(fast, ref):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)
    assert gradcheck(act.forward_with_gain, (z,))
    assert gradgradcheck(act.forward_with_gain, (z,))
    # the gain alone (what the MLP uses): same values, same gradients
    gain_only = act.gain(z)
    _, g_ref = _reference(z, None if mode == "none" else act.o_tensor())  # a fresh graph
    assert torch.equal(gain_only, g_ref)
    fast = torch.autograd.grad((gain_only * v).sum(), params)
    ref = torch.autograd.grad((g_ref * v).sum(), params)
    # g'(q) = (1 - tanh²ρ - g)/(2q) (and autograd's chain through tanh(ρ)/ρ) cancel to ~q/3:
    # both carry a relative error of about eps/q just outside the small ball, so they agree to
    # that, not to 1e-12 (with h the exact g·∂L/∂h term hides this).
    q = radius**2 + (abs(o) if mode != "none" else 0.0)
    rtol = 1e-12 + 64 * torch.finfo(torch.float64).eps / max(q, 1e-6)
    for a, b in zip(fast, ref):
        assert torch.allclose(a, b, rtol=rtol, atol=1e-15)
    assert gradcheck(act.gain, (z,)) and gradgradcheck(act.gain, (z,))
    if mode == "trainable":  # log o is exponentiated inside the kernel
        lo = act.log_o.detach().clone().requires_grad_()

        def f_log(zz, ll):
            return iso._IsotropicTanhFn.apply(zz, ll, -1, 1e-6, True, True)

        assert gradcheck(f_log, (z, lo)) and gradgradcheck(f_log, (z, lo))
    if mode != "none" and abs(o) >= 0.1:  # raw o: finite differences must not cross o = 0
        ot = torch.tensor(o, dtype=torch.float64, requires_grad=True)

        def f(zz, oo):
            return iso._IsotropicTanhFn.apply(zz, oo, -1, 1e-6)

        assert gradcheck(f, (z, ot)) and gradgradcheck(f, (z, ot))


def test_fused_flag_switches_to_reference_path():
    act = ip.IsotropicTanh("trainable")
    z = torch.randn(3, 5)
    fused = act(z)
    iso.FUSED = False
    try:
        plain = act(z)
    finally:
        iso.FUSED = True
    assert torch.equal(fused, plain)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_scaffold_count_equals_svdvals_count(dtype):
    g = torch.Generator().manual_seed(1)
    for m, n in [(120, 300), (90, 70), (64, 64)]:
        w = torch.randn(m, n, generator=g, dtype=dtype) * torch.rand(m, 1, generator=g,
                                                                     dtype=dtype) / n ** 0.5
        w[:3] = 0
        for tau in (0.0, 0.05, 0.1, 0.5):
            s = torch.linalg.svdvals(w)
            ref = int((s <= tau).sum()) + max(m - s.shape[0], 0)
            assert strength_count(w, tau) == ref
