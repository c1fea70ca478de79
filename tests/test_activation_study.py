"""scripts/activation_study.py: its modules are what its docstring says (groups of one neuron with
the tanh profile are element-wise tanh; grouped isotropic layers and the RMS normaliser commute
with the rotations of their symmetry group; every isotropic profile is odd; an invariant channel
keeps the per-group equivariance and breaks the oddness), and it runs."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest
import torch

SCRIPT = pathlib.Path(__file__).parents[1] / "scripts" / "activation_study.py"
spec = importlib.util.spec_from_file_location("activation_study", SCRIPT)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


def _hidden(net, x):
    """The hidden activation of a :class:`OneLayer` (the read-out replaced by the identity)."""
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
