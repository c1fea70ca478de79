"""Do newborn neurons train better with population-seeded optimizer state?

Runs the main job's configuration (embedded digits, 300 epochs, scaffold S = 2, τ = 0.1, float32,
no control arm) once per seed with ``newborn="population"`` (second moments of new neurons seeded
from the existing neurons' median) and with ``newborn="zero"`` (the paper's), and prints one JSON
line per run: final test accuracy, final widths, neurons added and removed. About a minute per
run on one CPU thread. Usage: ``python scripts/newborn_runs.py [--seeds 0 1 2]``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from isoplastic.train import TrainConfig, Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for seed in args.seeds:
        for newborn in ("population", "zero"):
            trainer = Trainer(TrainConfig(seed=seed, control=False), progress=False, out=None)
            trainer.arms["adaptive"].policy.newborn = newborn
            t0 = time.perf_counter()
            s = trainer.run().summary()
            print(json.dumps({"seed": seed, "newborn": newborn, "accuracy": s["final_accuracy"],
                              "widths": s["final_widths"], "added": s["neurons_added"],
                              "removed": s["neurons_removed"],
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
