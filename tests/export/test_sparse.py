"""compile_sparse: exact (float64) evaluation of sparsified networks, and refusal of bad claims."""

from __future__ import annotations

import pytest
import torch

import isoplastic as ip
from isoplastic.export import SparseMLP, compile_sparse
from isoplastic.nn.attention import ValueSpaceAttention


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


def test_parameter_count_is_what_the_sparse_module_stores():
    widths = [5, 4, 7, 3, 6, 2]  # linears 1 (7×4) and 3 (6×3) diagonal after sparsify
    net = _perturbed(widths)  # ψ trainable+decay, intrinsic length trainable by default
    ip.sparsify(net)
    sp = compile_sparse(net)
    shapes = list(zip(widths[1:], widths[:-1], strict=True))
    weights = sum(min(o, i) if k in (1, 3) else o * i for k, (o, i) in enumerate(shapes))
    biases = sum(widths[1:])
    psi = sum(widths[2:])  # one ψ vector per layer after the first hidden one
    o = sum(1 for a in net.activations if a.mode.value != "none")
    assert o == 4
    assert sp.parameter_count() == weights + biases + psi + o
    assert repr(sp).startswith("SparseMLP(\n  widths=[5, 4, 7, 3, 6, 2], kinds=['dense', "
                               "'diagonal', 'dense', 'diagonal', 'dense']")
    plain = compile_sparse(_perturbed([4, 3, 2], psi="none"), diagonal=[])
    assert plain.n_psi == 0 and plain.parameter_count() == 3 * 4 + 2 * 3 + 3 + 2 + 1
    no_o = ip.IsotropicMLP([4, 3, 2], psi="none", intrinsic_length="none").double()
    assert compile_sparse(no_o, diagonal=[]).parameter_count() == 3 * 4 + 2 * 3 + 3 + 2


def test_inputs_are_flattened_or_refused_by_shape():
    net = _perturbed([12, 5, 5, 3])
    ip.sparsify(net)
    sp = compile_sparse(net)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    assert torch.allclose(sp(x), net.eval()(x.flatten(1)), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"^SparseMLP expects inputs of shape \(batch, 12\); got "
                                         r"\(2, 11\)$"):
        sp(torch.zeros(2, 11, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"got \(12,\)$"):
        sp(torch.zeros(12, dtype=torch.float64))


def test_refusals_name_the_layer_its_off_diagonal_entries_and_the_fix():
    net = _perturbed([8, 6, 6, 6, 3])
    with torch.no_grad():
        w = net.linears[1].weight
        w.copy_(torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64)))
        w[0, 3], w[4, 1] = 0.25, -0.5
    with pytest.raises(ip.TopologyError) as info:
        compile_sparse(net)
    assert str(info.value) == (
        "compile_sparse: linears[1] (shape (6, 6)) is claimed diagonal but has 2 non-zero "
        "off-diagonal entries (largest 0.5); run isoplastic.sparsify(net) first, or pass "
        "diagonal='auto' to keep such layers dense")
    with pytest.raises(ip.TopologyError, match=r"^compile_sparse: diagonal='every'; use "
                                               r"'sparsify', 'auto' or a list of layer indices$"):
        compile_sparse(net, diagonal="every")
    with pytest.raises(ip.TopologyError,
                       match=r"^compile_sparse: layer indices \[-1, 4\] out of range 0\.\.3$"):
        compile_sparse(net, diagonal=[4, 0, -1])
    cnn = ip.IsotropicCNN((1, 4, 4), [2], 3)
    with pytest.raises(ip.TopologyError) as info:
        compile_sparse(cnn)
    assert str(info.value) == (
        "compile_sparse: IsotropicCNN is not a chain of dense layers (it needs nn.Linear maps "
        "between its hidden spaces, as isoplastic.IsotropicMLP has); convolutional blocks have "
        "no sparse form yet")
    with torch.no_grad():  # a diagonal with a zero on it is still diagonal
        net.linears[1].weight.copy_(torch.diag(torch.tensor([1.0, 0, 2, 0, 3, 4],
                                                            dtype=torch.float64)))
    assert compile_sparse(net, diagonal="auto").kinds[1] == "diagonal"


def test_a_composite_model_gets_its_blocks_replaced_in_an_eval_copy():
    block = _perturbed([4, 6, 6, 6, 4])
    ip.sparsify(block)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4).double(), block,
                                torch.nn.Linear(4, 2).double()).train()
    out = compile_sparse(model)
    assert isinstance(out[1], SparseMLP) and out[1].kinds == ["dense", "diagonal", "dense",
                                                              "dense"]
    assert not out.training and model.training and model[1] is block  # the original is kept
    assert out[0] is not model[0]
    x = torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose(out(x), model.eval()(x), rtol=0, atol=1e-12)


def test_sparse_mlp_refuses_lists_of_different_lengths():
    w = [torch.eye(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)]
    acts = torch.nn.ModuleList([ip.IsotropicActivation()])
    with pytest.raises(ValueError):
        SparseMLP(w, [torch.zeros(2, dtype=torch.float64)], ["dense", "dense"], acts, None)


def test_the_sparse_module_does_not_share_the_sources_activations():
    net = _perturbed([6, 5, 5, 3])
    ip.sparsify(net)
    sp = compile_sparse(net)
    x = torch.randn(4, 6, dtype=torch.float64)
    before = sp(x)
    net.activations[0].o = net.activations[0].o + 1.0  # the source goes on changing
    assert all(a is not b for a, b in zip(sp.activations, net.activations, strict=True))
    assert torch.equal(sp(x), before)
    with pytest.raises(ip.TopologyError, match="^sparsify: Linear does not declare hidden "
                                               "spaces; "):
        ip.sparsify(torch.nn.Linear(2, 2))


def test_a_block_with_no_map_that_can_be_diagonal_is_copied_as_it_is():
    """A transformer's value-space attention is not an affine chain and none of its maps can be
    diagonal: compile_sparse returns an eval-mode copy of it that shares nothing with it."""
    attn = ValueSpaceAttention(8, 2, value_dims=[4, 3]).double().train()
    x = torch.randn(2, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = compile_sparse(attn)
    assert type(out) is ValueSpaceAttention and out is not attn
    assert not any(m.training for m in out.modules())
    assert all(m.training for m in attn.modules())  # the source keeps its mode
    assert all(p.data_ptr() != q.data_ptr()
               for p, q in zip(out.parameters(), attn.parameters(), strict=True))
    with torch.no_grad():
        assert torch.equal(out(x), attn.eval()(x))
        attn.values[0].weight.add_(1.0)  # the source goes on changing; the copy does not
        assert not torch.equal(out(x), attn(x))


class _ContractDefaultAttention(ValueSpaceAttention):
    """A block type that keeps the contract's default ``can_full_diagonalise`` (a map between
    consecutive spaces whose fan-in equals the previous width), though it is no affine chain."""

    can_full_diagonalise = ip.IsoplasticBlock.can_full_diagonalise


def test_a_block_that_is_not_a_chain_of_dense_layers_is_refused_whole():
    block = _ContractDefaultAttention(4, 2, value_dims=4).double()
    assert block.can_full_diagonalise(1)
    with pytest.raises(ip.TopologyError) as info:
        compile_sparse(torch.nn.Sequential(block))
    assert str(info.value) == (
        "compile_sparse: _ContractDefaultAttention is not a chain of dense layers (it needs "
        "nn.Linear maps between its hidden spaces, as isoplastic.IsotropicMLP has); "
        "convolutional blocks have no sparse form yet")
