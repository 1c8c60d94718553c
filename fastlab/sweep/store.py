"""``trials.db``: the sweep's memory, in SQLite (stdlib ``sqlite3``, WAL journal).

Only the driver process writes the database; jobs never touch it, so WAL (one host) is fine even
when the jobs run on a cluster. Each write is one transaction: a driver killed at any instant
leaves either the state before a write or the state after it, which is what resume relies on.

This module is the one reader and writer of ``trials.db``: the driver opens it with
``TrialStore(path)`` (taking the driver's lock), everyone else (``fastlab-meta``, progress lines)
with ``TrialStore.open_readonly(path)`` or ``read_sweep(path)``, which take no lock and work while
a sweep runs.

Schema (a contract, see DESIGN.md)::

    trials(number, status, params JSON, value, metrics JSON, job_dir, started_at, finished_at, error)

``status`` is running, completed, failed or diverged. A table ``sweep(key, value)`` (values JSON)
keeps the sweep's own state: ``space`` (the search-space fingerprint), ``config`` (the app's
composed config, YAML), ``direction`` (maximize or minimize), ``seed`` and ``next_job``.
"""

import fcntl
import json
import math
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastlab.sweep.errors import SweepError

FINISHED = ("completed", "failed", "diverged")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    number      INTEGER PRIMARY KEY,
    status      TEXT NOT NULL,
    params      TEXT NOT NULL,
    value       REAL,
    metrics     TEXT,
    job_dir     TEXT,
    started_at  TEXT,
    finished_at TEXT,
    error       TEXT
);
CREATE TABLE IF NOT EXISTS sweep (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StoreError(SweepError):
    """``trials.db`` cannot be read: not a fastlab trials store, or a damaged one."""


@dataclass(frozen=True)
class Trial:
    """One row of ``trials``."""

    number: int
    status: str
    params: dict[str, Any]
    value: float | None = None
    metrics: dict[str, Any] | None = None
    job_dir: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class SweepRecord:
    """What ``trials.db`` holds, read at one instant: the trials and the sweep's recorded state.

    ``state`` is the ``sweep`` table (``space``, ``config``, ``direction``, ``seed``,
    ``next_job``); a key the sweep never recorded (an older store) is absent.
    """

    path: Path
    trials: list[Trial]
    state: dict[str, Any]

    @property
    def direction(self) -> str | None:
        """``maximize`` or ``minimize`` as the sweep recorded it, or None (older stores)."""
        value = self.state.get("direction")
        return value if value in ("maximize", "minimize") else None

    @property
    def space(self) -> dict[str, Any] | None:
        """The search space as recorded: ``{"dims": [{name, form, ...}], "fixed": [override]}``."""
        try:
            space = json.loads(self.state["space"])
        except (KeyError, TypeError, ValueError):
            return None
        return space if isinstance(space, dict) else None

    @property
    def config(self) -> str | None:
        """The app's composed config (without ``hydra``) as YAML text, or None."""
        value = self.state.get("config")
        return value if isinstance(value, str) else None


def now() -> str:
    """A UTC timestamp, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class TrialStore:
    """The trials of one sweep dir. Use as a context manager, or call ``close()``.

    Opening takes an exclusive lock on ``.trials.db.lock``: two drivers on one sweep would propose
    and number trials behind each other's backs. The OS drops the lock when a driver dies, even by
    SIGKILL, so a resume never finds a stale lock.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.readonly = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path.with_name(f".{self.path.name}.lock"), "w")  # held until close()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise SweepError(
                f"another sweep is running in {self.path.parent}; wait for it or use a new "
                "hydra.sweep.dir"
            ) from None
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against a crashed process (SIGKILL); only power loss can lose the
        # last transactions, and those trials would simply run again.
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._db:
            self._db.executescript(_SCHEMA)

    @classmethod
    def open_readonly(cls, path: str | os.PathLike) -> "TrialStore":
        """Open ``path`` for reading only: no lock, no schema created, every write refused.

        Safe while the driver writes: SQLite's WAL gives each read a consistent snapshot.
        Raises ``StoreError`` when ``path`` is missing or is not a trials store.
        """
        self = cls.__new__(cls)
        self.path = Path(path)
        self.readonly = True
        self._lock = None
        if not self.path.is_file():
            raise StoreError(f"{self.path} does not exist: pass a sweep dir written by "
                             "hydra/sweeper=fastlab")
        try:
            # mode=ro: never creates or changes the file; a reader cannot harm a running sweep.
            self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                       timeout=30)
            self._db.execute("SELECT count(*) FROM trials").fetchone()
        except sqlite3.Error as e:
            if hasattr(self, "_db"):
                self._db.close()
            raise StoreError(f"{self.path} cannot be read as a fastlab trials store ({e}): pass a "
                             "sweep dir written by hydra/sweeper=fastlab") from None
        return self

    def __enter__(self) -> "TrialStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            self._lock.close()

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only; only the sweep's driver writes it")

    # -- sweep state -------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        return self.state().get(key)

    def state(self) -> dict[str, Any]:
        """The ``sweep`` table as ``{key: value}`` ({} for an older store without it)."""
        try:
            rows = self._db.execute("SELECT key, value FROM sweep").fetchall()
        except sqlite3.OperationalError:
            if not self.readonly:
                raise
            return {}  # a store from before the sweep table: the trials alone still do
        return {k: json.loads(v) for k, v in rows}

    def record(self) -> SweepRecord:
        """The trials and the sweep's state, read in one transaction (one consistent snapshot)."""
        try:
            with self._db:
                self._db.execute("BEGIN")
                return SweepRecord(self.path, self.trials(), self.state())
        except (sqlite3.Error, ValueError) as e:  # ValueError: a damaged JSON column
            raise StoreError(f"{self.path} cannot be read as a fastlab trials store ({e}): pass a "
                             "sweep dir written by hydra/sweeper=fastlab") from None

    def count_finished(self) -> int:
        """How many trials are completed, failed or diverged (what a progress line shows)."""
        marks = ", ".join("?" for _ in FINISHED)
        return self._db.execute(
            f"SELECT count(*) FROM trials WHERE status IN ({marks})", FINISHED
        ).fetchone()[0]

    def set(self, key: str, value: Any) -> None:
        self._writable()
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO sweep (key, value) VALUES (?, ?)", (key, json.dumps(value))
            )

    # -- trials --------------------------------------------------------------------------------

    def trials(self) -> list[Trial]:
        rows = self._db.execute(
            "SELECT number, status, params, value, metrics, job_dir, started_at, finished_at, "
            "error FROM trials ORDER BY number"
        ).fetchall()
        return [
            Trial(
                number=r[0],
                status=r[1],
                params=json.loads(r[2]),
                value=r[3],
                metrics=None if r[4] is None else json.loads(r[4]),
                job_dir=r[5],
                started_at=r[6],
                finished_at=r[7],
                error=r[8],
            )
            for r in rows
        ]

    def start(self, runs: Iterable[tuple[int, dict[str, Any], str]], next_job: int) -> None:
        """Mark trials (number, params, job_dir) running and reserve job numbers, atomically.

        A trial that exists already (left running by a crash, or failed and retried) is reset;
        its old job dir stays on disk untouched.
        """
        self._writable()
        stamp = now()
        with self._db:
            for number, params, job_dir in runs:
                self._db.execute(
                    "INSERT OR REPLACE INTO trials (number, status, params, value, metrics, "
                    "job_dir, started_at, finished_at, error) "
                    "VALUES (?, 'running', ?, NULL, NULL, ?, ?, NULL, NULL)",
                    (number, json.dumps(params), job_dir, stamp),
                )
            self._db.execute(
                "INSERT OR REPLACE INTO sweep (key, value) VALUES ('next_job', ?)",
                (json.dumps(next_job),),
            )

    def finish(
        self,
        number: int,
        status: str,
        value: float | None,
        metrics: dict[str, Any] | None,
        job_dir: str | None,
        error: str | None,
    ) -> None:
        """Record a trial's result (status completed, failed or diverged)."""
        assert status in FINISHED, status
        self._writable()
        if value is not None and not math.isfinite(value):
            value = None  # SQLite has no NaN; the status says diverged
        with self._db:
            self._db.execute(
                "UPDATE trials SET status = ?, value = ?, metrics = ?, job_dir = COALESCE(?, "
                "job_dir), finished_at = ?, error = ? WHERE number = ?",
                (
                    status,
                    value,
                    None if metrics is None else json.dumps(metrics, default=str),
                    job_dir,
                    now(),
                    error,
                    number,
                ),
            )


def read_sweep(path: str | os.PathLike) -> SweepRecord:
    """The trials and recorded state of the ``trials.db`` at ``path``, read-only (no lock)."""
    with TrialStore.open_readonly(path) as store:
        return store.record()


def count_finished(path: str | os.PathLike) -> int:
    """Finished trials in ``path`` (0 while it does not exist yet or cannot be read)."""
    try:
        with TrialStore.open_readonly(path) as store:
            return store.count_finished()
    except (StoreError, sqlite3.Error):
        return 0
