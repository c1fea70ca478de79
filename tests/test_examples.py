"""Every script in examples/ runs to completion (they are documentation that must not rot)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).parents[1] / "examples").glob("*.py"))
# examples that train for a while (error_table.py: ~29 s on 2 cores) run in CI only
SLOW = {"error_table.py"}


@pytest.mark.parametrize("script", [pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW
                                    else p for p in EXAMPLES], ids=lambda p: p.name)
def test_example_runs(script: pathlib.Path) -> None:
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
