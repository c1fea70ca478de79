"""What a mirror replays (core/change.py, ``Change._mirrored``): a copy with the model's very
values stays parameter-for-parameter equal to it through every kind of step (rotations,
insertions with their initial values, removals with their compensation, input and output
resizing), while a full diagonalisation's exact zeros are not copied (the copy keeps its own
rotated weight, equal up to round-off)."""

from __future__ import annotations

import copy

import pytest
import torch

import isoplastic as ip
from isoplastic.testing import random_isotropic_mlp

DT = torch.float64

OPS = {
    "reparameterise": lambda n: ip.reparameterise(
        n, 1, ip.random_orthogonal(4, generator=torch.Generator().manual_seed(3))),
    "left_diagonalise": lambda n: ip.left_diagonalise(n, 0),
    "neurogenesis": lambda n: ip.neurogenesis(n, 1, 2, init_scale=0.4,
                                              generator=torch.Generator().manual_seed(4)),
    "neurodegeneration": lambda n: ip.neurodegeneration(n, 1, 2),
    "remove_neurons": lambda n: ip.remove_neurons(n, 0, [2, 0]),
    "add_inputs": lambda n: ip.add_inputs(n, 2),
    "remove_inputs": lambda n: ip.remove_inputs(n, [1]),
    "add_outputs": lambda n: ip.add_outputs(n, 1),
    "remove_outputs": lambda n: ip.remove_outputs(n, [0]),
}


@pytest.mark.parametrize("op", list(OPS))
def test_a_mirrored_copy_of_equal_values_stays_equal(op):
    net = random_isotropic_mlp([3, 5, 4, 3], "trainable", "trainable", seed=6)
    twin = copy.deepcopy(net)
    handle = ip.mirror(net, twin)
    OPS[op](net)
    assert twin.widths == net.widths
    for (name, p), q in zip(net.named_parameters(), twin.parameters(), strict=True):
        assert p.shape == q.shape and torch.equal(p, q), name
    for a, b in zip(net.activations, twin.activations, strict=True):
        assert a.o == b.o  # the removal's o += Σb² folded from the copy's own (equal) values
    handle.remove()


def test_a_full_diagonalisation_is_replayed_as_rotations_only():
    net = random_isotropic_mlp([3, 5, 4, 3], "trainable", "trainable", seed=7)
    twin = copy.deepcopy(net)
    ip.mirror(net, twin)
    ip.full_diagonalise(net, 1)
    w, v = net.linears[1].weight.detach(), twin.linears[1].weight.detach()
    off = ~torch.eye(*w.shape, dtype=torch.bool)
    assert bool((w[off] == 0).all())  # exact zeros in the model
    assert bool((v[off] != 0).any())  # the copy's round-off is its own
    assert torch.allclose(v, w, rtol=0, atol=1e-13)
    for p, q in zip(net.linears[0].parameters(), twin.linears[0].parameters(), strict=True):
        assert torch.equal(p, q)  # the rotations themselves are replayed exactly


def test_a_mirror_follows_a_named_space_of_a_composite_and_ignores_other_blocks():
    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(2, 4), ip.IsotropicMLP([4, 3, 4]),
                                   ip.IsotropicMLP([4, 5, 2])).double()
    a, b = model(), model()
    ip.mirror(a, b)
    ip.neurogenesis(a, "2.0", 2)
    ip.neurodegeneration(a, "1.0", 1)
    assert b[2].widths == [4, 7, 2] and b[1].widths == [4, 2, 4]


def test_a_copy_that_recorded_no_mean_gain_folds_with_the_models():
    """ψ mode "expectation": a removal folds ḡ·W_D b* into the next bias with the mean gain of
    the last training pass; a copy that never ran one (an average model evaluated in eval mode)
    uses the model's, so a copy of equal values stays equal."""
    net = random_isotropic_mlp([3, 4, 3], "constant", "expectation", seed=8)
    with torch.no_grad():
        net.linears[0].weight[1].zero_()  # a silent neuron with a bias: its removal is exact
    net.train()
    net(torch.randn(6, 3, dtype=DT))  # records the mean gain
    twin = type(net)(**net.config()).to(DT)
    twin.load_state_dict(net.state_dict())
    assert twin.hidden_layer(0).mean_gain is None and net.hidden_layer(0).mean_gain is not None
    ip.mirror(net, twin)
    bias = net.linears[1].bias.detach().clone()
    ip.remove_neurons(net, 0, [1])
    assert not torch.equal(net.linears[1].bias.detach(), bias)  # something was folded
    for p, q in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_removing_one_mirror_leaves_the_others_mirroring():
    net = random_isotropic_mlp([3, 4, 3], "trainable", "trainable", seed=9)
    first, second = copy.deepcopy(net), copy.deepcopy(net)
    h1, h2 = ip.mirror(net, first), ip.mirror(net, second)
    h1.remove()
    ip.neurogenesis(net, 0, 1)
    assert first.widths == [3, 4, 3] and second.widths == net.widths == [3, 5, 3]
    h2.remove()
    ip.neurogenesis(net, 0, 1)
    assert second.widths == [3, 5, 3]
