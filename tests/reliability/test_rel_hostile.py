"""Hostile and bad inputs to the activation, the networks and the structural operations.

Each case: a clear error naming the problem and nothing half changed (bit-identical model and
optimizer), or a documented, finite propagation. ``xfail(strict=True)`` marks a known limit (B2);
the "Regression:" comments name bugs this suite found and that are now fixed
(``docs/reliability.md``).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from reference import assert_identical, probe, snapshot, train

import isoplastic as ip
from isoplastic.nn.conv import IsotropicCNN
from isoplastic.testing import random_isotropic_mlp

WIDTHS = [4, 5, 6, 3]


def make(psi: str = "trainable", il: str = "trainable", opt_cls=torch.optim.AdamW):
    net = random_isotropic_mlp(WIDTHS, il, psi, seed=11)
    opt = opt_cls(net.parameters(), lr=1e-2)
    train(net, opt, probe(net), 2)
    return net, opt


# -- the activation: zero vectors, huge norms, half precision -----------------------------------

@pytest.mark.parametrize("mode", ["none", "constant", "trainable"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_activation_zero_vector_gives_zero_and_finite_gradients(mode, dtype):
    act = ip.IsotropicTanh(intrinsic_length=mode).to(dtype)
    z = torch.zeros(3, 5, dtype=dtype, requires_grad=True)
    h = act(z)
    h.pow(2).sum().backward()
    assert torch.equal(h.detach(), torch.zeros_like(h))
    assert torch.isfinite(z.grad).all()
    for p in act.parameters():
        assert torch.isfinite(p.grad).all()


@pytest.mark.parametrize("mode", ["none", "constant", "trainable"])
def test_activation_huge_norm_float64_is_unit_length_with_finite_gradients(mode):
    act = ip.IsotropicTanh(intrinsic_length=mode).double()
    z = (torch.randn(4, 6, dtype=torch.float64) * 1e30).requires_grad_(True)
    h = act(z)
    (h * torch.randn_like(h)).sum().backward()
    assert torch.isfinite(h).all() and torch.isfinite(z.grad).all()
    torch.testing.assert_close(h.detach().norm(dim=1), torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("mode", ["none", "constant", "trainable"])
def test_activation_huge_norm_float32_is_unit_length(fused, mode):
    """Was limit B2: ‖z‖² overflowed float32 above ~1.8e19 and φ(z) became 0."""
    from isoplastic.activations import isotropic as iso

    act = ip.IsotropicTanh(intrinsic_length=mode)
    z = torch.randn(4, 6) * 1e30
    z[0] = torch.randn(6) * 1e-2  # an ordinary row in the same batch keeps its exact value
    z.requires_grad_(True)
    iso.FUSED = fused
    try:
        h = act(z)
        g = act.gain(z)
    finally:
        iso.FUSED = True
    torch.testing.assert_close(h[1:].detach().norm(dim=1), torch.ones(3), atol=1e-3, rtol=0)
    assert torch.equal(h[0], act(z[:1].detach())[0])
    assert torch.equal(g.detach() * z.detach(), h.detach())
    h.sum().backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [0.0, 1e-3, 1.0, 10.0])
def test_activation_half_precision_is_finite_with_finite_gradients(dtype, scale):
    act = ip.IsotropicTanh(intrinsic_length="trainable")
    z = (torch.randn(4, 6) * scale).to(dtype).requires_grad_(True)
    h = act(z)
    assert h.dtype == dtype and torch.isfinite(h).all()
    h.float().sum().backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(act.log_o.grad).all()
    ref = ip.IsotropicTanh(intrinsic_length="trainable").double()(z.detach().double())
    torch.testing.assert_close(h.double(), ref, atol=2e-2, rtol=2e-2)


# Regression: float16 ‖z‖² used to overflow for ‖z‖ > 256 and collapse φ(z) to 0.
def test_activation_float16_moderate_norm_is_unit_length():
    act = ip.IsotropicTanh(intrinsic_length="trainable")
    z = (torch.randn(4, 6) * 300).half()
    h = act(z)
    torch.testing.assert_close(h.float().norm(dim=1), torch.ones(4), atol=1e-2, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_mlp_runs_forward_and_backward(dtype):
    net = ip.IsotropicMLP([6, 8, 8, 3]).to(dtype)
    x = torch.randn(5, 6).to(dtype)
    out = net(x)
    assert out.dtype == dtype and torch.isfinite(out).all()
    out.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


# -- NaN / Inf inputs and weights ---------------------------------------------------------------

def test_nan_input_propagates_only_to_its_own_sample():
    """Documented propagation: a NaN or Inf feature poisons the logits of that sample only."""
    net, _ = make()
    x = probe(net)
    clean = net.eval()(x)
    bad = x.clone()
    bad[2, 1] = float("nan")
    bad[5, 0] = float("inf")
    out = net(bad)
    assert not torch.isfinite(out[2]).any() and not torch.isfinite(out[5]).all()
    keep = [i for i in range(x.shape[0]) if i not in (2, 5)]
    assert torch.equal(out[keep], clean[keep])


def _non_finite(net) -> dict[str, int]:
    return {n: int((~torch.isfinite(p)).sum()) for n, p in net.named_parameters()
            if not torch.isfinite(p).all()}


@pytest.mark.parametrize("op", ["left_diagonalise", "neurogenesis", "neurodegeneration",
                                "sparsify", "neuroadapt", "add_outputs", "remove_inputs"])
@pytest.mark.parametrize("where", ["linears.0.weight", "linears.1.bias", "psi.0", "psi.1",
                                   "activations.1.log_o", "linears.2.weight"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_never_spread_through_a_structural_change(op, where, value):
    """Either the change is refused (NonFiniteError/TopologyError naming NaN/Inf, model and
    optimizer bit-identical) or it does not read the poisoned tensor and leaves it alone: the
    one non-finite entry never spreads."""
    net, opt = make()
    with torch.no_grad():
        dict(net.named_parameters())[where].view(-1)[0] = value
    before = _non_finite(net)
    snap = snapshot(net, opt)
    call = {
        "left_diagonalise": lambda: ip.left_diagonalise(net, 1, opt),
        "neurogenesis": lambda: ip.neurogenesis(net, 1, 1, opt),
        "neurodegeneration": lambda: ip.neurodegeneration(net, 1, 1, opt),
        "sparsify": lambda: ip.sparsify(net, opt),
        "neuroadapt": lambda: ip.neuroadapt(net, 1, 0.3, opt),
        "add_outputs": lambda: ip.add_outputs(net, 1, opt),
        "remove_inputs": lambda: ip.remove_inputs(net, [3], opt),
    }[op]
    try:
        call()
    except ip.IsoplasticError as exc:
        assert re.search("NaN|Inf|nan|inf", str(exc)), exc
        assert_identical(snap, net, opt)
    else:
        assert _non_finite(net) == before
    if op in ("sparsify", "neuroadapt") and where != "psi.1":
        assert_identical(snap, net, opt)  # they read every hidden space: must refuse


@pytest.mark.parametrize("key", ["exp_avg", "exp_avg_sq"])
def test_non_finite_optimizer_state_is_refused_not_spread(key):
    """Regression: one NaN in Adam's moments used to be rotated into a whole row of state."""
    net, opt = make()
    opt.state[net.linears[0].weight][key][0, 0] = float("nan")
    snap = snapshot(net, opt)
    with pytest.raises(ip.NonFiniteError, match=rf"state '{key}'.*NaN or Inf"):
        ip.left_diagonalise(net, 0, opt)
    assert_identical(snap, net, opt)
    assert int(torch.isnan(opt.state[net.linears[0].weight][key]).sum()) == 1


def test_nan_batch_in_expectation_mode_cannot_corrupt_the_next_bias():
    """Regression: a training batch with a NaN sample recorded a NaN mean gain that
    neurodegeneration folded into the next bias (psi='expectation'): now refused."""
    net = random_isotropic_mlp(WIDTHS, "trainable", "expectation", seed=3)
    net.train()
    x = probe(net)
    x[0, 0] = float("nan")
    net(x)
    snap = snapshot(net)
    with pytest.raises(ip.TopologyError, match="mean gain"):
        ip.neurodegeneration(net, 0, 1)
    assert_identical(snap, net)


# -- empty batches ------------------------------------------------------------------------------

def test_empty_batch_forward_backward_mlp_and_cnn():
    net = random_isotropic_mlp(WIDTHS, "trainable", "trainable", seed=1)
    out = net(torch.empty(0, 4, dtype=torch.float64))
    assert out.shape == (0, 3)
    out.sum().backward()
    cnn = IsotropicCNN((2, 5, 5), [3], 3, head=[4], n_classes=3).double()
    out = cnn(torch.empty(0, 2, 5, 5, dtype=torch.float64))
    assert out.shape == (0, 3)


def test_empty_probe_batch_gives_a_clear_error():
    """Regression: function_change on an empty batch raised an obscure RuntimeError from
    reshape(0, -1) instead of its own message."""
    with pytest.raises(ValueError, match="empty batch; pass at least one probe input"):
        ip.function_change(torch.empty(0, 3), torch.empty(0, 3))
    net = ip.IsotropicMLP([3, 4, 2])
    with pytest.raises(ValueError, match="empty batch"):
        ip.function_change(net, net, torch.empty(0, 3))


def test_empty_batch_in_expectation_mode_keeps_the_last_mean_gain():
    """Regression: an empty training batch stored mean gain NaN, and the next neurodegeneration
    (psi='expectation') silently wrote NaN into the next layer's bias."""
    net = random_isotropic_mlp(WIDTHS, "trainable", "expectation", seed=3)
    net.train()
    net(probe(net))
    net(torch.empty(0, 4, dtype=torch.float64))
    ip.neurodegeneration(net, 0, 1)
    assert all(torch.isfinite(p).all() for p in net.parameters())


# Regression: an empty batch used to record a NaN mean gain in CNNs.
def test_cnn_empty_batch_in_expectation_mode_keeps_the_model_finite():
    cnn = IsotropicCNN((2, 4, 4), [3, 3], 3, head=[4], n_classes=3, psi="expectation").double()
    cnn.train()
    cnn(torch.randn(4, 2, 4, 4, dtype=torch.float64))
    cnn(torch.empty(0, 2, 4, 4, dtype=torch.float64))
    try:
        ip.neurodegeneration(cnn, 2, 1)
    except ip.IsoplasticError:
        pass
    assert all(torch.isfinite(p).all() for p in cnn.parameters())


# -- wrong shapes and dtypes --------------------------------------------------------------------

@pytest.mark.parametrize("x,err,match", [
    (torch.randn(2, 3, dtype=torch.float64), ValueError, r"inputs of shape \(batch, 4\).*got \(2, 3\)"),
    (torch.randn(4, dtype=torch.float64), ValueError, r"got \(4,\)"),
    (torch.randint(0, 3, (2, 4)), TypeError, r"float64 parameters but got torch.int64 inputs"),
    (torch.randn(2, 4), TypeError, r"float64 parameters but got torch.float32 inputs.*x.to"),
], ids=["width", "1-d", "int", "float32"])
def test_wrong_input_shape_or_dtype_names_the_problem(x, err, match):
    """Regression (dtype): torch's 'mat1 and mat2 must have the same dtype' is now a TypeError
    naming the network's dtype and the conversion to make."""
    net = random_isotropic_mlp(WIDTHS, "trainable", "trainable", seed=1)
    with pytest.raises(err, match=match):
        net(x)


def test_cnn_wrong_input_shape_names_the_problem():
    cnn = IsotropicCNN((2, 5, 5), [3], 3, n_classes=3)
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, 2, 5, 5\)"):
        cnn(torch.randn(1, 3, 5, 5))


# -- layer indices, counts, widths shrunk to zero, duplicates -----------------------------------

def test_cnn_layer_index_out_of_range_changes_nothing():
    cnn = IsotropicCNN((2, 5, 5), [3], 3, head=[4], n_classes=3).double()
    opt = torch.optim.SGD(cnn.parameters(), lr=0.1, momentum=0.9)
    snap = snapshot(cnn, opt)
    for k in (-1, 2, 3):
        with pytest.raises(ip.TopologyError, match="out of range"):
            ip.neurogenesis(cnn, k, 1, opt)
    assert_identical(snap, cnn, opt)


# Regression: neuroadapt(layers=[7]) used to escape as an IndexError.
def test_neuroadapt_layers_out_of_range_is_a_topology_error():
    net, opt = make()
    with pytest.raises(ip.TopologyError, match="neuroadapt"):
        ip.neuroadapt(net, 1, 0.3, opt, layers=[7])


def test_widths_shrunk_to_zero_are_refused():
    with pytest.raises(ValueError, match="every entry >= 1"):
        ip.IsotropicMLP([3, 0, 2])
    net, opt = make()
    snap = snapshot(net, opt)
    with pytest.raises(ip.TopologyError, match="width=0 must be a positive integer"):
        ip.set_width(net, 0, 0, opt)
    with pytest.raises(ip.TopologyError, match="would disconnect"):
        ip.neurodegeneration(net, 0, 5, opt)
    with pytest.raises(ip.TopologyError, match="cannot remove all 3"):
        ip.remove_outputs(net, [0, 1, 2], opt)
    with pytest.raises(ip.TopologyError, match="cannot remove all 4"):
        ip.remove_inputs(net, range(4), opt)
    assert_identical(snap, net, opt)


def test_removing_the_same_output_twice():
    net, opt = make()
    ch = ip.remove_outputs(net, [1, 1], opt)  # one call: duplicates collapse, reported n == 1
    assert (ch.n, ch.width_after) == (1, 2)
    ip.remove_outputs(net, [1], opt)
    snap = snapshot(net, opt)
    with pytest.raises(ip.TopologyError, match=r"indices \[1\] must lie in 0..0"):
        ip.remove_outputs(net, [1], opt)  # the same position again: gone
    assert_identical(snap, net, opt)


@pytest.mark.parametrize("indices", [[0.5], ["a"], 2, torch.tensor([0.0]), [True]], ids=repr)
def test_non_integer_indices_are_refused(indices):
    """Regression: remove_inputs(net, [0.5]) silently removed input 0 (int(0.5)); ['a'] raised a
    bare ValueError and a plain int a TypeError."""
    net, opt = make()
    snap = snapshot(net, opt)
    with pytest.raises(ip.TopologyError, match="remove_inputs: ind"):
        ip.remove_inputs(net, indices, opt)
    assert_identical(snap, net, opt)


def test_integer_index_types_are_accepted():
    import numpy as np

    net, opt = make()
    ip.remove_inputs(net, torch.tensor([0]), opt)
    ip.remove_outputs(net, np.array([1]), opt)
    assert net.widths[0] == 3 and net.widths[-1] == 2


# Regression: init_scale=inf used to be accepted.
def test_neurogenesis_infinite_init_scale_is_refused():
    net, opt = make()
    snap = snapshot(net, opt)
    with pytest.raises(ip.TopologyError, match="init_scale"):
        ip.neurogenesis(net, 0, 1, opt, init_scale=math.inf)
    assert_identical(snap, net, opt)


# -- optimizers whose state cannot be transported -----------------------------------------------

class _Custom(torch.optim.SGD):
    """An optimizer with a state key the library does not know."""

    def step(self, closure=None):
        super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["ema"] = p.detach().clone()


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.LBFGS(ps),
    lambda ps: torch.optim.Adamax(ps),
    lambda ps: _Custom(ps, lr=0.1),
], ids=["LBFGS", "Adamax", "unknown-state-key"])
@pytest.mark.parametrize("op", ["reparameterise", "neurogenesis", "neurodegeneration",
                                "add_outputs"])
def test_untransportable_optimizer_is_refused_and_nothing_changes(make_opt, op):
    net = random_isotropic_mlp(WIDTHS, "trainable", "trainable", seed=2)
    opt = make_opt(net.parameters())
    if isinstance(opt, _Custom):
        train(net, opt, probe(net), 1)
    snap = snapshot(net, opt)
    call = {
        "reparameterise": lambda: ip.reparameterise(net, 0, ip.random_orthogonal(5), opt),
        "neurogenesis": lambda: ip.neurogenesis(net, 0, 1, opt),
        "neurodegeneration": lambda: ip.neurodegeneration(net, 0, 1, opt),
        "add_outputs": lambda: ip.add_outputs(net, 1, opt),
    }[op]
    with pytest.raises(ip.UnsupportedOptimizerError, match="register_optimizer"):
        call()
    assert_identical(snap, net, opt)


# -- the removal bound --------------------------------------------------------------------------

# Regression: the bound used to ignore the removed neurons' ψ entries.
def test_neurodegeneration_bound_covers_removed_psi_entries():
    net = random_isotropic_mlp(WIDTHS, "trainable", "trainable", seed=3)
    with torch.no_grad():
        net.linears[1].weight[-1].zero_()  # σ = 0 for one neuron of hidden layer 1
    x = probe(net, batch=64)
    before = net(x).detach()
    ch = ip.neurodegeneration(net, 1, 1)
    change = float((net(x).detach() - before).norm(dim=1).max())
    assert ch.predicted_offset > 0
    # ‖h_0‖ ≤ 1 for isotropic tanh; the last hidden layer's next pre-activation is the logits
    assert change <= ch.predicted_bound * 1.0 + ch.predicted_offset + 1e-12


# Regression: the bound used to report 0 without an intrinsic length to fold b* into.
def test_neurodegeneration_bound_without_intrinsic_length():
    net = random_isotropic_mlp(WIDTHS, "none", "trainable", seed=3)
    with torch.no_grad():
        net.linears[0].weight[-1].zero_()
    x = probe(net, batch=64)
    h_max = float(x.norm(dim=1).max())
    z1_before = _z1(net, x)
    ch = ip.neurodegeneration(net, 0, 1)
    assert ch.predicted_offset > 0
    change = float((_z1(net, x) - z1_before).norm(dim=1).max())
    assert change <= ch.predicted_bound * h_max + ch.predicted_offset + 1e-12


def _z1(net, x):
    """Pre-activation of hidden layer 1 (the next one after hidden layer 0)."""
    with torch.no_grad():
        h0, g0 = net.activations[0].forward_with_gain(net.linears[0](x))
        z1 = net.linears[1](h0)
        return z1 + net.psi[0] * g0 if len(net.psi) else z1
