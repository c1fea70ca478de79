"""Each way of passing bad neuron indices is refused by its own check, with its own message.

Written for the survivors of ``make mutate`` in ``core/change.py`` (``integer_positions``): a
bad index is refused by *some* check even when one of the checks is broken, so only the
message tells which check caught it, and the range in it must be the real one (0..width-1).
"""
from __future__ import annotations

import re

import pytest
import torch

import isoplastic as ip
from isoplastic.testing import random_isotropic_mlp

WIDTH = 5


def refused(indices) -> str:
    net = random_isotropic_mlp([3, WIDTH, 2], seed=0)
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(ip.errors.TopologyError) as info:
        ip.remove_neurons(net, 0, indices)
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))
    return str(info.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64, torch.bool])
def test_a_tensor_of_non_integers_is_refused_by_its_dtype(dtype):
    msg = refused(torch.zeros(1, dtype=dtype))
    assert msg.endswith(f"indices must be integers, got a {dtype} tensor")


@pytest.mark.parametrize("indices", ["01", b"0", 3])
def test_a_string_or_a_scalar_is_refused_as_not_a_sequence(indices):
    msg = refused(indices)
    assert msg.endswith(f"indices={indices!r} must be a sequence of integer positions "
                        f"in 0..{WIDTH - 1}, e.g. [0]")


@pytest.mark.parametrize("bad", [True, 1.0])
def test_a_non_integer_element_is_refused_naming_it_and_the_range(bad):
    msg = refused([0, bad])
    assert msg.endswith(f"index {bad!r} is not an integer; pass integer positions "
                        f"in 0..{WIDTH - 1}")


@pytest.mark.parametrize("indices", [[WIDTH], [-1]])
def test_an_out_of_range_position_names_the_real_range(indices):
    msg = refused(indices)
    assert re.search(rf"indices \[-?\d+\] must lie in 0\.\.{WIDTH - 1}$", msg), msg


def test_a_layer_no_operation_accepts_names_none_and_why():
    net = ip.IsotropicMLP([4, 5, 3])
    with pytest.raises(ip.TopologyError) as info:
        ip.full_diagonalise(net, 0)
    assert str(info.value) == ("full_diagonalise: hidden layer k=0 is out of range; this network "
                               "has 1 hidden layers and full_diagonalise accepts k in none (the "
                               "network is too shallow)")


def test_a_named_layer_out_of_the_operations_range_names_the_range():
    model = torch.nn.Sequential(ip.IsotropicMLP([4, 5, 5, 3]))
    with pytest.raises(ip.TopologyError) as info:
        ip.full_diagonalise(model, "0.0")
    assert str(info.value) == ("full_diagonalise('0.0'): hidden layer k=0 is out of range; this "
                               "network has 2 hidden layers and full_diagonalise('0.0') accepts k "
                               "in 1..1")


def test_a_composite_without_hidden_spaces_says_it_has_none():
    model = torch.nn.Sequential(ip.IsotropicMLP([4, 3]))  # a block with no hidden layer
    with pytest.raises(ip.TopologyError) as info:
        ip.neurogenesis(model, "0.0")
    assert str(info.value) == ("neurogenesis: no hidden space named '0.0' in Sequential; its "
                               "hidden spaces are none")


def test_what_is_no_module_is_refused_by_name():
    with pytest.raises(ip.TopologyError) as info:
        ip.neurogenesis("net", 0)
    assert str(info.value) == (
        "neurogenesis: str does not declare hidden spaces; structural operations work on "
        "isoplastic.IsotropicMLP, isoplastic.IsotropicCNN, models that contain them, or modules "
        "subclassing isoplastic.core.IsoplasticBlock")


# importing torch._dynamo imports torch.utils.mkldnn, which warns (inside torch) about
# torch.jit.script_method; the suite turns warnings into errors
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_a_compiled_model_is_read_through_to_the_module_it_compiled():
    net = random_isotropic_mlp([3, WIDTH, 2], seed=0)
    compiled = torch.compile(net)  # nothing is traced until it is called
    assert ip.hidden_spaces(compiled).keys() == ip.hidden_spaces(net).keys()
    record = ip.neurogenesis(compiled, 0, 2)
    assert (record.space, net.widths) == ("0", [3, WIDTH + 2, 2])
