"""Neurogenesis adds silent neurons; neuroadapt keeps exactly S scaffold neurons per layer."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import probe

import isoplastic as ip
from isoplastic.testing import assert_function_preserved, random_isotropic_mlp
from isoplastic.testing.strategies import isotropic_mlps, seeds, widths_lists


@settings(max_examples=30)
@given(net=isotropic_mlps(), data=st.data())
def test_neurogenesis_adds_zero_rows_bias_psi_and_scaled_outgoing_columns(net, data):
    k = data.draw(st.integers(0, net.n_hidden - 1))
    n = data.draw(st.integers(1, 4))
    scale = data.draw(st.sampled_from([0.0, 1e-2, 0.5]))
    width = net.widths[k + 1]
    gen = torch.Generator().manual_seed(data.draw(seeds()))
    change = ip.neurogenesis(net, k, n, init_scale=scale, generator=gen)
    assert (change.width_before, change.width_after) == (width, width + n)
    assert bool((net.linears[k].weight[width:] == 0).all())
    assert bool((net.linears[k].bias[width:] == 0).all())
    if len(net.psi) and k >= 1:
        assert bool((net.psi[k - 1][width:] == 0).all())
    assert ip.singular_values(net, k)[-n:].abs().max() <= 1e-12
    cols = net.linears[k + 1].weight.detach()[:, width:]
    if scale == 0:
        assert bool((cols == 0).all())
    else:
        assert bool((cols != 0).all())
        if cols.numel() >= 8:  # the draws have standard deviation init_scale
            assert 0.2 * scale < float(cols.std()) < 3 * scale


def test_neurogenesis_outgoing_scale_statistics():
    net = random_isotropic_mlp([4, 5, 300], "trainable", "trainable", seed=1)
    ip.neurogenesis(net, 0, 10, init_scale=0.01, generator=torch.Generator().manual_seed(0))
    cols = net.linears[1].weight.detach()[:, 5:]
    assert float(cols.std()) == pytest.approx(0.01, rel=0.05)
    assert abs(float(cols.mean())) < 1e-3


@settings(max_examples=30)
@given(net=isotropic_mlps(widths=widths_lists(min_hidden=1, max_hidden=3, max_width=7)),
       scaffold=st.integers(1, 3), threshold=st.floats(0.05, 1.5), seed=seeds())
def test_neuroadapt_leaves_exactly_s_strengths_at_most_tau(net, scaffold, threshold, seed):
    x = probe(net)
    net(x)  # a training forward pass records the mean gains (psi='expectation')
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ip.neuroadapt(net, scaffold, threshold, opt, generator=torch.Generator().manual_seed(seed))
    for k in range(net.n_hidden):
        strengths = ip.singular_values(net, k)
        assert int((strengths <= threshold).sum()) == scaffold, (k, strengths, net.widths)
    with torch.no_grad():
        assert torch.isfinite(net(x)).all()


@settings(max_examples=15)
@given(net=isotropic_mlps(), threshold=st.floats(0.05, 1.5), seed=seeds())
def test_neuroadapt_with_zero_scaffold_keeps_at_least_one_neuron(net, threshold, seed):
    net(probe(net))
    ip.neuroadapt(net, 0, threshold, generator=torch.Generator().manual_seed(seed))
    for k in range(net.n_hidden):
        strengths = ip.singular_values(net, k)
        c = int((strengths <= threshold).sum())
        # exactly zero scaffold neurons, unless the layer is down to its one required neuron
        assert c == 0 or (net.widths[k + 1] == 1 and c == 1)


def test_neuroadapt_growth_only_is_exact():
    net = random_isotropic_mlp([6, 6, 6, 3], "trainable", "trainable+decay", seed=2)
    with torch.no_grad():  # every singular value 2, far above the threshold
        for lin in net.linears[:2]:
            torch.nn.init.orthogonal_(lin.weight)
            lin.weight.mul_(2.0)
    x = probe(net)
    assert all(int((ip.singular_values(net, k) <= 0.05).sum()) == 0 for k in range(2))
    changes = assert_function_preserved(lambda n: ip.neuroadapt(n, 2, 0.05), net, x, tol=1e-10)
    assert {c.op for c in changes} == {"neurogenesis"}
    assert net.widths == [6, 8, 8, 3]


def test_neuroadapt_rejects_bad_arguments():
    net = random_isotropic_mlp([3, 4, 2], "none", "none", seed=0)
    with pytest.raises(ip.TopologyError, match="scaffold=-1 must be an integer >= 0"):
        ip.neuroadapt(net, -1, 0.1)
    with pytest.raises(ip.TopologyError, match="threshold=nan must be >= 0"):
        ip.neuroadapt(net, 1, float("nan"))
