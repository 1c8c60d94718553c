"""``trials.db``: the sweep's memory, in SQLite (stdlib ``sqlite3``, WAL journal).

Only the driver process touches the database; jobs never do, so WAL (one host) is fine even when
the jobs run on a cluster. Each write is one transaction: a driver killed at any instant leaves
either the state before a write or the state after it, which is what resume relies on.

Schema (a contract, see DESIGN.md)::

    trials(number, status, params JSON, value, metrics JSON, job_dir, started_at, finished_at, error)

``status`` is running, completed, failed or diverged. A table ``sweep(key, value)`` keeps the
sweep's own state: the search-space fingerprint, the seed and the next free job number.
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

    def __enter__(self) -> "TrialStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()
        self._lock.close()

    # -- sweep state -------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM sweep WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set(self, key: str, value: Any) -> None:
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
