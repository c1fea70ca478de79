"""Plots and reports (matplotlib is imported lazily, with the Agg backend)."""

from .report import plot_tasks, write_report

__all__ = ["plot_tasks", "write_report"]
