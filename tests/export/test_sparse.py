"""compile_sparse: exact (float64) evaluation of sparsified networks, and refusal of bad claims."""

from __future__ import annotations

import pytest
import torch

import isoplastic as ip
from isoplastic.export import SparseMLP, compile_sparse


def _perturbed(widths, psi="trainable+decay", seed=0):
    g = torch.Generator().manual_seed(seed)
    net = ip.IsotropicMLP(widths, psi=psi, generator=g).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


@pytest.mark.parametrize("widths", [[8, 6, 6, 6, 3], [5, 7, 4, 9, 6, 3], [10, 12, 12, 12, 12, 12, 4],
                                    [6, 9, 3, 3]])
@pytest.mark.parametrize("psi", ["trainable+decay", "none", "expectation"])
def test_compile_sparse_equals_dense_in_float64(widths, psi):
    net = _perturbed(widths, psi)
    ip.sparsify(net)
    sp = compile_sparse(net)
    assert isinstance(sp, SparseMLP)
    assert sp.kinds.count("diagonal") == len(range(1, len(widths) - 2, 2))
    x = torch.randn(11, widths[0], dtype=torch.float64)
    with torch.no_grad():
        ref = net.eval()(x)
        out = sp(x)
    assert float((out - ref).norm() / ref.norm()) <= 1e-12
    assert sp.parameter_count() < sum(p.numel() for p in net.parameters())


def test_auto_detects_diagonal_layers_and_pads_rectangular_diagonals():
    net = _perturbed([5, 4, 7, 3, 6, 2])  # wide-to-narrow and narrow-to-wide diagonals
    ip.sparsify(net)
    sp = compile_sparse(net, diagonal="auto")
    assert sp.kinds[1] == "diagonal" and sp.kinds[3] == "diagonal"
    x = torch.randn(7, 5, dtype=torch.float64)
    assert torch.allclose(sp(x), net.eval()(x), rtol=0, atol=1e-12)


def test_refuses_claimed_diagonal_layers_that_are_not_diagonal():
    net = _perturbed([8, 6, 6, 6, 3])
    with pytest.raises(ip.TopologyError, match="not.*diagonal|off-diagonal"):
        compile_sparse(net)
    with pytest.raises(ip.TopologyError, match="off-diagonal"):
        compile_sparse(net, diagonal=[2])
    with pytest.raises(ip.TopologyError, match="out of range"):
        compile_sparse(net, diagonal=[9])
    with pytest.raises(ip.TopologyError, match="ElementwiseMLP does not declare hidden spaces"):
        compile_sparse(ip.ElementwiseMLP([4, 3, 2]))
    sp = compile_sparse(net, diagonal=[])  # all dense: still the same function
    x = torch.randn(3, 8, dtype=torch.float64)
    assert torch.allclose(sp(x), net.eval()(x), rtol=0, atol=1e-12)
