"""Every network call has a deadline, and a reader never makes a store: ``fastlab-meta`` on an
MLflow server or a database server that accepts and never answers (a 127.0.0.1 socket) ends in
one line naming the server and the setting of the wait, in seconds; on a store that is not there
(or a file that is not one) it says so and leaves the disk as it was. The sweep store's PostgreSQL
connection has the same deadline, and a statement that waits on it (behind a lock a frozen driver
holds) is ended by the server after ``FASTLAB_DB_STATEMENT_TIMEOUT``; a W&B run's end waits for
its uploads a bounded time."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from fastlab.cli.meta import main
from fastlab.sweep.errors import StoreError
from fastlab.sweep.store import TrialStore
from fastlab.tracking import deadlines
from fastlab.tracking.wandb_run import FINISH_TIMEOUT, start_run
from tests.conftest import require
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
    require("mlflow")
    result = network_cases.dead_mlflow_server(tmp_path)
    assert "did not answer in time" in result.outcome


def test_a_silent_optuna_database_server_is_one_line_within_seconds(tmp_path):
    require("optuna")
    require("psycopg")
    result = network_cases.dead_database_server(tmp_path)
    assert "did not answer in time" in result.outcome


def test_no_mlflow_store_is_made_for_a_missing_experiment(tmp_path, capsys, monkeypatch):
    require("mlflow")
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
    require("mlflow")
    db = tmp_path / "other.db"
    before = _foreign_db(db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    line = fail(capsys, "mlflow:fastlab", "--out", str(tmp_path / "o"))
    assert f"{db} is not an MLflow tracking store" in line, line
    assert db.read_bytes() == before


def test_an_optuna_storage_is_never_made(tmp_path, capsys):
    require("optuna")
    missing = tmp_path / "none" / "study.db"
    line = fail(capsys, f"optuna:sqlite:///{missing}#s", "--out", str(tmp_path / "o"))
    assert "does not exist" in line and not missing.parent.exists()
    db = tmp_path / "other.db"
    before = _foreign_db(db)  # a database, but not Optuna's: its tables are not made in it
    line = fail(capsys, f"optuna:sqlite:///{db}#s", "--out", str(tmp_path / "o"))
    assert f"cannot open the Optuna storage sqlite:///{db}" in line, line
    assert db.read_bytes() == before


def test_the_sweep_stores_postgres_connection_has_the_shared_deadline(tmp_path, monkeypatch):
    require("psycopg")
    monkeypatch.setenv("FASTLAB_DB_CONNECT_TIMEOUT", "2")
    with silent_server() as (port, accepted):
        start = time.monotonic()
        with pytest.raises(StoreError, match="cannot open the trial store"):
            TrialStore.postgres(f"postgresql://u@127.0.0.1:{port}/db", "s", readonly=True, timeout_s=3,
                                where=tmp_path / "trials.db")
        took = time.monotonic() - start
    assert accepted and took < 8, f"{took:.1f} s"  # 10 s before the setting was read


def test_a_bad_wait_setting_is_one_line(tmp_path, capsys, monkeypatch):
    require("optuna")
    monkeypatch.setenv("FASTLAB_DB_CONNECT_TIMEOUT", "soon")
    line = fail(capsys, "optuna:postgresql+psycopg://u@127.0.0.1:1/db#s", "--out", str(tmp_path / "o"))
    assert "FASTLAB_DB_CONNECT_TIMEOUT='soon' is not a positive whole number of seconds" in line, line


def test_the_url_own_settings_win_and_the_rest_are_bounded(monkeypatch):
    monkeypatch.setenv("FASTLAB_DB_STATEMENT_TIMEOUT", "7")
    args = deadlines.libpq_args("postgresql://u@h/db?connect_timeout=3&sslmode=disable")
    assert "connect_timeout" not in args and args["options"] == "-c statement_timeout=7000"
    assert args["tcp_user_timeout"] == 7000 and args["keepalives"] == 1
    assert deadlines.sqlalchemy_connect_args("mysql+pymysql://u@h/db")["read_timeout"] == 7
    assert deadlines.sqlalchemy_connect_args("sqlite:///x.db") == {}
    assert deadlines.shown("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"


def test_the_users_libpq_variables_are_kept_and_the_statement_timeout_added(monkeypatch, postgres_url):
    monkeypatch.setenv("FASTLAB_DB_STATEMENT_TIMEOUT", "7")
    monkeypatch.setenv("PGOPTIONS", "-c search_path=lab")
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "4")
    args = deadlines.libpq_args(postgres_url)
    assert args["options"] == "-c search_path=lab -c statement_timeout=7000" and "connect_timeout" not in args
    import psycopg

    with psycopg.connect(postgres_url, **args) as conn:  # what the server was told
        assert conn.execute("SHOW search_path").fetchone()[0] == "lab"
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "7s"
    monkeypatch.setenv("FASTLAB_DB_CONNECT_TIMEOUT", "3")  # fastlab's own setting wins over libpq's
    assert deadlines.libpq_args(postgres_url)["connect_timeout"] == 3
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=2s")  # the user's own bound is left alone
    assert "options" not in deadlines.libpq_args(postgres_url)
    deadlines.libpq_environment(postgres_url)
    assert os.environ["PGOPTIONS"] == "-c statement_timeout=2s"
    monkeypatch.setenv("PGOPTIONS", "-c search_path=lab")
    deadlines.libpq_environment(postgres_url)
    deadlines.libpq_environment(postgres_url)  # once, however often it is called
    assert os.environ["PGOPTIONS"] == "-c search_path=lab -c statement_timeout=7000"


def test_a_claim_stuck_behind_a_frozen_drivers_lock_is_ended_naming_the_setting(tmp_path):
    require("psycopg")
    assert "FASTLAB_DB_STATEMENT_TIMEOUT=1 s" in network_cases.frozen_driver_lock(tmp_path).outcome


def test_a_database_that_holds_no_mlflow_store_is_said_and_left_empty(tmp_path, capsys, monkeypatch,
                                                                       postgres_url):
    require("mlflow")
    psycopg = require("psycopg")
    for name in ("PGOPTIONS", "PGCONNECT_TIMEOUT"):  # unset here, and as they were after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    uri = postgres_url.replace("postgresql://", "postgresql+psycopg://")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    line = fail(capsys, "mlflow:fastlab", "--out", str(tmp_path / "o"))
    assert "is not an MLflow tracking store" in line and "MLFLOW_TRACKING_URI" in line, line
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
                          ).fetchone() == (0,)  # MLflow would have made its tables here
    # MLflow's own connections to that server are bounded through libpq's variables
    assert f"statement_timeout={1000 * deadlines.DB_STATEMENT_TIMEOUT}" in os.environ["PGOPTIONS"]


def test_a_database_server_that_cannot_be_read_is_one_line_without_its_password(tmp_path, capsys, monkeypatch):
    require("mlflow")
    require("psycopg")
    for name in ("PGOPTIONS", "PGCONNECT_TIMEOUT"):  # unset here, and as they were after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    with socket.socket() as s:  # a port nothing listens on: the connection is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql+psycopg://u:secret@127.0.0.1:{port}/db")
    line = fail(capsys, "mlflow:fastlab", "--out", str(tmp_path / "o"))
    assert line.startswith(f"fastlab-meta: error: cannot read the MLflow tracking store postgresql+psycopg://u:***@"
                           f"127.0.0.1:{port}/db (OperationalError) while looking for its tables"), line
    assert "secret" not in line


def test_a_wandb_runs_end_waits_a_bounded_time_unless_the_user_says(tmp_path, wandb_offline, monkeypatch):
    wandb = require("wandb")
    monkeypatch.delenv("WANDB_FINISH_TIMEOUT", raising=False)
    wandb.teardown()
    run = start_run("p", None, "offline", path=tmp_path / "a", name="a", config={})
    try:
        assert run.settings.finish_timeout == FINISH_TIMEOUT > 0  # W&B's own default waits for ever
    finally:
        run.finish()
        wandb.teardown()
    monkeypatch.setenv("WANDB_FINISH_TIMEOUT", "5")
    run = start_run("p", None, "offline", path=tmp_path / "b", name="b", config={})
    try:
        assert run.settings.finish_timeout == 5
    finally:
        run.finish()
        wandb.teardown()
