"""TerminateOnNaN: stop a run whose loss is no longer finite, and mark it diverged."""

from __future__ import annotations

import math

import torch

from fastlab.callbacks.core import Callback, CancelFitException


class TerminateOnNaN(Callback):
    """Checks every training loss and each epoch's validation loss. A diverged run ends cleanly
    (``learn.diverged = True``) so a sweep records it instead of crashing.

    On a GPU, reading the loss on the host every batch would stall the device queue; there the
    check folds each loss into a flag on the device and reads it every ``gpu_every`` batches (a
    diverged run then stops a few steps later; its status is the same)."""

    order = 60  # after the Recorder has computed the epoch's validation loss
    gpu_every = 32

    def before_fit(self) -> None:
        self.learn.diverged = False
        self._finite: torch.Tensor | None = None
        self._every = 1 if self.learn.device.type == "cpu" else self.gpu_every

    def after_loss(self) -> None:
        learn = self.learn
        if not learn.training:
            return
        ok = torch.isfinite(learn.loss.detach())
        self._finite = ok if self._finite is None else self._finite & ok
        if (learn.train_iter + 1) % self._every == 0 or learn.iter + 1 == learn.n_iter:
            self._check()

    def _check(self) -> None:
        finite, self._finite = self._finite, None
        if finite is not None and not bool(finite):
            self._stop()

    def after_validate(self) -> None:
        valid_loss = self.learn.recorder.valid_loss
        if valid_loss is not None and not math.isfinite(valid_loss):
            self._stop()

    def _stop(self) -> None:
        self.learn.diverged = True
        raise CancelFitException
