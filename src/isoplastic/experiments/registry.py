"""Experiment registry: name -> (Config class, run function), imported lazily."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path

#: experiment name -> module (relative to :mod:`isoplastic.experiments`), in run order.
MODULES: dict[str, str] = {
    "timing": "exp0_timing",
    "invariance": "exp1_invariance",
    "spectra": "exp2_spectra",
    "tasks": "exp3_tasks",
    "abundance": "exp4_abundance",
    "sparsify": "exp5_sparsify",
    "compare": "exp6_compare",
    "transformer": "exp7_transformer",
    "quality": "exp8_quality",
}
SCALES = ("quick", "paper", "tiny")


class _Registry(dict):
    """``EXPERIMENTS[name] -> (Config, run)``; modules are imported on first access."""

    def __missing__(self, name: str):
        if name not in MODULES:
            raise KeyError(f"unknown experiment {name!r}; choose one of {', '.join(MODULES)}")
        mod = importlib.import_module(f".{MODULES[name]}", __package__)
        self[name] = (mod.Config, mod.run)
        return self[name]

    def __iter__(self):
        return iter(MODULES)

    def __len__(self) -> int:
        return len(MODULES)

    def keys(self):  # type: ignore[override]
        return list(MODULES)


EXPERIMENTS: dict[str, tuple[type, Callable[..., dict]]] = _Registry()


def get_config(name: str, scale: str = "quick", **overrides):
    """The ``scale`` preset of experiment ``name`` with the given fields overridden.

    Overrides whose value is ``None`` or whose field the Config lacks are ignored.
    """
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r}; choose one of {', '.join(SCALES)}")
    cls, _ = EXPERIMENTS[name]
    cfg = getattr(cls, scale)()
    fields = {f.name for f in dataclasses.fields(cls)}
    changes = {k: v for k, v in overrides.items() if v is not None and k in fields}
    return dataclasses.replace(cfg, **changes)


def run_experiment(name: str, out: str | Path, scale: str = "quick", **overrides) -> dict:
    """Run experiment ``name`` at ``scale``; results go to ``out/name/``."""
    cfg = get_config(name, scale, **overrides)
    _, run = EXPERIMENTS[name]
    return run(cfg, Path(out) / name)


__all__ = ["EXPERIMENTS", "MODULES", "SCALES", "get_config", "run_experiment"]
