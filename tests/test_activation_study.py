"""scripts/activation_study.py: its modules are what its docstring says (groups of one neuron with
the tanh profile are element-wise tanh; grouped isotropic layers and the RMS normaliser commute
with the rotations of their symmetry group; every isotropic profile is odd; an invariant channel
keeps the per-group equivariance and breaks the oddness, at depth 2 with independent rotations
per layer), one hidden layer is what it was before the depth was a parameter, and it runs."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest
import torch
from torch import nn

SCRIPT = pathlib.Path(__file__).parents[1] / "scripts" / "activation_study.py"
spec = importlib.util.spec_from_file_location("activation_study", SCRIPT)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


def _hidden(net, x):
    """The last hidden activation of a :class:`Hidden` (the read-out replaced by the
    identity)."""
    last, net.last = net.last, torch.nn.Identity()
    try:
        return net(x)
    finally:
        net.last = last


def test_groups_of_one_with_the_tanh_profile_are_elementwise_tanh():
    torch.manual_seed(0)
    grouped, plain = study.build("g1-tanh", [5, 6, 3]), study.build("tanh", [5, 6, 3])
    plain.load_state_dict(grouped.state_dict())
    x = 3 * torch.randn(20, 5, dtype=torch.float64)
    grouped.double(), plain.double()
    torch.testing.assert_close(grouped(x), plain(x), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("profile", sorted(study.PROFILES))
@pytest.mark.parametrize("norm", ["", "-rms"])
def test_grouped_layers_commute_with_block_rotations_and_are_odd(profile, norm):
    torch.manual_seed(1)
    net = study.build(f"g4{'-' + profile}{norm}", [7, 12, 3]).double()
    x = 2 * torch.randn(16, 7, dtype=torch.float64)
    z = net.first(x)
    blocks = [torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))[0] for _ in range(3)]
    q = torch.block_diag(*blocks)  # one rotation per group of 4
    shift = z @ q.T - z  # feeds the rotated pre-activation Q z: φ(Q z) = Q φ(z)
    h = _hidden(net, x)
    handle = net.first.register_forward_hook(lambda m, i, o: o + shift)
    torch.testing.assert_close(_hidden(net, x), h @ q.T, rtol=1e-12, atol=1e-12)
    handle.remove()
    handle = net.first.register_forward_hook(lambda m, i, o: -o)  # φ(−z) = −φ(z)
    torch.testing.assert_close(_hidden(net, x), -h, rtol=1e-12, atol=1e-12)
    handle.remove()


@pytest.mark.parametrize("name", ["g4-tanh-inv", "g4-tanh-invr", "g1-tanh-inv",
                                  "gall-tanh-invr", "g4-tanh-inv-rms"])
def test_invariant_channels_commute_with_block_rotations_and_break_oddness(name):
    torch.manual_seed(2)
    net = study.build(name, [7, 12, 3]).double()
    size = 12 if name.startswith("gall") else int(name.split("-")[0][1:])
    n_groups = 12 // size
    assert net.last.in_features == 12 + n_groups
    x = 2 * torch.randn(16, 7, dtype=torch.float64)
    z = net.first(x)
    blocks = [torch.linalg.qr(torch.randn(size, size, dtype=torch.float64))[0]
              for _ in range(n_groups)]
    q = torch.block_diag(*blocks)  # one rotation per group
    shift = z @ q.T - z
    h = _hidden(net, x)  # (16, 12 + G): the rotating coordinates, then the invariants
    handle = net.first.register_forward_hook(lambda m, i, o: o + shift)
    rotated = _hidden(net, x)
    handle.remove()
    torch.testing.assert_close(rotated[:, :12], h[:, :12] @ q.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rotated[:, 12:], h[:, 12:], rtol=1e-12, atol=1e-12)  # unmoved
    handle = net.first.register_forward_hook(lambda m, i, o: -o)
    flipped = _hidden(net, x)
    handle.remove()
    torch.testing.assert_close(flipped[:, :12], -h[:, :12], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(flipped[:, 12:], h[:, 12:], rtol=0, atol=0)  # even, not odd
    assert h[:, 12:].abs().min() > 1e-3  # so φ(−z) ≠ −φ(z)
    # at initialisation (zero biases) the plain grouped network is odd in x; this one is not
    plain = study.build(name.split("-inv")[0], [7, 12, 3]).double()
    torch.testing.assert_close(plain(-x), -plain(x), rtol=1e-12, atol=1e-12)
    assert (net(-x) + net(x)).abs().max() > 1e-2


def test_bad_model_names_are_refused_with_the_choices():
    with pytest.raises(SystemExit, match="PROFILE one of"):
        study.build("g5-tanh", [4, 8, 2])
    with pytest.raises(SystemExit, match="gS-PROFILE"):
        study.build("swish", [4, 8, 2])
    with pytest.raises(SystemExit, match="grouped only"):
        study.build("tanh-inv", [4, 8, 2])
    with pytest.raises(SystemExit, match="gS-PROFILE"):
        study.build("g8-inv", [4, 8, 2])


def test_quick_run_writes_results(tmp_path):
    res = study.main(["--quick", "--models", "tanh,g4-tanh-rms,g4-tanh-inv", "--out",
                      str(tmp_path)])
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert set(on_disk["models"]) == {"tanh", "g4-tanh-rms", "g4-tanh-inv"} == set(res["models"])
    for cell in res["models"].values():
        assert cell["test_pct"]["n"] == 2 and cell["lr"] in (1e-3, 3e-3)
    assert "| g4-tanh-rms |" in (tmp_path / "table.md").read_text()


class _SingleLayer(nn.Module):
    """The one-hidden-layer module as it was before ``--depth``: the reference that depth 1 must
    reproduce bit for bit (same draws, same forward, same parameter order)."""

    def __init__(self, widths, act, group, norm, invariant=None):
        super().__init__()
        n_in, n, n_out = widths
        extra = n // group if invariant is not None else 0
        self.first, self.last = nn.Linear(n_in, n), nn.Linear(n + extra, n_out)
        for lin in (self.first, self.last):
            nn.init.orthogonal_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.ln = nn.LayerNorm(n) if norm == "ln" else None
        self.act, self.group, self.norm, self.invariant = act, group, norm, invariant
        self.widths = list(widths)

    def forward(self, x):
        z = self.first(x)
        if self.ln is not None:
            z = self.ln(z)
        elif self.norm == "rms":
            z = study.rms_normalise(z)
        if self.group is None:
            h = study.ELEMENTWISE[self.act](z)
        else:
            zg = z.view(z.shape[0], -1, self.group)
            r = zg.norm(dim=2, keepdim=True).clamp_min(1e-12)
            h = (study.PROFILES[self.act](r) / r * zg).reshape(z.shape)
            if self.invariant is not None:
                h = torch.cat([h, study.INVARIANTS[self.invariant](r.squeeze(2))], dim=1)
        return self.last(h)


@pytest.mark.parametrize("name, args", [
    ("tanh", ("tanh", None, None)), ("gelu-ln", ("gelu", None, "ln")),
    ("gelu-rms", ("gelu", None, "rms")), ("g4-softplus", ("softplus", 4, None)),
    ("g4-tanh-inv", ("tanh", 4, None, "inv")), ("g4-tanh-invr-rms", ("tanh", 4, "rms", "invr")),
    ("gall-tanh-invr", ("tanh", 12, None, "invr"))])
def test_depth_one_is_the_single_layer_module_bit_for_bit(name, args):
    widths = [7, 12, 3]
    torch.manual_seed(5)
    net = study.build(name, widths)
    torch.manual_seed(5)
    ref = _SingleLayer(widths, *args)
    assert len(net.middle) == 0
    got, want = list(net.parameters()), list(ref.parameters())
    assert [p.shape for p in got] == [p.shape for p in want]
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    gen = torch.Generator().manual_seed(6)
    x = [torch.randn(n, 7, generator=gen) for n in (200, 40, 40)]
    y = [torch.randint(0, 3, (n,), generator=gen) for n in (200, 40, 40)]
    data = dict(zip(("train", "val", "test"), zip(x, y)))
    with torch.no_grad():
        for b in (net.first.bias, ref.first.bias):
            b.copy_(torch.linspace(-1, 1, 12))  # away from zero: the oddness-sensitive path too
    assert torch.equal(net(x[0]), ref(x[0]))
    res_net = study.train(net, data, 2, 3e-3, 0)
    res_ref = study.train(ref, data, 2, 3e-3, 0)
    assert res_net == res_ref
    for a, b in zip(net.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def _block_rotation(size, n_groups, extra):
    """A random rotation per group of ``size``, then ``extra`` invariant coordinates fixed."""
    blocks = [torch.linalg.qr(torch.randn(size, size, dtype=torch.float64))[0]
              for _ in range(n_groups)]
    return torch.block_diag(*blocks), torch.block_diag(*blocks, torch.eye(extra,
                                                                          dtype=torch.float64))


@pytest.mark.parametrize("name", ["g4-tanh-inv", "g4-tanh-invr", "g4-tanh-invr-rms",
                                  "gall-tanh-inv", "g4-tanh"])
def test_depth_two_commutes_with_per_layer_group_rotations_and_invariants_break_oddness(name):
    torch.manual_seed(3)
    widths = [7, 12, 12, 3]
    net = study.build(name, widths).double()
    size = 12 if name.startswith("gall") else 4
    n_groups = 12 // size
    extra = n_groups if "-inv" in name else 0
    assert len(net.middle) == 1
    assert net.middle[0].in_features == net.last.in_features == 12 + extra
    x = 2 * torch.randn(16, 7, dtype=torch.float64)
    # at initialisation (zero biases): odd without invariants, not odd with them
    h1, h2 = net.hidden(x)
    f1, f2 = net.hidden(-x)
    torch.testing.assert_close(f1[:, :12], -h1[:, :12], rtol=1e-12, atol=1e-12)
    if extra:
        torch.testing.assert_close(f1[:, 12:], h1[:, 12:], rtol=0, atol=0)
        assert (net(-x) + net(x)).abs().max() > 1e-2
        assert (f2[:, :12] + h2[:, :12]).abs().max() > 1e-2  # layer 2 sees the even part
    else:
        torch.testing.assert_close(net(-x), -net(x), rtol=1e-12, atol=1e-12)
    # independent rotations Q_1, Q_2 per group of each layer, applied to the weights that write
    # (rows) and read (columns) each layer; the invariant coordinates are read unrotated
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))  # nonzero biases: not only the initial point
    h1, h2 = net.hidden(x)
    out = net(x)
    q1, p1 = _block_rotation(size, n_groups, extra)
    q2, p2 = _block_rotation(size, n_groups, extra)
    with torch.no_grad():
        net.first.weight.copy_(q1 @ net.first.weight)
        net.first.bias.copy_(q1 @ net.first.bias)
        net.middle[0].weight.copy_(q2 @ net.middle[0].weight @ p1.T)
        net.middle[0].bias.copy_(q2 @ net.middle[0].bias)
        net.last.weight.copy_(net.last.weight @ p2.T)
    g1, g2 = net.hidden(x)
    torch.testing.assert_close(g1, h1 @ p1.T, rtol=1e-12, atol=1e-12)  # Q_1 φ(z_1), ρ unmoved
    torch.testing.assert_close(g2, h2 @ p2.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(net(x), out, rtol=1e-12, atol=1e-12)
    assert (g1 - h1).abs().max() > 1e-2  # the rotations moved the hidden coordinates


def test_hidden_layers_of_different_widths_are_refused():
    with pytest.raises(ValueError, match="one width"):
        study.build("tanh", [4, 8, 6, 2])


def test_quick_run_at_depth_two(tmp_path):
    res = study.main(["--quick", "--depth", "2", "--models", "gelu-ln,g4-tanh-invr", "--out",
                      str(tmp_path)])
    assert res["config"]["depth"] == 2
    assert set(res["models"]) == {"gelu-ln", "g4-tanh-invr"}
    assert "2 hidden layers of 16" in (tmp_path / "table.md").read_text()
