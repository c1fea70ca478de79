"""Timing primitives: interleaved, warmed-up, median-of-repeats ratios within one run.

Machines running these benchmarks are shared, so absolute times drift. Every comparison here
times its candidates *interleaved* (A, B, A, B, … with the order rotated each round), after a
warm-up, and reports medians; ratios of medians taken in the same run cancel most of the drift.
"""

from __future__ import annotations

import gc
import os
import platform
import resource
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Timing:
    """Per-candidate samples (seconds per call) of one interleaved comparison."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratio(self, num: str, den: str) -> float:
        """``median(num) / median(den)``."""
        return self.median(num) / self.median(den)

    def iqr(self, name: str) -> tuple[float, float]:
        xs = sorted(self.samples[name])
        n = len(xs)
        return xs[n // 4], xs[(3 * n) // 4]

    def as_dict(self) -> dict[str, dict[str, float]]:
        out = {}
        for k in self.samples:
            lo, hi = self.iqr(k)
            out[k] = {"median_s": self.median(k), "q1_s": lo, "q3_s": hi,
                      "n": len(self.samples[k])}
        return out


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 15, warmup: int = 3,
                inner: int = 1, setup: Callable[[str], object] | None = None) -> Timing:
    """Time each callable ``repeats`` times, interleaved, after ``warmup`` untimed rounds.

    Args:
        fns: name -> zero-argument callable.
        repeats: timed rounds; each round calls every candidate once (order rotated per round).
        warmup: untimed rounds first (allocator, caches, lazy initialisation).
        inner: calls per sample (for very short calls); the sample is the mean per call.
        setup: optional untimed hook called with the name before each timed sample (e.g. to
            rebuild a network that the timed call mutates).
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            if setup is not None:
                setup(n)
            fns[n]()
    out = Timing({n: [] for n in names})
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            if setup is not None:
                setup(n)
            t0 = time.perf_counter()
            for _ in range(inner):
                fns[n]()
            out.samples[n].append((time.perf_counter() - t0) / inner)
    return out


def peak_memory(fn: Callable[[], object]) -> dict[str, float]:
    """Peak Python-heap growth (tracemalloc, MiB) and process max RSS (MiB) around one call.

    PyTorch's CPU tensors are allocated outside the Python heap, so the tensor part is measured
    as the growth of ``ru_maxrss`` (a high-water mark: only increases are seen) together with the
    analytic size of the live tensors the caller reports separately.
    """
    gc.collect()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"py_heap_peak_mib": peak / 2**20, "maxrss_mib": rss1, "maxrss_growth_mib": rss1 - rss0}


def machine() -> dict[str, object]:
    """CPU model, core count, torch version and thread settings of this run."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }
