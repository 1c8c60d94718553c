"""Where MLflow logs go, and how a run finds the MLflow runs it belongs with.

- **The tracking URI**: ``trainer.mlflow.uri``, else ``$MLFLOW_TRACKING_URI``, else a local
  store: ``sqlite:///<cwd>/outputs/mlruns/mlflow.db``. A new experiment in a SQLite store keeps
  its artifacts in ``artifacts/`` beside the database file (``outputs/mlruns/artifacts``). (MLflow 3 refuses its file store ``./mlruns`` unless
  ``MLFLOW_ALLOW_FILE_STORE=true``, and calls it "maintenance mode"; SQLite is the local store it
  now defaults to. ``mlflow ui --backend-store-uri sqlite:///outputs/mlruns/mlflow.db`` shows it.)
- **Tags** that fastlab sets (``TAG_*``): every run carries its absolute run dir; a sweep's
  parent run carries its absolute sweep dir and the role ``sweep``. A trial finds its parent with
  one search: its sweep dir is the nearest folder above its run dir that holds ``trials.db``
  (the driver makes it before any job starts), so it works in any launcher's worker processes.
- **Params** are a config flattened to dotted keys, each value written as a Hydra override
  would spell it (``true``, ``null``, ``[16, 32]``), so ``fastlab-meta mlflow:...`` types them
  back as it types a multirun's overrides.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastlab.tracking.deadlines import mlflow_bounds

DEFAULT_STORE = Path("outputs") / "mlruns"
TAG_ROLE = "fastlab.role"  # sweep | trial | run
TAG_RUN_DIR = "fastlab.run_dir"
TAG_SWEEP_DIR = "fastlab.sweep_dir"
TAG_STATUS = "fastlab.status"  # completed | diverged | failed | pruned | running (metrics.json, trials.db)
TAG_OBJECTIVE = "fastlab.objective_name"
TAG_DIRECTION = "fastlab.direction"
TAG_TRIAL = "fastlab.trial"
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own: the UI nests a run under this one
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value; longer ones are left out


def tracking_uri(configured: str | None) -> tuple[str, str | None]:
    """``(uri, artifact root or None)``: the URI to log to, and where a new experiment keeps its
    artifacts: ``artifacts/`` beside a local SQLite file (MLflow's own default, ``./mlruns``,
    would follow the working directory); a server or another URI decides its own (None)."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{DEFAULT_STORE.resolve() / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        return uri, str(Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts")
    return uri, None


def connect(configured: str | None, experiment: str) -> tuple[Any, str]:
    """An ``MlflowClient`` for the tracking URI and the id of ``experiment`` (made if new)."""
    from mlflow.tracking import MlflowClient

    uri, artifacts = tracking_uri(configured)
    mlflow_bounds(uri)  # a dead server costs seconds (fastlab.tracking.deadlines)
    if artifacts is not None:
        Path(artifacts).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    return client, experiment_id(client, experiment, artifacts)


def experiment_id(client: Any, name: str, artifacts: str | None) -> str:
    """The id of experiment ``name``, made when there is none (another process may make it at
    the same moment: then its id)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifacts)
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _quoted(text: str) -> str | None:
    # MLflow's filter grammar has no escape for a quote inside a string
    return None if "'" in text else f"'{text}'"


def find_run(client: Any, experiment: str, tags: Mapping[str, str]) -> Any | None:
    """The newest run of ``experiment`` whose tags hold ``tags``, or None."""
    terms = []
    for key, value in tags.items():
        quoted = _quoted(value)
        if quoted is None:
            return None
        terms.append(f"tags.`{key}` = {quoted}")
    runs = client.search_runs([experiment], " and ".join(terms), max_results=1,
                              order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def override_text(value: Any) -> str:
    """A value as a Hydra override spells it, so it parses back to the same type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return str(value)


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as ``{dotted.key: override text}`` (lists stay one value)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, f"{name}."))
        else:
            text = override_text(dict(value) if isinstance(value, Mapping) else value)
            if len(text) <= MAX_PARAM_CHARS:
                out[name] = text
    return out


def log_params(client: Any, run: Any, params: Mapping[str, str]) -> None:
    """Log the params ``run`` does not hold yet (MLflow refuses to change a logged one: a resumed
    or retried run keeps what it first logged)."""
    from mlflow.entities import Param

    held = run.data.params
    new = [Param(k, v) for k, v in params.items() if k not in held]
    if new:
        client.log_batch(run.info.run_id, params=new)
