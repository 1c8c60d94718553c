"""Tasks. Each registers itself in ``fastlab.registry`` (group ``task``) with its schema, and is
the whole extension point: data, model, loss, metrics and results (see ``Task``)."""

from __future__ import annotations

from fastlab import registry
from fastlab.config import TaskConfig
from fastlab.errors import ConfigError
from fastlab.tasks import classify, regress, segment, tabular, text  # noqa: F401  (they register)
from fastlab.tasks.base import CAPABILITIES, Task
from fastlab.tasks.classify import accuracy, error_rate
from fastlab.tasks.regress import mae, rmse


def get_task(cfg: TaskConfig | str) -> Task:
    """The task named by ``cfg`` (a name, or a config whose ``objective`` must be one of the
    task's metrics)."""
    task = registry.get("task", cfg if isinstance(cfg, str) else cfg.name).builder
    if not isinstance(cfg, str) and cfg.objective not in task.objectives:
        raise ConfigError(f"task.objective={cfg.objective!r} is not a metric of task={cfg.name}: "
                          f"use one of {task.objectives}")
    return task


def task_names() -> list[str]:
    return sorted(registry.options("task"))


def supporting(capability: str) -> list[str]:
    """The registered tasks that can do ``capability`` (one of ``CAPABILITIES``), for the errors
    that say which tasks a setting works with."""
    return sorted(registry.options("task", lambda e: e.builder.can(capability)))


__all__ = ["CAPABILITIES", "Task", "accuracy", "error_rate", "get_task", "mae", "rmse", "supporting", "task_names"]
