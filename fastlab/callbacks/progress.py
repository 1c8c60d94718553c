"""ProgressCallback: a bar on a terminal, one log line per epoch otherwise."""

from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm

from fastlab.callbacks.core import Callback

log = logging.getLogger("fastlab")


def format_row(row: dict) -> str:
    parts = [f"epoch {row['epoch']}"]
    for key, value in row.items():
        if key in ("epoch", "seconds"):
            continue
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    parts.append(f"({row.get('seconds', 0.0):.1f}s)")
    return "  ".join(parts)


class ProgressCallback(Callback):
    order = 70  # after the Recorder has finished the epoch's row

    def __init__(self, mode: str = "auto"):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode = mode
        self.bar = None

    def before_fit(self) -> None:
        if self.mode == "bar":
            total = self.learn.n_epoch * len(self.learn.data.train)
            self.bar = tqdm(total=total, unit="batch", leave=False, dynamic_ncols=True)

    def after_batch(self) -> None:
        if self.bar is not None and self.learn.training:
            self.bar.update(1)

    def after_epoch(self) -> None:
        history = self.learn.recorder.history
        if self.mode == "none" or not history:
            return
        line = format_row(history[-1])
        if self.bar is not None:
            self.bar.write(line)
        else:
            log.info(line)

    def after_fit(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
