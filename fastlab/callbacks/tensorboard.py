"""TensorBoardLogger: per-epoch scalars and the per-batch smoothed loss, for TensorBoard."""

from __future__ import annotations

import math
from pathlib import Path

from fastlab.callbacks.tracker import Tracker


class TensorBoardLogger(Tracker):
    """Writes ``log_dir`` for ``tensorboard --logdir``.

    Per epoch: ``epoch/<key>`` for every number in the Recorder's row (``train_loss``,
    ``valid_loss``, the metrics, ``lr``), at step = epochs logged before it (from 0). Per training
    batch: ``batch/smooth_loss`` and ``batch/lr``, at step = batches logged before it. The batch
    values are read from the Recorder at the end of each epoch, where it has turned them into
    floats: logging inside the batch loop would force a device-to-host sync every step.

    Steps keep counting across successive fits (the stages of ``fine_tune``); each fit opens its
    own event file in ``log_dir``, which TensorBoard reads as one run. A write that fails (a full
    disk) is logged once and the run goes on without TensorBoard (``Tracker``).
    """

    order = 57  # after the Recorder (50) has written the epoch's row
    tracker = "tensorboard"

    def __init__(self, log_dir: str | Path):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.writer = None
        self.epoch_step = 0
        self.batch_step = 0
        self._seen_list: list | None = None  # the Recorder list read so far, and how far
        self._seen = 0

    def before_fit(self) -> None:
        self.guarded(f"opening {self.log_dir}", self._open)

    def _open(self) -> None:
        # Imported here: tensorboard takes a second to import, and most runs do not log to it.
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def after_epoch(self) -> None:
        if self.writer is not None:
            self.guarded(f"writing to {self.log_dir}", self._write_epoch)

    def _write_epoch(self) -> None:
        rec = self.learn.recorder
        # The Recorder starts new lists at every fit: notice it by identity and read from 0.
        if rec.smooth_losses is not self._seen_list:
            self._seen_list, self._seen = rec.smooth_losses, 0
        for loss, lr in zip(rec.smooth_losses[self._seen:], rec.lrs[self._seen:]):
            self.writer.add_scalar("batch/smooth_loss", loss, self.batch_step)
            self.writer.add_scalar("batch/lr", lr, self.batch_step)
            self.batch_step += 1
        self._seen = len(rec.smooth_losses)
        if rec.history:
            for key, value in rec.history[-1].items():
                if key not in ("epoch", "seconds") and isinstance(value, int | float) and math.isfinite(value):
                    self.writer.add_scalar(f"epoch/{key}", value, self.epoch_step)
            self.epoch_step += 1
        self.writer.flush()  # a running job can be watched

    def after_fit(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            self.guarded(f"closing {self.log_dir}", writer.close)
