"""Grouped isotropic networks: every operation on every group is exact (docs/quality.md).

A :class:`~isoplastic.GroupedIsotropicMLP` declares one hidden space per group of every hidden
layer (``"layers.l.groups.g.0"``), each the hidden space of an ordinary one-hidden-layer
:class:`~isoplastic.IsotropicMLP` branch. The checks of tests/core/test_composite_models.py are
run on it unchanged: for every name, each function-preserving operation leaves the output within
``1e-10`` (float64) relative, moves gradients and optimizer state (AdamW with amsgrad, SGD with
Nesterov momentum) as the dense reference does under a rotation, leaves every other group and
layer bit-identical, keeps the parameter objects and a training step works afterwards.
Hypothesis draws depths, group layouts (unequal groups, groups of one neuron), interfaces, ψ and
intrinsic-length modes and seeds; every parameter is random and non-zero.
"""

from __future__ import annotations

import math

import pytest
import torch
from composites import fill_optimizer, make_optimizer, silence, training_step_works
from hypothesis import given, settings
from hypothesis import strategies as st
from test_composite_models import (
    CONDITIONAL,
    EXACT,
    PER_NAME_OPS,
    assert_state_kept,
    check_op_on_every_name,
    clone_state,
)
from torch import Tensor

import isoplastic as ip
from isoplastic.testing import assert_function_preserved
from isoplastic.testing.strategies import INTRINSIC_LENGTH_MODES, PSI_MODES

DT = torch.float64
N_EXAMPLES = 4


class ProbedGrouped(ip.GroupedIsotropicMLP):
    """A grouped MLP with random non-zero parameters (also the frozen output biases of groups
    ``g ≥ 1``, which ψ mode ``"expectation"`` writes to) and a ``probe()`` batch."""

    def __init__(self, widths: list[int], groups: list[list[int]], interfaces: list[int],
                 psi: str, intrinsic: str, seed: int) -> None:
        super().__init__(widths, groups, interfaces=interfaces, psi=psi,
                         intrinsic_length=intrinsic)
        gen = torch.Generator().manual_seed(seed)
        self.to(DT)
        with torch.no_grad():
            for p in self.parameters():
                if p.dim():
                    fan = p.shape[1] if p.dim() == 2 else 1
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=DT) * (1.2 / math.sqrt(fan)))
            for layer in self.layers:
                for branch in layer.groups:
                    act = branch.activations[0]
                    if act.mode.value != "none":
                        act.o = 0.05 + float(torch.rand((), generator=gen, dtype=DT))

    def probe(self, batch: int = 12, seed: int = 99) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(batch, self.widths[0], generator=gen, dtype=DT)


@st.composite
def grouped_models(draw) -> ProbedGrouped:
    depth = draw(st.integers(1, 3))
    groups = [draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)) for _ in range(depth)]
    widths = [draw(st.integers(1, 4)), *(sum(g) for g in groups), draw(st.integers(1, 3))]
    interfaces = [draw(st.integers(1, 4)) for _ in range(depth - 1)]
    return ProbedGrouped(widths, groups, interfaces, draw(st.sampled_from(PSI_MODES)),
                         draw(st.sampled_from(INTRINSIC_LENGTH_MODES)),
                         seed=draw(st.integers(0, 2**20)))


def fixed_grouped(psi: str = "trainable", intrinsic: str = "trainable") -> ProbedGrouped:
    """Two layers, groups [3, 2, 4] and [2, 2], interface 3: every group can lose a neuron."""
    return ProbedGrouped([5, 9, 4, 3], [[3, 2, 4], [2, 2]], [3], psi, intrinsic, seed=7)


@pytest.mark.parametrize("op", PER_NAME_OPS)
@settings(max_examples=N_EXAMPLES, deadline=None)
@given(model=grouped_models(), opt_kind=st.sampled_from(["adamw", "sgd"]),
       seed=st.integers(0, 2**20))
def test_every_group_operation_is_exact(op, model, opt_kind, seed):
    ran = check_op_on_every_name(model, op, opt_kind, seed)
    if op not in CONDITIONAL:
        assert ran == len(ip.hidden_spaces(model))
    assert model.check_invariants() is None


@pytest.mark.parametrize("op", ["neurodegeneration", "remove_neurons"])
@pytest.mark.parametrize("psi", ["trainable", "expectation", "none"])
def test_removals_run_in_every_group_of_a_fixed_model(op, psi):
    model = fixed_grouped(psi=psi)
    assert check_op_on_every_name(model, op, "adamw", 0) == len(ip.hidden_spaces(model))


def test_full_diagonalisation_does_not_apply_and_sparsify_changes_nothing():
    """A branch has one hidden space, so no weight lies between two hidden spaces of one block:
    ``full_diagonalise`` and ``sparsify`` have nothing to act on (an honest limit of the
    design, docs/quality.md)."""
    model = fixed_grouped()
    assert not any(s.block.can_full_diagonalise(s.index) for s in ip.hidden_spaces(model).values())
    x = model.probe()
    opt = make_optimizer(model, "adamw")
    fill_optimizer(model, opt, x)
    before = [p.detach().clone() for p in model.parameters()]
    report = ip.sparsify(model, optimizer=opt)
    assert not report.layers
    assert all(torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before, strict=True))


@settings(max_examples=N_EXAMPLES, deadline=None)
@given(model=grouped_models(), opt_kind=st.sampled_from(["adamw", "sgd"]), data=st.data())
def test_neuroadapt_is_exact_and_adapts_each_group_on_its_own(model, opt_kind, data):
    """Every group gets 0–2 silenced neurons; ``neuroadapt(S=1, τ=1e-9)`` must be exact, name
    every change by its group and leave each group with exactly one strength ``≤ τ``: the
    groups of one layer end at different widths when they held different numbers of dead
    neurons."""
    x = model.probe()
    opt = make_optimizer(model, opt_kind)
    fill_optimizer(model, opt, x)
    for name, space in ip.hidden_spaces(model).items():
        extra = data.draw(st.integers(0, min(2, space.size - 1)))
        silence(model, name, opt, extra=extra)
    state_before = {id(p): clone_state(opt, p) for p in model.parameters()}
    changes = assert_function_preserved(lambda m: ip.neuroadapt(m, 1, 1e-9, optimizer=opt),
                                        model, x, opt, tol=EXACT)
    spaces = ip.hidden_spaces(model)
    for ch in changes:
        assert ch.space in spaces and ".groups." in ch.space
    for name in spaces:
        assert int((ip.singular_values(model, name) <= 1e-9).sum()) == 1, name
    model.check_invariants()
    assert_state_kept(opt, state_before, list(model.parameters()))
    training_step_works(model, opt, x)


def test_a_refused_removal_leaves_model_and_optimizer_unchanged():
    """Removing every neuron of a group is refused (it would disconnect the branch) with the
    library's message naming the group's space; nothing changes."""
    model = fixed_grouped()
    x = model.probe()
    opt = make_optimizer(model, "adamw")
    fill_optimizer(model, opt, x)
    name = "layers.1.groups.0.0"
    before = [(p.detach().clone(), clone_state(opt, p)) for p in model.parameters()]
    with pytest.raises(ip.TopologyError, match=r"layers\.1\.groups\.0\.0 has 2 neurons.*use n <= 1"):
        ip.neurodegeneration(model, name, 2, optimizer=opt)
    for p, (data, state) in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), data)
        for key, value in state.items():
            if isinstance(value, Tensor):
                assert torch.equal(opt.state[p][key], value)
