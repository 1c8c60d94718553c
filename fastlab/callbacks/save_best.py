"""SaveBestModel: keep the weights of the best epoch so far, by a monitored value."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastlab.callbacks.core import Callback
from fastlab.models.meta import ModelMeta
from fastlab.models.zoo import model_checkpoint, write_model


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (``mode`` "min" or "max").
    A non-finite value never improves; anything finite beats no best at all."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def check_mode(mode: str) -> str:
    if mode not in ("min", "max"):
        raise ValueError(f"mode={mode!r} is not known: use 'min' or 'max'")
    return mode


class SaveBestModel(Callback):
    """After each epoch, if ``monitor`` improved, write the model to ``path`` (atomically, in
    ``model.pt``'s format: ``torch.load(path, weights_only=True)`` reads it), its meta with the
    epoch and the monitored value beside its fields.

    ``meta`` is the run's ``ModelMeta`` (kept, not copied: a model re-made at another image side
    records the side the saved epoch trained at), or a plain dict for a Learner built by hand.

    The best value is kept across successive fits (the stages of ``fine_tune``), so a later stage
    only overwrites the file when it does better than every earlier epoch.

    Attributes
    ----------
    best_epoch : int or None
        The history row's ``epoch`` of the saved model.
    best_value : float or None
    """

    order = 55  # after the Recorder (50) has written the epoch's row

    def __init__(self, path: str | Path, meta: ModelMeta | Mapping[str, Any], monitor: str = "valid_loss",
                 mode: str = "min"):
        meta = meta if isinstance(meta, ModelMeta) else dict(meta)
        self.path, self.meta, self.monitor, self.mode = Path(path), meta, monitor, check_mode(mode)
        self.best_epoch: int | None = None
        self.best_value: float | None = None

    def state_dict(self) -> dict:
        return {"best_epoch": self.best_epoch, "best_value": self.best_value}

    def load_state_dict(self, state: dict) -> None:
        self.best_epoch, self.best_value = state["best_epoch"], state["best_value"]

    def after_epoch(self) -> None:
        row = self.learn.recorder.history[-1] if self.learn.recorder.history else {}
        value = row.get(self.monitor)
        if value is None or not improved(float(value), self.best_value, self.mode):
            return
        self.best_epoch, self.best_value = int(row["epoch"]), float(value)
        extra = {"epoch": self.best_epoch, self.monitor: self.best_value}
        write_model(self.path, model_checkpoint(self.learn.model, self.meta, **extra))
