"""Every network call has a deadline, and a reader never makes a store: ``fastlab-meta`` on an
MLflow server or a database server that accepts and never answers (a 127.0.0.1 socket) ends in
one line naming the server and the setting of the wait, in seconds; on a store that is not there
(or a file that is not one) it says so and leaves the disk as it was. The sweep store's PostgreSQL
connection has the same deadline."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from fastlab.cli.meta import main
from fastlab.sweep.errors import StoreError
from fastlab.sweep.store import TrialStore
from tests.faults import network_cases
from tests.faults.network_cases import silent_server


def fail(capsys, *argv: str) -> str:
    """``fastlab-meta argv``: exit 2 and one line; returns it."""
    with pytest.raises(SystemExit) as e:
        main([*argv, "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastlab-meta: error: "), err
    return err[0]


def test_a_silent_mlflow_server_is_one_line_within_seconds(tmp_path):
    pytest.importorskip("mlflow")
    result = network_cases.dead_mlflow_server(tmp_path)
    assert "did not answer in time" in result.outcome


def test_a_silent_optuna_database_server_is_one_line_within_seconds(tmp_path):
    pytest.importorskip("optuna")
    pytest.importorskip("psycopg")
    result = network_cases.dead_database_server(tmp_path)
    assert "did not answer in time" in result.outcome


def test_no_mlflow_store_is_made_for_a_missing_experiment(tmp_path, capsys, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    line = fail(capsys, "mlflow:no_such_experiment", "--out", str(tmp_path / "o"))
    assert "no experiment 'no_such_experiment'" in line and "no tracking store there" in line, line
    assert "outputs/mlruns/mlflow.db" in line and not (tmp_path / "outputs").exists()
    # a store named by the URI, in a folder that is there: still not made
    db = tmp_path / "elsewhere.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    assert "no tracking store there" in fail(capsys, "mlflow:fastlab", "--out", str(tmp_path / "o"))
    assert not db.exists()


def _foreign_db(path: Path) -> bytes:
    """A SQLite file of another program's (one table), and its bytes."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('mine')")
    db.close()
    return path.read_bytes()


def test_a_sqlite_file_that_is_no_mlflow_store_is_left_as_it_was(tmp_path, capsys, monkeypatch):
    pytest.importorskip("mlflow")
    db = tmp_path / "other.db"
    before = _foreign_db(db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    line = fail(capsys, "mlflow:fastlab", "--out", str(tmp_path / "o"))
    assert f"{db} is not an MLflow tracking store" in line, line
    assert db.read_bytes() == before


def test_an_optuna_storage_is_never_made(tmp_path, capsys):
    pytest.importorskip("optuna")
    missing = tmp_path / "none" / "study.db"
    line = fail(capsys, f"optuna:sqlite:///{missing}#s", "--out", str(tmp_path / "o"))
    assert "does not exist" in line and not missing.parent.exists()
    db = tmp_path / "other.db"
    before = _foreign_db(db)  # a database, but not Optuna's: its tables are not made in it
    line = fail(capsys, f"optuna:sqlite:///{db}#s", "--out", str(tmp_path / "o"))
    assert f"cannot open the Optuna storage sqlite:///{db}" in line, line
    assert db.read_bytes() == before


def test_the_sweep_stores_postgres_connection_has_the_shared_deadline(tmp_path, monkeypatch):
    pytest.importorskip("psycopg")
    monkeypatch.setenv("FASTLAB_DB_CONNECT_TIMEOUT", "2")
    with silent_server() as (port, accepted):
        start = time.monotonic()
        with pytest.raises(StoreError, match="cannot open the trial store"):
            TrialStore.postgres(f"postgresql://u@127.0.0.1:{port}/db", "s", readonly=True, timeout_s=3,
                                where=tmp_path / "trials.db")
        took = time.monotonic() - start
    assert accepted and took < 8, f"{took:.1f} s"  # 10 s before the setting was read


def test_a_bad_wait_setting_is_one_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("optuna")
    monkeypatch.setenv("FASTLAB_DB_CONNECT_TIMEOUT", "soon")
    line = fail(capsys, "optuna:postgresql+psycopg://u@127.0.0.1:1/db#s", "--out", str(tmp_path / "o"))
    assert "FASTLAB_DB_CONNECT_TIMEOUT='soon' is not a positive whole number of seconds" in line, line
