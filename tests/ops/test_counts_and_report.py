"""The counting helpers of ops/diagonalise.py and the sparsify report, by hand on small networks:
what counts as non-zero (strictly above the threshold, every parameter), what counts as a
weight (matrices and kernels, not biases), the retention, and the padded neuron strengths."""

from __future__ import annotations

import pytest
import torch

import isoplastic as ip
from isoplastic.ops.diagonalise import (
    NONZERO_THRESHOLD,
    SparsifyReport,
    count_nonzero,
    neuron_strengths,
    weight_zero_fraction,
)
from isoplastic.testing import random_isotropic_mlp

DT = torch.float64


def _mlp_with(values: float) -> ip.IsotropicMLP:
    """[3, 2, 2] with ψ and a trainable o; every parameter set to ``values``."""
    net = ip.IsotropicMLP([3, 2, 2], psi="trainable", intrinsic_length="trainable").double()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(values)
    return net


def test_count_nonzero_counts_every_parameter_strictly_above_the_threshold():
    net = _mlp_with(1.0)
    total = sum(p.numel() for p in net.parameters())
    assert total == 3 * 2 + 2 + 2 * 2 + 2 + 2 + 1  # weights, biases, ψ (2,), log o
    assert count_nonzero(net) == total
    with torch.no_grad():
        net.linears[0].weight[0, 0] = NONZERO_THRESHOLD  # at the threshold: not counted
        net.linears[0].bias[1] = -2 * NONZERO_THRESHOLD  # a negative one above it: counted
        net.psi[0][0] = 0.0
    assert count_nonzero(net) == total - 2
    assert count_nonzero(net, threshold=1.5) == 0
    assert count_nonzero(net, threshold=0.0) == total - 1


def test_weight_zero_fraction_is_over_weight_matrices_only():
    net = _mlp_with(1.0)
    with torch.no_grad():
        net.linears[0].weight[0].zero_()  # 3 of the 10 weight entries
        for lin in net.linears:
            lin.bias.zero_()  # biases are not weights
        net.psi[0].zero_()
    assert weight_zero_fraction(net) == pytest.approx(3 / 10, abs=0)
    cnn = ip.IsotropicCNN((1, 3, 3), [2], 1, head=[], n_classes=2)
    with torch.no_grad():
        cnn.convs[0].weight.zero_()  # a (2, 1, 1, 1) kernel counts as a weight
    kernels = sum(p.numel() for n, p in cnn.named_parameters() if n.endswith("weight"))
    assert weight_zero_fraction(cnn) == pytest.approx(2 / kernels, abs=0)


def test_neuron_strengths_pad_with_zeros_or_truncate():
    s = torch.tensor([3.0, 2.0], dtype=DT)
    assert torch.equal(neuron_strengths(s, 4), torch.tensor([3.0, 2.0, 0.0, 0.0], dtype=DT))
    assert torch.equal(neuron_strengths(s, 2), s)
    assert torch.equal(neuron_strengths(s, 1), s[:1])
    net = random_isotropic_mlp([2, 4, 3], "trainable", "trainable", seed=0)  # 4 neurons, fan-in 2
    strengths = ip.singular_values(net, 0)
    assert strengths.shape == (4,) and bool((strengths[2:] == 0).all())
    assert torch.allclose(strengths[:2], torch.linalg.svdvals(net.linears[0].weight.detach()))


def test_sparsify_report_counts_what_it_changed():
    net = random_isotropic_mlp([5, 4, 4, 4, 3], "trainable", "trainable", seed=3)
    before = count_nonzero(net)
    report = ip.sparsify(net)
    assert report.layers == [1]
    assert report.nonzero_before == before and report.nonzero_after == count_nonzero(net)
    assert report.nonzero_after <= before - (4 * 4 - 4)  # the off-diagonal entries of layer 1
    assert report.retention == report.nonzero_after / report.nonzero_before
    assert report.weight_zero_fraction == weight_zero_fraction(net)
    assert report.as_dict() == {"layers": [1], "nonzero_before": report.nonzero_before,
                                "nonzero_after": report.nonzero_after,
                                "weight_zero_fraction": report.weight_zero_fraction,
                                "closed_form_fraction": report.closed_form_fraction,
                                "retention": report.retention}
    empty = SparsifyReport([], 0, 0, 0.0, None)
    assert empty.retention == 0.0  # no parameters: no division by zero


def test_full_diagonalise_refusal_names_fan_in_width_and_the_alternative():
    net = ip.IsotropicCNN((1, 5, 5), [3, 4, 2], [3, 3, 1], head=[], n_classes=2)
    with pytest.raises(ip.TopologyError) as info:
        ip.full_diagonalise(net, 1)
    assert str(info.value) == (
        "full_diagonalise(net, k=1): the weight into hidden layer 1 has fan-in 27 but hidden "
        "layer 0 has 3 channels; only 1×1 kernels (or dense layers) can be fully diagonalised, "
        "use left_diagonalise instead")


def test_weight_zero_fraction_ignores_matrices_not_named_weight():
    block = ip.IsotropicMLP([3, 2, 2]).double()
    model = torch.nn.Sequential(block)
    model.register_parameter("scale", torch.nn.Parameter(torch.ones(4, 4, dtype=DT)))
    with torch.no_grad():
        block.linears[0].weight.zero_()
    assert weight_zero_fraction(model) == pytest.approx(6 / 10, abs=0)
