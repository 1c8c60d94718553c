"""CPU threads for a run: torch's default, ``trainer.threads``, or a share of the cores when a
multirun runs several jobs side by side (``RunContext.parallel_jobs``, which the edge reads off
the launcher)."""

from __future__ import annotations

import os

import torch


def threads_per_job(cores: int, parallel_jobs: int) -> int:
    """Cores shared out among jobs running side by side (at least one thread each)."""
    return max(1, cores // max(1, parallel_jobs))


def set_threads(threads: int | None, parallel_jobs: int = 1) -> int:
    """Apply ``trainer.threads`` (or the share of ``parallel_jobs`` jobs side by side) to torch;
    returns the count in use."""
    if threads is None and parallel_jobs > 1:
        threads = threads_per_job(os.cpu_count() or 1, parallel_jobs)
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
