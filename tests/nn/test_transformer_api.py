"""The transformer's and the residual blocks' API: shapes, config round trips, hidden-space names,
causality, and the refusals of bad input (issue 14)."""

from __future__ import annotations

import pytest
import torch

import isoplastic as ip

DT = torch.float64


def small(**kw) -> ip.IsotropicTransformer:
    args = dict(vocab_size=23, d_model=12, n_layers=2, n_heads=3, d_ff=[20, 9],
                context_length=8, dtype=DT, generator=torch.Generator().manual_seed(0))
    args.update(kw)
    return ip.IsotropicTransformer(**args)


def test_shapes_names_and_config_round_trip():
    net = small()
    tokens = torch.randint(0, 23, (4, 8))
    assert net(tokens).shape == (4, 8, 23)
    assert net(tokens[:, :3]).shape == (4, 3, 23)
    assert list(ip.hidden_spaces(net)) == ["blocks.0.ffn.0", "blocks.1.ffn.0"]
    assert [s.size for s in ip.hidden_spaces(net).values()] == [20, 9] == net.ffn_widths
    ip.neurogenesis(net, "blocks.1.ffn.0", 4)
    config = net.config()
    assert config["d_ff"] == [20, 13]
    twin = ip.IsotropicTransformer(**config).to(DT)
    twin.load_state_dict(net.state_dict())
    assert twin.config() == config
    net.eval(), twin.eval()
    assert torch.equal(twin(tokens), net(tokens))


def test_construction_is_reproducible_from_the_generator():
    a, b = small(), small()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_one_d_ff_for_every_block_and_dtype_default():
    net = ip.IsotropicTransformer(10, 8, 3, 2, 16, 5)
    assert net.ffn_widths == [16, 16, 16] and net.tok_emb.weight.dtype == torch.get_default_dtype()
    assert net.config()["head_dim"] == 4


def test_causal_later_tokens_leave_earlier_logits_unchanged():
    net = small().eval()
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 23, (3, 8), generator=gen)
    base = net(tokens)
    for t in range(8):
        changed = tokens.clone()
        changed[:, t:] = (changed[:, t:] + 1 + torch.randint(0, 21, (3, 8 - t), generator=gen)) % 23
        out = net(changed)
        assert torch.equal(out[:, :t], base[:, :t]), f"position < {t} changed"
        assert not torch.allclose(out[:, t], base[:, t])


@pytest.mark.parametrize("tokens,match", [
    (torch.zeros(2, 9, dtype=torch.long), r"sequence length T=9 must be in 1..8"),
    (torch.zeros(2, 0, dtype=torch.long), r"sequence length T=0 must be in 1..8"),
    (torch.full((2, 3), 23), r"token ids must be in 0..22; got ids from 23 to 23"),
    (torch.full((2, 3), -1), r"token ids must be in 0..22; got ids from -1 to -1"),
])
def test_bad_token_values_are_refused(tokens, match):
    with pytest.raises(ValueError, match=match):
        small()(tokens)


@pytest.mark.parametrize("tokens", [torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), [[1]]])
def test_bad_token_types_are_refused(tokens):
    with pytest.raises(TypeError, match=r"expects tokens as a \(batch, T\) torch.long tensor"):
        small()(tokens)


@pytest.mark.parametrize("kw,match", [
    (dict(d_ff=[4, 4, 4]), r"gives 3 FFN widths for n_layers=2"),
    (dict(n_layers=0), r"every size must be >= 1"),
    (dict(n_heads=20), r"n_heads <= d_model, or pass head_dim"),
])
def test_bad_constructor_arguments_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        small(**kw)


def test_ffn_and_residual_mlp_shapes_and_config():
    ffn = ip.IsotropicFFN(6, [7, 5], psi="constant").double()
    x = torch.randn(2, 3, 6, dtype=DT)
    assert ffn(x).shape == x.shape and list(ip.hidden_spaces(ffn)) == ["0", "1"]
    twin = ip.IsotropicFFN(**ffn.config())
    assert twin.config() == ffn.config()
    with pytest.raises(ValueError, match=r"expects inputs of shape \(\.\.\., 6\)"):
        ffn(torch.randn(2, 5, dtype=DT))
    net = ip.IsotropicResidualMLP(5, 6, [4, [3, 3]], 2).double()
    assert net(torch.randn(7, 5, dtype=DT)).shape == (7, 2)
    assert list(ip.hidden_spaces(net)) == ["blocks.0.0", "blocks.1.0", "blocks.1.1"]
    rebuilt = ip.IsotropicResidualMLP(**net.config())
    assert rebuilt.config() == net.config()


def test_isotropic_norm_is_rotation_equivariant_and_blind_to_zero_coordinates():
    norm = ip.IsotropicNorm(gain=1.7).double()
    x = torch.randn(5, 4, dtype=DT)
    r = ip.random_orthogonal(4, generator=torch.Generator().manual_seed(2), dtype=DT)
    assert torch.allclose(norm(x @ r.T), norm(x) @ r.T, rtol=0, atol=1e-14)
    padded = torch.cat([x, torch.zeros(5, 3, dtype=DT)], dim=1)
    assert torch.equal(norm(padded)[:, :4], norm(x)) and not norm(padded)[:, 4:].any()
    assert torch.allclose(norm(x).norm(dim=1), torch.full((5,), 1.7, dtype=DT), atol=1e-7)
