"""Read an MLflow experiment as a trials table: ``fastlab-meta mlflow:EXPERIMENT[#PARENT]``.

Each run is a trial, its params are the features, and a named metric (``--metric``; default
``objective``, which fastlab's ``MlflowLogger`` logs) is the objective. A run that is the parent
of others (a fastlab sweep's run, or any tool's nested runs) is the sweep, not a trial; with
``#PARENT`` (a parent run's id or name) only that sweep's children are read.

- **Params are strings** in MLflow: each is typed as a Hydra override is
  (``fastlab.analysis.sources.multirun.parse_overrides``: ``3`` int, ``1e-3`` float, ``true`` bool, ``[1, 2]``
  list, anything else a string), so the same rules as for a multirun dir pick the swept ones, and
  a numeric one spanning more than a decade is log-scaled. A fastlab sweep's parent run records
  its search space (``space.<key>``): then its declared scales are used, as for its sweep dir.
- **Status**: the tag ``fastlab.status`` when a run has it (completed, diverged, failed, pruned),
  else MLflow's own (FINISHED: completed, FAILED and KILLED: failed, else running); a finished
  run without the metric is ``missing``.
- **Direction**: for fastlab's objective (``objective``, its name or ``final.<name>``), the runs'
  ``fastlab.direction`` tags, all agreeing, or the parent's ``direction`` param; else (another
  metric, another tool's runs) ``--direction``.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from fastlab.analysis.errors import MetaError
from fastlab.analysis.sources.table import TrialsTable, require_trials, swept_names

DEFAULT_METRIC = "objective"
_STATUS = {"FINISHED": "completed", "FAILED": "failed", "KILLED": "failed"}


def typed_params(params: dict[str, str]) -> dict[str, Any]:
    """MLflow's string params typed as Hydra types an override's value (see the docstring)."""
    from fastlab.analysis.sources.multirun import parse_overrides

    out: dict[str, Any] = {}
    for key, text in params.items():
        try:
            out[key] = parse_overrides([f"{key}={text}"])[key]
        except Exception:  # not in the override grammar (spaces, quotes ...): a category
            out[key] = text
    return out


def _client(uri: str | None, name: str) -> tuple[Any, str]:
    """An ``MlflowClient`` on the store at ``uri`` (resolved as training resolves it) and that
    store's URI; a server's requests bounded as training's are (``fastlab.tracking.deadlines``),
    and a local store that is not there is said, not made."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MetaError("reading an MLflow experiment needs mlflow: pip install 'fastlab[mlflow]'") from None
    from fastlab.tracking.deadlines import mlflow_bounds, shown
    from fastlab.tracking.mlflow_store import tracking_uri

    resolved = tracking_uri(uri)[0]
    local = _local_store(resolved)
    if local is not None and not local.exists():
        raise MetaError(f"MLflow has no experiment {name!r} at {resolved}: there is no tracking store there "
                        "(fastlab-meta reads a store, never makes one); set MLFLOW_TRACKING_URI to the store "
                        "that holds it, or run from the folder whose outputs/mlruns holds fastlab's store")
    mlflow_bounds(resolved)
    # a database, a file or a server's, holds MLflow's tables: MLflow would make them in any it is pointed at
    if local is not None and local.is_file():
        held = _holds_experiments(local)
    elif local is None and not resolved.startswith(("http://", "https://", "databricks")):
        held = _asked(resolved, "looking for its tables", lambda: _db_holds_experiments(resolved))
    else:  # a file store's folder, a tracking server
        held = True
    if not held:
        raise MetaError(f"{local or shown(resolved)} is not an MLflow tracking store (no experiments table; MLflow "
                        f"would make one in it): set MLFLOW_TRACKING_URI to the store that holds experiment {name!r}")
    return MlflowClient(tracking_uri=resolved), resolved


def _db_holds_experiments(uri: str) -> bool:
    """Whether the database at ``uri`` (a SQLAlchemy URL) holds MLflow's tables, looked at without
    writing, its server's waits bounded (``fastlab.tracking.deadlines``)."""
    import sqlalchemy

    from fastlab.tracking.deadlines import sqlalchemy_connect_args

    engine = sqlalchemy.create_engine(uri, connect_args=sqlalchemy_connect_args(uri), poolclass=sqlalchemy.NullPool)
    try:
        return sqlalchemy.inspect(engine).has_table("experiments")
    finally:
        engine.dispose()


def _local_store(uri: str) -> Path | None:
    """Where a local store's file or folder is (a SQLite file, a file store), or None for a server
    or a database: MLflow makes a store that is not there on its first call, a reader must not."""
    if uri.startswith("sqlite:///"):
        return None if uri == "sqlite:///:memory:" else Path(uri[len("sqlite:///"):])
    if uri.startswith("file:"):
        return Path(urlparse(uri).path)
    return None if "://" in uri else Path(uri)


def _holds_experiments(path: Path) -> bool:
    """Whether the SQLite file ``path`` holds MLflow's tables, read without writing to it."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return bool(db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'experiments'")
                        .fetchall())
    except sqlite3.DatabaseError:  # not a database at all
        return False


def _asked(uri: str, what: str, call: Any) -> Any:
    """``call()``, with a store that fails or a server that does not answer as one line naming it
    (and, for a server, the settings of the wait)."""
    from fastlab.tracking.deadlines import mlflow_wait, shown, timed_out

    try:
        return call()
    except Exception as e:
        if uri.startswith(("http://", "https://")):
            how = ("did not answer in time" if timed_out(e) else f"could not be read ({type(e).__name__})")
            raise MetaError(f"the MLflow tracking server {shown(uri)} {how} while {what} ({mlflow_wait()}): "
                            "check the server, or set MLFLOW_TRACKING_URI to the store that holds it") from None
        raise MetaError(f"cannot read the MLflow tracking store {shown(uri)} ({type(e).__name__}) while {what}: "
                        "set MLFLOW_TRACKING_URI to the store that holds it") from None


def _all_runs(client: Any, uri: str, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = _asked(uri, "reading its runs", lambda t=token: client.search_runs(
            [experiment_id], max_results=1000, page_token=t, order_by=["attributes.start_time ASC"]))
        runs += list(page)
        token = page.token
        if not token:
            return runs


def read_mlflow(spec: str, metric: str | None = None, uri: str | None = None) -> TrialsTable:
    """The trials of ``spec`` (``EXPERIMENT`` or ``EXPERIMENT#PARENT``) in the tracking store
    (``uri``, else ``$MLFLOW_TRACKING_URI``, else fastlab's default store)."""
    from fastlab.tracking import mlflow_store as store

    name, _, parent_key = spec.partition("#")
    if not name:
        raise MetaError("mlflow: needs an experiment name, e.g. fastlab-meta mlflow:fastlab --metric accuracy")
    client, resolved = _client(uri, name)
    experiment = _asked(resolved, f"looking up experiment {name!r}",
                        lambda: client.get_experiment_by_name(name))
    if experiment is None:
        raise MetaError(f"MLflow has no experiment {name!r} at {resolved}: pass an "
                        "experiment's name (mlflow:NAME), or set MLFLOW_TRACKING_URI to its store")
    runs = _all_runs(client, resolved, experiment.experiment_id)
    parents = {r.data.tags.get(store.TAG_PARENT) for r in runs} - {None}
    by_id = {r.info.run_id: r for r in runs}
    if parent_key:
        match = [r for r in runs if r.info.run_id in parents
                 and parent_key in (r.info.run_id, r.info.run_name)]
        if not match:
            raise MetaError(f"experiment {name!r} has no parent run {parent_key!r}: pass a sweep's run "
                            "id or name after #, or leave #... out for all its runs")
        parent_ids = {match[-1].info.run_id}
        trials = [r for r in runs if r.data.tags.get(store.TAG_PARENT) in parent_ids]
    else:
        trials = [r for r in runs if r.info.run_id not in parents]
        parent_ids = {r.data.tags.get(store.TAG_PARENT) for r in trials} - {None}
    metric = metric or DEFAULT_METRIC
    rows, values, status = [], [], []
    for r in trials:
        rows.append(typed_params(r.data.params))
        value = r.data.metrics.get(metric)
        s = r.data.tags.get(store.TAG_STATUS) or _STATUS.get(r.info.status, "running")
        if s == "completed" and (value is None or not math.isfinite(value)):
            s = "missing"
        status.append(s)
        values.append(float(value) if s == "completed" else math.nan)
    if trials and all(math.isnan(v) for v in values):
        known = sorted({k for r in trials for k in r.data.metrics})
        raise MetaError(f"no run of experiment {name!r} logged the metric {metric!r}: pass --metric with "
                        f"one of {known[:12] or ['(none logged)']}")
    names, fixed = swept_names(rows)
    sweep = [by_id[p] for p in parent_ids if p in by_id]
    log_scale, scales_known = _declared_scales(sweep, names)
    return require_trials(TrialsTable(
        names=tuple(names),
        params=tuple({k: r[k] for k in names if k in r} for r in rows),
        values=np.asarray(values, dtype=float),
        status=tuple(status),
        numbers=tuple(_number(r, i) for i, r in enumerate(trials)),
        objective=_objective_name(trials, metric),
        direction=_direction(trials, sweep, metric),
        fixed=fixed,
        log_scale=log_scale,
        scales_known=scales_known,
        source="an MLflow experiment",
        path=f"mlflow:{spec}",  # the source as typed, for the report
    ))


def _objective_name(trials: list, metric: str) -> str:
    """fastlab's ``objective`` by the name its runs record (``accuracy``), else ``metric``."""
    from fastlab.tracking.mlflow_store import TAG_OBJECTIVE

    names = {r.data.tags.get(TAG_OBJECTIVE) for r in trials} - {None}
    return names.pop() if metric == DEFAULT_METRIC and len(names) == 1 else metric


def _number(run: Any, default: int) -> int:
    text = run.data.tags.get("fastlab.trial", "")
    return int(text) if text.isdigit() else default


def _declared_scales(sweep: list, names: list[str]) -> tuple[frozenset[str], bool]:
    """The log-scaled names and whether every swept name's scale is declared, from one fastlab
    sweep parent's ``space.<key>`` params; else nothing declared (the decade rule then)."""
    if len(sweep) != 1:
        return frozenset(), False
    forms = {k[len("space."):]: v for k, v in sweep[0].data.params.items() if k.startswith("space.")}
    if not forms or not set(names) <= set(forms):
        return frozenset(), False
    return frozenset(k for k, v in forms.items() if v.startswith("tag(log")), True


def _direction(trials: list, sweep: list, metric: str) -> str | None:
    """The recorded direction, when ``metric`` is the one it was recorded for (fastlab's
    ``objective``, the objective's own name or its ``final.`` value)."""
    from fastlab.tracking.mlflow_store import TAG_DIRECTION, TAG_OBJECTIVE

    names = {r.data.tags.get(TAG_OBJECTIVE) for r in trials} - {None}
    if metric != DEFAULT_METRIC and not (len(names) == 1 and metric in (next(iter(names)),
                                                                        f"final.{next(iter(names))}")):
        return None
    seen = {r.data.tags.get(TAG_DIRECTION) for r in trials} - {None}
    if not seen:
        seen = {r.data.params.get("direction") for r in sweep} - {None}
    return seen.pop() if len(seen) == 1 and seen <= {"maximize", "minimize"} else None
