"""Training with adaptive topology: configuration, trainer, checkpoints and multi-task runs.

Imported on demand (``import isoplastic.train``), never by ``import isoplastic``.
"""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig, parse_schedule
from .tasks import Task, TaskResult, digits_tasks, run_tasks
from .trainer import RunResult, Trainer, derive_seed, fit, prepare_data

__all__ = [
    "Checkpoint", "CheckpointError", "ConfigError", "RunResult", "Task", "TaskResult",
    "TrainConfig", "Trainer", "derive_seed", "digits_tasks", "fit", "load_checkpoint",
    "parse_schedule", "prepare_data", "run_tasks", "save_checkpoint",
]
