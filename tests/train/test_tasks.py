"""Multi-task runs: union layout with loss masking, growing layout, width follows the task load."""

from __future__ import annotations

import pytest

from isoplastic.train.tasks import digits_tasks, expand_schedule, run_tasks


@pytest.fixture(scope="module")
def tasks():
    return digits_tasks(seed=0)


def test_digits_tasks_split_by_class(tasks):
    assert [t.n_classes for t in tasks] == [4, 3, 3]
    assert [t.name for t in tasks] == ["digits 0-3", "digits 4-6", "digits 7-9"]
    for t in tasks:
        assert t.n_features == 64
        assert set(t.y_train.tolist()) == set(range(t.n_classes))
        assert t.x_train.shape[0] == tasks[0].x_train.shape[0]  # truncated to the smallest


def test_expand_schedule():
    assert expand_schedule([(2, [0]), (1, (0, 2))]) == [[0], [0], [0, 2]]
    assert expand_schedule([[1], [0, 1]]) == [[1], [0, 1]]
    with pytest.raises(ValueError, match="at least one active task"):
        expand_schedule([(2, [])])


def test_width_rises_with_tasks_and_falls_after_removal(tasks):
    # default schedule: 4 epochs task 0, 4 epochs tasks 0+1, 4 epochs all three, 12 epochs task 1
    result = run_tasks(tasks, seed=0)
    w = [r["total_width"] for r in result.records]
    assert len(w) == 24
    end1, end2, end3, end4 = w[3], w[7], w[11], w[23]
    assert end2 > end1, w  # second task added
    assert end3 > end2, w  # third task added
    assert end4 < max(w[8:12]), w  # task removed
    assert end4 < end3, w
    last = result.records[-1]
    assert last["active"] == ["digits 4-6"]
    assert last["accuracy"]["digits 4-6"] > 0.9
    assert result.records[11]["accuracy"]["digits 7-9"] > 0.8  # learned when it was active
    assert result.records[0]["accuracy"]["digits 0-3"] > 0.8
    assert result.net.widths[1:-1] == last["widths"]
    assert result.net.widths[0] == 192 and result.net.widths[-1] == 10
    assert last["psi_norm"] >= 0


def test_growing_layout_adds_inputs_and_outputs(tasks):
    result = run_tasks(tasks, [(1, [0]), (1, [0, 1]), (1, [1, 2])], layout="grow", seed=0)
    assert result.records[0]["accuracy"]["digits 4-6"] is None
    assert result.records[1]["accuracy"]["digits 7-9"] is None
    assert result.records[2]["accuracy"]["digits 7-9"] is not None
    assert result.net.widths[0] == 192 and result.net.widths[-1] == 10


def test_plot_tasks_writes_png(tasks, tmp_path):
    from isoplastic.plot import plot_tasks

    result = run_tasks(tasks, [(1, [0]), (1, [0, 1]), (1, [1])], seed=0)
    path = plot_tasks(result, tmp_path / "tasks.png")
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
