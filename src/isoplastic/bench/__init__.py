"""Benchmarks of isoplastic (``isoplastic bench``): ratios measured within one run.

Imported on demand only (``import isoplastic`` does not load it). See ``docs/benchmarks.md``.
"""

from .suites import run_all as run_all
from .timing import interleaved as interleaved
from .timing import machine as machine
