"""Training continues through random sequences of structural operations interleaved with AdamW."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import isoplastic as ip
from isoplastic.testing import (
    assert_function_preserved,
    assert_optimizer_consistent,
    random_isotropic_mlp,
)
from isoplastic.testing.strategies import seeds

OPS = ("reparameterise", "left_diagonalise", "full_diagonalise", "neurogenesis",
       "neurodegeneration", "neuroadapt", "add_inputs", "remove_inputs", "add_outputs",
       "remove_outputs")
EXACT = ("reparameterise", "left_diagonalise", "full_diagonalise", "neurogenesis")


@settings(max_examples=6)
@given(seed=seeds(), ops=st.lists(st.sampled_from(OPS), min_size=20, max_size=20),
       psi=st.sampled_from(["trainable", "trainable+decay", "constant", "expectation"]),
       data=st.data())
def test_training_continues_with_finite_loss_through_20_random_operations(seed, ops, psi, data):
    gen = torch.Generator().manual_seed(seed)
    net = random_isotropic_mlp([5, 6, 5, 4], "trainable", psi, seed=seed)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=1e-2)
    x = torch.randn(32, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (32,), generator=gen)

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y) + net.psi_penalty()
        loss.backward()
        opt.step()
        return float(loss.detach())

    assert torch.isfinite(torch.tensor(step()))
    for name in ops:
        h = net.n_hidden
        k = data.draw(st.integers(0, h - 1))
        width = net.widths[k + 1]
        if name == "reparameterise":
            r = ip.random_orthogonal(width, generator=gen)
            op = lambda n, k=k, r=r: ip.reparameterise(n, k, r, opt)  # noqa: E731
        elif name == "left_diagonalise":
            op = lambda n, k=k: ip.left_diagonalise(n, k, opt)  # noqa: E731
        elif name == "full_diagonalise":
            op = lambda n, h=h: ip.full_diagonalise(n, h - 1, opt)  # noqa: E731
        elif name == "neurogenesis":
            op = lambda n, k=k: ip.neurogenesis(n, k, 2, opt, generator=gen)  # noqa: E731
        elif name == "neurodegeneration":
            op = (lambda n, k=k: ip.neurodegeneration(n, k, 1, opt)) if width > 1 else None
        elif name == "neuroadapt":
            op = lambda n: ip.neuroadapt(n, 1, 0.3, opt, generator=gen)  # noqa: E731
        elif name == "add_inputs":
            op = lambda n: ip.add_inputs(n, 1, opt)  # noqa: E731
            x = torch.cat([x, torch.randn(32, 1, generator=gen, dtype=torch.float64)], dim=1)
        elif name == "remove_inputs":
            op = (lambda n: ip.remove_inputs(n, [0], opt)) if x.shape[1] > 1 else None
            if op is not None:
                x = x[:, 1:]
        elif name == "add_outputs":
            op = lambda n: ip.add_outputs(n, 1, opt)  # noqa: E731
        else:
            n_out = net.widths[-1]
            op = (lambda n, j=n_out - 1: ip.remove_outputs(n, [j], opt)) if n_out > 2 else None
            if op is not None:
                y = torch.where(y == n_out - 1, torch.zeros_like(y), y)
        if op is None:
            continue
        if name in EXACT:
            assert_function_preserved(op, net, x, opt, tol=1e-9)
        else:
            op(net)
            assert_optimizer_consistent(net, opt)
        assert len(list(net.parameters())) == sum(len(g["params"]) for g in opt.param_groups)
        loss = step()
        assert torch.isfinite(torch.tensor(loss)), (name, net.widths)
    assert net.widths[0] == x.shape[1]
