"""Where a run runs: built once at the edge and handed down.

A run's config says what to train; its :class:`RunContext` says where it runs: as a trial of a
fastlab sweep or alone, the multirun job it is (which picks a GPU), how many jobs share this
machine's cores, and what a sweep worker keeps between its trials. The edge (the ``@hydra.main``
wrapper of ``fastlab-train`` and ``fastlab-lr-find``) builds it from Hydra's config; called from
Python, ``train(cfg)`` gets ``RunContext()``: a run alone, whatever application calls it. Nothing
below the edge reads Hydra's global config or a context variable.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class Keep:
    """What a sweep worker keeps between its trials: decoded data, read checkpoints, the code's
    versions and git commit.

    A worker process of a sweep (a joblib worker runs many trials, one after another) sees the same
    ``data.*`` and the same pretrained file trial after trial. ``kept(kind, key, build)`` builds once
    per key and hands the same object back afterwards when the keeper is ``active``; an inactive
    keeper (a run alone) always builds, so it reads its files afresh. What is kept must not be
    changed by its users: image sources and checkpoints are read-only to the runs (loaders never
    write into their tensors; weights are copied into the model).
    """

    LIMIT = 2  # per kind: a sweep over data.* settings (e.g. data.size) alternates between a few

    def __init__(self, active: bool = False) -> None:
        self.active = active
        self._kept: dict[str, OrderedDict[Hashable, Any]] = {}

    def kept(self, kind: str, key: Hashable, build: Callable[[], T]) -> T:
        """``build()``, or what it returned before for the same ``kind`` and ``key`` when active."""
        if not self.active:
            return build()
        store = self._kept.setdefault(kind, OrderedDict())
        if key in store:
            store.move_to_end(key)
            return store[key]
        value = build()
        store[key] = value
        while len(store) > self.LIMIT:
            store.popitem(last=False)
        return value

    def count(self, kind: str) -> int:
        """How many objects of ``kind`` this keeper holds (for tests and logs)."""
        return len(self._kept.get(kind, ()))

    def __repr__(self) -> str:
        return f"Keep(active={self.active})"


@dataclass(frozen=True)
class Trial:
    """A job of a fastlab sweep: its ``number`` in the study (handed to the job by the sweep's
    driver; None when the job was not launched by one), the sweep's dir, and the sweeper's
    settings (``hydra.sweeper`` as plain values: ``pruner``, ``storage``, ``study``, ...)."""

    number: int | None
    sweep_dir: Path
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pruner(self) -> str:
        return str(self.settings.get("pruner") or "none")


@dataclass(frozen=True)
class RunContext:
    """Where a run runs (see the module's docstring).

    ``trial``: the sweep trial this run is, or None for a run alone; ``job_num``: the multirun job
    number (picks the GPU among several), None outside a multirun; ``parallel_jobs``: how many jobs
    run side by side on this machine (they share its cores); ``keep``: what this process keeps
    between runs; ``link``: the trial's line back to its study, which the pruner reports through
    (built by the edge for a trial of a pruned sweep; anything with ``report``, ``history``,
    ``finished_count``, ``settings`` and ``number``).
    """

    trial: Trial | None = None
    job_num: int | None = None
    parallel_jobs: int = 1
    keep: Keep = field(default_factory=Keep)
    link: Any = None

    @property
    def pruner(self) -> str:
        """The sweep's pruner ("none" for a run alone or an unpruned sweep)."""
        return self.trial.pruner if self.trial is not None else "none"
