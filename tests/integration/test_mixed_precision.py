"""Every operation on bfloat16 and float16 networks, and on float32 networks inside
``torch.autocast("cpu", dtype=torch.bfloat16)`` (issue 13).

For each operation and each of the three settings:

* every parameter and every optimizer-state tensor keeps its dtype (AdamW: ``exp_avg`` and
  ``exp_avg_sq`` in the parameter's dtype, ``step`` a float32 scalar);
* the function changes by at most the documented error of that operation in that dtype
  (the table of docs/operations.md, read from the file, times :data:`MARGIN`); an operation called
  inside autocast is held to the float32 column, measured outside autocast: autocast must not
  lower the precision of a structural change;
* a fault in the middle of the change (a step that raises after the first one has run), or a NaN
  in an optimizer-state tensor (refused before anything changes), leaves every parameter, gradient,
  optimizer-state tensor and intrinsic length bit-identical;
* the next training step works.

The networks are those of ``examples/error_table.py`` (random 12-10-9-8-6-4 isotropic MLPs with
non-zero biases, ψ and intrinsic lengths), after one AdamW step so that optimizer state exists.
float16 training uses ``eps=1e-4``: PyTorch's default 1e-8 is 0 in float16, and Adam's first step
then divides 0 by 0 (a property of float16 Adam, not of isoplastic).
"""

from __future__ import annotations

import contextlib
import copy
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import isoplastic as ip
from isoplastic.core.change import Change
from isoplastic.testing import random_isotropic_mlp, relative_change

WIDTHS = [12, 10, 9, 8, 6, 4]
#: The tests' networks differ from the table's by one AdamW step; each measured error may exceed
#: the table's maximum over 20 networks by at most this factor.
MARGIN = 2.0
MODES = {  # name: (parameter dtype, run the operation and the forward pass inside autocast)
    "bfloat16": (torch.bfloat16, False),
    "float16": (torch.float16, False),
    "float32-autocast": (torch.float32, True),
}


def documented_errors() -> dict[str, dict[str, float]]:
    """The measured-error table of docs/operations.md: operation -> dtype name -> error."""
    text = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    header = re.search(r"^\| operation \| (float64 \| float32 \| bfloat16 \| float16) \|$", text,
                       re.M)
    assert header, "docs/operations.md has no float64/float32/bfloat16/float16 error table"
    dtypes = [d.strip() for d in header.group(1).split("|")]
    table = {}
    for line in text[header.end():].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        table[cells[0]] = {d: float(v) for d, v in zip(dtypes, cells[1:])}
    return table


TABLE = documented_errors()


def silence(net, opt, k: int = 2) -> None:
    """A σ = 0 neuron in hidden layer ``k`` (as isoplastic.testing.silence_last_neuron, with the
    optimizer): left-diagonalise, zero the weakest row and the ψ entries of zero rows, bias 0.7."""
    ip.left_diagonalise(net, k, optimizer=opt)
    with torch.no_grad():
        w = net.linears[k].weight
        w[-1] = 0
        net.linears[k].bias[-1] = 0.7
        net.psi[k - 1][w.float().norm(dim=1) == 0] = 0


def rotation(n: int, dtype: torch.dtype) -> torch.Tensor:
    r_dtype = dtype if dtype in (torch.float64, torch.float32) else torch.float32
    return ip.random_orthogonal(n, generator=torch.Generator().manual_seed(5), dtype=r_dtype)


# name: (preparation or None, operation, row of the documented table or None)
OPERATIONS = {
    "reparameterise": (None, lambda n, o: ip.reparameterise(
        n, 1, rotation(9, n.linears[0].weight.dtype), optimizer=o), "reparameterise"),
    "left_diagonalise": (None, lambda n, o: ip.left_diagonalise(n, 2, optimizer=o),
                         "left_diagonalise"),
    "full_diagonalise": (None, lambda n, o: ip.full_diagonalise(n, 2, optimizer=o),
                         "full_diagonalise"),
    "neurogenesis": (None, lambda n, o: ip.neurogenesis(
        n, 1, 3, optimizer=o, init_scale=0.1, generator=torch.Generator().manual_seed(3)),
        "neurogenesis"),
    "sparsify": (None, lambda n, o: ip.sparsify(n, optimizer=o), "sparsify"),
    "neurodegeneration": (silence, lambda n, o: ip.neurodegeneration(n, 2, 1, optimizer=o),
                          "neurodegeneration (σ = 0)"),
    "neuroadapt": (None, lambda n, o: ip.neuroadapt(n, scaffold=2, threshold=0.1, optimizer=o),
                   None),
}


def context(mode: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if MODES[mode][1] else contextlib.nullcontext()


def setup(mode: str, op: str, seed: int = 0):
    dtype = MODES[mode][0]
    net = random_isotropic_mlp(WIDTHS, "trainable", "trainable+decay", seed=seed, dtype=dtype)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, eps=1e-4 if dtype == torch.float16 else 1e-8)
    gen = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(64, WIDTHS[0], generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randint(0, WIDTHS[-1], (64,), generator=gen)
    train_step(mode, net, opt, x, y)
    prep = OPERATIONS[op][0]
    if prep is not None:
        with context(mode):
            prep(net, opt)
    return net, opt, x, y


def train_step(mode, net, opt, x, y) -> float:
    opt.zero_grad()
    with context(mode):
        loss = F.cross_entropy(net(x).float(), y) + net.psi_penalty().float()
    loss.backward()
    opt.step()
    return loss.item()


def dtypes(net, opt) -> dict[str, torch.dtype]:
    """Every parameter's dtype and every optimizer-state tensor's, by parameter name and key."""
    names = {id(p): n for n, p in net.named_parameters()}
    out = {n: p.dtype for n, p in net.named_parameters()}
    for p, state in opt.state.items():
        out.update({f"{names[id(p)]}:{k}": v.dtype for k, v in state.items()
                    if isinstance(v, torch.Tensor)})
    return out


def snapshot(net, opt) -> dict[str, torch.Tensor | float]:
    """Copies of every parameter, buffer, gradient, optimizer-state tensor and intrinsic length."""
    names = {id(p): n for n, p in net.named_parameters()}
    snap: dict[str, torch.Tensor | float] = {}
    for n, t in net.state_dict().items():
        snap[n] = t.detach().clone()
    for n, p in net.named_parameters():
        snap[f"{n}.grad"] = None if p.grad is None else p.grad.clone()
    for p, state in opt.state.items():
        for k, v in state.items():
            snap[f"{names[id(p)]}:{k}"] = v.clone() if isinstance(v, torch.Tensor) else v
    for i, act in enumerate(net.activations):
        snap[f"o{i}"] = act.o
    return snap


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        u, v = a[key], b[key]
        if isinstance(u, torch.Tensor):
            assert isinstance(v, torch.Tensor) and u.dtype == v.dtype and u.shape == v.shape, key
            assert torch.equal(bits(u), bits(v)), key
        else:
            assert u == v or (u != u and v != v), key


@pytest.mark.parametrize("op", list(OPERATIONS))
@pytest.mark.parametrize("mode", list(MODES))
def test_dtypes_kept_error_within_table_and_training_goes_on(mode, op):
    net, opt, x, y = setup(mode, op)
    dtype = MODES[mode][0]
    kinds = dtypes(net, opt)
    assert {d for n, d in kinds.items() if ":" not in n} == {dtype}
    before = copy.deepcopy(net)
    reference = copy.deepcopy(net).double()  # the same operation in float64 (for neuroadapt)
    _, operation, row = OPERATIONS[op]
    with context(mode):
        operation(net, opt)
    assert dtypes(net, opt) == {k: v for k, v in kinds.items() if k in dtypes(net, opt)}
    assert dtypes(net, opt).keys() == kinds.keys()

    with torch.no_grad():
        err = relative_change(before(x), net(x))  # outside autocast: the network's own dtype
    column = "float32" if MODES[mode][1] else str(dtype).removeprefix("torch.")
    if row is not None:
        assert err <= MARGIN * TABLE[row][column], (err, TABLE[row][column])
    else:  # neuroadapt removes non-silent neurons: compare with the same pass in float64
        operation(reference, None)
        x64 = x.double()
        with torch.no_grad():
            assert [lin.weight.shape for lin in reference.linears] == \
                [lin.weight.shape for lin in net.linears]
            apart_before = relative_change(copy.deepcopy(before).double()(x64), before(x).double())
            apart_after = relative_change(reference(x64), net(x).double())
        worst = max(TABLE[r][column] for r in TABLE)
        assert apart_after <= 2 * apart_before + MARGIN * worst, (apart_before, apart_after)

    loss = train_step(mode, net, opt, x, y)
    assert loss == loss and all(bool(torch.isfinite(p).all()) for p in net.parameters())
    assert dtypes(net, opt) == {k: v for k, v in kinds.items() if k in dtypes(net, opt)}


class InjectedFault(RuntimeError):
    pass


@pytest.mark.parametrize("op", list(OPERATIONS))
@pytest.mark.parametrize("mode", list(MODES))
def test_a_fault_mid_change_leaves_everything_bit_identical(mode, op, monkeypatch):
    """Every change raises right after its first step has run: the journal must restore it all."""
    net, opt, x, y = setup(mode, op)
    original = Change._run
    ran: list[object] = []

    def run_then_fail(self, step):
        original(self, step)
        ran.append(step)
        raise InjectedFault("injected after the first step")

    monkeypatch.setattr(Change, "_run", run_then_fail)
    before = snapshot(net, opt)
    with context(mode), pytest.raises(InjectedFault):
        OPERATIONS[op][1](net, opt)
    assert ran, "the fault was never reached: nothing was half-done"
    assert_bit_identical(before, snapshot(net, opt))
    monkeypatch.setattr(Change, "_run", original)
    with context(mode):
        OPERATIONS[op][1](net, opt)  # with the fault gone the same change goes through
    train_step(mode, net, opt, x, y)


@pytest.mark.parametrize("op", list(OPERATIONS))
@pytest.mark.parametrize("mode", list(MODES))
def test_nan_in_optimizer_state_is_refused_and_nothing_changes(mode, op):
    net, opt, x, y = setup(mode, op)
    state = opt.state[net.linears[2].weight]["exp_avg_sq"]  # touched by every operation above
    saved = state[0, 0].clone()
    state[0, 0] = float("nan")
    before = snapshot(net, opt)
    with context(mode), pytest.raises(ip.NonFiniteError, match="exp_avg_sq"):
        OPERATIONS[op][1](net, opt)
    assert_bit_identical(before, snapshot(net, opt))
    state[0, 0] = saved
    with context(mode):
        OPERATIONS[op][1](net, opt)
    train_step(mode, net, opt, x, y)
