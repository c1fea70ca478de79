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


def test_ffns_with_several_inner_layers():
    net = small(d_ff=[[6, 5], 7])
    assert list(ip.hidden_spaces(net)) == ["blocks.0.ffn.0", "blocks.0.ffn.1", "blocks.1.ffn.0"]
    assert net.ffn_widths == [[6, 5], 7] == net.config()["d_ff"]
    ip.neurogenesis(net, "blocks.0.ffn.1", 2)
    assert ip.IsotropicTransformer(**net.config()).ffn_widths == [[6, 7], 7]
    assert net(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 23)


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


# -- forward passes against explicit references (formulas written out, float64) -------------------
def _gain(z: torch.Tensor, o: float, dim: int) -> torch.Tensor:
    rho = ((z * z).sum(dim=dim, keepdim=True) + o).abs().sqrt()
    return torch.tanh(rho) / rho


def _norm(x: torch.Tensor, gamma: float, dim: int = -1) -> torch.Tensor:
    return gamma * x / ((x * x).sum(dim=dim, keepdim=True) + 1e-8).sqrt()


def _randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=DT))
    return module


def test_ffn_forward_is_x_plus_w2_phi_plus_psi_g_plus_b2():
    ffn = _randomised(ip.IsotropicFFN(5, 7, intrinsic_length="constant", psi="trainable")
                      .double(), 1)
    ffn.activations[0].o = 0.3
    gamma = float(ffn.norm.gain.detach())
    x = torch.randn(2, 3, 5, dtype=DT)
    w1, b1 = ffn.linears[0].weight, ffn.linears[0].bias
    w2, b2 = ffn.linears[1].weight, ffn.linears[1].bias
    z = _norm(x, gamma) @ w1.T + b1
    g = _gain(z, 0.3, -1)
    expected = x + (g * z) @ w2.T + ffn.psi[0] * g + b2
    assert torch.allclose(ffn(x), expected, rtol=0, atol=1e-13)


def test_residual_conv_forward_against_the_written_out_convolutions():
    branch = _randomised(ip.IsotropicResidualConv(3, [4], [3, 3], intrinsic_length="constant",
                                                  psi="trainable").double(), 2)
    branch.activations[0].o = 0.2
    gamma = float(branch.norm.gain.detach())
    x = torch.randn(2, 3, 5, 5, dtype=DT)
    c0, c1 = branch.convs
    z = torch.nn.functional.conv2d(_norm(x, gamma, dim=1), c0.weight, c0.bias, padding=1)
    g = _gain(z, 0.2, 1)  # (2, 1, 5, 5)
    # ψ·ḡ: the gain averaged over the next 3×3 footprint, zero padded, divided by 9
    gbar = torch.nn.functional.conv2d(g, torch.ones(1, 1, 3, 3, dtype=DT), padding=1) / 9
    expected = x + torch.nn.functional.conv2d(g * z, c1.weight, c1.bias, padding=1) \
        + branch.psi[0].view(-1, 1, 1) * gbar
    assert torch.allclose(branch(x), expected, rtol=0, atol=1e-13)


def test_attention_forward_against_explicit_masked_softmax():
    from isoplastic.nn.transformer import CausalSelfAttention

    attn = _randomised(CausalSelfAttention(6, 2, head_dim=4).double(), 3)
    gamma = float(attn.norm.gain.detach())
    x = torch.randn(2, 5, 6, dtype=DT)
    u = _norm(x, gamma)
    out = torch.zeros(2, 5, 8, dtype=DT)
    for h in range(2):
        rows = slice(4 * h, 4 * h + 4)
        q = u @ attn.query.weight[rows].T + attn.query.bias[rows]
        k = u @ attn.key.weight[rows].T + attn.key.bias[rows]
        v = u @ attn.value.weight[rows].T + attn.value.bias[rows]
        scores = q @ k.transpose(1, 2) / 2.0  # √head_dim = 2
        mask = torch.ones(5, 5, dtype=torch.bool).tril()
        p = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        out[..., rows] = p @ v
    expected = x + out @ attn.out.weight.T + attn.out.bias
    assert torch.allclose(attn(x), expected, rtol=0, atol=1e-13)


def test_transformer_forward_composes_embeddings_blocks_and_read_out():
    net = _randomised(small(), 4)
    tokens = torch.randint(0, 23, (2, 6))
    x = net.tok_emb.weight[tokens] + net.pos_emb.weight[:6]
    for block in net.blocks:
        x = block.ffn(block.attn(x))
    expected = _norm(x, float(net.norm.gain.detach())) @ net.unembed.weight.T + net.unembed.bias
    assert torch.allclose(net(tokens), expected, rtol=0, atol=1e-12)


def test_value_space_attention_forward_with_ragged_heads():
    """Heads of value widths 3 and 1 (zero padded inside): the output is the written-out sum of
    each head's W_O^h Σ_s p_ts v_s, plus b_O."""
    from isoplastic.nn.attention import ValueSpaceAttention

    attn = _randomised(ValueSpaceAttention(6, 2, head_dim=2, value_dims=[3, 1]).double(), 5)
    u = _norm(x := torch.randn(2, 4, 6, dtype=DT), float(attn.norm.gain.detach()))
    expected = x + attn.out_bias
    mask = torch.ones(4, 4, dtype=torch.bool).tril()
    for h in range(2):
        rows = slice(2 * h, 2 * h + 2)
        q = u @ attn.query.weight[rows].T + attn.query.bias[rows]
        k = u @ attn.key.weight[rows].T + attn.key.bias[rows]
        p = torch.softmax((q @ k.transpose(1, 2) / 2 ** 0.5).masked_fill(~mask, float("-inf")), -1)
        v = u @ attn.values[h].weight.T + attn.values[h].bias
        expected = expected + (p @ v) @ attn.outs[h].weight.T
    assert torch.allclose(attn(x), expected, rtol=0, atol=1e-13)
    net = small(value_dims=[[2, 1, 3], [1, 1, 1]])
    assert list(ip.hidden_spaces(net))[:3] == ["blocks.0.attn.0", "blocks.0.attn.1",
                                               "blocks.0.attn.2"]
    assert net.config()["value_dims"] == [[2, 1, 3], [1, 1, 1]]
    assert ip.IsotropicTransformer(**net.config()).config() == net.config()
    with pytest.raises(ValueError, match=r"must give 3 widths >= 1"):
        small(value_dims=[[2, 2], [1, 1, 1]])
