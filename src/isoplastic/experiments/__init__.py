"""Reproductions of the paper's experiments, one module per experiment.

Imported on demand (``isoplastic reproduce`` or ``import isoplastic.experiments``), never by
``import isoplastic``. :mod:`.registry` maps experiment names to ``(Config, run)``.
"""

from .registry import EXPERIMENTS, get_config, run_experiment

__all__ = ["EXPERIMENTS", "get_config", "run_experiment"]
