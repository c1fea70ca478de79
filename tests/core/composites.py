"""Composite models for the tests of tests/core: user modules holding isoplastic blocks.

* :class:`ResidualStack`: ``Linear(d_in, d)``, then for each block ``x ← mid_i(x + block_i(x))``
  (an :class:`~isoplastic.IsotropicMLP` ``d → … → d`` and a plain ``Linear(d, d)``), then
  ``Linear(d, d_out)``. Hidden spaces ``"blocks.i.k"``.
* :class:`ConvThenMLP`: a plain ``Conv2d`` stem, an :class:`~isoplastic.IsotropicCNN` feature
  extractor whose logits feed an :class:`~isoplastic.IsotropicMLP` head. Hidden spaces
  ``"features.k"`` and ``"head.k"``.
* :func:`residual_stacks` / :func:`conv_then_mlps`: hypothesis strategies over their sizes,
  ψ and intrinsic-length modes and seeds. Every parameter (biases, ψ, ``o``) is random and
  non-zero, so that exactness checks are not trivially satisfied.
* :func:`fill_optimizer`: a few training steps (fills the optimizer's state, records the mean
  gains of ψ mode ``"expectation"``) and a last backward pass that leaves ``.grad`` populated.
* :func:`silence`: prepares an exact removal in one hidden space (zero incoming rows whose bias
  and ψ entries the removal can compensate exactly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from torch import Tensor, nn

import isoplastic as ip
from isoplastic.testing import random_isotropic_mlp
from isoplastic.testing.strategies import INTRINSIC_LENGTH_MODES, PSI_MODES

DT = torch.float64


class ResidualStack(nn.Module):
    """``out(mid_n(… mid_1(x₁ + block_1(x₁)) …))`` with ``x₁ = inp(x)``; shapes ``(B, d_in) →
    (B, d_out)``."""

    def __init__(self, d_in: int, d: int, hidden: list[list[int]], d_out: int,
                 psi: list[str], intrinsic: list[str], seed: int, dtype: torch.dtype = DT
                 ) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.inp = nn.Linear(d_in, d)
        self.blocks = nn.ModuleList(
            random_isotropic_mlp([d, *h, d], intrinsic[i], psi[i], seed=seed + 1 + i,
                                 dtype=dtype)
            for i, h in enumerate(hidden))
        self.mids = nn.ModuleList(nn.Linear(d, d) for _ in hidden)
        self.out = nn.Linear(d, d_out)
        _randomise_plain(self, gen, dtype)

    def forward(self, x: Tensor) -> Tensor:
        x = self.inp(x)
        for block, mid in zip(self.blocks, self.mids, strict=True):
            x = mid(x + block(x))
        return self.out(x)

    def probe(self, batch: int = 12, seed: int = 99) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        dtype = self.inp.weight.dtype
        return torch.randn(batch, self.inp.in_features, generator=gen, dtype=DT).to(dtype)


class ConvThenMLP(nn.Module):
    """``head(features(stem(x)))``: ``Conv2d(c_in, c, 3)`` → :class:`~isoplastic.IsotropicCNN`
    (logits ``m``) → :class:`~isoplastic.IsotropicMLP` ``m → … → n_out``; shapes
    ``(B, c_in, hw, hw) → (B, n_out)``."""

    def __init__(self, c_in: int, c: int, hw: int, channels: list[int], kernels: list[int],
                 cnn_head: list[int], m: int, mlp_hidden: list[int], n_out: int,
                 pooling: str, psi: list[str], intrinsic: list[str], seed: int,
                 dtype: torch.dtype = DT) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.hw = hw
        self.stem = nn.Conv2d(c_in, c, 3, padding=1)
        self.features = ip.IsotropicCNN((c, hw, hw), channels, kernels, head=cnn_head,
                                        n_classes=m, intrinsic_length=intrinsic[0], psi=psi[0],
                                        pooling=pooling, generator=gen)
        with torch.no_grad():
            for p in self.features.parameters():
                if p.dim() > 0:  # weights, biases and ψ; log o is set below
                    p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            for act in self.features.activations:
                if act.mode.value != "none":
                    act.o = 0.1 + float(torch.rand((), generator=gen, dtype=DT))
        self.features.to(dtype)
        self.head = random_isotropic_mlp([m, *mlp_hidden, n_out], intrinsic[1], psi[1],
                                         seed=seed + 1, dtype=dtype)
        _randomise_plain(self, gen, dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(self.stem(x)))

    def probe(self, batch: int = 6, seed: int = 99) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        dtype = self.stem.weight.dtype
        c_in = self.stem.in_channels
        return torch.randn(batch, c_in, self.hw, self.hw, generator=gen, dtype=DT).to(dtype)


def _randomise_plain(model: nn.Module, gen: torch.Generator, dtype: torch.dtype) -> None:
    """Random weights and non-zero biases for the user's own (non-isoplastic) layers."""
    model.to(dtype)
    inside = {id(m) for b in model.modules() if isinstance(b, ip.IsoplasticBlock)
              for m in b.modules()}
    with torch.no_grad():
        for mod in model.modules():
            if type(mod) in (nn.Linear, nn.Conv2d) and id(mod) not in inside:
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen, dtype=DT)
                                 * (1.2 / math.sqrt(fan_in)))
                mod.bias.copy_(0.3 * torch.randn(mod.bias.shape, generator=gen, dtype=DT))


# -- strategies ---------------------------------------------------------------------------------
modes = st.sampled_from(PSI_MODES)
lengths = st.sampled_from(INTRINSIC_LENGTH_MODES)


@st.composite
def residual_stacks(draw, dtype: torch.dtype = DT) -> ResidualStack:
    n_blocks = draw(st.integers(2, 3))
    d = draw(st.integers(2, 4))
    hidden = [draw(st.lists(st.integers(1, 5), min_size=1, max_size=2)) for _ in range(n_blocks)]
    psi = [draw(modes) for _ in range(n_blocks)]
    il = [draw(lengths) for _ in range(n_blocks)]
    return ResidualStack(draw(st.integers(1, 4)), d, hidden, draw(st.integers(1, 4)), psi, il,
                         seed=draw(st.integers(0, 2**20)), dtype=dtype)


@st.composite
def conv_then_mlps(draw, dtype: torch.dtype = DT) -> ConvThenMLP:
    n_conv = draw(st.integers(1, 2))
    channels = [draw(st.integers(2, 4)) for _ in range(n_conv)]
    kernels = [draw(st.sampled_from([1, 3])) for _ in range(n_conv)]
    return ConvThenMLP(
        c_in=draw(st.integers(1, 2)), c=draw(st.integers(2, 3)), hw=4, channels=channels,
        kernels=kernels, cnn_head=draw(st.lists(st.integers(2, 4), max_size=1)),
        m=draw(st.integers(2, 4)), mlp_hidden=draw(st.lists(st.integers(2, 5), min_size=1,
                                                            max_size=2)),
        n_out=draw(st.integers(1, 3)), pooling=draw(st.sampled_from(["mean", "flatten"])),
        psi=[draw(modes), draw(modes)], intrinsic=[draw(lengths), draw(lengths)],
        seed=draw(st.integers(0, 2**20)), dtype=dtype)


def fixed_residual_stack(dtype: torch.dtype = DT, seed: int = 3) -> ResidualStack:
    """A deterministic residual stack: three blocks, widths 4→[6,5]→4, 4→[3]→4, 4→[5,4,6]→4."""
    return ResidualStack(5, 4, [[6, 5], [3], [5, 4, 6]], 3,
                         ["trainable", "expectation", "constant"],
                         ["trainable", "constant", "trainable"], seed=seed, dtype=dtype)


def fixed_conv_then_mlp(dtype: torch.dtype = DT, seed: int = 5) -> ConvThenMLP:
    """A deterministic CNN→MLP model: channels [3, 4] (kernels 3, 1), a CNN head layer, an MLP
    head with two hidden layers."""
    return ConvThenMLP(2, 3, 4, [3, 4], [3, 1], [4], 3, [5, 4], 2, "mean",
                       ["trainable", "trainable"], ["trainable", "constant"], seed=seed,
                       dtype=dtype)


# -- training state -----------------------------------------------------------------------------
def make_optimizer(model: nn.Module, kind: str) -> torch.optim.Optimizer:
    """The user's optimizer over ``model.parameters()``: ``"adamw"`` (amsgrad, so a third state
    tensor) or ``"sgd"`` (momentum, Nesterov)."""
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2, amsgrad=True)
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)


def loss_of(model: nn.Module, x: Tensor) -> Tensor:
    """A smooth scalar loss of the model's outputs (plus every block's ψ penalty); ``tanh`` keeps
    its gradient bounded, so that a few steps of the user's optimizer cannot diverge."""
    out = model(x)
    loss = (out.tanh() - 0.3).square().mean()
    for block in model.modules():
        if isinstance(block, ip.AffineChain):
            loss = loss + block.psi_penalty()
    return loss


def fill_optimizer(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, steps: int = 2
                   ) -> None:
    """``steps`` training steps in train mode, then one more backward pass: the optimizer's state
    is filled and every trainable parameter holds a ``.grad``."""
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss_of(model, x).backward()
        opt.step()
    opt.zero_grad()
    loss_of(model, x).backward()


def training_step_works(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor) -> None:
    """A forward pass, a backward pass and an optimizer step run, and leave finite parameters
    and a finite loss; the step changes at least one parameter."""
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    loss = loss_of(model, x)
    assert torch.isfinite(loss), f"loss {float(loss.detach())} after the change"
    loss.backward()
    opt.step()
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after), "a parameter became non-finite"
    assert any(not torch.equal(a.detach(), b) for a, b in zip(after, before, strict=True)), \
        "the training step changed no parameter"


# -- exact removals -----------------------------------------------------------------------------
@dataclass
class Silenced:
    """What :func:`silence` prepared: the zero rows of the space (positions) and whether their
    biases are non-zero (compensated through ``o`` and ψ) or zero."""

    zero_rows: list[int]
    bias_compensated: bool


def exact_bias_ok(model: nn.Module, name: str) -> bool:
    """Whether removing a zero-σ neuron with a non-zero bias from space ``name`` is exact: the
    block keeps ψ vectors, the activation an intrinsic length, and the outgoing map reads one
    value per coordinate (a dense layer, a 1×1 kernel or the mean-pooled head)."""
    space = ip.hidden_spaces(model)[name]
    block, k = space.block, space.index
    layer = block.hidden_layer(k)
    out = [a for a in space.axes if a.role == "outgoing"][0].param
    taps = math.prod(out.shape[2:]) if out.dim() > 2 else 1
    return block.psi_mode.has_vectors and layer.activation.mode.value != "none" and taps == 1


@torch.no_grad()
def silence(model: nn.Module, name: str, optimizer: torch.optim.Optimizer | None, extra: int = 1,
            bias: float = 0.7) -> Silenced:
    """Make an exact removal possible in hidden space ``name`` (changes the function: take
    references afterwards). ``optimizer`` is the one holding the model's state (the rotation
    moves it; the zeroed entries are written directly and leave it as it is).

    Left-diagonalise the space (its incoming rows become orthogonal, so the zero rows span the
    left null space of ``W_k`` exactly), set the last ``extra`` rows and every row of round-off
    size (``≤ 64 eps ‖W‖``) to exact zeros, and give every zero row the bias ``bias`` (when
    :func:`exact_bias_ok`, otherwise 0) and a zero ψ entry. A zero row is then a constant
    coordinate ``b`` whose removal the compensation ``o += b²``, ``ψ += b w`` undoes exactly.
    """
    ip.left_diagonalise(model, name, optimizer=optimizer)
    space = ip.hidden_spaces(model)[name]
    layer = space.block.hidden_layer(space.index)
    w = layer.incoming
    rows = w.view(w.shape[0], -1)
    norms = rows.norm(dim=1)
    tiny = norms <= 64 * torch.finfo(w.dtype).eps * float(norms.max())  # round-off rows
    tiny[w.shape[0] - extra:] = True
    rows[tiny] = 0.0
    ok = exact_bias_ok(model, name)
    layer.bias[tiny] = bias if ok else 0.0
    for a in space.axes:
        if a.role == "psi":
            a.param[tiny] = 0.0
    return Silenced(torch.nonzero(tiny).flatten().tolist(), ok)
