"""Where a run keeps its data: the run's settings that data sources read besides ``data.*``.

A data source is built from ``data.*``, but where its images live also depends on
``paths.cache``, ``trainer.max_resident_gb`` and ``trainer.workers`` (:class:`Storage`), and a sweep
worker keeps what it decoded for its next trials (``fastlab.context.Keep``). :class:`Place` holds
both and is handed to ``Task.build_data`` by whoever builds a run's data (``Place.of(run, keep)``),
so a run's data is built with that run's settings wherever it is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fastlab.config import PathsConfig, TrainerConfig
from fastlab.context import Keep

MODES = ("auto", "memory", "disk", "none")


@dataclass(frozen=True)
class Storage:
    """``cache_root``: the folder of decoded-image caches; ``max_resident_gb``: the largest set
    ``data.cache=auto`` keeps in memory; ``workers``: decoding processes for ``data.cache=none``
    (``None``: one per core, at most 8)."""

    cache_root: Path = Path(PathsConfig.cache)
    max_resident_gb: float = TrainerConfig.max_resident_gb
    workers: int | None = TrainerConfig.workers

    @classmethod
    def of(cls, run) -> Storage:
        """A ``RunConfig``'s settings."""
        return cls(Path(run.paths.cache), run.trainer.max_resident_gb, run.trainer.workers)

    def n_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return min(8, cores)

    def mode(self, cache: str, n_images: int, side: int, channels: int = 3) -> str:
        """``data.cache`` resolved for ``n_images`` of ``(channels, side, side)`` uint8: ``auto`` is
        ``memory`` while they fit in ``max_resident_gb``, else ``disk``."""
        if cache != "auto":
            return cache
        return "memory" if n_images * channels * side * side <= self.max_resident_gb * 2**30 else "disk"


@dataclass(frozen=True)
class Place:
    """Where a run's data is built: its :class:`Storage` and what the process keeps."""

    storage: Storage = field(default_factory=Storage)
    keep: Keep = field(default_factory=Keep)

    @classmethod
    def of(cls, run, keep: Keep | None = None) -> Place:
        """``run``'s storage settings, with ``keep`` (a run alone keeps nothing)."""
        return cls(Storage.of(run), keep if keep is not None else Keep())
