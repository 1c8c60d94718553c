"""The two databases a trial store lives in: the sweep dir's SQLite file, or a PostgreSQL study.

Both hold the same tables (``store.py`` documents them) and speak the same SQL: the store writes
``?`` placeholders and ``INSERT ... ON CONFLICT`` upserts, which both accept (psycopg's ``%s`` is
substituted here). What differs is kept in this module:

- how a *claim* serialises the drivers: SQLite's ``BEGIN IMMEDIATE`` takes the file's write lock;
  PostgreSQL locks the ``sweep`` table's ``lock`` row (``SELECT ... FOR UPDATE``), so claims queue
  while reads and trial results go on;
- which errors mean "try again" (a locked file, a server restarting) and which mean the store
  itself is bad (a file that is not a database);
- where a PostgreSQL study lives: its own schema, ``fastlab_<study>``, so one database holds
  many sweeps with the very tables a ``trials.db`` has.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fastlab.sweep.errors import StoreError
from fastlab.tracking.deadlines import libpq_args, shown

SCHEMA_SQLITE = """
CREATE TABLE IF NOT EXISTS trials (
    number      INTEGER PRIMARY KEY,
    status      TEXT NOT NULL,
    params      TEXT NOT NULL,
    value       REAL,
    metrics     TEXT,
    job_dir     TEXT,
    started_at  TEXT,
    finished_at TEXT,
    error       TEXT,
    driver      TEXT,
    heartbeat_at TEXT,
    objectives  TEXT,
    config      INTEGER,
    repeat      INTEGER
);
CREATE TABLE IF NOT EXISTS sweep (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
    number INTEGER NOT NULL, epoch INTEGER NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (number, epoch)
);
"""
# The same tables; DOUBLE PRECISION because PostgreSQL's REAL is 4 bytes.
SCHEMA_POSTGRES = [s.strip() for s in SCHEMA_SQLITE.replace("REAL", "DOUBLE PRECISION").split(";")
                   if s.strip()]
# Columns a store from an earlier fastlab lacks (before many drivers; before several objectives):
# added on open, NULL for its old rows.
ADDED_COLUMNS = (("driver", "TEXT"), ("heartbeat_at", "TEXT"), ("objectives", "TEXT"), ("config", "INTEGER"),
                 ("repeat", "INTEGER"))


class Database:
    """One connection to a store's database. ``execute`` takes ``?`` placeholders."""

    kind = ""
    where = ""  # the file or the study, for messages

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def transaction(self, claim: bool = False) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def retryable(self, error: BaseException) -> bool:
        """Whether ``error`` passes (a lock held too long, a server restarting)."""
        raise NotImplementedError

    def damaged(self, error: BaseException) -> bool:
        """Whether ``error`` says the store itself cannot be read (not a database, corrupt)."""
        raise NotImplementedError


class SqliteDatabase(Database):
    kind = "sqlite"

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.where = str(path)
        if readonly:
            # mode=ro: never creates or changes the file; a reader cannot harm a running sweep.
            self.db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30,
                                      isolation_level=None)
        else:
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a crashed process (SIGKILL); only power loss can lose the
            # last transactions, and those trials would simply run again.
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.depth = 0

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        return self.db.execute(sql, tuple(args)).fetchall()

    @contextlib.contextmanager
    def transaction(self, claim: bool = False) -> Iterator[None]:
        if self.depth:  # inside the caller's transaction already: part of it
            yield
            return
        # IMMEDIATE takes the write lock at once: two drivers claiming queue here, instead of
        # both reading the same state and one failing at its first write.
        self.db.execute("BEGIN IMMEDIATE" if claim else "BEGIN")
        self.depth = 1
        try:
            yield
        except BaseException:
            self.depth = 0
            self.db.execute("ROLLBACK")
            raise
        self.depth = 0
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def retryable(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)

    def damaged(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.OperationalError) \
            or isinstance(error, sqlite3.OperationalError) and "no such table" in str(error)


# Drivers opening a new study at the same instant would race on `CREATE ... IF NOT EXISTS`, which
# PostgreSQL does not make atomic (two creators: one fails on a unique index). An advisory lock
# per study, held to the end of the creating transaction, queues them.
SETUP_LOCK = "SELECT pg_advisory_xact_lock(hashtext(%s))"


def schema_name(study: str) -> str:
    """The PostgreSQL schema holding a study: ``fastlab_`` and the name's letters, digits and _."""
    return "fastlab_" + re.sub(r"[^a-z0-9_]", "_", study.lower())[:50]


class PostgresDatabase(Database):
    kind = "postgresql"

    def __init__(self, url: str, study: str, readonly: bool = False) -> None:
        try:
            import psycopg
        except ImportError:
            raise StoreError("hydra.sweeper.storage=postgresql://... needs psycopg 3: pip install "
                             "'fastlab[postgres]'") from None
        self.psycopg = psycopg
        self.url, self.study, self.schema = url, study, schema_name(study)
        self.where = f"study {study} ({self.schema}) at {shown(url)}"
        self.readonly = readonly
        self.db = None
        self.connect()

    def connect(self) -> None:
        if self.db is not None:
            with contextlib.suppress(Exception):
                self.db.close()
            self.db = None
        # may fail: server down; a server that accepts and never answers fails after the deadline, a
        # statement that waits too long (a lock a frozen driver holds, a dead network) is ended
        # (fastlab.tracking.deadlines)
        db = self.psycopg.connect(self.url, autocommit=True, **libpq_args(self.url))
        if not self.readonly:
            with db.transaction():
                db.execute(SETUP_LOCK, (self.schema,))
                db.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        db.execute(f'SET search_path TO "{self.schema}"')
        self.db = db
        self.depth = 0

    def _conn(self):
        """The connection, made again first when a reconnect after a lost one failed (the
        server still down): that raises psycopg's OperationalError, which the store retries."""
        if self.db is None:
            self.connect()
        return self.db

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        cursor = self._conn().execute(sql.replace("?", "%s"), tuple(args))
        return cursor.fetchall() if cursor.description is not None else []

    @contextlib.contextmanager
    def transaction(self, claim: bool = False) -> Iterator[None]:
        if self.depth:
            yield
            return
        self.depth = 1
        try:
            with self._conn().transaction():
                if claim:
                    # One lock row serialises the claims of all drivers; trials' results and
                    # heartbeats never wait for it.
                    self.db.execute("SELECT value FROM sweep WHERE key = 'lock' FOR UPDATE")
                yield
        finally:
            self.depth = 0

    def close(self) -> None:
        if self.db is not None:
            self.db.close()

    def retryable(self, error: BaseException) -> bool:
        errors = self.psycopg.errors
        return isinstance(error, self.psycopg.OperationalError | errors.AdminShutdown
                          | errors.CannotConnectNow | errors.SerializationFailure
                          | errors.DeadlockDetected) or (self.db is not None and self.db.closed)

    def damaged(self, error: BaseException) -> bool:
        return isinstance(error, self.psycopg.errors.UndefinedTable)
