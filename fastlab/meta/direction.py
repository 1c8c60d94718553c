"""Which way the objective is better: from what the sweep recorded, else from the metric's name."""

from __future__ import annotations

from typing import Any

from fastlab.meta.errors import MetaError

DIRECTIONS = ("maximize", "minimize")

# Words in metric names where higher is better; every other metric (a loss, an error, rmse, mae)
# is minimised, as fastlab's tasks do.
_HIGHER_IS_BETTER = ("acc", "auc", "f1", "precision", "recall", "r2", "iou", "dice", "map", "bleu")


def direction_of_task(task: dict[str, Any] | None) -> str | None:
    """The direction of a composed config's ``task`` node (``{name, objective}``) from fastlab's
    task registry, or None when the task is not a built-in one."""
    if not task or "name" not in task or "objective" not in task:
        return None
    from fastlab.tasks import TASKS  # imports torch: only when a config names a task

    t = TASKS.get(task["name"])
    return None if t is None else t.direction(task["objective"])


def direction_of_metric(name: str | None) -> str | None:
    """``maximize`` for accuracy-like names, ``minimize`` for losses and errors, None if unknown."""
    if not name:
        return None
    low = name.lower()
    if any(w in low for w in ("loss", "error", "err", "rmse", "mae", "mse")):
        return "minimize"
    if any(w in low for w in _HIGHER_IS_BETTER):
        return "maximize"
    return None


def check_direction(direction: str | None, objective: str | None) -> str:
    """``direction`` when it is known, else a ``MetaError`` saying how to give it."""
    if direction in DIRECTIONS:
        return direction
    if direction is not None:
        raise MetaError(f"direction {direction!r} is not known: pass --direction maximize or "
                        "--direction minimize")
    raise MetaError(f"cannot tell whether the objective {objective or '(unnamed)'} is better high "
                    "or low: pass --direction maximize or --direction minimize")
