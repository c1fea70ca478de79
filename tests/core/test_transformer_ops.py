"""Every operation on the residual isotropic models of issue 14, in float64, with hypothesis.

Two architectures (docs/transformers.md): :class:`~isoplastic.IsotropicTransformer` (hidden spaces
``"blocks.l.ffn.0"``, token batches ``(B, T)``) and :class:`~isoplastic.IsotropicResidualMLP`
(branches with one or two inner spaces, ``"blocks.i.k"``, flat inputs). Every parameter is random
and non-zero (biases, ψ, ``o``, the normalisers' gains, attention maps, embeddings), the ψ and
intrinsic-length modes are drawn, and the user's optimizer (AdamW with amsgrad, or SGD with
Nesterov momentum) holds state from two training steps.

* Each per-space operation of tests/core/test_composite_models.py (reparameterise with a random
  orthogonal ``R``, left and full diagonalisation, neurogenesis, set_width, exact removals of
  silenced neurons) runs on every name through the same checker: logits unchanged to 1e-10
  (relative), the optimizer's state equal to the dense reference of the rotation, everything
  outside the owning block bit-identical, a training step afterwards works.
* sparsify and compile_sparse are exact; neuroadapt with silenced neurons is exact.
* neurodegeneration of live neurons (σ > 0) stays within the library's predicted bound at the
  branch output, per token, in every ψ / intrinsic-length mode.
* Causality holds before and after structural changes.
* The residual stream of a transformer (:meth:`~isoplastic.IsotropicTransformer.stream_space`):
  rotations and zero-coordinate growth are exact.
* float32: the same operations' errors are recorded (``record_property``); growth stays below the
  issue's ``ε_scaled ≤ 1e-4 %``.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from composites import fill_optimizer, make_optimizer, silence, training_step_works
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_composite_models import PER_NAME_OPS, check_op_on_every_name, dense_transport
from torch import Tensor, nn

import isoplastic as ip
from isoplastic.core import optim_state as ostate
from isoplastic.export import compile_sparse
from isoplastic.testing import FLOAT_TOLERANCE, assert_function_preserved, relative_change
from isoplastic.testing.strategies import INTRINSIC_LENGTH_MODES, PSI_MODES

DT = torch.float64
EXACT = FLOAT_TOLERANCE[DT]
N_EXAMPLES = 4


# -- models with probes -------------------------------------------------------------------------------
@torch.no_grad()
def randomise(model: nn.Module, gen: torch.Generator) -> None:
    """Random non-zero values for every parameter: weights ``~ N(0, 1.5²/fan_in)``, biases and ψ
    ``~ N(0, 0.5²)``, embeddings ``~ N(0, 1)``, normaliser gains in ``[0.5, 2]``, ``o`` in
    ``[0.05, 1]``."""
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen, dtype=DT)
                             * (1.5 / math.sqrt(mod.weight.shape[1])))
            mod.bias.copy_(0.5 * torch.randn(mod.bias.shape, generator=gen, dtype=DT))
        elif isinstance(mod, nn.Embedding):
            mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen, dtype=DT))
        elif isinstance(mod, ip.IsotropicNorm):
            mod.gain.fill_(0.5 + 1.5 * float(torch.rand((), generator=gen, dtype=DT)))
        elif isinstance(mod, ip.IsotropicFFN):
            for p in mod.psi:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=DT))
            for act in mod.activations:
                if act.mode.value != "none":
                    act.o = 0.05 + 0.95 * float(torch.rand((), generator=gen, dtype=DT))


class Transformer(ip.IsotropicTransformer):
    """The library's transformer with a probe batch of tokens and random parameters."""

    def __init__(self, *args, seed: int = 0, dtype: torch.dtype = DT, **kw) -> None:
        super().__init__(*args, dtype=DT, **kw)
        randomise(self, torch.Generator().manual_seed(seed))
        self.to(dtype)

    def probe(self, batch: int = 3, seed: int = 99) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randint(0, self.vocab_size, (batch, self.context_length), generator=gen)


class ResidualMLP(ip.IsotropicResidualMLP):
    """The library's residual MLP with a probe batch and random parameters."""

    def __init__(self, *args, seed: int = 0, dtype: torch.dtype = DT, **kw) -> None:
        super().__init__(*args, **kw)
        self.to(DT)
        randomise(self, torch.Generator().manual_seed(seed))
        self.to(dtype)

    def probe(self, batch: int = 10, seed: int = 99) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(batch, self.inp.in_features, generator=gen, dtype=DT).to(
            self.inp.weight.dtype)


@st.composite
def transformers(draw, dtype: torch.dtype = DT) -> Transformer:
    n_layers = draw(st.integers(1, 2))
    n_heads = draw(st.integers(1, 3))
    return Transformer(
        draw(st.integers(2, 9)), draw(st.integers(2, 6)), n_layers, n_heads,
        [draw(st.integers(1, 9)) for _ in range(n_layers)], draw(st.integers(1, 5)),
        head_dim=draw(st.integers(1, 3)), psi=draw(st.sampled_from(PSI_MODES)),
        intrinsic_length=draw(st.sampled_from(INTRINSIC_LENGTH_MODES)),
        seed=draw(st.integers(0, 2**20)), dtype=dtype)


@st.composite
def residual_mlps(draw, dtype: torch.dtype = DT) -> ResidualMLP:
    hidden = [draw(st.lists(st.integers(1, 6), min_size=1, max_size=2))
              for _ in range(draw(st.integers(1, 3)))]
    return ResidualMLP(
        draw(st.integers(1, 5)), draw(st.integers(2, 5)), hidden, draw(st.integers(1, 4)),
        psi=draw(st.sampled_from(PSI_MODES)),
        intrinsic_length=draw(st.sampled_from(INTRINSIC_LENGTH_MODES)),
        seed=draw(st.integers(0, 2**20)), dtype=dtype)


def fixed_transformer(dtype: torch.dtype = DT, psi: str = "trainable",
                      intrinsic_length: str = "trainable", seed: int = 4) -> Transformer:
    return Transformer(11, 6, 2, 2, [9, 4], 5, psi=psi, intrinsic_length=intrinsic_length,
                       seed=seed, dtype=dtype)


def fixed_residual_mlp(dtype: torch.dtype = DT, seed: int = 6) -> ResidualMLP:
    return ResidualMLP(4, 5, [[7, 6], [3], [6, 8, 5]], 3, psi="trainable", seed=seed, dtype=dtype)


ARCHS = {"transformer": transformers, "residual_mlp": residual_mlps}


# -- every per-space operation, through the composite-model checker ----------------------------------
@pytest.mark.parametrize("op", PER_NAME_OPS)
@pytest.mark.parametrize("arch", list(ARCHS))
@settings(max_examples=N_EXAMPLES)
@given(data=st.data(), opt_kind=st.sampled_from(["adamw", "sgd"]), seed=st.integers(0, 2**20))
def test_every_operation_on_every_space_is_exact(arch, op, data, opt_kind, seed):
    model = data.draw(ARCHS[arch]())
    ran = check_op_on_every_name(model, op, opt_kind, seed)
    if op not in ("full_diagonalise", "neurodegeneration", "remove_neurons"):
        assert ran == len(ip.hidden_spaces(model))


@pytest.mark.parametrize("op", ["full_diagonalise", "neurodegeneration", "remove_neurons"])
def test_conditional_operations_run_on_the_fixed_models(op):
    """Full diagonalisation applies between two inner spaces of one branch (3 such maps in the
    fixed residual MLP, none in a one-space FFN); removals run in every space."""
    model = fixed_residual_mlp()
    expected = 3 if op == "full_diagonalise" else len(ip.hidden_spaces(model))
    assert check_op_on_every_name(model, op, "sgd", 0) == expected
    tf = fixed_transformer()
    if op == "full_diagonalise":
        assert not any(s.block.can_full_diagonalise(s.index)
                       for s in ip.hidden_spaces(tf).values())
    else:
        assert check_op_on_every_name(tf, op, "adamw", 0) == 2


@pytest.mark.parametrize("arch", list(ARCHS))
@settings(max_examples=N_EXAMPLES)
@given(data=st.data(), opt_kind=st.sampled_from(["adamw", "sgd"]))
def test_sparsify_and_compile_sparse_are_exact(arch, data, opt_kind):
    model = data.draw(ARCHS[arch]())
    x = model.probe()
    opt = make_optimizer(model, opt_kind)
    fill_optimizer(model, opt, x)
    widths = [s.size for s in ip.hidden_spaces(model).values()]
    report = assert_function_preserved(lambda m: ip.sparsify(m, optimizer=opt), model, x, opt,
                                       tol=EXACT)
    assert [s.size for s in ip.hidden_spaces(model).values()] == widths
    for name in report.layers:
        space = ip.hidden_spaces(model)[name]
        w = space.block.hidden_layer(space.index).incoming_matrix()
        assert torch.count_nonzero(w) <= min(w.shape), f"{name} not diagonal"
    sparse = compile_sparse(model)
    with torch.no_grad():
        assert relative_change(model.eval()(x), sparse(x)) <= EXACT
    training_step_works(model.train(), opt, x)


def test_compile_sparse_keeps_the_residual_and_the_normaliser():
    """A bare branch compiles to ``x + chain(n(x))`` (not to its inner chain alone), for any
    leading shape of ``x``."""
    ffn = ip.IsotropicFFN(5, [6, 7], psi="trainable").double()
    randomise(ffn, torch.Generator().manual_seed(3))
    ip.sparsify(ffn)
    sparse = compile_sparse(ffn)
    x = torch.randn(2, 3, 5, dtype=DT)
    assert relative_change(ffn(x), sparse(x)) <= EXACT
    assert torch.count_nonzero(sparse.inner.w1) == 6  # the diagonal of the 7×6 map


@pytest.mark.parametrize("arch", list(ARCHS))
@settings(max_examples=N_EXAMPLES)
@given(data=st.data(), opt_kind=st.sampled_from(["adamw", "sgd"]))
def test_neuroadapt_with_silenced_neurons_is_exact(arch, data, opt_kind):
    """0–2 silenced (exactly removable) neurons per space; with ``τ`` below every live singular
    value and ``S = 1`` neuroadapt grows or removes to one scaffold neuron per space, exactly."""
    model = data.draw(ARCHS[arch]())
    x = model.probe()
    opt = make_optimizer(model, opt_kind)
    fill_optimizer(model, opt, x)
    zeros = {}
    for name, space in ip.hidden_spaces(model).items():
        extra = data.draw(st.integers(0, min(2, space.size - 1)))
        zeros[name] = len(silence(model, name, opt, extra=extra).zero_rows)
    spaces = ip.hidden_spaces(model)
    for name, space in spaces.items():  # see test_composite_models: rank loss in the next space
        nxt = [n for n, s in spaces.items() if s.block is space.block and s.index == space.index + 1]
        if zeros[name] >= 2 and nxt:
            assume(spaces[nxt[0]].size - zeros[nxt[0]] <= space.size - zeros[name] + 1)
    changes = assert_function_preserved(lambda m: ip.neuroadapt(m, 1, 1e-9, optimizer=opt),
                                        model, x, opt, tol=EXACT)
    assert {c.space for c in changes} <= set(spaces)
    for name in ip.hidden_spaces(model):
        assert int((ip.singular_values(model, name) <= 1e-9).sum()) == 1, name
    training_step_works(model, opt, x)


# -- removals of live neurons: within the predicted bound -------------------------------------------
U64 = 2.0 ** -53


def branch_inputs(model: nn.Module, ffn: ip.IsotropicFFN, x: Tensor) -> Tensor:
    """The residual stream entering ``ffn`` when ``model`` runs on ``x``, ``(N, d)``."""
    seen: list[Tensor] = []
    handle = ffn.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        handle.remove()
    return seen[0].reshape(-1, seen[0].shape[-1])


def next_and_prev(ffn: ip.IsotropicFFN, k: int, a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(z_{k+1}, h_{k-1}, z_k)`` per position: the pre-activation after space ``k`` (the branch
    output for the last), its input (``n(a)`` for ``k = 0``) and space ``k``'s pre-activation."""
    with torch.no_grad():
        t = ffn.trace(a)
    nxt = t["branch"] if k + 1 >= ffn.n_hidden else t["pre"][k + 1]
    prev = t["input"] if k == 0 else t["post"][k - 1]
    return nxt, prev, t["pre"][k]


@pytest.mark.parametrize("arch", list(ARCHS))
@settings(max_examples=3 * N_EXAMPLES)
@given(data=st.data(), n=st.integers(1, 3), criterion=st.sampled_from(["singular_value", "impact"]))
def test_neurodegeneration_of_live_neurons_is_within_the_predicted_bound(arch, data, n,
                                                                          criterion):
    """``‖Δz_{k+1}‖ ≤ predicted_bound·‖h_{k-1}‖ + predicted_offset + τ`` for every position,
    with the branch's input (the residual stream) held fixed; ``τ`` is the round-off allowance
    of tests/reliability/fuzzlib.py. Every ψ and intrinsic-length mode."""
    model = data.draw(ARCHS[arch]())
    x = model.probe()
    opt = make_optimizer(model, "adamw")
    fill_optimizer(model, opt, x)
    for name, space in ip.hidden_spaces(model).items():
        if space.size <= n:
            continue
        ffn, k = space.block, space.index
        a = branch_inputs(model, ffn, x)
        before = copy.deepcopy(ffn)
        nxt0, prev, zk = next_and_prev(before, k, a)
        change = ip.neurodegeneration(model, name, n, optimizer=opt, criterion=criterion)
        nxt1, _, _ = next_and_prev(ffn, k, a)
        layer = before.hidden_layer(k)
        w_in, w_out = layer.incoming_matrix(), layer.outgoing
        norm_in = float(torch.linalg.matrix_norm(w_in, ord=2))
        norm_out = float(torch.linalg.matrix_norm(w_out, ord=2))
        size = max(*w_in.shape, *w_out.shape)
        tau = 1e3 * size * U64 * (1 + norm_out) * (
            1 + norm_in * prev.norm(dim=1) + zk.norm(dim=1) + nxt0.norm(dim=1))
        allowed = change.predicted_bound * prev.norm(dim=1) + change.predicted_offset + tau
        measured = (nxt1 - nxt0).norm(dim=1)
        worst = int(torch.argmax(measured - allowed))
        assert bool((measured <= allowed).all()), (
            f"{name}: change {float(measured[worst]):.3e} > allowed {float(allowed[worst]):.3e} "
            f"at position {worst} (bound {change.predicted_bound:.3e}, offset "
            f"{change.predicted_offset:.3e})")


def test_the_removal_bound_is_not_vacuous_in_a_transformer():
    """One live neuron removed from a trained-looking FFN: the bound holds and is reached within
    a factor 100 on the worst token (a bound ignoring σ or 100× too small would fail)."""
    model = fixed_transformer(psi="trainable", intrinsic_length="constant")
    x = model.probe(batch=8)
    ffn = model.blocks[1].ffn
    a = branch_inputs(model, ffn, x)
    ip.left_diagonalise(model, "blocks.1.ffn.0")
    before = copy.deepcopy(ffn)
    change = ip.neurodegeneration(model, "blocks.1.ffn.0", 1)
    assert change.removed_singular_values[0] > 0.05
    nxt0, prev, _ = next_and_prev(before, 0, a)
    nxt1, _, _ = next_and_prev(ffn, 0, a)
    allowed = change.predicted_bound * prev.norm(dim=1) + change.predicted_offset
    ratio = (nxt1 - nxt0).norm(dim=1) / allowed
    assert float(ratio.max()) <= 1.0
    assert float(ratio.max()) >= 1e-2


# -- causality, before and after changes -------------------------------------------------------------
def assert_causal(model: ip.IsotropicTransformer, tokens: Tensor, gen: torch.Generator) -> None:
    with torch.no_grad():
        base = model.eval()(tokens)
        t_len = tokens.shape[1]
        for t in range(t_len):
            changed = tokens.clone()
            shift = torch.randint(1, model.vocab_size, (tokens.shape[0], t_len - t), generator=gen)
            changed[:, t:] = (changed[:, t:] + shift) % model.vocab_size
            assert torch.equal(model(changed)[:, :t], base[:, :t]), f"logits before {t} changed"


@settings(max_examples=N_EXAMPLES)
@given(model=transformers(), seed=st.integers(0, 2**20))
def test_causality_holds_before_and_after_structural_changes(model, seed):
    assume(model.vocab_size >= 2)
    gen = torch.Generator().manual_seed(seed)
    tokens = model.probe()
    assert_causal(model, tokens, gen)
    for name, space in ip.hidden_spaces(model).items():
        ip.reparameterise(model, name, ip.random_orthogonal(space.size, generator=gen, dtype=DT))
        ip.neurogenesis(model, name, 2, generator=gen)
        ip.neurodegeneration(model, name, 1)
    ip.neuroadapt(model, 2, 0.5, generator=gen)
    ip.sparsify(model)
    model.stream_space().insert(2)
    assert_causal(model, tokens, gen)


# -- the residual stream -----------------------------------------------------------------------------
@settings(max_examples=N_EXAMPLES)
@given(model=transformers(), opt_kind=st.sampled_from(["adamw", "sgd"]), seed=st.integers(0, 2**20))
def test_residual_stream_rotation_is_exact_and_transports_the_optimizer(model, opt_kind, seed):
    x = model.probe()
    opt = make_optimizer(model, opt_kind)
    fill_optimizer(model, opt, x)
    space = model.stream_space()
    r = ip.random_orthogonal(space.size, generator=torch.Generator().manual_seed(seed), dtype=DT)
    axes = [(a.param, a.dim) for a in space.axes]
    before = {id(p): (p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()
                                           if isinstance(v, Tensor)}) for p, _ in axes}
    assert_function_preserved(lambda m: m.stream_space().rotate(r, opt), model, x, opt, tol=EXACT)
    for p, dim in axes:
        data, state = before[id(p)]
        assert torch.allclose(p.detach(), dense_transport(data, dim, r), rtol=0, atol=1e-12)
        for key, value in state.items():
            kind = ostate.STATE_KINDS[key]
            if kind != ostate.KEEP:
                ref = dense_transport(value, dim, r, second=kind == ostate.SECOND)
                assert torch.allclose(opt.state[p][key], ref, rtol=0, atol=1e-12), key
    training_step_works(model, opt, x)


@settings(max_examples=N_EXAMPLES)
@given(model=transformers(), opt_kind=st.sampled_from(["adamw", "sgd"]), n=st.integers(1, 4))
def test_residual_stream_growth_is_exact(model, opt_kind, n):
    """New stream coordinates are written zero by every writer, so they stay zero; the
    normaliser divides by the norm (not the RMS), which they do not change. The readers may be
    anything: here random."""
    x = model.probe()
    opt = make_optimizer(model, opt_kind)
    fill_optimizer(model, opt, x)
    d = model.d_model
    gen = torch.Generator().manual_seed(n)
    init = {"outgoing": lambda shape: torch.randn(shape, generator=gen, dtype=DT)}
    assert_function_preserved(lambda m: m.stream_space().insert(n, opt, init=init), model, x,
                              opt, tol=EXACT)
    assert model.d_model == d + n and model.config()["d_model"] == d + n
    twin = ip.IsotropicTransformer(**model.config()).to(DT)
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(twin.eval()(x), model.eval()(x))
    training_step_works(model.train(), opt, x)


def test_a_bare_branch_grows_its_inputs_and_outputs_together():
    """A branch's inputs and outputs are the same coordinates: add_inputs appends stream
    coordinates to both sides, and with zero new inputs the old outputs are unchanged and the
    new ones stay zero."""
    ffn = ip.IsotropicFFN(4, 6, psi="trainable").double()
    randomise(ffn, torch.Generator().manual_seed(5))
    x = torch.randn(7, 4, dtype=DT)
    y = ffn(x)
    ip.add_inputs(ffn, 2)
    y2 = ffn(torch.cat([x, torch.zeros(7, 2, dtype=DT)], dim=1))
    assert relative_change(y, y2[:, :4]) <= EXACT and not y2[:, 4:].any()
    assert ffn.widths == [6, 6, 6]


# -- float32 ------------------------------------------------------------------------------------------
FLOAT32_OPS = {
    "reparameterise": lambda m, name, gen: ip.reparameterise(
        m, name, ip.random_orthogonal(ip.hidden_spaces(m)[name].size, generator=gen,
                                      dtype=torch.float32)),
    "left_diagonalise": lambda m, name, gen: ip.left_diagonalise(m, name),
    "neurogenesis": lambda m, name, gen: ip.neurogenesis(m, name, 4, generator=gen),
    "stream_rotation": lambda m, name, gen: m.stream_space().rotate(
        ip.random_orthogonal(m.d_model, generator=gen, dtype=torch.float32)),
    "stream_growth": lambda m, name, gen: m.stream_space().insert(3),
}


@pytest.mark.parametrize("op", list(FLOAT32_OPS))
def test_float32_errors_are_recorded_and_growth_is_below_the_issue_threshold(op, record_property):
    """Relative logit error and ε_scaled (percent, per token) of each exact operation on a
    float32 transformer of realistic proportions; growth must stay at ``ε_scaled ≤ 1e-4 %``
    (issue 14), every exact operation within :data:`FLOAT_TOLERANCE` ``[float32]``."""
    gen = torch.Generator().manual_seed(0)
    model = ip.IsotropicTransformer(64, 32, 2, 4, 64, 16, generator=gen).eval()
    tokens = torch.randint(0, 64, (4, 16), generator=gen)
    with torch.no_grad():
        before = model(tokens)
    for name in ip.hidden_spaces(model):
        FLOAT32_OPS[op](model, name, gen)
        if op.startswith("stream"):
            break
    with torch.no_grad():
        after = model(tokens)
    fc = ip.function_change(before, after)
    rel = relative_change(before, after)
    record_property(f"{op}_float32_relative", rel)
    record_property(f"{op}_float32_eps_scaled_percent", fc.eps_scaled)
    assert rel <= FLOAT_TOLERANCE[torch.float32]
    if "growth" in op or op == "neurogenesis":
        assert fc.eps_scaled <= 1e-4
