"""Several tasks in one adaptive network (the paper's Exp 3).

Two layouts:

* ``"union"`` (the paper's): one network with the union input/output layout. Task ``t`` owns the
  input slots ``[in_off_t, in_off_t + d_t)`` and the logits ``[out_off_t, out_off_t + c_t)``.
  Every step takes one batch per *active* task, zero-pads it into the union input, computes the
  cross-entropy on that task's logit slice, and averages over the active tasks (+ ψ decay).
* ``"grow"``: the network starts with the inputs and outputs of the first active tasks only; when
  a task arrives for the first time its input columns and output rows are appended with
  :func:`isoplastic.add_inputs` / :func:`isoplastic.add_outputs` (exact; optimizer transported).
  Removed tasks keep their slots and are masked out of the loss as in ``"union"``.

After each training epoch :func:`isoplastic.neuroadapt` (scaffold ``S``, threshold ``τ``) adapts
every hidden layer, then every task is evaluated. :func:`digits_tasks` ships a ready data set:
the embedded 8x8 digits split by class into three tasks (0-3, 4-6, 7-9, each relabelled from 0).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..data import load_dataset
from ..nn import IsotropicMLP
from ..topology.policies import neuroadapt
from ..topology.resize import add_inputs, add_outputs
from .trainer import generator, logits_of

#: Task phases ``(n_epochs, active tasks)``: add task 1, then 2, then keep only task 1.
DEFAULT_SCHEDULE = ((4, (0,)), (4, (0, 1)), (4, (0, 1, 2)), (12, (1,)))
DIGIT_GROUPS: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3), (4, 5, 6), (7, 8, 9))


@dataclass
class Task:
    """One classification task: flat standardised inputs and labels ``0..n_classes-1``."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def digits_tasks(groups: Sequence[Sequence[int]] = DIGIT_GROUPS, *, seed: int = 0,
                 truncate: bool = True) -> list[Task]:
    """The embedded digits split by class into tasks (default 0-3, 4-6, 7-9), relabelled from 0.

    Inputs are flattened and standardised with the training statistics of the whole set. With
    ``truncate`` every task's train and test sets are cut to the size of the smallest (as in the
    paper's experiment).
    """
    data = load_dataset("digits", seed=seed).flat().standardised()
    tasks = []
    for group in groups:
        group = [int(c) for c in group]
        lookup = torch.full((data.n_classes,), -1, dtype=torch.int64)
        lookup[torch.tensor(group)] = torch.arange(len(group))
        tr = torch.isin(data.y_train, torch.tensor(group))
        te = torch.isin(data.y_test, torch.tensor(group))
        tasks.append(Task(f"digits {group[0]}-{group[-1]}", data.x_train[tr],
                          lookup[data.y_train[tr]], data.x_test[te], lookup[data.y_test[te]],
                          len(group)))
    return truncate_to_smallest(tasks) if truncate else tasks


def truncate_to_smallest(tasks: list[Task]) -> list[Task]:
    """Cut every task's train and test sets to the smallest task's sizes (as the paper does)."""
    n_tr = min(t.x_train.shape[0] for t in tasks)
    n_te = min(t.x_test.shape[0] for t in tasks)
    for t in tasks:
        t.x_train, t.y_train = t.x_train[:n_tr], t.y_train[:n_tr]
        t.x_test, t.y_test = t.x_test[:n_te], t.y_test[:n_te]
    return tasks


def expand_schedule(schedule: Sequence) -> list[list[int]]:
    """Per-epoch lists of active task indices.

    ``schedule`` is either a list of ``(n_epochs, active_tasks)`` phases, e.g.
    ``[(5, [0]), (5, [0, 1]), (5, [0, 1, 2]), (5, [1])]``, or already one list per epoch.
    """
    out: list[list[int]] = []
    for item in schedule:
        if (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], int)
                and isinstance(item[1], (list, tuple, set))):
            out.extend([sorted(int(t) for t in item[1])] * int(item[0]))
        else:
            out.append(sorted(int(t) for t in item))
    if not out or any(not a for a in out):
        raise ValueError(f"task schedule {schedule!r}: every epoch needs at least one active task")
    return out


@dataclass
class TaskResult:
    """Per-epoch records of :func:`run_tasks` and the final network.

    Each record: ``epoch``, ``active`` (task names), ``accuracy`` (task name -> test accuracy,
    ``None`` for a task the network has no slots for yet), ``loss`` (mean training loss),
    ``widths`` (hidden), ``total_width``, ``psi_norm`` (Σ‖ψ‖), ``changes`` (applied changes).
    """

    tasks: list[str]
    schedule: list[list[int]]
    records: list[dict]
    net: IsotropicMLP
    changes: list[dict] = field(default_factory=list)
    wall_time: float = 0.0


def run_tasks(tasks: Sequence[Task] | None = None, schedule: Sequence | None = None, *,
              hidden: Sequence[int] = (12, 12), scaffold: int = 5, threshold: float = 0.9,
              lr: float = 1e-2, weight_decay: float = 0.5, batch_size: int = 48,
              layout: str = "union", adapt: bool = True, seed: int = 0,
              dtype: torch.dtype = torch.float32, init_scale: float = 0.01) -> TaskResult:
    """Train one network on a schedule of tasks; see the module docstring.

    Args:
        tasks: default :func:`digits_tasks`.
        schedule: phases ``(n_epochs, active task indices)`` or per-epoch active lists; default
            :data:`DEFAULT_SCHEDULE`.
        hidden: initial hidden widths.
        scaffold, threshold: ``S`` and ``τ`` of :func:`isoplastic.neuroadapt` (the paper uses
            ``S = 5, τ = 0.95`` on its much larger tasks; on the digits tasks ``τ = 0.9`` with
            strong weight decay makes the width follow the task load within a few epochs).
        lr, weight_decay, batch_size: AdamW and batches (one batch per active task per step).
        layout: ``"union"`` or ``"grow"``.
        adapt: run neuroadapt after each epoch (``False``: fixed-topology control).
        seed: initial weights, shuffling and neurogenesis.
    """
    if layout not in ("union", "grow"):
        raise ValueError(f"layout={layout!r}; choose 'union' or 'grow'")
    tasks = list(digits_tasks(seed=seed) if tasks is None else tasks)
    plan = expand_schedule(schedule if schedule is not None else DEFAULT_SCHEDULE)
    if any(t >= len(tasks) or t < 0 for a in plan for t in a):
        raise ValueError(f"task schedule names a task outside 0..{len(tasks) - 1}")
    t_start = time.perf_counter()
    in_slot: dict[int, int] = {}
    out_slot: dict[int, int] = {}

    def assign(t: int) -> None:
        in_slot[t] = sum(tasks[s].n_features for s in in_slot)
        out_slot[t] = sum(tasks[s].n_classes for s in out_slot)

    order = range(len(tasks)) if layout == "union" else plan[0]
    for t in order:
        assign(t)
    n_in = sum(tasks[t].n_features for t in in_slot)
    n_out = sum(tasks[t].n_classes for t in out_slot)
    net = IsotropicMLP([n_in, *hidden, n_out], generator=generator(seed, "tasks-init")).to(dtype)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)

    def padded(t: int, x: torch.Tensor) -> torch.Tensor:
        z = x.new_zeros(x.shape[0], net.widths[0])
        z[:, in_slot[t]:in_slot[t] + tasks[t].n_features] = x
        return z

    def logit_slice(t: int) -> slice:
        return slice(out_slot[t], out_slot[t] + tasks[t].n_classes)

    records: list[dict] = []
    changes: list[dict] = []
    for epoch, active in enumerate(plan):
        for t in active:
            if t not in in_slot:  # "grow": a new task arrives
                assign(t)
                add_inputs(net, tasks[t].n_features, opt)
                add_outputs(net, tasks[t].n_classes, opt)
        n = min(tasks[t].x_train.shape[0] for t in active)
        perms = {t: torch.randperm(tasks[t].x_train.shape[0],
                                   generator=generator(seed, "task-shuffle", t, epoch))[:n]
                 for t in active}
        net.train()
        total, steps = 0.0, 0
        for i in range(0, n, batch_size):
            xs, sizes = [], []
            for t in active:
                idx = perms[t][i:i + batch_size]
                xs.append(padded(t, tasks[t].x_train[idx].to(dtype)))
                sizes.append(len(idx))
            out = net(torch.cat(xs))
            loss = out.new_zeros(())
            start = 0
            for t, size in zip(active, sizes):
                idx = perms[t][i:i + batch_size]
                loss = loss + F.cross_entropy(out[start:start + size, logit_slice(t)],
                                              tasks[t].y_train[idx])
                start += size
            loss = loss / len(active)
            opt.zero_grad(set_to_none=True)
            (loss + net.psi_penalty()).backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        # Free the last graph: a live autograd graph would pin the parameters' old shapes.
        del out, loss, xs
        applied = []
        if adapt:
            applied = neuroadapt(net, scaffold, threshold, opt, init_scale=init_scale,
                                 generator=generator(seed, "task-grow", epoch))
            changes.extend({"epoch": epoch, **c.as_dict()} for c in applied)
        acc: dict[str, float | None] = {}
        for t, task in enumerate(tasks):
            if t not in in_slot:
                acc[task.name] = None
                continue
            out = logits_of(net, padded(t, task.x_test.to(dtype)))[:, logit_slice(t)]
            acc[task.name] = float((out.argmax(1) == task.y_test).double().mean())
        widths = net.widths[1:-1]
        records.append({
            "epoch": epoch, "active": [tasks[t].name for t in active], "accuracy": acc,
            "loss": total / max(steps, 1), "widths": widths, "total_width": sum(widths),
            "psi_norm": float(sum(p.detach().norm() for p in net.psi)) if len(net.psi) else 0.0,
            "changes": len(applied),
        })
    return TaskResult([t.name for t in tasks], plan, records, net, changes,
                      time.perf_counter() - t_start)
