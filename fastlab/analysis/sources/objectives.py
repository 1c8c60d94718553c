"""Several objectives and ``--metric``: which of a trial's measured numbers is the response.

A fastlab sweep with ``hydra.sweeper.objectives`` records each trial's objectives in ``trials.db``
(``Trial.objectives``: ``{"values": {name: value}, "violated": [constraint, ...]}``) and their
names and directions in its state (``objectives``; a store from before that: ``best.yaml``'s
``objectives:``). A trial's ``value`` is its first objective's, so without ``--metric`` the
analysis is of the first objective. ``--metric NAME`` picks the response:

1. one of the sweep's objectives: its value in each trial, and its direction;
2. else a number of each trial's ``metrics.json`` (a fastlab sweep dir or any multirun dir), read
   as the sweeper reads an objective (:func:`fastlab.sweep.objectives.resolve`: a top-level
   number, the final epoch's ``final.<NAME>``, or a dotted path such as ``best.accuracy``). Its
   direction is known only when it is the objective the sweep recorded; else ``--direction``.

Trials that broke a constraint (infeasible) keep their measured values; the analysis's
``--infeasible`` policy keeps or drops them. The Pareto front is the sweeper's own
(:func:`fastlab.sweep.results.pareto_front`), so the report's front is ``best.yaml``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from fastlab.analysis.errors import MetaError
from fastlab.analysis.sources.table import TrialsTable
from fastlab.sweep.direction import DIRECTIONS
from fastlab.sweep.objectives import Objectives, resolve
from fastlab.sweep.results import pareto_front
from fastlab.sweep.store import Trial

SHOWN_NAMES = 12  # metrics.json names listed in a --metric error line


def recorded_objectives(recorded: Any, best: Mapping[str, Any], trials: Sequence[Trial],
                        first_direction: str | None) -> dict[str, str | None]:
    """A sweep's ``{name: direction}`` of several objectives, ``{}`` for one.

    ``recorded``: the store's ``objectives`` state; ``best``: ``best.yaml`` (for a store from
    before that state existed); failing both, the names the trials were judged by, the first
    with the sweep's direction (the first objective's) and the others with none.
    """
    for source in (recorded, best.get("objectives")):
        if isinstance(source, Mapping) and source:
            return {str(k): (v if v in DIRECTIONS else None) for k, v in source.items()}
    judged = next((t.objectives for t in trials if t.objectives), None)
    names = list((judged or {}).get("values") or {})
    return {n: (first_direction if i == 0 else None) for i, n in enumerate(names)}


def front_numbers(trials: Sequence[Trial], objectives: Mapping[str, str | None]) -> tuple[int, ...]:
    """The trial numbers of the Pareto front (as ``best.yaml``'s ``pareto:``), ``()`` with fewer
    than two objectives or a direction nothing recorded."""
    if len(objectives) < 2 or any(d not in DIRECTIONS for d in objectives.values()):
        return ()
    goals = Objectives(tuple(objectives), tuple(str(d) for d in objectives.values()))
    return tuple(t.number for t in pareto_front(trials, goals))


def metric_names(metrics: Sequence[Mapping[str, Any] | None]) -> list[str]:
    """The names ``--metric`` can read from the trials' ``metrics.json``: top-level numbers and
    the final epoch's metrics, in order of first appearance."""
    names: list[str] = []
    for m in metrics:
        if not isinstance(m, Mapping):
            continue
        final = m.get("final") if isinstance(m.get("final"), Mapping) else {}
        for key in [*m, *final]:
            if key not in names and resolve(key, None, m) is not None:
                names.append(key)
    return names


def with_metric(table: TrialsTable, metric: str | None,
                metrics: Sequence[Mapping[str, Any] | None]) -> TrialsTable:
    """``table`` with ``metric`` as its response (see the module docstring); ``metrics``: each
    trial's whole ``metrics.json`` (None where it has none).

    Raises
    ------
    MetaError
        ``metric`` is neither an objective of the sweep nor a number in any trial's ``metrics.json``.
    """
    if metric is None or metric == table.objective:
        return replace(table, metric=metric)
    if metric in table.objectives:
        values = [objective_value(table, i, metric) for i in range(len(table))]
        direction, note = table.objectives[metric], ""
    else:
        values = [resolve(metric, None, m) for m in metrics]
        if all(v is None for v in values):
            raise MetaError(_unknown(table, metric, metrics))
        # metrics.json's direction is its objective's; any other number's is not recorded
        direction = table.direction if metric == "objective" and not table.objectives else None
        note = (f"the sweep records the direction of {table.objective or 'its objective'}, not of "
                f"{metric}")
    return replace(table, values=np.asarray([math.nan if v is None else v for v in values], dtype=float),
                   objective=metric, direction=direction, direction_note=note, metric=metric)


def _unknown(table: TrialsTable, metric: str, metrics: Sequence[Mapping[str, Any] | None]) -> str:
    names = metric_names(metrics)
    shown = ", ".join(names[:SHOWN_NAMES]) + (", ..." if len(names) > SHOWN_NAMES else "")
    if table.objectives:
        return (f"--metric {metric} is not an objective of {table.path} (its objectives: "
                f"{', '.join(table.objectives)}) nor a number in its trials' metrics.json"
                f"{f' ({shown})' if names else ''}: use one of them")
    if not names:
        return (f"--metric {metric}: the trials of {table.path} record no metrics.json numbers and "
                "no objectives: leave --metric out")
    return (f"--metric {metric} is not a number in the trials' metrics.json of {table.path}: use "
            f"one of {shown}")


def front_rows(table: TrialsTable) -> list[int]:
    """Indices into ``table`` of its Pareto front's trials, best first by the first objective
    (ties by number), as the sweep's own front table orders them."""
    at = {n: i for i, n in enumerate(table.numbers)}
    rows = [at[n] for n in table.pareto if n in at]  # a subsample may lack some
    if not rows:
        return []
    first = next(iter(table.objectives))
    sign = 1.0 if table.objectives[first] == "maximize" else -1.0
    return sorted(rows, key=lambda i: (-sign * objective_value(table, i, first), table.numbers[i]))


def objective_value(table: TrialsTable, row: int, name: str) -> float:
    """Trial ``row``'s value of the objective ``name``, NaN where it has none."""
    value = ((table.judged[row] or {}).get("values") or {}).get(name) if table.judged else None
    return math.nan if value is None else float(value)
