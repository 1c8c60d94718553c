"""Read a fastlab sweep dir: ``trials.db`` (DESIGN.md's contract), read-only.

The store is opened with SQLite's read-only URI, without the sweeper's lock, so a sweep that is
still running can be analysed. Its ``sweep`` table keeps the search space (which dimensions were
sampled with ``tag(log, ...)``), the fixed overrides and the app's composed config.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fastlab.meta.direction import direction_of_metric, direction_of_task
from fastlab.meta.errors import MetaError
from fastlab.meta.multirun import parse_overrides
from fastlab.meta.trials import TrialsTable, require_trials


def _query(db: Path, sql: str) -> list[tuple]:
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    except sqlite3.Error as e:
        raise MetaError(f"{db} cannot be read as a fastlab trials store ({e}): pass a sweep dir "
                        "written by hydra/sweeper=fastlab") from None


def _sweep_state(db: Path) -> dict[str, Any]:
    try:
        rows = _query(db, "SELECT key, value FROM sweep")
    except MetaError:
        return {}  # an older store without the table: the trials alone still do
    return {k: json.loads(v) for k, v in rows}


def _log_dims(space: Any) -> frozenset[str]:
    """Names of the dimensions sampled uniformly in log(value): forms ``tag(log, ...)``."""
    try:
        dims = json.loads(space)["dims"] if isinstance(space, str) else []
    except (ValueError, KeyError, TypeError):
        return frozenset()
    return frozenset(d["name"] for d in dims if str(d.get("form", "")).startswith("tag(log"))


def _space_known(space: Any) -> bool:
    try:
        return isinstance(space, str) and isinstance(json.loads(space)["dims"], list)
    except (ValueError, KeyError, TypeError):
        return False


def _fixed(space: Any) -> dict[str, Any]:
    try:
        lines = json.loads(space)["fixed"] if isinstance(space, str) else []
        return parse_overrides(lines)
    except Exception:  # the fixed overrides are only reported: never fail on them
        return {}


def _direction(sweep_dir: Path, config: dict | None, objective: str | None) -> str | None:
    """The sweeper's own ``direction`` (best.yaml), else the task's, else the metric name's."""
    try:
        best = yaml.safe_load((sweep_dir / "best.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        best = {}
    if best.get("direction") in ("maximize", "minimize"):
        return best["direction"]
    return direction_of_task((config or {}).get("task")) or direction_of_metric(objective)


def read_trials_db(sweep_dir: Path) -> TrialsTable:
    """The trials of the fastlab sweep dir ``sweep_dir``, in trial-number order."""
    db = sweep_dir / "trials.db"
    rows = _query(db, "SELECT number, status, params, value, metrics, job_dir FROM trials "
                      "ORDER BY number")
    state = _sweep_state(db)
    names: list[str] = []
    params, values, status, numbers, job_dirs = [], [], [], [], []
    objective = None
    for number, st, p, value, metrics, job_dir in rows:
        p = json.loads(p)
        names += [k for k in p if k not in names]
        params.append(p)
        status.append(st)
        numbers.append(int(number))
        values.append(float(value) if value is not None and st == "completed" else math.nan)
        job_dirs.append(None if job_dir is None else sweep_dir / job_dir)
        if objective is None and metrics:
            objective = json.loads(metrics).get("objective_name")
    config = state.get("config")
    try:
        config = yaml.safe_load(config) if isinstance(config, str) else None
    except yaml.YAMLError:
        config = None
    return require_trials(TrialsTable(
        names=tuple(names),
        params=tuple(params),
        values=np.asarray(values, dtype=float),
        status=tuple(status),
        numbers=tuple(numbers),
        objective=objective or ((config or {}).get("task") or {}).get("objective"),
        direction=_direction(sweep_dir, config, objective),
        log_scale=_log_dims(state.get("space")),
        scales_known=_space_known(state.get("space")),
        fixed=_fixed(state.get("space")),
        job_dirs=tuple(job_dirs),
        config=config if isinstance(config, dict) else None,
        source="trials.db",
        path=sweep_dir,
    ))
