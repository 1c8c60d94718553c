"""One MLflow store for the tracking tests: making a fresh SQLite store runs MLflow's migrations
(seconds on a shared CPU), so the tests share one and tell their runs apart by experiment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests send nothing anywhere: MLflow's usage telemetry off, here and in the subprocesses (whose
# environments copy this one). (MLflow also turns it off by itself where CI is set.)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def store_root(tmp_path_factory) -> Path:
    """A working directory whose ``outputs/mlruns`` is fastlab's default MLflow store."""
    return tmp_path_factory.mktemp("tracking")


@pytest.fixture(scope="session")
def store_uri(store_root: Path) -> str:
    """The default store's URI, as fastlab resolves it from ``store_root``."""
    return f"sqlite:///{store_root / 'outputs' / 'mlruns' / 'mlflow.db'}"


@pytest.fixture
def in_store_root(store_root: Path, monkeypatch):
    """Run from ``store_root`` with no tracking URI in the environment: the default store."""
    monkeypatch.chdir(store_root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return store_root


def experiment_runs(uri: str, experiment: str) -> list:
    """Every run of ``experiment`` in the store at ``uri``, read back with mlflow.search_runs."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs(experiment_names=[experiment], output_format="list",
                                  order_by=["attributes.start_time ASC"])
    finally:
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or None)
