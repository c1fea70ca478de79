"""Package-level guarantees: lean import, one owner of optimizer-state keys, public contract."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import isoplastic as ip

SRC = pathlib.Path(ip.__file__).parent

# tqdm is absent from this list because torch itself imports it.
HEAVY = ("matplotlib", "click", "sklearn", "isoplastic.cli", "isoplastic.train", "isoplastic.plot")


def _imported_after(stmt: str) -> set[str]:
    code = f"import sys; {stmt}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(out.stdout.split())


def test_import_isoplastic_is_lean():
    mods = _imported_after("import isoplastic")
    assert not [m for m in mods if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]


def test_lean_import_check_would_notice_a_heavy_import():
    mods = _imported_after("import isoplastic, matplotlib")
    assert "matplotlib" in mods


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
