#!/usr/bin/env python
"""The long ("nightly") reliability run: many fuzzed sequences and many kill-and-resume trials.

    python scripts/fuzz.py --sequences 200                 # 200 x 50 operations (MLP and CNN)
    python scripts/fuzz.py --sequences 200 --crash-trials 20 --json fuzz.json

Sequences use the engine of ``tests/reliability/fuzzlib.py`` (the CI test runs 13 sequences;
see ``docs/reliability.md`` for what is checked after every operation). Crash trials SIGKILL real
``python -m isoplastic train`` subprocesses at random points and resume them with ``--resume``
(``tests/reliability/crashlib.py``). Exits 1 on the first failure, printing the seed and the
operation list that reproduce it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "reliability")]

import crashlib  # noqa: E402
import fuzzlib  # noqa: E402
import torch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=200, help="fuzzed sequences (default 200)")
    ap.add_argument("--ops", type=int, default=50, help="operations per sequence (default 50)")
    ap.add_argument("--cnn-fraction", type=float, default=0.25,
                    help="fraction of sequences on IsotropicCNN (default 0.25)")
    ap.add_argument("--crash-trials", type=int, default=0,
                    help="kill-and-resume trials of `python -m isoplastic train` (default 0)")
    ap.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    ap.add_argument("--json", type=Path, default=None, help="write the summary here")
    args = ap.parse_args(argv)
    if args.sequences < 0 or args.ops < 1 or args.crash_trials < 0:
        ap.error("--sequences and --crash-trials must be >= 0, --ops >= 1")
    if not 0.0 <= args.cnn_fraction <= 1.0:
        ap.error("--cnn-fraction must lie in [0, 1]")
    torch.set_num_threads(1)
    master = random.Random(args.seed)
    total = fuzzlib.Stats()
    t0 = time.perf_counter()
    for i in range(args.sequences):
        seed = master.randrange(2**31)
        arch = "cnn" if master.random() < args.cnn_fraction else "mlp"
        ops = [master.choice(fuzzlib.OPS) for _ in range(args.ops)]
        try:
            total.merge(fuzzlib.run_sequence(seed, ops, arch))
        except Exception as exc:  # noqa: BLE001 - report and reproduce
            print(f"FAILED sequence {i}: {type(exc).__name__}: {exc}\n"
                  f"reproduce: fuzzlib.run_sequence({seed}, {ops!r}, {arch!r})", file=sys.stderr)
            return 1
        if (i + 1) % 20 == 0:
            print(f"  {i + 1}/{args.sequences} sequences, {total.n_ops} operations, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    fuzz_time = time.perf_counter() - t0
    summary = {
        "sequences": total.sequences, "operations": total.n_ops, "ops_per_kind": dict(total.ops),
        "refused_as_expected": dict(total.refused), "exact_checks": total.exact_checks,
        "bound_checks": total.bound_checks,
        "library_bound_alone_exceeded": total.library_bound_exceeded,
        "bound_not_applicable": total.bound_skipped,
        "state_dict_roundtrips": total.roundtrips, "optimizer_steps": total.steps,
        "worst_exact_relative_change": total.worst_exact,
        "worst_observed_over_allowed": total.worst_bound_ratio,
        "architectures": dict(total.archs), "optimizers": dict(total.optimizers),
        "fuzz_seconds": round(fuzz_time, 1),
    }
    print(json.dumps(summary, indent=1))
    if args.crash_trials:
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            ref, duration = crashlib.reference_run(root, runner=crashlib.Spawned)
            rng = random.Random(args.seed)
            trials = []
            for i in range(args.crash_trials):
                try:
                    trials.append(crashlib.crash_trial(root, ref, duration, rng, i,
                                                       runner=crashlib.Spawned))
                except Exception as exc:  # noqa: BLE001
                    print(f"FAILED crash trial {i}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    return 1
                t = trials[-1]
                print(f"  crash trial {i}: kill {t.delay:.2f} s into a {duration:.2f} s training window, "
                      f"checkpoint epoch {t.checkpoint_epoch}, identical after resume",
                      flush=True)
        summary["crash_trials"] = len(trials)
        summary["crash_killed"] = sum(t.killed for t in trials)
        summary["crash_before_first_checkpoint"] = sum(t.checkpoint_epoch is None for t in trials)
        summary["crash_checkpoint_epochs"] = [t.checkpoint_epoch for t in trials]
        summary["crash_identical"] = sum(t.identical for t in trials)
        summary["crash_seconds"] = round(time.perf_counter() - t1, 1)
        print(json.dumps({k: v for k, v in summary.items() if k.startswith("crash")}))
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
