"""Read a fastlab sweep dir: ``trials.db`` (or the PostgreSQL study its ``storage.json`` names),
through the trial store's read-only API.

``fastlab.sweep.store`` is the one module that knows the database; its ``read_sweep`` takes no
lock, so a sweep that is still running can be analysed. The recorded state gives the search space
(which dimensions were sampled with ``tag(log, ...)``), the fixed overrides, the app's composed
config and the direction the sweep optimised.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fastlab.analysis.errors import MetaError
from fastlab.analysis.sources.direction import DIRECTIONS, direction_of_metrics, direction_of_task
from fastlab.analysis.sources.multirun import parse_overrides
from fastlab.analysis.sources.objectives import front_numbers, recorded_objectives, with_metric
from fastlab.analysis.sources.table import TrialsTable, numeric_facts, require_trials
from fastlab.sweep.results import by_configuration
from fastlab.sweep.store import StoreError, SweepRecord, read_sweep
from fastlab.sweepdir import trials_db


def _log_dims(space: dict[str, Any] | None) -> frozenset[str]:
    """Names of the dimensions sampled uniformly in log(value): forms ``tag(log, ...)``."""
    dims = (space or {}).get("dims")
    if not isinstance(dims, list):
        return frozenset()
    return frozenset(d["name"] for d in dims
                     if isinstance(d, dict) and str(d.get("form", "")).startswith("tag(log"))


def _fixed(space: dict[str, Any] | None) -> dict[str, Any]:
    try:
        return parse_overrides((space or {}).get("fixed") or [])
    except Exception:  # the fixed overrides are only reported: never fail on them
        return {}


def _best_yaml(sweep_dir: Path) -> dict[str, Any]:
    """The sweep's ``best.yaml`` ({} when there is none yet): what an older sweep recorded there
    only (its direction, before trials.db did; its objectives)."""
    try:
        best = yaml.safe_load((sweep_dir / "best.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return best if isinstance(best, dict) else {}


def _direction(record: SweepRecord, sweep_dir: Path, config: dict | None) -> tuple[str | None, str]:
    """The direction as recorded (fastlab.analysis.sources.direction's order), and a note when none is."""
    if record.direction is not None:
        return record.direction, ""
    direction, note = direction_of_metrics(t.metrics for t in record.trials)
    if direction is not None or note:
        return direction, note
    value = _best_yaml(sweep_dir).get("direction")
    return (value if value in DIRECTIONS else direction_of_task((config or {}).get("task"))), ""


def read_trials_db(sweep_dir: Path, metric: str | None = None) -> TrialsTable:
    """The trials of the fastlab sweep dir ``sweep_dir``, in trial-number order; ``metric``
    (``--metric``): the response, when not the first objective
    (:mod:`fastlab.analysis.sources.objectives`)."""
    try:
        record = read_sweep(trials_db(sweep_dir))
    except StoreError as e:
        raise MetaError(str(e)) from None
    # hydra.sweeper.repeats: a row per configuration, its value the mean of its runs
    trials, spread = by_configuration(record.trials)
    runs_metrics = _config_metrics(record.trials) if spread else [t.metrics for t in trials]
    names: list[str] = []
    params, values, status, numbers, job_dirs = [], [], [], [], []
    objective = None
    for t, metrics in zip(trials, runs_metrics, strict=True):
        names += [k for k in t.params if k not in names]
        params.append(t.params)
        status.append(t.status)
        numbers.append(t.number)
        # a pruned trial keeps its last value: dropped or kept by the analysis's --pruned policy
        usable = t.value is not None and t.status in ("completed", "pruned")
        values.append(float(t.value) if usable else math.nan)
        job_dirs.append(None if t.job_dir is None else sweep_dir / t.job_dir)
        if objective is None and metrics:
            objective = metrics.get("objective_name")
    try:
        config = yaml.safe_load(record.config) if record.config is not None else None
    except yaml.YAMLError:
        config = None
    config = config if isinstance(config, dict) else None
    space = record.space
    direction, note = _direction(record, sweep_dir, config)
    # several objectives: the trial's value is the first one's, so the response is named after it
    objectives = recorded_objectives(record.state.get("objectives"), _best_yaml(sweep_dir),
                                     trials, record.direction)
    table = TrialsTable(
        names=tuple(names),
        params=tuple(params),
        values=np.asarray(values, dtype=float),
        status=tuple(status),
        numbers=tuple(numbers),
        objective=next(iter(objectives), None) or objective
        or ((config or {}).get("task") or {}).get("objective"),
        direction=direction,
        direction_note=note,
        log_scale=_log_dims(space),
        scales_known=isinstance((space or {}).get("dims"), list),
        fixed=_fixed(space),
        conditions={str(k): str(v) for k, v in ((space or {}).get("conditions") or {}).items()},
        metrics=tuple(numeric_facts(m) for m in runs_metrics),
        job_dirs=tuple(job_dirs),
        config=config,
        source="trials.db",
        path=sweep_dir,
        objectives=objectives,
        judged=tuple(t.objectives for t in trials) if objectives else (),
        pareto=front_numbers(trials, objectives),
        replicates=_replicates(record.trials, spread),
    )
    done = [t for t in trials if t.status == "completed"]
    if metric is None and done and all(t.value is None for t in done):  # a plain app's grid or random sweep
        raise MetaError(f"no objective was returned: the trials of {sweep_dir} completed without a value (their task "
                        "returned nothing, or text); return the objective as a float from the task (and set "
                        "hydra.sweeper.direction), or pass --metric NAME of a number the trials' metrics.json holds")
    return with_metric(require_trials(table), metric, runs_metrics)


def _config_metrics(runs: list) -> list[dict | None]:
    """Per configuration of a sweep with repeats, its completed runs' ``metrics.json`` as one: the
    numbers of its top level and of ``final``, ``best`` and ``seconds`` averaged over the runs,
    the rest the first run's (what ``--metric`` and ``--derive`` read)."""
    groups: dict[int, list[dict]] = {}
    for t in runs:
        groups.setdefault(t.config, [])
        if t.status == "completed" and t.metrics:
            groups[t.config].append(t.metrics)
    out: list[dict | None] = []
    for config in sorted(groups):
        docs = groups[config]
        if not docs:
            out.append(None)
            continue
        merged = dict(docs[0])
        for key, value in docs[0].items():
            if _is_number(value):
                merged[key] = _mean([d.get(key) for d in docs])
            elif key in ("final", "best", "seconds") and isinstance(value, dict):
                merged[key] = {k: _mean([(d.get(key) or {}).get(k) for d in docs]) if _is_number(v) else v
                               for k, v in value.items()}
        out.append(merged)
    return out


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _mean(values: list) -> float | None:
    numbers = [float(v) for v in values if _is_number(v)]
    return sum(numbers) / len(numbers) if numbers else None


def _replicates(runs: list, spread: dict) -> dict | None:
    """``{"repeats", "configurations", "sd"}`` of a sweep with repeats: the runs per configuration
    and the pooled sd of the runs around their configuration's mean (a single run's noise: the
    scatter no forest can explain)."""
    if not spread:
        return None
    by_config: dict[int, list[float]] = {}
    for t in runs:
        if t.status == "completed" and t.value is not None:
            by_config.setdefault(t.config, []).append(float(t.value))
    squares = sum(sum((v - sum(vs) / len(vs)) ** 2 for v in vs) for vs in by_config.values())
    dof = sum(len(vs) - 1 for vs in by_config.values())
    return {"repeats": max((t.repeat for t in runs if t.repeat is not None), default=0) + 1,
            "configurations": len(spread), "sd": math.sqrt(squares / dof) if dof > 0 else None}
