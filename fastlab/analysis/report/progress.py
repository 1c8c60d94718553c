"""A progress line for the bootstrap: rewritten in place on a terminal, a few plain lines in a log."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    """Call as ``progress(done, total)``; prints ``<label> done/total, elapsed, time left``."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._quarter = 0

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.perf_counter() - self.start
        left = elapsed / done * (total - done) if done else 0.0
        text = f"{self.label} {done}/{total} ({elapsed:.0f} s, about {left:.0f} s left)"
        if done == total:
            text = f"{self.label} {done}/{total} done in {elapsed:.1f} s"
        if self.tty:
            end = "\n" if done == total else ""
            self.stream.write(f"\r{text:<72}{end}")
        else:
            # a log gets a line at each quarter, not one per refit
            quarter = (4 * done) // max(total, 1)
            if quarter <= self._quarter and done != total:
                return
            self._quarter = quarter
            self.stream.write(text + "\n")
        self.stream.flush()
