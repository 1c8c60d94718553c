"""Prune: report a sweep trial's objective after every epoch, and stop the trial when the
sweep's pruner (``hydra.sweeper.pruner``) says it will not catch up."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

from fastlab.callbacks.core import Callback, CancelFitException
from fastlab.distributed import Context, from_main
from fastlab.pruning import PrunerSettings, checks_at, should_prune

if TYPE_CHECKING:
    from collections.abc import Mapping


class Link(Protocol):
    """What the callback needs of ``fastlab.sweep.link.TrialLink``: this trial's place in the
    sweep's trial store."""

    settings: PrunerSettings
    number: int

    def report(self, epoch: int, value: float) -> None: ...

    def history(self) -> Mapping[int, Mapping[int, float]]: ...

    def finished_count(self) -> int: ...


class Prune(Callback):
    """After each epoch's validation: ``link.report(epoch, value)`` of the objective (epochs
    1-based, across all stages), then ``fastlab.pruning.should_prune``. A pruned trial
    stops like an early-stopped run (``learn.stop_requested = True``, ``CancelFitException``)
    and keeps ``pruned_epoch`` and ``pruned_value``.

    The run's last epoch is reported but never pruned: the trial has nothing left to save then,
    and a trial that trained every epoch is a completed one. A non-finite value is neither
    reported nor judged (a diverged run ends as diverged). In a data-parallel run only rank 0
    (the one given a ``link``) reports and decides, and every rank stops with it (``ctx``).

    Attributes
    ----------
    pruned_epoch : int or None
        The 1-based epoch after which the trial was pruned; None while it runs on.
    pruned_value : float or None
        The objective after that epoch.
    """

    # After the loggers (56-58) have written the epoch, before EarlyStopping (90) may end the fit
    # without this epoch's report, and before the Checkpointer (95): a pruned trial is over.
    order = 89

    def __init__(self, link: Link | None, objective: str, ctx: Context | None = None):
        self.link, self.objective, self.ctx = link, objective, ctx or Context()
        self.pruned_epoch: int | None = None
        self.pruned_value: float | None = None

    def after_epoch(self) -> None:
        learn = self.learn
        row = learn.recorder.history[-1] if learn.recorder.history else {}
        if learn.diverged or self.objective not in row:  # no validation this epoch, or nothing to judge
            return
        epoch, value = int(row["epoch"]) + 1, float(row[self.objective])  # the history's epochs are 0-based
        total = learn.total_epochs or learn.epoch_offset + learn.n_epoch
        prune = False
        if self.link is not None and math.isfinite(value):
            self.link.report(epoch, value)
            prune = epoch < total and self.decide(epoch)
        if from_main(prune, self.ctx):
            self.pruned_epoch, self.pruned_value = epoch, value
            learn.stop_requested = True
            raise CancelFitException

    def decide(self, epoch: int) -> bool:
        """The pruner's verdict after ``epoch``; the store is read only at an epoch it judges."""
        link = self.link
        if not checks_at(link.settings, epoch):
            return False
        return should_prune(link.settings, link.number, epoch, link.history(), link.finished_count())
