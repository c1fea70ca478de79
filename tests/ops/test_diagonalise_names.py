"""The diagonalisation operations name themselves and the layers they touch: every refusal starts
with the call it refuses (``left_diagonalise(net, k=…)``, ``full_diagonalise(net, k=…)``,
``sparsify``) and leaves the model as it was, and the sparsify report of a composite model lists
the diagonalised layers by their names from :func:`isoplastic.hidden_spaces` (with no closed form,
which is known only for a bare MLP)."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch

import isoplastic as ip
from isoplastic.testing import assert_function_preserved, random_isotropic_mlp

DT = torch.float64

_INF_LENGTH = "hidden layer {k} has intrinsic length inf; restore the model from a checkpoint first"
_FOREIGN = ("the SGD passed as optimizer= holds none of the parameters this change moves; pass "
            "the optimizer that trains this model")


def _unchanged(before: torch.nn.Module, after: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(before.parameters(), after.parameters(),
                                                 strict=True))


_OPS = [  # (call, its name in messages, the hidden layer it checks first)
    (lambda net, opt: ip.left_diagonalise(net, 0, optimizer=opt), "left_diagonalise(net, k=0)", 0),
    (lambda net, opt: ip.full_diagonalise(net, 1, optimizer=opt), "full_diagonalise(net, k=1)", 1),
    (lambda net, opt: ip.sparsify(net, optimizer=opt), "sparsify", 0),
]


@pytest.mark.parametrize("call,name,k", _OPS)
def test_refusals_start_with_the_operation_and_change_nothing(call, name, k):
    net = random_isotropic_mlp([3, 4, 4, 2], "trainable", "trainable", seed=1)
    before = copy.deepcopy(net)
    other = torch.optim.SGD(ip.IsotropicMLP([3, 4, 4, 2]).double().parameters(), lr=0.1)
    with pytest.raises(ip.UnsupportedOptimizerError, match=f"^{re.escape(name)}: "
                                                           f"{re.escape(_FOREIGN)}$"):
        call(net, other)
    assert _unchanged(before, net)
    with torch.no_grad():
        net.activations[k].log_o.fill_(math.inf)
    with pytest.raises(ip.NonFiniteError,
                       match=f"^{re.escape(name)}: {re.escape(_INF_LENGTH.format(k=k))}$"):
        call(net, None)
    with torch.no_grad():
        net.activations[k].log_o.copy_(before.activations[k].log_o)
    assert _unchanged(before, net)


def test_named_layers_are_named_in_refusals_of_a_composite_model():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3).double(),
                                random_isotropic_mlp([3, 4, 4, 2], "trainable", "trainable", 2))
    with torch.no_grad():
        model[1].activations[1].log_o.fill_(math.inf)
    for call, name in ((ip.left_diagonalise, "left_diagonalise(net, k=1.1)"),
                       (ip.full_diagonalise, "full_diagonalise(net, k=1.1)")):
        with pytest.raises(ip.NonFiniteError,
                           match=f"^{re.escape(name)}: {re.escape(_INF_LENGTH.format(k=1))}$"):
            call(model, "1.1")


def _probe(n: int) -> torch.Tensor:
    return torch.randn(6, n, generator=torch.Generator().manual_seed(0), dtype=DT)


def test_sparsify_reports_the_spaces_of_a_composite_model_by_name():
    """One block inside a composite is not a bare model: the report names the spaces (the
    names full_diagonalise accepts) and has no closed form."""
    block = random_isotropic_mlp([3, 4, 4, 4, 4, 2], "trainable", "trainable", seed=3)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3).double(), block)
    report = assert_function_preserved(ip.sparsify, model, _probe(2), tol=1e-12)
    assert report.layers == ["1.1", "1.3"]
    assert set(report.layers) <= set(ip.hidden_spaces(model))
    assert report.closed_form_fraction is None
    for i in (1, 3):  # the named layers are the diagonal ones
        w = block.linears[i].weight.detach()
        assert torch.equal(w, torch.diag(torch.diagonal(w)))
    # the same block on its own: indices and the closed form
    bare = random_isotropic_mlp([3, 4, 4, 4, 4, 2], "trainable", "trainable", seed=3)
    alone = ip.sparsify(bare)
    assert alone.layers == [1, 3]
    assert alone.closed_form_fraction == ip.sparsity_closed_form([3, 4, 4, 4, 4, 2])


def test_sparsify_diagonalises_every_block_of_a_composite_model():
    model = torch.nn.Sequential(random_isotropic_mlp([3, 4, 4, 2], "trainable", "trainable", 4),
                                random_isotropic_mlp([2, 5, 5, 5, 3], "none", "trainable", 5))
    report = assert_function_preserved(ip.sparsify, model, _probe(3), tol=1e-12)
    assert report.layers == ["0.1", "1.1"]
    assert report.closed_form_fraction is None
    for block in model:
        w = block.linears[1].weight.detach()
        assert torch.equal(w, torch.diag(torch.diagonal(w)))
