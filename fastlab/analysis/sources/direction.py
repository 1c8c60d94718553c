"""Which way the objective is better: what the sweep recorded, never a guess from a metric's name.

Where a direction comes from, first found wins (``--direction`` overrides them all):

1. a fastlab sweep's ``trials.db`` (the sweeper records the direction it optimised);
2. the trials' ``metrics.json`` ``"direction"`` (fastlab-train writes the task's), all agreeing;
3. an older fastlab sweep's ``best.yaml`` ``direction``;
4. the composed config's ``task`` (name, objective) in fastlab's task registry (older fastlab-train
   runs, from before ``metrics.json`` said it).

Nothing else: a name such as ``score`` or ``loss_ratio`` says nothing reliable, and analysing a
sweep the wrong way round recommends the worst value. Without any of these, ``--direction``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastlab.analysis.errors import MetaError
from fastlab.sweep.direction import DIRECTIONS, direction_of_task

__all__ = ["DIRECTIONS", "check_direction", "direction_of_metrics", "direction_of_task"]


def direction_of_metrics(metrics: Iterable[dict[str, Any] | None]) -> tuple[str | None, str]:
    """The ``"direction"`` the trials' ``metrics.json`` agree on, and a note for the error line.

    Returns ``(direction, note)``: ``(None, "")`` when no trial says, ``(None, "...disagree...")``
    when they say different things (a sweep over ``task`` itself).
    """
    seen = {m["direction"] for m in metrics
            if isinstance(m, dict) and m.get("direction") in DIRECTIONS}
    if len(seen) == 1:
        return seen.pop(), ""
    if len(seen) > 1:
        return None, "its trials' metrics.json disagree on the direction"
    return None, ""


def check_direction(direction: str | None, objective: str | None, where: str = "the sweep",
                    note: str = "") -> str:
    """``direction`` when it is known, else a one-line ``MetaError`` saying to pass it."""
    if direction in DIRECTIONS:
        return direction
    if direction is not None:
        raise MetaError(f"direction {direction!r} is not known: pass --direction maximize or "
                        "--direction minimize")
    why = note or ("it records no direction (no trials.db, no \"direction\" in metrics.json, no "
                   "fastlab task in its config)")
    raise MetaError(f"cannot tell whether the objective {objective or '(unnamed)'} of {where} is "
                    f"better high or low: {why}; pass --direction maximize or --direction minimize")
