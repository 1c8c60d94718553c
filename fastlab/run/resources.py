"""CPU threads for a run: torch's default, ``trainer.threads``, or a share of the cores when a
joblib multirun runs several jobs side by side."""

from __future__ import annotations

import os

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


def threads_per_job(cores: int, parallel_jobs: int) -> int:
    """Cores shared out among jobs running side by side (at least one thread each)."""
    return max(1, cores // max(1, parallel_jobs))


def parallel_jobs() -> int:
    """How many jobs of this multirun run at once on this machine: joblib's ``n_jobs`` (-1 = one
    per core); 1 for a single run or another launcher."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return 1
    launcher = HydraConfig.get().launcher
    if "joblib" not in str(launcher.get("_target_", "")):
        return 1
    n_jobs = int(launcher.get("n_jobs", -1) or 1)
    return (os.cpu_count() or 1) if n_jobs < 0 else n_jobs


def set_threads(threads: int | None) -> int:
    """Apply ``trainer.threads`` (or the automatic share) to torch; returns the count in use."""
    if threads is None and parallel_jobs() > 1:
        threads = threads_per_job(os.cpu_count() or 1, parallel_jobs())
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
