"""IsotropicCNN: channel spaces under the generic operations (docs/convolutions.md).

float64 unless a test takes ``float_dtype`` (then float32 and float64); "exact" means relative
logit change <= FLOAT_TOLERANCE of the dtype (1e-10 in float64, observed ~1e-15).
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import isoplastic as ip
from isoplastic.nn.conv import IsotropicCNN
from isoplastic.testing import FLOAT_TOLERANCE

EXACT = FLOAT_TOLERANCE[torch.float64]
DT = torch.float64


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max())


def make_net(seed: int, *, channels=(4, 5, 3), kernels=(3, 1, 3), head=(5,), n_classes=3,
             padding="same", pooling="mean", psi="trainable", hw=6,
             dtype: torch.dtype = DT) -> IsotropicCNN:
    """A CNN with every parameter random (biases, ψ and o non-zero), drawn in float64 and cast
    to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    net = IsotropicCNN((2, hw, hw), list(channels), list(kernels), head=list(head),
                       n_classes=n_classes, intrinsic_length="trainable", psi=psi,
                       padding=padding, pooling=pooling, generator=g).to(DT)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=DT))
        for act in net.activations:
            act.o = 0.2 + float(torch.rand((), generator=g, dtype=DT))
    return net.to(dtype)


def inputs(seed: int, net: IsotropicCNN, batch: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1000)
    c = net.widths[0]
    dtype = net.convs[0].weight.dtype
    return torch.randn(batch, c, *net.in_hw, generator=g, dtype=DT).to(dtype)


arch = st.fixed_dictionaries({
    "channels": st.lists(st.integers(2, 5), min_size=1, max_size=3),
    "head": st.lists(st.integers(2, 5), min_size=0, max_size=2),
    "padding": st.sampled_from(["same", "valid"]),
    "pooling": st.sampled_from(["mean", "flatten"]),
    "seed": st.integers(0, 2**16),
})


def build(a: dict, dtype: torch.dtype = DT) -> tuple[IsotropicCNN, torch.Tensor]:
    kernels = [1 + 2 * (i % 2 == 0) for i in range(len(a["channels"]))]  # 3, 1, 3
    net = make_net(a["seed"], channels=a["channels"], kernels=kernels, head=a["head"],
                   padding=a["padding"], pooling=a["pooling"], hw=7, dtype=dtype)
    return net, inputs(a["seed"], net)


# -- structure ----------------------------------------------------------------------------------
def test_hidden_spaces_cover_channels_and_head():
    net = make_net(0, channels=(4, 5), kernels=(3, 1), head=(6, 2))
    assert net.n_hidden == 4 and net.widths == [2, 4, 5, 6, 2, 3]
    assert [net.hidden_space(k).size for k in range(4)] == [4, 5, 6, 2]
    roles = [a.role for a in net.hidden_space(1).axes]
    assert roles == ["incoming", "bias", "psi", "outgoing"]
    assert net.hidden_space(1).axes[-1].owner is net.head_in
    assert net.hidden_layer(0).outgoing.shape == (5, 4)
    assert torch.equal(net.hidden_layer(0).outgoing, net.convs[1].weight.detach().sum(dim=(2, 3)))
    assert isinstance(net, ip.core.HiddenSpaceModel)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="odd kernels"):
        IsotropicCNN((1, 5, 5), [3], 2)
    with pytest.raises(ValueError, match="vanishes"):
        IsotropicCNN((1, 3, 3), [3, 3], 3, padding=0)
    with pytest.raises(ValueError, match="pooling"):
        IsotropicCNN((1, 5, 5), [3], 3, pooling="max")
    net = IsotropicCNN((1, 5, 5), [3], 3)
    with pytest.raises(ValueError, match="expects inputs of shape"):
        net(torch.zeros(2, 2, 5, 5))


def test_config_rebuilds_after_structural_changes():
    net = make_net(1, pooling="flatten")
    ip.neurogenesis(net, 1, 2)
    ip.neurodegeneration(net, 3, 1)
    ip.add_inputs(net, 1)
    assert net.kind == "cnn"
    twin = type(net)(**net.config()).to(DT)
    twin.load_state_dict(net.state_dict())
    x = inputs(1, net)
    assert torch.equal(twin(x), net(x))


# -- exact symmetry operations -------------------------------------------------------------------
@settings(max_examples=6, deadline=None)
@given(arch)
def test_reparameterise_every_space_exact(float_dtype, a):
    net, x = build(a, float_dtype)
    y = net(x).detach()
    for k in range(net.n_hidden):
        r = ip.random_orthogonal(net.hidden_space(k).size, dtype=float_dtype,
                                 generator=torch.Generator().manual_seed(a["seed"] + k))
        ip.reparameterise(net, k, r)
    assert rel(net(x), y) <= FLOAT_TOLERANCE[float_dtype]


@settings(max_examples=6, deadline=None)
@given(arch)
def test_left_diagonalise_exact_and_ordered(float_dtype, a):
    net, x = build(a, float_dtype)
    tol = FLOAT_TOLERANCE[float_dtype]
    y = net(x).detach()
    for k in range(net.n_hidden):
        s = ip.left_diagonalise(net, k)
        w = net.hidden_layer(k).incoming_matrix()  # (C_k, C_{k-1}·s·s)
        gram = w @ w.T
        scale = max(1.0, float(s[0])) ** 2  # an SVD's error scales with ‖W‖
        assert torch.allclose(gram, torch.diag(s * s), atol=tol * scale, rtol=0)
        assert torch.all(s[:-1] >= s[1:])
    assert rel(net(x), y) <= tol


@settings(max_examples=6, deadline=None)
@given(arch, st.integers(1, 3))
def test_neurogenesis_every_space_exact(float_dtype, a, n):
    net, x = build(a, float_dtype)
    y = net(x).detach()
    widths = net.widths
    for k in range(net.n_hidden):
        ip.neurogenesis(net, k, n, init_scale=0.1)
    assert net.widths[1:-1] == [w + n for w in widths[1:-1]]
    assert rel(net(x), y) <= FLOAT_TOLERANCE[float_dtype]


def test_full_diagonalise_1x1_and_pooled_head_exact(float_dtype):
    net = make_net(2, channels=(4, 5, 3), kernels=(3, 1, 1), head=(4,), dtype=float_dtype)
    x = inputs(2, net)
    y = net(x).detach()
    for k in (1, 2, 3):  # 1×1 convolutions, and the mean-pooled head_in (fan-in = channels)
        s = ip.full_diagonalise(net, k)
        w = net.hidden_layer(k).incoming_matrix()
        diag = torch.zeros_like(w)
        diag[range(len(s)), range(len(s))] = s
        assert torch.equal(w, diag)
        assert rel(net(x), y) <= FLOAT_TOLERANCE[float_dtype]


@pytest.mark.parametrize("case", ["3x3 kernel", "flatten head"])
def test_full_diagonalise_refused_where_taps_cannot_rotate(case):
    if case == "3x3 kernel":
        net, k = make_net(3, kernels=(3, 3, 1)), 1
    else:
        net, k = make_net(3, pooling="flatten"), 3
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ip.TopologyError, match="only 1×1"):
        ip.full_diagonalise(net, k)
    assert all(torch.equal(v, net.state_dict()[n]) for n, v in before.items())


def test_singular_values_are_those_of_the_reshaped_kernel():
    net = make_net(4)
    w = net.convs[2].weight.detach().reshape(3, -1)  # (3, 5·3·3)
    assert torch.allclose(ip.singular_values(net, 2), torch.linalg.svdvals(w))
    w = net.convs[1].weight.detach().reshape(5, -1)  # 1×1, (5, 4): padded with one zero
    assert torch.allclose(ip.singular_values(net, 1)[:4], torch.linalg.svdvals(w))
    assert ip.singular_values(net, 1)[4] == 0


# -- neurodegeneration --------------------------------------------------------------------------
def silence_last(net: IsotropicCNN, k: int, bias: float = 0.7) -> None:
    """Left-diagonalise space k and give its last coordinate σ = 0 (zero incoming slice, zero own
    ψ entry) and a non-zero bias: its pre-activation is the constant ``bias`` everywhere."""
    ip.left_diagonalise(net, k)
    layer = net.hidden_layer(k)
    with torch.no_grad():
        layer.incoming[-1].zero_()
        layer.bias[-1] = bias
        if len(net.psi) and k >= 1:
            zero_rows = layer.incoming.reshape(layer.incoming.shape[0], -1).norm(dim=1) == 0
            net.psi[k - 1][zero_rows] = 0.0


# (architecture, space k) whose next map makes the ψ compensation exact
EXACT_CASES = {
    "next 1x1 conv, same": (dict(kernels=(3, 1, 3)), 0),
    "next 1x1 conv, valid": (dict(kernels=(3, 1, 3), padding="valid", hw=7), 0),
    "mean-pooled head": (dict(kernels=(3, 1, 3)), 2),
    "mean-pooled head, no head layers": (dict(kernels=(3, 3), channels=(4, 3), head=()), 1),
    "dense head layer after flatten": (dict(pooling="flatten", head=(5, 4)), 3),
}


@pytest.mark.parametrize("case", list(EXACT_CASES))
def test_neurodegeneration_zero_sigma_exact(case):
    kwargs, k = EXACT_CASES[case]
    net = make_net(5, **kwargs)
    x = inputs(5, net)
    silence_last(net, k)
    y = net(x).detach()
    rec = ip.neurodegeneration(net, k, 1)
    assert rec.removed_singular_values == [0.0] and rec.removed_bias[0] == pytest.approx(0.7)
    assert rel(net(x), y) <= EXACT


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_neurodegeneration_before_kxk_conv_is_only_approximate(padding):
    """o restores every position's gain exactly; ψ·avgpool(g) only approximates Σ_t W_t g(p+t)."""
    net = make_net(6, kernels=(3, 3, 1), padding=padding, hw=8)
    x = inputs(6, net)
    silence_last(net, 0)
    y, g0 = net(x).detach(), net.gains(x)[0]
    ip.neurodegeneration(net, 0, 1)
    assert rel(net.gains(x)[0], g0) <= EXACT  # the o-update is exact at every position
    assert rel(net(x), y) > 1e-6  # the ψ term is not


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_neurodegeneration_before_kxk_conv_exact_for_constant_slice(padding):
    """If the removed channel's outgoing kernel slice is constant over the taps, exact (also at
    zero-padded borders, since the window-mean gain is zero-padded the same way)."""
    net = make_net(7, kernels=(3, 3, 1), padding=padding, hw=8)
    x = inputs(7, net)
    silence_last(net, 0)
    with torch.no_grad():
        w = net.convs[1].weight
        w[:, -1] = w[:, -1].mean(dim=(1, 2), keepdim=True)
    y = net(x).detach()
    ip.neurodegeneration(net, 0, 1)
    assert rel(net(x), y) <= EXACT


def test_neurodegeneration_before_flatten_head():
    net = make_net(8, pooling="flatten")
    silence_last(net, 2)
    x = inputs(8, net)
    twin = copy.deepcopy(net)
    with torch.no_grad():  # the twin's head weight is constant over positions for that channel
        w = twin.head_in.weight
        w[:, -1] = w[:, -1].mean(dim=1, keepdim=True)
    y, y_twin = net(x).detach(), twin(x).detach()
    ip.neurodegeneration(net, 2, 1)
    ip.neurodegeneration(twin, 2, 1)
    assert rel(net(x), y) > 1e-6
    assert rel(twin(x), y_twin) <= EXACT


def test_neurodegeneration_without_compensation_is_inexact():
    """The same σ = 0 removal with psi='none': the b*·w* term is lost (pooled head)."""
    net = make_net(9, psi="none")
    x = inputs(9, net)
    silence_last(net, 2)
    y = net(x).detach()
    ip.neurodegeneration(net, 2, 1)
    assert rel(net(x), y) > 1e-3


# -- adaptation during training ------------------------------------------------------------------
def test_neuroadapt_with_adamw_transports_state():
    net = make_net(10, channels=(4, 5), kernels=(3, 1), head=(6,))
    x = inputs(10, net, batch=8)
    target = torch.arange(8) % 3
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)

    def step() -> float:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), target) + net.psi_penalty()
        loss.backward()
        opt.step()
        return float(loss.detach())

    for _ in range(3):
        step()
    changes = ip.neuroadapt(net, scaffold=2, threshold=0.6, optimizer=opt)
    assert changes
    for k in range(net.n_hidden):
        assert int((ip.singular_values(net, k) <= 0.6).sum()) == 2
    for p in net.parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            assert opt.state[p][key].shape == p.shape
    losses = [step() for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
