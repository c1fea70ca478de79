"""GroupedIsotropicMLP: the family is right at both ends, the fused forward is the definition,
configs rebuild resized models, and bad input is refused clearly (docs/quality.md).

* ``groups = width`` (one neuron per group): ``φ(z) = tanh(|z|) z/|z| = tanh(z)``, so the network
  is element-wise tanh; with the same generator it draws the same initial weights as
  :class:`~isoplastic.ElementwiseMLP` and computes the same function (float64).
* ``groups = 1``: one branch per layer, an :class:`~isoplastic.IsotropicMLP`; with identity
  interfaces a deep grouped network equals the isotropic MLP whose hidden-to-hidden weights are
  the products ``W_in W_out``.
* The fused forward (concatenated group tensors, one gain evaluation) equals the branch-by-branch
  sum in value and gradient, for every ψ / intrinsic-length mode and unequal groups.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import isoplastic as ip
from isoplastic.testing.strategies import INTRINSIC_LENGTH_MODES, PSI_MODES
from isoplastic.train.checkpoint import build_net, rebuild_arms, serialise_arms
from isoplastic.train.config import TrainConfig

DT = torch.float64


def randomise(net: torch.nn.Module, gen: torch.Generator, scale: float = 0.7) -> None:
    with torch.no_grad():
        for p in net.parameters():
            if p.dim():
                p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        for m in net.modules():
            if isinstance(m, ip.IsotropicActivation) and m.mode.value != "none":
                m.o = 0.05 + float(torch.rand((), generator=gen, dtype=DT))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1.0))


@settings(max_examples=20, deadline=None)
@given(d_in=st.integers(1, 6), width=st.integers(1, 9), d_out=st.integers(1, 4),
       seed=st.integers(0, 2**20))
def test_one_neuron_per_group_is_elementwise_tanh(d_in, width, d_out, seed):
    grouped = ip.GroupedIsotropicMLP([d_in, width, d_out], width, psi="none",
                                     intrinsic_length="none",
                                     generator=torch.Generator().manual_seed(seed)).to(DT)
    tanh = ip.ElementwiseMLP([d_in, width, d_out],
                             generator=torch.Generator().manual_seed(seed)).to(DT)
    layer = grouped.layers[0]
    # the same initial draw: the orthogonal whole-layer matrices, split by group
    assert torch.equal(torch.cat([b.linears[0].weight for b in layer.groups]),
                       tanh.linears[0].weight)
    assert torch.equal(torch.cat([b.linears[1].weight for b in layer.groups], 1),
                       tanh.linears[1].weight)
    gen = torch.Generator().manual_seed(seed + 1)
    randomise(tanh, gen, scale=1.5)
    with torch.no_grad():
        for g, branch in enumerate(layer.groups):
            branch.linears[0].weight.copy_(tanh.linears[0].weight[g:g + 1])
            branch.linears[0].bias.copy_(tanh.linears[0].bias[g:g + 1])
            branch.linears[1].weight.copy_(tanh.linears[1].weight[:, g:g + 1])
            branch.linears[1].bias.copy_(tanh.linears[1].bias if g == 0 else 0 * tanh.linears[1].bias)
    x = torch.randn(11, d_in, generator=gen, dtype=DT) * 2
    for fused in (True, False):
        layer.fused = fused
        with torch.no_grad():
            assert rel(grouped(x), tanh(x)) <= 1e-13
    # and it trains as element-wise tanh: the same AdamW steps give the same function (the
    # frozen zero biases of groups g >= 1 take no step)
    y = torch.randint(0, d_out, (11,), generator=gen)
    nets = (grouped, tanh)
    opts = [torch.optim.AdamW(n.parameters(), lr=0.05) for n in nets]
    for _ in range(3):
        for net, opt in zip(nets, opts, strict=True):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    with torch.no_grad():
        assert rel(grouped(x), tanh(x)) <= 1e-12


@settings(max_examples=20, deadline=None)
@given(widths=st.lists(st.integers(1, 6), min_size=3, max_size=5),
       psi=st.sampled_from(PSI_MODES), length=st.sampled_from(INTRINSIC_LENGTH_MODES),
       seed=st.integers(0, 2**20))
def test_one_group_is_the_isotropic_mlp(widths, psi, length, seed):
    """Layer ``k``'s single branch takes ``W_0`` (``k = 0``) or the identity (an interface of
    the next hidden width, zero bias) in, and gives ``W_{k+1}``, ``b_{k+1}``, ``ψ_k`` and the
    activation of hidden layer ``k`` out: its output is the isotropic MLP's pre-activation of
    layer ``k + 1`` (the logits for the last layer)."""
    gen = torch.Generator().manual_seed(seed)
    mlp = ip.IsotropicMLP(widths, intrinsic_length=length, psi=psi).to(DT)
    randomise(mlp, gen)
    grouped = ip.GroupedIsotropicMLP(widths, 1, psi=psi, intrinsic_length=length).to(DT)
    with torch.no_grad():
        for k, layer in enumerate(grouped.layers):
            branch = layer.groups[0]
            if k == 0:
                branch.linears[0].load_state_dict(mlp.linears[0].state_dict())
            else:
                branch.linears[0].weight.copy_(torch.eye(widths[k + 1], dtype=DT))
                branch.linears[0].bias.zero_()
            branch.linears[1].load_state_dict(mlp.linears[k + 1].state_dict())
            if len(branch.psi):
                branch.psi[0].copy_(mlp.psi[k])
            branch.activations[0].load_state_dict(mlp.activations[k].state_dict())
    x = torch.randn(9, widths[0], generator=gen, dtype=DT)
    with torch.no_grad():
        want = mlp(x)
        assert rel(grouped(x), want) <= 1e-12
        for layer in grouped.layers:
            layer.fused = False
        assert rel(grouped(x), want) <= 1e-12


@settings(max_examples=25, deadline=None)
@given(depth=st.integers(1, 3), data=st.data(), psi=st.sampled_from(PSI_MODES),
       length=st.sampled_from(INTRINSIC_LENGTH_MODES), seed=st.integers(0, 2**20))
def test_fused_forward_equals_the_branch_sum_in_value_and_gradient(depth, data, psi, length,
                                                                   seed):
    groups = [data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=5)) for _ in range(depth)]
    widths = [data.draw(st.integers(1, 5)), *map(sum, groups), data.draw(st.integers(1, 4))]
    net = ip.GroupedIsotropicMLP(widths, groups, psi=psi, intrinsic_length=length).to(DT)
    gen = torch.Generator().manual_seed(seed)
    randomise(net, gen)
    x = torch.randn(8, widths[0], generator=gen, dtype=DT)
    outs, grads = [], []
    for fused in (True, False):
        for layer in net.layers:
            layer.fused = fused
        net.zero_grad()
        out = net(x)
        (out.square().sum() + net.psi_penalty()).backward()
        outs.append(out.detach())
        grads.append([None if p.grad is None else p.grad.clone() for p in net.parameters()])
    assert rel(outs[0], outs[1]) <= 1e-12
    for a, b in zip(*grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert rel(a, b) <= 1e-10


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_forward_survives_an_overflowing_group_norm(dtype):
    """Where ``‖z_g‖²`` overflows the dtype the fused gain would be 0; the fused forward must
    give the definition's finite value instead (unit-length ``φ`` in that group)."""
    net = ip.GroupedIsotropicMLP([3, 8, 2], 4, psi="none").to(dtype)
    huge = torch.finfo(dtype).max ** 0.5 * 4  # every z entry squared overflows
    x = torch.tensor([[huge, -huge, huge], [1.0, 2.0, 3.0]], dtype=dtype)
    with torch.no_grad():
        fused = net(x)
        for layer in net.layers:
            layer.fused = False
        want = net(x)
    assert torch.isfinite(want).all()
    assert torch.equal(fused, want)


def test_only_group_zero_trains_the_output_bias():
    """``G`` trained copies of one output bias would move it ``G`` times as fast under Adam."""
    net = ip.GroupedIsotropicMLP([6, 8, 3], 4)
    biases = [b.linears[1].bias for b in net.layers[0].groups]
    assert [b.requires_grad for b in biases] == [True, False, False, False]
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    net(torch.randn(5, 6)).sum().backward()
    opt.step()
    assert biases[0].abs().sum() > 0 and all(not b.any() for b in biases[1:])


def test_psi_penalty_sums_every_group():
    net = ip.GroupedIsotropicMLP([4, 6, 6, 2], [2, 3], psi="trainable+decay")
    randomise(net, torch.Generator().manual_seed(0))
    want = sum(float(b.psi_penalty().detach()) for layer in net.layers for b in layer.groups)
    assert float(net.psi_penalty().detach()) == pytest.approx(want, rel=1e-6) and want > 0


def test_config_rebuilds_a_resized_model_and_its_optimizer():
    torch.manual_seed(0)
    net = ip.GroupedIsotropicMLP([7, 8, 6, 3], [2, 3], psi="trainable", intrinsic_length="trainable")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    x = torch.randn(10, 7)
    for _ in range(2):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
    ip.neurogenesis(net, "layers.0.groups.1.0", 3, optimizer=opt)
    ip.neurodegeneration(net, "layers.1.groups.2.0", 1, optimizer=opt)
    assert net.group_widths == [[4, 7], [2, 2, 1]]
    assert net.widths == [7, 11, 5, 3]
    blob, arms = serialise_arms({"adaptive": net}, {"adaptive": opt})
    assert arms["adaptive"]["architecture"]["kind"] == "grouped"
    from safetensors.torch import load
    nets, opts = rebuild_arms(arms, load(blob), TrainConfig(dtype="float32"))
    again = nets["adaptive"]
    assert isinstance(again, ip.GroupedIsotropicMLP) and again.config() == net.config()
    with torch.no_grad():
        assert torch.equal(again(x), net(x))
    for p, q in zip(net.parameters(), again.parameters(), strict=True):
        for key, value in opt.state.get(p, {}).items():
            assert torch.equal(torch.as_tensor(opts["adaptive"].state[q][key]),
                               torch.as_tensor(value))
    assert isinstance(build_net({"kind": "grouped", **net.config()}), ip.GroupedIsotropicMLP)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"widths": [4, 6, 2], "groups": 4}, ValueError,
     r"groups=4 does not divide hidden layer 0 of width 6.*choose a divisor of 6 \(1, 2, 3, 6\)"),
    ({"widths": [4, 6, 2], "groups": 0}, ValueError, r"groups=0 does not divide"),
    ({"widths": [4, 6, 2], "groups": [[2, 3]]}, ValueError,
     r"group widths \[2, 3\] for hidden layer 0 of width 6: give positive widths that sum to 6"),
    ({"widths": [4, 6, 2], "groups": [[6, 0]]}, ValueError, r"give positive widths"),
    ({"widths": [4, 6, 6, 2], "groups": [2]}, ValueError,
     r"groups has 1 entries for 2 hidden layers \[6, 6\]; give one per hidden layer"),
    ({"widths": [4, 6, 2], "groups": True}, TypeError, r"groups=True: give an int"),
    ({"widths": [4, 6, 2], "groups": "2"}, TypeError, r"groups='2': give an int"),
    ({"widths": [4, 6, 6, 2], "groups": 2, "interfaces": [3, 3]}, ValueError,
     r"interfaces=\[3, 3\]: give 1 positive widths"),
    ({"widths": [4, 2], "groups": 1}, ValueError, r"needs at least one hidden layer"),
    ({"widths": [4, 6, 2], "groups": 2, "psi": "sometimes"}, ValueError, r"psi"),
    ({"widths": [4, 6, 2], "groups": 2, "init": "zeros"}, ValueError, r"init='zeros'"),
])
def test_bad_construction_is_refused_with_the_fix(kwargs, error, match):
    with pytest.raises(error, match=match):
        ip.GroupedIsotropicMLP(**kwargs)


def test_bad_inputs_are_refused():
    net = ip.GroupedIsotropicMLP([4, 6, 2], 3)
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, 4\).*got \(2, 5\)"):
        net(torch.randn(2, 5))
    with pytest.raises(TypeError, match="float32 parameters but got torch.float64 inputs"):
        net(torch.randn(2, 4, dtype=DT))
    assert net(torch.randn(2, 1, 2, 2)).shape == (2, 2)  # images flatten
