"""ResNet-style residual convolutional branches (issue 14): the inner channel spaces of
:class:`~isoplastic.IsotropicResidualConv` under every operation, in float64, with hypothesis.

The model is a user's module: a plain ``Conv2d`` stem, residual branches (1–2 inner channel
spaces, kernels 1 or 3, every ψ and intrinsic-length mode), global mean pooling and a plain
``Linear``; every parameter random and non-zero. The per-space checker of
tests/core/test_composite_models.py runs each operation on every name (logits unchanged to 1e-10,
optimizer state equal to the dense reference, the rest bit-identical, a training step after);
removals run on silenced channels whose exact compensation needs a 1×1 next kernel (the helper
gives the others a zero bias, docs/convolutions.md).
"""

from __future__ import annotations

import math

import pytest
import torch
from composites import fill_optimizer, make_optimizer, training_step_works
from hypothesis import given, settings
from hypothesis import strategies as st
from test_composite_models import PER_NAME_OPS, check_op_on_every_name
from torch import Tensor, nn

import isoplastic as ip
from isoplastic.export import compile_sparse
from isoplastic.testing import FLOAT_TOLERANCE, assert_function_preserved, relative_change
from isoplastic.testing.strategies import INTRINSIC_LENGTH_MODES, PSI_MODES

DT = torch.float64
EXACT = FLOAT_TOLERANCE[DT]


class ResNet(nn.Module):
    """``Linear(mean_p(branch_B(… branch_1(stem(x)))))``; shapes ``(B, c_in, hw, hw) → (B, n_out)``."""

    def __init__(self, c_in: int, c: int, hw: int, inner: list[list[int]],
                 kernels: list[list[int]], n_out: int, psi: str, intrinsic: str, seed: int
                 ) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.hw = hw
        self.stem = nn.Conv2d(c_in, c, 3, padding=1)
        self.blocks = nn.ModuleList(
            ip.IsotropicResidualConv(c, i, k, intrinsic_length=intrinsic, psi=psi)
            for i, k in zip(inner, kernels, strict=True))
        self.out = nn.Linear(c, n_out)
        self.to(DT)
        with torch.no_grad():
            for mod in self.modules():
                if isinstance(mod, (nn.Linear, nn.Conv2d)):
                    fan_in = mod.weight[0].numel()
                    mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen, dtype=DT)
                                     * (1.5 / math.sqrt(fan_in)))
                    mod.bias.copy_(0.5 * torch.randn(mod.bias.shape, generator=gen, dtype=DT))
                elif isinstance(mod, ip.IsotropicNorm):
                    mod.gain.fill_(0.5 + float(torch.rand((), generator=gen, dtype=DT)))
            for block in self.blocks:
                for p in block.psi:
                    p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=DT))
                for act in block.activations:
                    if act.mode.value != "none":
                        act.o = 0.05 + 0.95 * float(torch.rand((), generator=gen, dtype=DT))

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.out(h.mean(dim=(2, 3)))

    def probe(self, batch: int = 4, seed: int = 99) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(batch, self.stem.in_channels, self.hw, self.hw, generator=gen,
                           dtype=DT)


@st.composite
def resnets(draw) -> ResNet:
    n_blocks = draw(st.integers(1, 2))
    inner = [draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)) for _ in range(n_blocks)]
    kernels = [[draw(st.sampled_from([1, 3])) for _ in range(len(i) + 1)] for i in inner]
    return ResNet(draw(st.integers(1, 2)), draw(st.integers(2, 3)), 4, inner, kernels,
                  draw(st.integers(1, 3)), draw(st.sampled_from(PSI_MODES)),
                  draw(st.sampled_from(INTRINSIC_LENGTH_MODES)), draw(st.integers(0, 2**20)))


def fixed_resnet() -> ResNet:
    """Two branches: inner [4, 3] with kernels 3, 1, 3 and inner [3] with kernels 1, 1."""
    return ResNet(2, 3, 4, [[4, 3], [3]], [[3, 1, 3], [1, 1]], 2, "trainable", "trainable", 8)


@pytest.mark.parametrize("op", PER_NAME_OPS)
@settings(max_examples=4)
@given(model=resnets(), opt_kind=st.sampled_from(["adamw", "sgd"]), seed=st.integers(0, 2**20))
def test_every_operation_on_every_channel_space_is_exact(op, model, opt_kind, seed):
    ran = check_op_on_every_name(model, op, opt_kind, seed)
    if op not in ("full_diagonalise", "neurodegeneration", "remove_neurons"):
        assert ran == len(ip.hidden_spaces(model))


@pytest.mark.parametrize("op", ["full_diagonalise", "neurodegeneration", "remove_neurons"])
def test_conditional_operations_run_on_the_fixed_resnet(op):
    """Full diagonalisation needs a 1×1 incoming kernel between two inner spaces: one such map
    (``blocks.0``'s 1×1 convolution); removals run in every space."""
    model = fixed_resnet()
    expected = 1 if op == "full_diagonalise" else len(ip.hidden_spaces(model))
    assert check_op_on_every_name(model, op, "adamw", 0) == expected


def test_sparsify_is_exact_and_compile_sparse_refuses_convolutions():
    model = fixed_resnet()
    x = model.probe()
    opt = make_optimizer(model, "sgd")
    fill_optimizer(model, opt, x)
    report = assert_function_preserved(lambda m: ip.sparsify(m, optimizer=opt), model, x, opt,
                                       tol=EXACT)
    assert report.layers == ["blocks.0.1"]
    with pytest.raises(ip.TopologyError, match="not a chain of dense layers"):
        compile_sparse(model)
    training_step_works(model, opt, x)


def test_config_round_trip_and_stream_growth_of_a_bare_branch():
    branch = ip.IsotropicResidualConv(3, [5], [3, 1], psi="trainable").double()
    assert ip.IsotropicResidualConv(**branch.config()).config() == branch.config()
    with torch.no_grad():
        for p in branch.psi:
            p.normal_()
        for conv in branch.convs:
            conv.bias.normal_()
    x = torch.randn(2, 3, 4, 4, dtype=DT)
    y = branch(x)
    ip.add_inputs(branch, 2)  # stream channels: both sides at once
    y2 = branch(torch.cat([x, torch.zeros(2, 2, 4, 4, dtype=DT)], dim=1))
    assert relative_change(y, y2[:, :3]) <= EXACT and not y2[:, 3:].any()
    with pytest.raises(ValueError, match="odd sizes"):
        ip.IsotropicResidualConv(3, [5], [3, 2])
