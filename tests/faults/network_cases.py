"""Fault cases of servers that do not answer: a tracking server (or a database server) that
accepts a connection and then says nothing, the way a hung or half-dead one does. Each must cost
seconds and end in one line naming the server and the setting of the wait, never a hang; and a
reader (``fastlab-meta``) never makes a store that was not there. Same form as ``cases.py``: each
case asserts what it checks and returns a ``Result``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.faults.cases import Result

WITHIN_S = 20.0  # a dead server's whole cost, start-up of fastlab-meta included


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A server on 127.0.0.1 that accepts every connection and never sends a byte: ``(port, the
    connections it accepted)``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the listener closed: the test is over
            while True:
                accepted.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        listener.close()
        for c in accepted:
            c.close()


def meta_cmd(tmp: Path, source: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``fastlab-meta source`` in ``tmp`` with ``env`` over this environment's (MLflow's and
    fastlab's wait settings left out unless ``env`` names them)."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("MLFLOW_HTTP_REQUEST", "MLFLOW_TRACKING_URI", "FASTLAB_DB_CONNECT"))}
    return subprocess.run([sys.executable, "-m", "fastlab.cli.meta", source, "--out", str(tmp / "meta")],
                          cwd=tmp, env={**keep, "MLFLOW_DISABLE_TELEMETRY": "true", **env},
                          capture_output=True, text=True, timeout=120)


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return lines[0]


def dead_mlflow_server(tmp: Path) -> Result:
    """``fastlab-meta mlflow:...`` on a tracking server that never answers: fastlab's short retry
    (one) applies where the user set none, so one line within seconds names the server and the
    settings; nothing is made in the working folder."""
    with silent_server() as (port, accepted):
        start = time.monotonic()
        proc = meta_cmd(tmp, "mlflow:fastlab", {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
                                                "MLFLOW_HTTP_REQUEST_TIMEOUT": "1"})
        took = time.monotonic() - start
        tries = len(accepted)
    line = one_line(proc)
    assert f"127.0.0.1:{port}" in line and "MLFLOW_HTTP_REQUEST_TIMEOUT=1" in line, line
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES=1" in line and tries == 2, (line, tries)
    assert took < WITHIN_S, f"{took:.1f} s"
    assert not (tmp / "outputs").exists()
    return Result("dead MLflow tracking server (fastlab-meta)", f"one line in {took:.0f} s: {line}")


def frozen_driver_lock(tmp: Path) -> Result:
    """A driver takes the PostgreSQL store's claim lock and freezes (its transaction never ends):
    another driver's claim is ended by the server after ``FASTLAB_DB_STATEMENT_TIMEOUT`` and, its
    retries spent (``storage_timeout_s``), is one line naming the setting; once the lock is free
    the store goes on. Without the statement timeout the claim waited for ever."""
    import psycopg

    from fastlab.sweep.errors import StoreError
    from fastlab.sweep.store import TrialStore
    from tests.pgserver import PgServer

    outcome: list = []
    with PgServer(dbname="faults") as pg, _env(FASTLAB_DB_STATEMENT_TIMEOUT="1"):
        store = TrialStore.postgres(pg.url, "frozen", timeout_s=2, where=tmp / "trials.db")
        assert store._db.execute("SHOW statement_timeout") == [("1s",)]  # the server applies it
        with psycopg.connect(pg.url) as frozen:
            frozen.execute('SELECT value FROM "fastlab_frozen".sweep WHERE key = %s FOR UPDATE', ("lock",))

            def claim() -> None:
                try:
                    outcome.append(store.claim(lambda: "claimed"))
                except StoreError as e:
                    outcome.append(e)

            waiting = threading.Thread(target=claim, daemon=True)
            start = time.monotonic()
            waiting.start()
            waiting.join(WITHIN_S * 3)
            took = time.monotonic() - start
            assert not waiting.is_alive(), "the claim still waits on the frozen driver's lock"
            frozen.rollback()
        (error,) = outcome
        assert isinstance(error, StoreError), error
        line = str(error)
        assert "\n" not in line and "statement timeout" in line and "FASTLAB_DB_STATEMENT_TIMEOUT=1 s" in line, line
        assert store.claim(lambda: "claimed") == "claimed"  # the lock freed, the store goes on
        store.close()
    return Result("a frozen driver holds the PostgreSQL store's claim lock", f"one line in {took:.0f} s: {line}")


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """``os.environ`` with ``values`` set, as it was afterwards."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def dead_database_server(tmp: Path) -> Result:
    """``fastlab-meta optuna:postgresql...`` on a database server that never answers: one line
    after ``FASTLAB_DB_CONNECT_TIMEOUT`` seconds, naming the server and the setting."""
    with silent_server() as (port, _):
        start = time.monotonic()
        proc = meta_cmd(tmp, f"optuna:postgresql+psycopg://u:secret@127.0.0.1:{port}/db#s",
                        {"FASTLAB_DB_CONNECT_TIMEOUT": "2"})
        took = time.monotonic() - start
    line = one_line(proc)
    assert f"127.0.0.1:{port}" in line and "FASTLAB_DB_CONNECT_TIMEOUT=2" in line and "secret" not in line, line
    assert took < WITHIN_S, f"{took:.1f} s"
    return Result("dead Optuna storage server (fastlab-meta)", f"one line in {took:.0f} s: {line}")


CASES = [dead_mlflow_server, dead_database_server, frozen_driver_lock]
