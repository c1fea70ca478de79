"""The standard pre-LayerNorm GELU transformer baseline: size formula, matching, causality."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import isoplastic as ip
from isoplastic.nn.standard_transformer import (
    StandardTransformer,
    matching_d_ff,
    standard_parameter_count,
)


@given(v=st.integers(1, 40), d_heads=st.sampled_from([(8, 1), (8, 2), (12, 3), (16, 4)]),
       n_layers=st.integers(1, 3), d_ff=st.integers(1, 40), t=st.integers(1, 20))
def test_parameter_count_formula(v, d_heads, n_layers, d_ff, t):
    d, h = d_heads
    net = StandardTransformer(v, d, n_layers, h, d_ff, t)
    assert sum(p.numel() for p in net.parameters()) == standard_parameter_count(v, d, n_layers,
                                                                                d_ff, t)
    assert StandardTransformer(**net.config()).config() == net.config()


@pytest.mark.parametrize("d, n_layers, d_ff", [(16, 2, 32), (32, 3, 96), (128, 2, 256)])
def test_matching_d_ff_equals_the_isotropic_parameter_count_to_one_unit(d, n_layers, d_ff):
    iso = ip.IsotropicTransformer(50, d, n_layers, 4, d_ff, 24)
    target = sum(p.numel() for p in iso.parameters())
    f = matching_d_ff(target, 50, d, n_layers, 24)
    got = standard_parameter_count(50, d, n_layers, f, 24)
    assert abs(got - target) <= n_layers * (2 * d + 1) / 2


def test_causal_and_refuses_bad_tokens():
    torch.manual_seed(0)
    net = StandardTransformer(20, 16, 2, 4, 24, 10).double().eval()
    x = torch.randint(0, 20, (3, 10))
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 1) % 20
    with torch.no_grad():
        assert torch.equal(net(x)[:, :6], net(y)[:, :6])
        assert not torch.equal(net(x)[:, 6:], net(y)[:, 6:])
    with pytest.raises(ValueError, match="T=11 must be in 1..10"):
        net(torch.zeros(1, 11, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.long"):
        net(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="n_heads=3 must divide d_model=16"):
        StandardTransformer(20, 16, 1, 3, 8, 4)
