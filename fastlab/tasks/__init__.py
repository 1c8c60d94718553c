"""Tasks: a registry from ``task.name`` to its loss, metrics and objective direction."""

from __future__ import annotations

from fastlab.config import TaskConfig
from fastlab.errors import ConfigError
from fastlab.tasks.base import Task
from fastlab.tasks.classify import CLASSIFY, accuracy, error_rate
from fastlab.tasks.regress import REGRESS, mae, rmse
from fastlab.tasks.segment import SEGMENT
from fastlab.tasks.tabular import TABULAR
from fastlab.tasks.text import LANGUAGE_MODEL, TEXT_CLASSIFY

TASKS: dict[str, Task] = {t.name: t for t in (CLASSIFY, REGRESS, TABULAR, SEGMENT, LANGUAGE_MODEL, TEXT_CLASSIFY)}


def get_task(cfg: TaskConfig) -> Task:
    """The task named by ``cfg.name``, after checking that ``cfg.objective`` is one of its metrics."""
    if cfg.name not in TASKS:
        raise ConfigError(f"task.name={cfg.name!r} is not known: use one of {sorted(TASKS)}")
    task = TASKS[cfg.name]
    if cfg.objective not in task.objectives:
        raise ConfigError(f"task.objective={cfg.objective!r} is not a metric of task={cfg.name}: "
                          f"use one of {task.objectives}")
    return task


__all__ = ["TASKS", "Task", "accuracy", "error_rate", "get_task", "mae", "rmse"]
