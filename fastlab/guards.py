"""Guards around the training loop: a wall-clock limit (``trainer.timeout``) and CUDA
out-of-memory turned into one line that says what to change (``trainer.auto_bs`` acts on it)."""

from __future__ import annotations

import contextlib
import gc
import logging
import re
import signal
import threading
from pathlib import Path

import torch

from fastlab.errors import FastlabError, RunTimeout
from fastlab.rundir import LAST

log = logging.getLogger("fastlab")


class OutOfMemory(FastlabError):
    """The device ran out of memory; the message names ``data.bs`` and the memory asked for."""


@contextlib.contextmanager
def deadline(seconds: float | None, run_dir: Path):
    """Stop the block with a ``RunTimeout`` after ``seconds`` (``trainer.timeout``). A SIGALRM
    timer: it interrupts Python code, sleeps and waits; outside the main thread it is not
    available and the timeout is not applied (a warning says so)."""
    if seconds is None:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        log.warning("trainer.timeout is ignored: the run is not in the main thread")
        yield
        return

    def expire(signum, frame):
        if (run_dir / LAST).exists():
            how = f"resume it with trainer.resume={run_dir} (last.pt holds where it got to)"
        else:
            how = "it stopped before its first checkpoint, so start it again"
        raise RunTimeout(f"the run passed trainer.timeout={seconds:g} s and was stopped: {how}, or raise trainer.timeout")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def oom_message(error: BaseException, bs: int, device: torch.device) -> str:
    asked = re.search(r"[Tt]ried to allocate ([\d.]+ ?[KMGT]i?B)", str(error))
    what = f"asked for {asked.group(1)} more" if asked else "asked for more than was free"
    return (f"out of memory on {device} with data.bs={bs} ({what}): lower data.bs, use "
            "trainer.precision=bf16-mixed, or set trainer.auto_bs=true to halve the batch and retry")


@contextlib.contextmanager
def out_of_memory(bs: int, device: torch.device):
    """Turn ``torch.OutOfMemoryError`` (CUDA's, or any backend's) into :class:`OutOfMemory`."""
    try:
        yield
    except torch.OutOfMemoryError as e:
        raise OutOfMemory(oom_message(e, bs, device)) from None


def free_device_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
