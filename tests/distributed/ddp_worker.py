"""Test-only launcher: ``torchrun ... tests/distributed/ddp_worker.py train <isoplastic train args>``.

Runs exactly ``isoplastic train`` (``isoplastic.cli.main``) with two test hooks, set by env vars:

* ``ISOPLASTIC_TEST_DUMP=DIR``: at the end of ``Trainer.run`` every rank writes
  ``DIR/rank<r>.safetensors`` (its final parameters + optimizer states, as a checkpoint would
  hold them) and ``DIR/rank<r>.json`` (architecture, change log, an SVD fingerprint).
* ``ISOPLASTIC_TEST_KILL_RANK=R`` and ``ISOPLASTIC_TEST_KILL_STEP=S``: rank ``R`` SIGKILLs itself
  right before its ``S``-th training forward pass (counted from 1 over the whole run).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import torch

from isoplastic.cli import main
from isoplastic.train import trainer as trainer_mod
from isoplastic.train.checkpoint import serialise_arms
from isoplastic.train.distributed import DistContext

RANK = int(os.environ.get("RANK", "0"))
DUMP = os.environ.get("ISOPLASTIC_TEST_DUMP")
KILL_RANK = os.environ.get("ISOPLASTIC_TEST_KILL_RANK")
KILL_STEP = int(os.environ.get("ISOPLASTIC_TEST_KILL_STEP", "0"))


def svd_fingerprint() -> str:
    """sha256 of an SVD of a fixed matrix: equal on every rank of this machine (the design
    does not rely on it: structural changes are computed on rank 0 and broadcast)."""
    g = torch.Generator().manual_seed(1234)
    a = torch.randn(80, 64, generator=g, dtype=torch.float64)
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    h = hashlib.sha256()
    for t in (u, s, vh):
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


if DUMP:
    _run = trainer_mod.Trainer.run

    def run(self, until=None):
        result = _run(self, until)
        blob, arms = serialise_arms({n: a.net for n, a in self.arms.items()},
                                    {n: a.optimizer for n, a in self.arms.items()})
        out = Path(DUMP)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{RANK}.safetensors").write_bytes(blob)
        (out / f"rank{RANK}.json").write_text(json.dumps({
            "rank": RANK, "world_size": self.dist.world_size, "epoch": self.epoch,
            "arms": arms, "changes": self.changes, "svd_sha256": svd_fingerprint()}))
        return result

    trainer_mod.Trainer.run = run

if KILL_RANK is not None and int(KILL_RANK) == RANK:
    _wrap = DistContext.wrap
    steps = {"n": 0}

    def wrap(self, net):
        model = _wrap(self, net)

        def pre_hook(module, args):
            if module.training:
                steps["n"] += 1
                if steps["n"] >= KILL_STEP:
                    os.kill(os.getpid(), signal.SIGKILL)

        model.register_forward_pre_hook(pre_hook)
        return model

    DistContext.wrap = wrap

if __name__ == "__main__":
    main(args=sys.argv[1:], prog_name="isoplastic")
