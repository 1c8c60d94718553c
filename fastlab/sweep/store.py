"""The trial store: the sweep's memory, shared by every driver of the study.

It lives in the sweep dir's ``trials.db`` (SQLite, WAL journal; the default), or in a PostgreSQL
database (``hydra.sweeper.storage=postgresql://...``, one schema per study; ``backends.py``).
Several drivers - processes on one machine, jobs of a SLURM array - started with the same command
share one study: each *claims* its next trials in one transaction (``claim``), so trial numbers and
job numbers stay unique, and each beats a heartbeat for the trials it runs. Each write is one
transaction: a driver killed at any instant leaves either the state before a write or after it,
which is what resume relies on. Jobs write only their pruning reports.

This module is the one reader and writer of the store: drivers open it with ``TrialStore(path)``
or ``open_store``; everyone else (``fastlab-meta``, progress lines) with
``TrialStore.open_readonly(path)`` or ``read_sweep(path)``, which work while a sweep runs.

Schema (a contract, see docs/design.md)::

    trials(number, status, params JSON, value, metrics JSON, job_dir, started_at, finished_at,
           error, driver, heartbeat_at, objectives JSON, config, repeat)
    sweep(key, value JSON)
    reports(number, epoch, value)

``status`` is running, completed, failed, diverged or pruned (``value``: the objective at its last
epoch). ``driver`` names the driver running the trial (``host:pid:token``) and ``heartbeat_at``
when it last said so. ``sweep`` keeps the sweep's own state: ``space`` (the search-space
fingerprint), ``config`` (the app's composed config, YAML), ``direction`` (maximize or minimize),
``seed``, ``next_job`` and ``pruner``. ``reports`` holds each trial's objective after each epoch,
for pruning. ``objectives`` (with ``hydra.sweeper.objectives``) is ``{"values": {name: value},
"violated": [constraint, ...]}`` (``fastlab.sweep.objectives``); NULL otherwise. With
``hydra.sweeper.repeats`` a trial is one run of a configuration: ``config`` numbers the
configuration (its params are every one of its runs'), ``repeat`` the run (0..repeats-1, the
training seed it was given); NULL otherwise.
"""

import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from fastlab.sweep.backends import (
    ADDED_COLUMNS,
    SCHEMA_POSTGRES,
    SCHEMA_SQLITE,
    SETUP_LOCK,
    Database,
    PostgresDatabase,
    SqliteDatabase,
)
from fastlab.sweep.errors import StoreError
from fastlab.sweepdir import read_pointer, trials_db, write_pointer
from fastlab.tracking.deadlines import db_wait, timed_out

FINISHED = ("completed", "failed", "diverged", "pruned")
_COLUMNS = ("number, status, params, value, metrics, job_dir, started_at, finished_at, error, driver, "
            "heartbeat_at, objectives, config, repeat")
T = TypeVar("T")


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
    driver: str | None = None
    heartbeat_at: str | None = None
    objectives: dict[str, Any] | None = None  # {"values": {name: value}, "violated": [...]} (fastlab.sweep.objectives)
    config: int | None = None  # with hydra.sweeper.repeats: the configuration this run belongs to
    repeat: int | None = None  # ... and which of its runs (the seed it was given)


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


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:160]


def _bad_store(where: str, error: BaseException) -> "StoreError":
    return StoreError(f"{where} cannot be read as a fastlab trials store ({error}): move it aside (or "
                      "restore it from a backup) and run again; nothing in the sweep dir was changed")


class TrialStore:
    """The trials of one study. Use as a context manager, or call ``close()``.

    ``TrialStore(path)`` opens (or creates) the SQLite store at ``path``; ``open_store`` picks the
    storage a sweep's settings name. Many drivers may hold one store at once: what they must not
    do behind each other's backs (number trials, propose, reserve job numbers) they do inside
    ``claim()``. A store that cannot be reached (a PostgreSQL server restarting) is retried with
    backoff for ``timeout_s``, then a ``StoreError`` says so in one line.
    """

    def __init__(self, path: str | os.PathLike, timeout_s: float = 120.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._init(lambda: SqliteDatabase(self.path), readonly=False, timeout_s=timeout_s)

    @classmethod
    def postgres(cls, url: str, study: str, readonly: bool = False, timeout_s: float = 120.0,
                 where: Path | None = None) -> "TrialStore":
        """The study ``study`` in the PostgreSQL database at ``url`` (created when missing)."""
        self = cls.__new__(cls)
        self.path = where or Path(study)
        self._init(lambda: PostgresDatabase(url, study, readonly=readonly), readonly=readonly,
                   timeout_s=timeout_s)
        return self

    def _init(self, connect: Callable[[], Database], readonly: bool, timeout_s: float) -> None:
        self.readonly = readonly
        self.timeout_s = timeout_s
        self._connect = connect
        self._db: Database | None = None
        self._select = _COLUMNS  # what trials() reads (a reader of an older store: NULL for new columns)
        self._retry(self._open)

    def _open(self) -> None:
        if self._db is None:
            self._db = self._connect()
        if self.readonly:
            self._db.execute("SELECT count(*) FROM trials")
            # a store from before many drivers, which a reader must not change: NULL for its
            # missing columns
            have = self._have_columns()
            self._select = ", ".join(c if c in have else f"NULL AS {c}" for c in _COLUMNS.split(", "))
            return
        db = self._db
        if db.kind == "sqlite":  # the file's write lock makes each statement atomic
            db.db.executescript(SCHEMA_SQLITE)
            self._add_columns()
            return
        with db.transaction():  # one driver at a time (SETUP_LOCK): IF NOT EXISTS is not atomic there
            db.execute(SETUP_LOCK.replace("%s", "?"), (db.schema,))
            for statement in SCHEMA_POSTGRES:
                db.execute(statement)
            db.execute("INSERT INTO sweep (key, value) VALUES ('lock', '0') ON CONFLICT (key) DO NOTHING")
            self._add_columns()

    def _add_columns(self) -> None:
        have = self._have_columns()
        for name, kind in ADDED_COLUMNS:
            if name not in have:  # a store from before many drivers: same rows, new columns
                self._db.execute(f"ALTER TABLE trials ADD COLUMN {name} {kind}")

    def _have_columns(self) -> set[str]:
        """The columns the ``trials`` table has."""
        db = self._db
        if db.kind == "sqlite":
            return {row[1] for row in db.execute("PRAGMA table_info(trials)")}
        return {row[0] for row in db.execute("SELECT column_name FROM information_schema.columns WHERE "
                                             "table_schema = current_schema() AND table_name = 'trials'")}

    @classmethod
    def open_readonly(cls, path: str | os.PathLike) -> "TrialStore":
        """Open the store at ``path`` (a ``trials.db``, or a sweep dir's ``trials.db`` whose
        study lives in PostgreSQL, named by ``storage.json`` beside it) for reading only: no
        schema created, every write refused.

        Safe while drivers write: SQLite's WAL gives each read a consistent snapshot.
        Raises ``StoreError`` when ``path`` is missing or is not a trials store.
        """
        path = Path(path)
        where = None if path.is_file() else read_pointer(path.parent)
        if where is not None:
            return cls.postgres(where["storage"], where["study"], readonly=True, timeout_s=10.0,
                                where=path)
        if not path.is_file():
            raise StoreError(f"{path} does not exist: pass a sweep dir written by "
                             "hydra/sweeper=fastlab")
        self = cls.__new__(cls)
        self.path = path
        try:
            self._init(lambda: SqliteDatabase(path, readonly=True), readonly=True, timeout_s=10.0)
        except StoreError as e:
            raise StoreError(f"{path} cannot be read as a fastlab trials store ({e.__cause__ or e}): "
                             "pass a sweep dir written by hydra/sweeper=fastlab") from None
        return self

    def __enter__(self) -> "TrialStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def kind(self) -> str:
        return self._db.kind if self._db is not None else "sqlite"

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only; only the sweep's drivers write it")

    def _retry(self, work: Callable[[], T]) -> T:
        """``work()``, again after a reconnect while a store that answered before is unreachable
        (up to timeout_s). A damaged store, a store that never answered (a wrong URL) or the
        timeout is one ``StoreError``."""
        deadline = time.monotonic() + self.timeout_s
        wait = 0.1
        while True:
            try:
                result = work()
                self._reached = True
                return result
            except StoreError:
                raise
            except Exception as e:
                db = self._db
                if db is not None and db.depth:
                    raise  # inside a transaction: the caller's retry runs the whole of it again
                where = str(self.path) if db is None or db.kind == "sqlite" else db.where
                # another driver opening the same SQLite file at the same instant (its journal
                # mode being set) passes like any held lock
                locked = isinstance(e, sqlite3.OperationalError) and "locked" in str(e)
                if not locked and (isinstance(e, sqlite3.DatabaseError) and not (db is not None and db.retryable(e))
                                   or db is not None and db.damaged(e)):
                    raise _bad_store(where, e) from None
                if not getattr(self, "_reached", False) and db is None and not locked:
                    setting = f" ({db_wait()})" if timed_out(e) else ""
                    raise StoreError(f"cannot open the trial store at {where}: {_first_line(e)}; check "
                                     f"hydra.sweeper.storage (and that the server runs){setting}") from None
                if not locked and (db is None or not db.retryable(e)):
                    raise
                if time.monotonic() > deadline:
                    setting = f"; {db_wait()} of each try" if timed_out(e) else ""
                    raise StoreError(f"the trial store ({where}) has not answered for {self.timeout_s:g} s "
                                     f"({_first_line(e)}); start the server (or free the file) and run the "
                                     "same command again: finished trials are kept "
                                     f"(hydra.sweeper.storage_timeout_s sets the wait{setting})") from None
                time.sleep(wait)
                wait = min(wait * 2, 5.0)
                if db is not None and db.kind == "postgresql":
                    try:
                        db.connect()
                    except Exception:
                        pass  # still down: the next try says so

    def claim(self, work: Callable[[], T]) -> T:
        """``work()`` in one transaction that no other driver's claim overlaps: read the trials,
        decide, write them running. Retried whole after a lost connection."""
        self._writable()

        def run() -> T:
            with self._db.transaction(claim=True):
                return work()
        return self._retry(run)

    def _write(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        self._writable()

        def run() -> list[tuple]:
            with self._db.transaction():
                return self._db.execute(sql, list(args))
        return self._retry(run)

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        return self._retry(lambda: self._db.execute(sql, list(args)))

    # -- sweep state -------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        return self.state().get(key)

    def state(self) -> dict[str, Any]:
        """The ``sweep`` table as ``{key: value}`` ({} for an older store without it)."""
        try:
            rows = self._read("SELECT key, value FROM sweep")
        except StoreError:
            if not self.readonly:
                raise
            return {}  # a store from before the sweep table: the trials alone still do
        return {k: json.loads(v) for k, v in rows if k != "lock"}

    def record(self) -> SweepRecord:
        """The trials and the sweep's state, read in one transaction (one consistent snapshot)."""
        def run() -> SweepRecord:
            with self._db.transaction():
                return SweepRecord(self.path, self.trials(), self.state())
        try:
            return self._retry(run)
        except ValueError as e:  # a damaged JSON column
            raise StoreError(f"{self.path} cannot be read as a fastlab trials store ({e}): pass a "
                             "sweep dir written by hydra/sweeper=fastlab") from None

    def count_finished(self) -> int:
        """How many trials are finished (what a progress line shows)."""
        marks = ", ".join("?" for _ in FINISHED)
        return self._read(f"SELECT count(*) FROM trials WHERE status IN ({marks})", FINISHED)[0][0]

    def set(self, key: str, value: Any) -> None:
        self._write("INSERT INTO sweep (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                    "value = excluded.value", (key, json.dumps(value)))

    # -- trials --------------------------------------------------------------------------------

    def trials(self, metrics: bool = True) -> list[Trial]:
        """Every trial, by number; without ``metrics`` (each trial's ``metrics.json``, the bulk of
        a row) when the caller needs only statuses, values and params: the driver reads the
        trials at every claim, and parsing them all made its turn-around grow with the sweep."""
        select = self._select if metrics else ", ".join(
            "NULL AS metrics" if c == "metrics" else c for c in self._select.split(", "))
        rows = self._read(f"SELECT {select} FROM trials ORDER BY number")
        return [
            Trial(number=r[0], status=r[1], params=json.loads(r[2]), value=r[3],
                  metrics=None if r[4] is None else json.loads(r[4]), job_dir=r[5], started_at=r[6],
                  finished_at=r[7], error=r[8], driver=r[9], heartbeat_at=r[10],
                  objectives=None if r[11] is None else json.loads(r[11]), config=r[12], repeat=r[13])
            for r in rows
        ]

    def start(self, runs: Iterable[tuple[int, dict[str, Any], str]], next_job: int,
              driver: str | None = None, placed: dict[int, tuple[int, int]] | None = None) -> None:
        """Mark trials (number, params, job_dir) running under ``driver`` and reserve job numbers,
        atomically (inside ``claim`` when many drivers share the study).

        A trial that exists already (left running by a dead driver, or failed and retried) is
        reset, its old reports dropped; its old job dir stays on disk untouched. ``placed``:
        number -> (config, repeat) of the runs of a sweep with repeats.
        """
        stamp = now()
        runs = list(runs)

        def run() -> None:
            with self._db.transaction():
                for number, params, job_dir in runs:
                    self._db.execute(
                        f"INSERT INTO trials ({_COLUMNS}) VALUES (?, 'running', ?, NULL, NULL, ?, ?, NULL, "
                        "NULL, ?, ?, NULL, ?, ?) ON CONFLICT (number) DO UPDATE SET status = 'running', params = "
                        "excluded.params, value = NULL, metrics = NULL, job_dir = excluded.job_dir, "
                        "started_at = excluded.started_at, finished_at = NULL, error = NULL, driver = "
                        "excluded.driver, heartbeat_at = excluded.heartbeat_at, objectives = NULL",
                        (number, json.dumps(params), job_dir, stamp, driver, stamp,
                         *(placed or {}).get(number, (None, None))))
                    self._db.execute("DELETE FROM reports WHERE number = ?", (number,))
                self._db.execute("INSERT INTO sweep (key, value) VALUES ('next_job', ?) ON CONFLICT (key) "
                                 "DO UPDATE SET value = excluded.value", (json.dumps(next_job),))
        self._writable()
        self._retry(run)

    def forget(self, numbers: Iterable[int]) -> None:
        """Remove trials just claimed that never launched (their composition failed)."""
        for number in numbers:
            self._write("DELETE FROM trials WHERE number = ? AND status = 'running'", (number,))

    def finish(
        self,
        number: int,
        status: str,
        value: float | None,
        metrics: dict[str, Any] | None,
        job_dir: str | None,
        error: str | None,
        driver: str | None = None,
        objectives: dict[str, Any] | None = None,
    ) -> bool:
        """Record a trial's result (a finished status). With ``driver``, only while that driver
        still holds the trial: one taken over by another driver (a missed heartbeat) keeps the
        other's run. Returns whether it was recorded."""
        assert status in FINISHED, status
        if value is not None and not math.isfinite(value):
            value = None  # SQLite has no NaN; the status says diverged
        guard = "" if driver is None else " AND driver = ? AND status = 'running'"
        args = [status, value, None if metrics is None else json.dumps(metrics, default=str), job_dir,
                now(), error, None if objectives is None else json.dumps(objectives), number] + \
            ([] if driver is None else [driver])
        rows = self._write(
            "UPDATE trials SET status = ?, value = ?, metrics = ?, job_dir = COALESCE(?, job_dir), "
            f"finished_at = ?, error = ?, objectives = ? WHERE number = ?{guard} RETURNING number", args)
        return bool(rows)

    def beat(self, driver: str) -> None:
        """Say that ``driver`` still runs its trials."""
        self._write("UPDATE trials SET heartbeat_at = ? WHERE driver = ? AND status = 'running'",
                    (now(), driver))

    # -- pruning reports -----------------------------------------------------------------------

    def report(self, number: int, epoch: int, value: float) -> None:
        """Trial ``number``'s objective after ``epoch`` (1-based)."""
        self._write("INSERT INTO reports (number, epoch, value) VALUES (?, ?, ?) ON CONFLICT (number, "
                    "epoch) DO UPDATE SET value = excluded.value", (number, epoch, float(value)))

    def reports(self) -> dict[int, dict[int, float]]:
        """Every trial's reports: number -> {epoch: value}."""
        out: dict[int, dict[int, float]] = {}
        for number, epoch, value in self._read("SELECT number, epoch, value FROM reports"):
            out.setdefault(int(number), {})[int(epoch)] = float(value)
        return out


def open_store(storage: str | None, sweep_dir: str | os.PathLike, study: str | None = None,
               timeout_s: float = 120.0) -> TrialStore:
    """The store a sweep's ``hydra.sweeper.storage`` names: None = ``sweep_dir/trials.db``, or a
    PostgreSQL URL (then ``sweep_dir/storage.json`` says where, for fastlab-meta and the jobs)."""
    sweep_dir = Path(sweep_dir)
    if storage is None:
        return TrialStore(trials_db(sweep_dir), timeout_s=timeout_s)
    name = study or study_name(sweep_dir)
    store = TrialStore.postgres(storage, name, timeout_s=timeout_s, where=trials_db(sweep_dir))
    write_pointer(sweep_dir, storage, name)
    return store


def study_name(sweep_dir: str | os.PathLike) -> str:
    """A PostgreSQL study's default name: the sweep dir's name and a hash of its absolute path
    (drivers started with the same command, in the same place, share it)."""
    path = Path(sweep_dir).resolve()
    return f"{path.name}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


def read_sweep(path: str | os.PathLike) -> SweepRecord:
    """The trials and recorded state of the store at ``path``, read-only."""
    with TrialStore.open_readonly(path) as store:
        return store.record()


def count_finished(path: str | os.PathLike) -> int:
    """Finished trials in ``path`` (0 while it does not exist yet or cannot be read)."""
    try:
        with TrialStore.open_readonly(path) as store:
            return store.count_finished()
    except (StoreError, OSError, ValueError):
        return 0
