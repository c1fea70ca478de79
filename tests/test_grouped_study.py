"""scripts/grouped_study.py --quick: the study's protocol and outputs (docs/quality.md)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).parents[1] / "scripts" / "grouped_study.py"


@pytest.mark.slow  # about 40 s: 12 short digits runs, an adaptive pair per seed, a step-time bench
def test_quick_study_chooses_on_validation_and_writes_its_report(tmp_path):
    subprocess.run([sys.executable, str(SCRIPT), "--quick", "--adaptive", "--bench", "--out",
                    str(tmp_path)], capture_output=True, text=True, check=True, timeout=900)
    report = json.loads((tmp_path / "results.json").read_text())
    cfg = report["config"]
    assert set(report["sweep"]) == {f"{m}@{d}" for m in cfg["models"] for d in cfg["depths"]}
    for key, r in report["sweep"].items():
        vals = {float(lr): v for lr, v in r["val_by_lr"].items()}
        assert r["lr"] == max(vals, key=vals.get), f"{key}: the rate is chosen on validation"
        assert len(r["test"]) == cfg["seeds"] and all(0 <= a <= 100 for a in r["test"])
        assert r["test_mean"] == pytest.approx(sum(r["test"]) / len(r["test"]))
        assert max(r["test"]) > 30, f"{key} did not learn (10 classes)"
    adaptive = report["adaptive"]
    assert len(adaptive["fixed"]) == len(adaptive["adaptive"]) == cfg["seeds"]
    for widths in adaptive["widths"]:  # one list of group widths per layer, each group adapted
        assert len(widths) == 1 and len(widths[0]) == 16 // int(cfg["adapt_size"])
    bench = report["bench"]
    assert bench["ratio_to_tanh"]["tanh"] == 1.0
    assert all(r > 0 for r in bench["ratio_to_isotropic"].values())
    table = (tmp_path / "results.md").read_text()
    for name in cfg["models"]:
        assert f"| {name} |" in table
    assert (tmp_path / "groups.png").stat().st_size > 1000
