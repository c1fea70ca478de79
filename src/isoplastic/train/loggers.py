"""Standard training logs as :class:`~isoplastic.train.Trainer` callbacks: CSV and TensorBoard.

``isoplastic train --log csv --log tensorboard`` (or ``Trainer(callbacks=[CSVLogger(dir)])``).
The JSONL files stay the run's record; these are views of it for the usual tools.

* :class:`CSVLogger` writes ``metrics.csv``: one row per epoch (epochs from 1) with the scalar
  metrics, the hidden widths as ``width_0, width_1, ...`` and the control's metrics as
  ``control_*``. The file is rewritten from the trainer's records after every epoch (atomically),
  so a resumed run's CSV is the uninterrupted run's.
* :class:`TensorBoardLogger` writes event files under ``tensorboard/`` through
  ``torch.utils.tensorboard`` (needs the ``tensorboard`` package): every scalar metric and width
  per epoch, and each structural change's ``eps_scaled`` (tag ``change/<op>/eps_scaled``) at the
  epoch it was made.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..errors import IsoplasticError

SCALARS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "psi_norm",
           "n_changes", "n_refused", "train_time", "epoch_time")


class LoggerError(IsoplasticError, RuntimeError):
    """A logger cannot run here (e.g. its package is missing); the message names the fix."""


def flat_row(record: dict) -> dict[str, float | int]:
    """The scalar columns of one metrics record (``epoch``, :data:`SCALARS`, ``width_k``,
    ``control_*``)."""
    row: dict[str, float | int] = {"epoch": record["epoch"]}
    row.update({k: record[k] for k in SCALARS if k in record})
    row.update({f"width_{k}": w for k, w in enumerate(record.get("widths", []))})
    control = record.get("control", {})
    row.update({f"control_{k}": control[k] for k in SCALARS if k in control})
    row.update({f"control_width_{k}": w for k, w in enumerate(control.get("widths", []))})
    return row


class CSVLogger:
    """``metrics.csv`` in ``run_dir``, rewritten from ``trainer.metrics`` after every epoch."""

    filename = "metrics.csv"

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / self.filename

    def on_epoch_end(self, trainer, record: dict) -> None:
        from .checkpoint import atomic_write
        from .trainer import deferred_interrupt

        rows = [flat_row(m) for m in trainer.metrics]
        columns = list(dict.fromkeys(k for row in rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        with deferred_interrupt():
            atomic_write(self.path, buffer.getvalue())


class TensorBoardLogger:
    """TensorBoard event files in ``run_dir/tensorboard`` (step = epoch)."""

    dirname = "tensorboard"

    def __init__(self, run_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise LoggerError(f"the TensorBoard logger needs the tensorboard package ({exc}); "
                              "pip install tensorboard, or drop --log tensorboard") from exc
        self.log_dir = Path(run_dir) / self.dirname
        self._make = SummaryWriter
        self._writer = None

    @property
    def writer(self):
        # created at the first event: a fresh run first clears the old run's files
        if self._writer is None:
            self._writer = self._make(log_dir=str(self.log_dir))
        return self._writer

    def on_change(self, trainer, record: dict) -> None:
        tag = "refused" if record["refused"] else record["op"]
        self.writer.add_scalar(f"change/{tag}/eps_scaled", record["eps_scaled"], record["epoch"])

    def on_epoch_end(self, trainer, record: dict) -> None:
        for key, value in flat_row(record).items():
            if key != "epoch":
                group = "control" if key.startswith("control_") else "adaptive"
                self.writer.add_scalar(f"{group}/{key.removeprefix('control_')}", value,
                                       record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


LOGGERS = {"csv": CSVLogger, "tensorboard": TensorBoardLogger}

__all__ = ["LOGGERS", "CSVLogger", "LoggerError", "TensorBoardLogger", "flat_row"]
