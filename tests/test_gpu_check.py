"""scripts/gpu_check.py runs where there is no GPU (says so) and its checks pass on the CPU."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
import torch

SCRIPT = pathlib.Path(__file__).parents[1] / "scripts" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: run the script itself")
def test_without_a_gpu_it_says_so_and_exits_0():
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=True)
    assert "no CUDA device" in out.stdout


@pytest.mark.slow  # 20 s: the whole GPU check script on the CPU
def test_its_checks_pass_on_the_cpu(tmp_path):
    path = tmp_path / "gpu.json"
    subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--json",
                    str(path)], capture_output=True, text=True, check=True, timeout=600)
    summary = json.loads(path.read_text())
    assert summary["all_exact"]
    assert all(err <= 1e-10 for err in summary["exactness_torch.float64"].values())


def test_device_auto_picks_the_cpu_without_an_accelerator():
    from isoplastic.train.distributed import DistContext
    from isoplastic.train.trainer import resolve_device

    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("an accelerator is present")
    assert resolve_device("auto", DistContext()) == torch.device("cpu")
