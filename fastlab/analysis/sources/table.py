"""The trials table: one row per trial of a sweep, whichever sweeper made it. Every source
(``fastlab.analysis.sources``) reads its trials into a :class:`TrialsTable`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fastlab.analysis.errors import MetaError

# A trial's status: completed and diverged are results; anything else (failed, running, missing)
# says nothing about the response and is dropped, with a count in the report. A pruned trial (a
# sweep's pruner stopped it early) is dropped too, unless --pruned keep (see keep_pruned).
COMPLETED, DIVERGED, PRUNED = "completed", "diverged", "pruned"
PRUNED_POLICIES = ("drop", "keep")
# A trial that broke one of a sweep's hydra.sweeper.constraints: its objectives are still measured,
# so it is kept (--infeasible keep) unless --infeasible drop gives it this status, left out.
INFEASIBLE = "infeasible"
INFEASIBLE_POLICIES = ("keep", "drop")
# The feature --pruned keep adds: the epochs each trial trained (metrics.json's "epochs").
EPOCHS_RUN = "epochs_run"

# Keys that replicate a trial rather than change it: never features.
REPLICATE_KEYS = frozenset({"seed"})


@dataclass(frozen=True)
class TrialsTable:
    """The trials of one sweep.

    Attributes
    ----------
    names : the swept parameters (override keys, e.g. ``schedule.lr_ratio``), in sweep order.
    params : one ``{name: value}`` per trial, values typed as the override gave them (int, float,
        str, bool, list), length n.
    values : (n,) float: the objective, NaN where a trial has none (diverged, failed, running);
        a pruned trial's is its objective at the epoch it was stopped after.
    status : length n: ``completed``, ``diverged``, ``pruned``, ``failed``, ``running`` or
        ``missing`` (a job dir without ``metrics.json``).
    numbers : length n: trial numbers (job numbers for a plain multirun).
    objective : the objective's name (``metrics.json``'s ``objective_name``), or None.
    direction : ``maximize`` or ``minimize`` as the sweep recorded it (see
        :mod:`fastlab.analysis.sources.direction`), or None when nothing says.
    direction_note : why ``direction`` is None when the records contradict each other, else "".
    log_scale : names the sweep declared log-sampled (``tag(log, ...)``; fastlab sweeps only).
    scales_known : the sweep declared every dimension's scale (a fastlab sweep's stored search
        space): then only ``log_scale`` is log-scaled, and the "spans a decade" rule is not used.
    fixed : overrides every trial shared, ``{key: value}``.
    job_dirs : length n: each trial's job dir, or None.
    config : the composed app config of the sweep (a dict), or None: the base of ``--apply``.
    source : ``trials.db``, ``job dirs``, ``an MLflow experiment`` or ``an Optuna study``.
    path : the sweep dir; for a tracker's study the source as typed (``mlflow:...``, a string).
    metrics : length n (or empty): each trial's facts from its ``metrics.json``, the top-level
        numbers only (e.g. ``layer_groups``, ``epochs``; see :func:`numeric_facts`), ``{}`` for a
        trial without one. ``--derive`` can read them; they are never features by themselves.
    derived : ``{name: expression}`` of the columns :func:`fastlab.analysis.forest.derive.with_derived`
        added to ``names`` and ``params``.
    conditions : ``{name: expression}`` of the conditional keys (a fastlab sweep's
        ``hydra.sweeper.conditions``): absent from a trial's params where the expression did not
        hold, and analysed where present (:mod:`fastlab.analysis.forest.encode`).
    """

    names: tuple[str, ...]
    params: tuple[dict[str, Any], ...]
    values: np.ndarray
    status: tuple[str, ...]
    numbers: tuple[int, ...]
    objective: str | None
    direction: str | None
    log_scale: frozenset[str] = frozenset()
    scales_known: bool = False
    fixed: dict[str, Any] = field(default_factory=dict)
    job_dirs: tuple[Path | None, ...] = ()
    config: dict | None = None
    source: str = "job dirs"
    path: Path = Path(".")
    direction_note: str = ""
    metrics: tuple[dict[str, float], ...] = ()
    derived: dict[str, str] = field(default_factory=dict)
    conditions: dict[str, str] = field(default_factory=dict)
    # hydra.sweeper.repeats: {"repeats", "configurations", "sd"} (the runs' pooled sd around their
    # configuration's mean); each row is then a configuration, its value the mean of its runs
    replicates: dict[str, Any] | None = None
    objectives: dict[str, str | None] = field(default_factory=dict)
    judged: tuple[dict[str, Any] | None, ...] = ()
    pareto: tuple[int, ...] = ()
    metric: str | None = None

    def __len__(self) -> int:
        return len(self.params)

    def counts(self) -> dict[str, int]:
        """How many trials have each status, e.g. ``{"completed": 28, "diverged": 1, ...}``."""
        out = {COMPLETED: 0, DIVERGED: 0, "failed": 0}
        for s in self.status:
            out[s] = out.get(s, 0) + 1
        return out

    def infeasible(self) -> np.ndarray:
        """(n,) bool: the trials that broke a constraint (``hydra.sweeper.constraints``)."""
        if not self.judged:
            return np.zeros(len(self), dtype=bool)
        return np.asarray([bool(j and j.get("violated")) for j in self.judged], dtype=bool)


# Sources that are not a dir: ``<prefix>:<what the reader takes>``.
def swept_names(params: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """Split override keys into swept (the value differs between trials) and fixed ones.

    Returns ``(names, fixed)``: swept keys in order of first appearance, and ``{key: value}`` of
    the keys every trial gave the same value.
    """
    order: list[str] = []
    for p in params:
        order += [k for k in p if k not in order]
    names, fixed = [], {}
    for key in order:
        texts = {repr(p.get(key, _ABSENT)) for p in params}
        if len(texts) > 1:
            names.append(key)
        else:
            fixed[key] = params[0].get(key)
    return names, fixed


_ABSENT = object()

# metrics.json's top-level numbers that are outcomes, not facts about the trial's set-up: a column
# derived from the objective would let the forest predict the objective from itself.
OUTCOME_KEYS = frozenset({"objective"})


def numeric_facts(metrics: dict[str, Any] | None) -> dict[str, float]:
    """The top-level finite numbers of one ``metrics.json`` (``layer_groups``, ``epochs``, ...),
    outcomes and booleans left out; ``{}`` for a trial without one."""
    if not isinstance(metrics, dict):
        return {}
    return {k: float(v) for k, v in metrics.items()
            if k not in OUTCOME_KEYS and isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(v)}


def keep_pruned(table: TrialsTable) -> tuple[TrialsTable, int]:
    """``--pruned keep``: pruned trials count as results, with the value they had when they were
    stopped, and every trial gets the feature ``epochs_run`` (the epochs it trained, from its
    ``metrics.json``) so that the forest can tell a short trial's value from a full one's.
    Returns the table and how many pruned trials it kept."""
    pruned = [s == PRUNED and math.isfinite(v) for s, v in zip(table.status, table.values, strict=True)]
    if not any(pruned):
        return table, 0
    epochs = [m.get("epochs") for m in table.metrics] if table.metrics else [None] * len(table)
    if any(e is None for e, p in zip(epochs, pruned, strict=True) if p):
        raise MetaError(f"--pruned keep needs each pruned trial's epochs (metrics.json's \"epochs\"), "
                        f"which {table.path} does not record: use --pruned drop")
    if EPOCHS_RUN in table.names:
        raise MetaError(f"--pruned keep adds the column {EPOCHS_RUN}, which {table.path} already has: "
                        "use --pruned drop")
    params = tuple({**p, EPOCHS_RUN: e} if e is not None else dict(p)
                   for p, e in zip(table.params, epochs, strict=True))
    status = tuple(COMPLETED if p else s for s, p in zip(table.status, pruned, strict=True))
    return replace(table, names=(*table.names, EPOCHS_RUN), params=params, status=status), sum(pruned)


def drop_infeasible(table: TrialsTable) -> tuple[TrialsTable, int]:
    """``--infeasible drop``: the trials that broke a constraint get the status ``infeasible``,
    which the analysis leaves out (with a count). Returns the table and how many it marked."""
    bad = table.infeasible()
    status = tuple(INFEASIBLE if b else s for s, b in zip(table.status, bad, strict=True))
    return replace(table, status=status), int(bad.sum())


def require_trials(table: TrialsTable) -> TrialsTable:
    """``table`` itself, or a ``MetaError`` when it holds no trial at all."""
    if len(table) == 0:
        raise MetaError(f"{table.path} holds no trials ({table.source} is empty): pass the dir of "
                        "a sweep that ran, or wait until its first trials finish")
    return table
