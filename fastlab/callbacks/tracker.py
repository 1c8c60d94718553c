"""Tracker: the base of the callbacks that copy a run to a tracker (TensorBoard, MLflow), guarded
(a failing tracker is logged once and the run goes on) and finished after ``metrics.json``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastlab.callbacks.core import Callback

log = logging.getLogger("fastlab")


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


class Tracker(Callback):
    """A callback that copies the run to a tracker and never stops the run.

    Subclasses put their work in ``guarded(what, f, *args)``: the first exception is logged once,
    as a warning naming the tracker, and every later call does nothing (a server that went away
    would otherwise cost a timeout per epoch). ``finish(run_dir)`` runs after ``metrics.json`` is
    written (``fastlab.run.fit`` calls :func:`finish_tracking`), for what only exists then.
    """

    tracker = "tracker"  # the name in the warning, e.g. mlflow

    def __init__(self) -> None:
        self.broken = False

    def guarded(self, what: str, f, *args, **kwargs) -> Any:
        if self.broken:
            return None
        try:
            return f(*args, **kwargs)
        except Exception as e:  # a tracker must never end a run: the run dir has it all
            self.broken = True
            log.warning("trainer.logger=%s: %s failed (%s); no more logging to %s in this run, which goes on "
                        "(its run dir has everything)", self.tracker, what, first_line(e), self.tracker)
            return None

    def finish(self, run_dir: Path) -> None:
        """After ``metrics.json``: the run's final record. Override; must not raise."""


def finish_tracking(cbs: Iterable[Callback], run_dir: Path) -> None:
    """``finish(run_dir)`` of every tracker among ``cbs`` (the run's callbacks)."""
    for cb in cbs:
        if isinstance(cb, Tracker):
            cb.guarded("finishing the run", cb.finish, Path(run_dir))
