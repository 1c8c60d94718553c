"""Which way a sweep's objective is better: said by the user, or known by fastlab's task.

The rule (docs/sweeps.md and docs/design.md):

- ``hydra.sweeper.direction`` given: that, for any app.
- not given, and the composed config has a ``task`` node whose ``name`` and ``objective`` fastlab's
  task registry knows (the app is fastlab-train): the task's direction for that objective, the
  same fact the run writes into ``metrics.json``. A sweep that searches ``task``, ``task.name`` or
  ``task.objective`` itself is refused: its trials could optimise in different directions.
- not given, any other app: refused, with the line that says how to set it. Guessing (the old
  default, maximize) silently optimised the wrong way for a loss or an rmse.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from fastlab.sweep.errors import SweepError

DIRECTIONS = ("maximize", "minimize")

# Swept keys that change which objective the trials return, and so possibly its direction.
TASK_KEYS = ("task", "task.name", "task.objective")

HOW_TO_SET = "set hydra.sweeper.direction=maximize or hydra.sweeper.direction=minimize"


def direction_of_task(task: Mapping[str, Any] | None) -> str | None:
    """The direction of a ``task`` node (``{name, objective}``) from fastlab's task registry, or
    None when the task, or that objective of it, is not fastlab's."""
    if not isinstance(task, Mapping):
        return None
    name, objective = task.get("name"), task.get("objective")
    if not isinstance(name, str) or not isinstance(objective, str):
        return None
    from fastlab import registry  # its options import torch: only when a config names a task

    entry = registry.options("task").get(name)
    t = entry.builder if entry is not None else None
    if t is None or objective not in t.objectives:
        return None
    return t.direction(objective)


def resolve_direction(given: str | None, task: Mapping[str, Any] | None,
                      swept: Sequence[str]) -> tuple[str, str]:
    """The sweep's direction and where it came from (for the log), or a one-line SweepError.

    Parameters
    ----------
    given : ``hydra.sweeper.direction`` (None: not set).
    task : the composed config's ``task`` node (name, objective), or None.
    swept : the names of the searched dimensions.
    """
    if given is not None:
        if given not in DIRECTIONS:
            raise SweepError(f"hydra.sweeper.direction={given!r} is unknown; use maximize or "
                             "minimize")
        return given, "hydra.sweeper.direction"
    known = direction_of_task(task)
    if known is None:
        raise SweepError("hydra.sweeper.direction is not set and the app's config names no "
                         f"fastlab task.objective to take it from; {HOW_TO_SET} (the way the "
                         "task function's return value is better)")
    varying = [name for name in swept if name in TASK_KEYS]
    if varying:
        raise SweepError(f"the sweep searches {varying[0]}, so its trials' objectives could be "
                         f"better in different directions; {HOW_TO_SET} for the whole sweep")
    return known, f"task.objective={task['objective']} of task {task['name']}"
