"""ParamScheduler: applies pure schedules (fastlab.schedules) to the optimiser every batch."""

from __future__ import annotations

from fastlab.callbacks.core import Callback
from fastlab.schedules import Sched


class ParamScheduler(Callback):
    """Sets the head's lr (other layer groups scaled by the learner's ``lr_scales``) and the
    momentum from ``pos = opt_step / total_steps`` before each training batch: the position
    counts optimiser steps, so with gradient accumulation a group's batches share one rate."""

    order = 10

    def __init__(self, lr: Sched, mom: Sched | None = None):
        self.lr, self.mom = lr, mom

    def before_fit(self) -> None:
        self.total = max(1, self.learn.n_epoch * self.learn.steps_per_epoch())

    def before_batch(self) -> None:
        if not self.learn.training:
            return
        pos = self.learn.opt_step / self.total
        self.learn.set_hypers(self.lr(pos), None if self.mom is None else self.mom(pos))
