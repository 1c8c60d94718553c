"""Where a run keeps its decoded images: the run's settings that the image sources read.

A data source is built from ``data.*`` alone (``Task.build_data`` hands it ``run.data``), but where
its images live also depends on ``paths.cache``, ``trainer.max_resident_gb`` and
``trainer.workers``. ``fastlab.train`` sets them for the whole run with :func:`using`
(``Storage.of(run)``); built outside a run, a source gets the schemas' defaults.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from fastlab.config import PathsConfig, TrainerConfig

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


_current: ContextVar[Storage] = ContextVar("fastlab_storage", default=Storage())  # noqa: B039 - frozen


def current() -> Storage:
    """The settings in force (the defaults outside :func:`using`)."""
    return _current.get()


@contextlib.contextmanager
def using(storage: Storage) -> Iterator[Storage]:
    """Build data with ``storage`` inside the block."""
    token = _current.set(storage)
    try:
        yield storage
    finally:
        _current.reset(token)
