"""EarlyStopping: end training when a monitored value has stopped improving."""

from __future__ import annotations

from fastlab.callbacks.core import Callback, CancelFitException
from fastlab.callbacks.save_best import check_mode, improved


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs in a row without an improvement of more than ``min_delta``
    over the best value so far (Keras and fastai semantics: ``patience=0`` stops at the first).

    Stopping sets ``learn.stop_requested = True`` (the training driver then skips any later stage
    of a multi-stage schedule) and raises ``CancelFitException``. The count is kept across
    successive fits, like the best value of ``SaveBestModel``.

    Attributes
    ----------
    best_value : float or None
    wait : int
        Epochs since the last improvement.
    stopped_epoch : int or None
        The history row's ``epoch`` after which training stopped; None if it never stopped.
    """

    # Last among the epoch-end callbacks: raising ends the fit at once, so the progress line, the
    # CSV log and the best checkpoint of this epoch must already be written.
    order = 90

    def __init__(self, monitor: str = "valid_loss", mode: str = "min", patience: int = 3,
                 min_delta: float = 0.0):
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.monitor, self.mode = monitor, check_mode(mode)
        self.patience, self.min_delta = patience, abs(min_delta)
        self.best_value: float | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def state_dict(self) -> dict:
        return {"best_value": self.best_value, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best_value, self.wait, self.stopped_epoch = state["best_value"], state["wait"], state["stopped_epoch"]

    def after_epoch(self) -> None:
        row = self.learn.recorder.history[-1] if self.learn.recorder.history else {}
        if self.monitor not in row:  # e.g. validation was cancelled this epoch
            return
        value = float(row[self.monitor])
        if improved(value, self.best_value, self.mode, self.min_delta):
            self.best_value, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = int(row["epoch"])
            self.learn.stop_requested = True
            raise CancelFitException
