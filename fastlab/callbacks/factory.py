"""build_callbacks: the optional callbacks a run's ``trainer`` config asks for."""

from __future__ import annotations

from pathlib import Path

from fastlab.callbacks.core import Callback
from fastlab.callbacks.csv_logger import CSVLogger
from fastlab.callbacks.early_stopping import EarlyStopping
from fastlab.callbacks.grad_clip import GradientClip
from fastlab.callbacks.save_best import SaveBestModel
from fastlab.callbacks.tensorboard import TensorBoardLogger
from fastlab.config import TrainerConfig
from fastlab.errors import ConfigError
from fastlab.tasks import Task

BEST_CHECKPOINT = "best.pt"
HISTORY = "history.csv"
TENSORBOARD_DIR = "tensorboard"


def resolve_monitor(name: str, monitor: str, mode: str, task: Task) -> str:
    """Check ``trainer.callbacks.<name>.monitor`` against what the history records and turn
    ``mode`` "auto" into "min" or "max" from the task; returns the mode."""
    valid = ["valid_loss", "train_loss", *task.metrics]
    if monitor not in valid:
        raise ConfigError(f"trainer.callbacks.{name}.monitor={monitor!r} is not recorded by task={task.name}: "
                          f"use one of {valid}")
    if mode == "auto":  # the schema allows auto, min and max only
        return "max" if task.direction(monitor) == "maximize" else "min"
    return mode


def build_callbacks(trainer_cfg: TrainerConfig, run_dir: Path, task: Task, meta: dict,
                    writes: bool = True) -> list[Callback]:
    """The callbacks ``trainer.callbacks`` and ``trainer.logger`` ask for, to pass as the
    Learner's ``cbs``. ``meta`` is ``model.pt``'s metadata, saved with the best model too.

    Writes go into ``run_dir``: ``best.pt`` (save_best), ``history.csv`` (csv_logger, every
    epoch) and ``tensorboard/`` (logger=tensorboard); with ``writes=False`` (the other ranks of
    a data-parallel run) only the callbacks that steer training are built. Raises
    ``ConfigError`` for a monitor the task does not record, before any training.
    """
    run_dir = Path(run_dir)
    c = trainer_cfg.callbacks
    cbs: list[Callback] = []
    if c.save_best.enabled:
        mode = resolve_monitor("save_best", c.save_best.monitor, c.save_best.mode, task)
        if writes:
            cbs.append(SaveBestModel(run_dir / BEST_CHECKPOINT, meta, c.save_best.monitor, mode))
    if c.early_stopping.enabled:
        es = c.early_stopping
        mode = resolve_monitor("early_stopping", es.monitor, es.mode, task)
        cbs.append(EarlyStopping(es.monitor, mode, es.patience, es.min_delta))
    if c.grad_clip is not None:
        cbs.append(GradientClip(c.grad_clip))
    if c.csv_logger and writes:
        cbs.append(CSVLogger(run_dir / HISTORY, list(task.metrics)))
    if trainer_cfg.logger == "tensorboard" and writes:
        cbs.append(TensorBoardLogger(run_dir / TENSORBOARD_DIR))
    return cbs
