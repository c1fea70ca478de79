"""The model contract is declared, not probed: operations read models only through
:class:`isoplastic.core.IsoplasticBlock` (issue: one change pipeline for every model)."""

from __future__ import annotations

import ast
import pathlib

import pytest
import torch

import isoplastic as ip

SRC = pathlib.Path(ip.__file__).parent
OPERATION_PACKAGES = ("ops", "topology", "export")
CONCRETE_MODELS = {"IsotropicMLP", "IsotropicCNN", "ElementwiseMLP"}


def _violations(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("getattr", "hasattr"):
                found.append(f"{node.func.id}() at line {node.lineno}")
            if node.func.id == "isinstance" and len(node.args) == 2:
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                names |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
                if names & CONCRETE_MODELS:
                    found.append(f"isinstance(..., {sorted(names & CONCRETE_MODELS)}) at line "
                                 f"{node.lineno}")
    return found


def test_operations_do_not_probe_models():
    bad = {}
    for pkg in OPERATION_PACKAGES:
        for path in sorted((SRC / pkg).rglob("*.py")):
            v = _violations(ast.parse(path.read_text()))
            if v:
                bad[path.relative_to(SRC).as_posix()] = v
    assert not bad, bad


@pytest.mark.parametrize("snippet", [
    "getattr(net, 'psi_mode', None)",
    "hasattr(act, 'o')",
    "isinstance(net, IsotropicMLP)",
    "isinstance(net, (nn.Linear, ip.IsotropicCNN))",
])
def test_probe_check_would_notice(snippet):
    assert _violations(ast.parse(snippet))


def test_every_block_type_implements_the_whole_contract():
    # a misspelt or missing hook fails at construction, not inside an operation
    class Incomplete(ip.IsoplasticBlock):
        @property
        def n_hidden(self) -> int:
            return 0

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()
    for net in (ip.IsotropicMLP([3, 4, 2]), ip.IsotropicCNN((1, 4, 4), [2], head=[3])):
        assert isinstance(net, ip.IsoplasticBlock)
    assert not isinstance(ip.ElementwiseMLP([3, 4, 2]), ip.IsoplasticBlock)


@pytest.mark.parametrize("make", [
    lambda: ip.IsotropicMLP([5, 4, 3, 2], psi="expectation", intrinsic_length="constant"),
    lambda: ip.IsotropicCNN((2, 5, 5), [3, 4], kernel_sizes=[3, 1], head=[6], n_classes=3,
                            pooling="flatten", padding="valid", psi="constant"),
    lambda: ip.ElementwiseMLP([5, 4, 2], activation="relu"),
    lambda: ip.IsotropicFFN(4, [6, 3], psi="constant", intrinsic_length="none"),
    lambda: ip.IsotropicResidualConv(3, [5], [3, 1], psi="expectation"),
    lambda: ip.IsotropicResidualMLP(5, 4, [6, [3, 3]], 2, psi="none"),
    lambda: ip.IsotropicTransformer(7, 6, 2, 2, [[5, 4], 3], 4, head_dim=2, psi="trainable"),
])
def test_config_rebuilds_every_model_class(make):
    net = make()
    twin = type(net)(**net.config())
    assert twin.config() == net.config()
    assert [p.shape for p in twin.parameters()] == [p.shape for p in net.parameters()]


def test_cnn_refuses_other_dtypes_as_clearly_as_the_mlp():
    net = ip.IsotropicCNN((1, 4, 4), [2]).double()
    with pytest.raises(TypeError, match=r"IsotropicCNN has torch.float64 parameters but got "
                                        r"torch.float32 inputs; convert the inputs"):
        net(torch.randn(2, 1, 4, 4))


def test_mean_gain_is_recorded_the_same_way_by_mlp_and_cnn():
    # both record the batch-mean gain in training mode, and only for psi="expectation"
    for psi, recorded in (("expectation", True), ("trainable", False)):
        mlp = ip.IsotropicMLP([4, 3, 2], psi=psi)
        cnn = ip.IsotropicCNN((1, 4, 4), [2], head=[3], psi=psi)
        mlp(torch.randn(5, 4))
        cnn(torch.randn(5, 1, 4, 4))
        got = [m.hidden_layer(0).mean_gain is not None for m in (mlp, cnn)]
        assert got == [recorded, recorded]


def test_parameter_order_is_layers_activations_psi():
    # optimizer-state indices in checkpoints follow parameter order: keep it stable
    net = ip.IsotropicMLP([4, 3, 3, 2], psi="trainable", intrinsic_length="trainable")
    names = [n for n, _ in net.named_parameters()]
    assert names == ["linears.0.weight", "linears.0.bias", "linears.1.weight", "linears.1.bias",
                     "linears.2.weight", "linears.2.bias", "activations.0.log_o",
                     "activations.1.log_o", "psi.0", "psi.1"]
    cnn = ip.IsotropicCNN((1, 4, 4), [2], head=[3], psi="trainable")
    assert [n for n, _ in cnn.named_parameters()][-2:] == ["psi.0", "psi.1"]


def test_neuroadapt_guard_sees_the_full_space_name_on_composite_models():
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), ip.IsotropicMLP([5, 9, 4]),
                                ip.IsotropicMLP([4, 7, 3]))
    seen: list[str | None] = []
    refused: list = []

    def guard(change):
        seen.append(change.space)
        if change.space == "1.0":
            raise ip.ChangeRefused("no", change=change)

    applied = ip.neuroadapt(model, scaffold=1, threshold=0.5, guard=guard, refused=refused)
    assert set(seen) <= set(ip.hidden_spaces(model)) and "1.0" in seen and "2.0" in seen
    assert [c.space for c in refused] == ["1.0"]
    assert all(c.space == "2.0" for c in applied)


@pytest.mark.parametrize(("make", "match"), [
    (lambda: ip.IsotropicMLP([3, 4, 2], psi="nope"),
     r"psi='nope' is not a known mode; choose one of 'none', 'constant'"),
    (lambda: ip.IsotropicCNN((1, 4, 4), [2], intrinsic_length="long"),
     r"intrinsic_length='long' is not a known mode; choose one of 'none', 'constant', "
     r"'trainable'"),
])
def test_string_options_name_the_argument_and_the_choices(make, match):
    with pytest.raises(ValueError, match=match):
        make()
    assert ip.PsiMode.parse("expectation") is ip.PsiMode.EXPECTATION
    assert ip.IntrinsicLength.parse(ip.IntrinsicLength.NONE) is ip.IntrinsicLength.NONE
