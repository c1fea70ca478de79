"""The README's snippets run as written, read in order: every ```python block is executed in one
Python session (a later block may use what an earlier one defined, as a reader pasting them
would), and the ``isoplastic train --dataset ...`` commands of its ```bash blocks run in between,
all in one fresh directory.

Bash lines that are not run here are listed in :data:`NOT_RUN` with the reason (they are the
long commands other tests cover); a new bash line that is in neither set fails the test.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"

NOT_RUN = {
    "make demo": "the Makefile target (about a minute); its command is tested in test_cli.py",
    "make test": "runs this test suite",
    "isoplastic reproduce all --scale quick --out reproduce": "minutes; tests/experiments",
    "isoplastic bench --quick --json bench.json": "a benchmark; tests/bench",
    "torchrun --standalone --nproc_per_node 2 -m isoplastic train --out runs/ddp":
        "two processes, 300 epochs; tests/distributed",
    "isoplastic inspect runs/demo": "needs the demo run; inspect is tested in test_cli.py",
    "isoplastic train --model transformer --out runs/text":
        "about ten minutes; tests/test_cli_text.py runs the same command on a small text",
    "isoplastic train --model transformer --dataset FILE.txt --out runs/mytext":
        "needs the reader's file; tests/test_cli_text.py trains on a text file",
    "isoplastic reproduce transformer --out reproduce": "minutes; tests/experiments",
    "isoplastic reproduce quality --out reproduce": "about 15 minutes; tests/experiments runs "
                                                    "its tiny scale",
}

RUNNER = """
import json, subprocess, sys
steps = json.loads(sys.argv[1])
namespace = {"__name__": "__main__"}
for kind, payload in steps:
    if kind == "python":
        exec(compile(payload, "<README snippet>", "exec"), namespace)
    else:
        subprocess.run([sys.executable, "-m", "isoplastic", *payload, "--no-progress"],
                       check=True)
"""


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in
            re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)]


def readme_steps() -> list[tuple[str, object]]:
    steps: list[tuple[str, object]] = []
    for lang, code in blocks(README.read_text()):
        if lang == "python":
            steps.append(("python", code))
        elif lang == "bash":
            for line in code.splitlines():
                command = line.split("#")[0].strip()
                if command.startswith("isoplastic train --dataset "):
                    steps.append(("command", shlex.split(command)[1:]))
                elif command:
                    assert command in NOT_RUN, f"README command not covered: {command!r}"
    return steps


@pytest.mark.slow  # 27 s: every README snippet in a subprocess
def test_readme_snippets_run_as_written(tmp_path):
    steps = readme_steps()
    assert sum(k == "python" for k, _ in steps) >= 5 and any(k == "command" for k, _ in steps)
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(steps)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_broken_snippet_would_fail(tmp_path):
    """The runner reports an undefined name (the old second snippet's R) as a failure."""
    steps = [("python", "import torch\n"), ("python", "print(R)\n")]
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(steps)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "NameError" in proc.stderr


def test_readme_documents_the_npz_format_and_load():
    text = README.read_text()
    for needle in ("`x`", "`y`", "`x_test`", "`y_test`", "80/20", "standardised", "ip.load",
                   "--overwrite", "--resume", "new *total*"):
        assert needle in text, needle
    assert "paper-notes" not in text
