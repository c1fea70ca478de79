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
