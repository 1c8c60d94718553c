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

import math
from typing import Any

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


def _client(uri: str | None) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MetaError("reading an MLflow experiment needs mlflow: pip install 'fastlab[mlflow]'") from None
    from fastlab.tracking.mlflow_store import tracking_uri

    return MlflowClient(tracking_uri=tracking_uri(uri)[0])


def _all_runs(client: Any, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
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
    client = _client(uri)
    try:
        experiment = client.get_experiment_by_name(name)
    except Exception as e:
        raise MetaError(f"cannot read the MLflow tracking store {store.tracking_uri(uri)[0]} "
                        f"({type(e).__name__}): set MLFLOW_TRACKING_URI to the store that holds "
                        f"experiment {name!r}") from None
    if experiment is None:
        raise MetaError(f"MLflow has no experiment {name!r} at {store.tracking_uri(uri)[0]}: pass an "
                        "experiment's name (mlflow:NAME), or set MLFLOW_TRACKING_URI to its store")
    runs = _all_runs(client, experiment.experiment_id)
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
