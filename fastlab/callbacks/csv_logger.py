"""CSVLogger: rewrite history.csv after every epoch, so a running job can be watched."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastlab.callbacks.core import Callback
from fastlab.rundir import write_history


class CSVLogger(Callback):
    """After each epoch, atomically rewrite ``path`` with the Recorder's history so far
    (``epoch,train_loss,valid_loss,<metric_names...>,lr,seconds``): the same rows, in the same
    format, as the ``history.csv`` a finished run leaves, and never a half-written file."""

    order = 56  # after the Recorder (50) and SaveBestModel (55)

    def __init__(self, path: str | Path, metric_names: Sequence[str]):
        self.path, self.metric_names = Path(path), list(metric_names)

    def after_epoch(self) -> None:
        history = self.learn.recorder.history
        if history:
            # Not fsynced: it is a view of the run's progress, rewritten next epoch; the history a
            # finished run leaves is written durably with its outputs, and a resume restores the
            # Recorder from last.pt. An fsync per epoch was 2 ms, a study trial's training is 100.
            write_history(self.path, history, self.metric_names, durable=False)
