"""TerminateOnNaN: stop a run whose loss is no longer finite, and mark it diverged."""

from __future__ import annotations

import math

import torch

from fastlab.callbacks.core import Callback, CancelFitException


class TerminateOnNaN(Callback):
    """Checks every training loss and each epoch's validation loss. A diverged run ends cleanly
    (``learn.diverged = True``) so a sweep records it instead of crashing."""

    order = 60  # after the Recorder has computed the epoch's validation loss

    def before_fit(self) -> None:
        self.learn.diverged = False

    def after_loss(self) -> None:
        if self.learn.training and not bool(torch.isfinite(self.learn.loss)):
            self._stop()

    def after_validate(self) -> None:
        valid_loss = self.learn.recorder.valid_loss
        if valid_loss is not None and not math.isfinite(valid_loss):
            self._stop()

    def _stop(self) -> None:
        self.learn.diverged = True
        raise CancelFitException
