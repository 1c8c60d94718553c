"""What a sweep knows before its first trial: ``hydra.sweeper.enqueue`` and ``warm_start``.

- ``enqueue: [{KEY: VALUE, ...}, ...]``: configurations to run first, as Optuna's
  ``enqueue_trial``. Trial ``k`` of the sweep is the ``k``-th of them, counted in ``n_trials``;
  the keys it leaves out take the values the strategy's own point ``k`` has (its Sobol point), and
  conditions (``hydra.sweeper.conditions``) apply as to any trial. A key that is not swept, or a
  value outside its dimension, stops the sweep before any trial with one line.
- ``warm_start: [SWEEP_DIR_OR_STORAGE, ...]``: the completed (and diverged) trials of earlier
  sweeps over the same keys, given to the forest as observations: neither run nor counted. A
  source is a sweep dir (its ``trials.db``, or the PostgreSQL study its ``storage.json`` names)
  or ``postgresql://...#STUDY``. Trials with another key, or a value outside this sweep's space,
  are left out (and counted in a log line); a source that optimised the other way is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fastlab.sweep.errors import SweepError
from fastlab.sweep.space import Discrete, Interval, SearchSpace
from fastlab.sweep.store import StoreError, TrialStore, read_sweep
from fastlab.sweep.strategies import Observation, random_params
from fastlab.sweepdir import trials_db

log = logging.getLogger(__name__)


def check_value(space: SearchSpace, name: str, value: Any, where: str) -> None:
    """One ``SweepError`` line when ``value`` is not in dimension ``name`` of ``space``."""
    dims = {d.name: d for d in space.dims}
    d = dims.get(name)
    if d is None:
        raise SweepError(f"{where}: {name} is not swept, so it cannot be enqueued; swept keys: {space.names}")
    if isinstance(d, Discrete):
        try:
            d.index(value)
        except SweepError:
            raise SweepError(f"{where}: {name}={value!r} is not among its {d.form}: {list(d.texts)}") from None
        return
    assert isinstance(d, Interval)
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not number or not d.low <= value <= d.high or (d.integer and value != int(value)):
        kind = "an integer" if d.integer else "a number"
        raise SweepError(f"{where}: {name}={value!r} is not {kind} in {d.form}: give one in [{d.low}, {d.high}]")


def enqueued(space: SearchSpace, enqueue: Sequence[Mapping[str, Any]], strategy: str,
             seed: int) -> list[dict[str, Any]]:
    """The params of the enqueued trials, in order, checked; their missing keys filled from the
    strategy's Sobol points ``0..m-1`` of the space without its conditions, then the conditions applied."""
    if not enqueue:
        return []
    if strategy == "grid":
        raise SweepError("hydra.sweeper.enqueue is for random and forest sweeps: a grid runs every point already; "
                         "use hydra.sweeper.strategy=random, or drop enqueue")
    out = []
    fill = random_params(dataclasses.replace(space, conditions=()), list(range(len(enqueue))), seed)
    for k, given in enumerate(enqueue):
        where = f"hydra.sweeper.enqueue[{k}]"
        if not isinstance(given, Mapping) or not given:
            raise SweepError(f"{where}={given!r} is not a configuration: give {{KEY: VALUE, ...}}, "
                             "e.g. {schedule.lr_max: 3e-3}")
        for name, value in given.items():
            check_value(space, str(name), value, where)
        params = space.active({**fill[k], **{str(n): v for n, v in given.items()}})
        dropped = sorted(set(map(str, given)) - set(params))
        if dropped:
            raise SweepError(f"{where} gives {dropped[0]}, which is not swept in this configuration "
                             f"(its condition: {space.conditional[dropped[0]]}): drop it or change the keys it reads")
        out.append(params)
    return out


def _record(source: str):
    """The sweep record ``source`` names (a sweep dir, a trials.db or ``postgresql://...#STUDY``)."""
    if source.startswith(("postgresql://", "postgres://")):
        url, _, study = source.partition("#")
        if not study:
            raise SweepError(f"hydra.sweeper.warm_start: {source!r} names no study: add #STUDY, e.g. "
                             f"{url}#my_sweep (the earlier sweep's hydra.sweeper.study)")
        with TrialStore.postgres(url, study, readonly=True, timeout_s=10.0, where=Path(source)) as store:
            return store.record()
    path = Path(source).expanduser()
    try:
        return read_sweep(path if path.suffix == ".db" else trials_db(path))
    except StoreError as e:
        raise SweepError(f"hydra.sweeper.warm_start: {e}") from None


def warm_observations(space: SearchSpace, sources: Sequence[str], direction: str) -> list[Observation]:
    """Observations from the finished trials of earlier sweeps ``sources`` whose keys and values
    fit ``space`` (a diverged trial as None, as the forest takes it)."""
    out: list[Observation] = []
    for source in sources:
        record = _record(str(source))
        if record.direction is not None and record.direction != direction:
            raise SweepError(f"hydra.sweeper.warm_start: {source} was a sweep to {record.direction} its objective, "
                             f"this one is to {direction} it: warm-start from a sweep of the same objective")
        used = skipped = 0
        for t in record.trials:
            if t.status not in ("completed", "diverged"):
                continue
            try:
                for name, value in t.params.items():
                    check_value(space, name, value, "")
                params = space.active(t.params)
                if params != t.params or any(d.name not in params for d in space.dims
                                             if d.name not in space.conditional):
                    raise SweepError("other keys")
            except SweepError:
                skipped += 1
                continue
            out.append(Observation(params, t.value if t.status == "completed" else None, t.objectives))
            used += 1
        log.info(f"warm start from {source}: {used} trial(s) given to the forest"
                 + (f", {skipped} left out (other keys or values outside this space)" if skipped else ""))
    return out
