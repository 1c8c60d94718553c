"""ParamScheduler: applies pure schedules (fastlab.schedules) to the optimiser every batch."""

from __future__ import annotations

from fastlab.callbacks.core import Callback
from fastlab.schedules import Sched


class ParamScheduler(Callback):
    """Sets the head's lr (other layer groups scaled by the learner's ``lr_scales``) and the
    momentum from ``pos = train_iter / total_steps`` before each training batch."""

    order = 10

    def __init__(self, lr: Sched, mom: Sched | None = None):
        self.lr, self.mom = lr, mom

    def before_fit(self) -> None:
        self.total = max(1, self.learn.n_epoch * len(self.learn.data.train))

    def before_batch(self) -> None:
        if not self.learn.training:
            return
        pos = self.learn.train_iter / self.total
        self.learn.set_hypers(self.lr(pos), None if self.mom is None else self.mom(pos))
