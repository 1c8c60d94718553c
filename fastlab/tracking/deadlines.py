"""How long fastlab waits for a server that does not answer: the one place for the deadlines of
its calls to tracking and database servers, shared by what writes (training, sweeps) and what
reads back (``fastlab-meta``). Every wait is bounded, and the line a user sees when it runs out
names the server and the setting that changes it.

- **An MLflow tracking server** (``http(s)://``): MLflow's own variables,
  ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (seconds per request: connect and read),
  ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``; fastlab's
  defaults are :data:`HTTP_DEFAULTS` (10 s, one retry: seconds, not
  MLflow's own 120 s and 7 retries with backoff), and a user's own setting wins
  (:func:`mlflow_bounds`).
- **A database server** (the sweep store's PostgreSQL, an Optuna storage's PostgreSQL or MySQL,
  an MLflow store in PostgreSQL): ``FASTLAB_DB_CONNECT_TIMEOUT`` seconds to connect (default 10;
  libpq counts at least 2) and ``FASTLAB_DB_STATEMENT_TIMEOUT`` seconds for one statement
  (default 60: the server cancels a statement stuck behind a lock held by a frozen client, and
  TCP keepalives with ``tcp_user_timeout`` end a wait on a server whose host or network died)
  (:func:`libpq_args`, :func:`sqlalchemy_connect_args`, :func:`libpq_environment`). A setting the database
  URL itself makes (``?connect_timeout=5``, ``?options=...``) wins, as does libpq's own
  ``PGCONNECT_TIMEOUT`` (unless ``FASTLAB_DB_CONNECT_TIMEOUT`` is set); ``PGOPTIONS`` is kept, the
  statement timeout added to it unless it sets one.
- Downloads have their own (``fastlab.fetch``: ``FASTLAB_DOWNLOAD_TIMEOUT``), and W&B its
  ``init_timeout`` (``$WANDB_INIT_TIMEOUT``, ``fastlab.tracking.wandb_run``).
"""

from __future__ import annotations

import os
import re
from typing import Any

from fastlab.errors import ConfigError

# A dead tracking server must cost seconds, not MLflow's default of 7 retries with backoff
# (minutes) for every call; the user's own settings of these variables win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}

DB_CONNECT_TIMEOUT = 10  # seconds to reach a database server: a dead one is said soon
DB_TIMEOUT_ENV = "FASTLAB_DB_CONNECT_TIMEOUT"
# seconds one statement may take: fastlab's statements are small (a claim, a trial's row), so a
# minute is only ever reached by a lock held by a frozen client or a server that stopped answering
DB_STATEMENT_TIMEOUT = 60
DB_STATEMENT_ENV = "FASTLAB_DB_STATEMENT_TIMEOUT"
MLFLOW_TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
MLFLOW_RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"


def mlflow_bounds(uri: str) -> None:
    """Bound every call to the MLflow store at ``uri`` where the user set no bound: a server's
    (``http(s)://``) requests get fastlab's :data:`HTTP_DEFAULTS` (MLflow reads them from the
    environment at each request), a PostgreSQL store's connection libpq's variables
    (:func:`libpq_environment`). Files need none."""
    if uri.startswith(("http://", "https://")):
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
    libpq_environment(uri)


def mlflow_wait() -> str:
    """The settings of the wait for an MLflow server as they stand, for a one-line error."""
    return (f"{MLFLOW_TIMEOUT_ENV}={os.environ.get(MLFLOW_TIMEOUT_ENV, '120')} s a request, "
            f"{MLFLOW_RETRIES_ENV}={os.environ.get(MLFLOW_RETRIES_ENV, '7')} retries set the wait")


def _seconds(env: str, default: int) -> int:
    """Whole seconds from ``$env`` (``default`` when unset); a value that is not one is a
    :class:`ConfigError` naming the variable."""
    raw = os.environ.get(env)
    if raw is None:
        return default
    try:
        seconds = int(raw)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise ConfigError(f"{env}={raw!r} is not a positive whole number of seconds: e.g. {env}=30")
    return seconds


def db_connect_timeout() -> int:
    """Seconds to connect to a database server: ``$FASTLAB_DB_CONNECT_TIMEOUT``, else 10 (whole
    seconds: libpq's ``connect_timeout`` takes no fraction)."""
    return _seconds(DB_TIMEOUT_ENV, DB_CONNECT_TIMEOUT)


def db_statement_timeout() -> int:
    """Seconds one statement may take on a database server: ``$FASTLAB_DB_STATEMENT_TIMEOUT``,
    else 60."""
    return _seconds(DB_STATEMENT_ENV, DB_STATEMENT_TIMEOUT)


def libpq_args(url: str = "") -> dict[str, Any]:
    """libpq's connection parameters that bound every wait on a PostgreSQL server, less those the
    URL ``url`` sets itself: the connect timeout; the statement timeout, which the server applies
    (a statement waiting for a lock a frozen client holds is cancelled); and TCP keepalives with
    ``tcp_user_timeout``, which end a wait on a server whose host or network died (the server
    cannot cancel anything then)."""
    statement_ms = 1000 * db_statement_timeout()
    args = {"connect_timeout": db_connect_timeout(), "options": _bounded_options(os.environ.get("PGOPTIONS", "")),
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
            "tcp_user_timeout": statement_ms}
    given = _query_keys(url)
    if args["options"] is None:  # $PGOPTIONS sets a statement timeout of its own
        given.add("options")
    if "PGCONNECT_TIMEOUT" in os.environ and DB_TIMEOUT_ENV not in os.environ:
        given.add("connect_timeout")  # libpq's own variable, which an argument would override
    return {k: v for k, v in args.items() if k not in given}


def _bounded_options(options: str) -> str | None:
    """libpq's ``options`` (``$PGOPTIONS``, which an ``options`` argument replaces) with the
    statement timeout added; None where they set one of their own."""
    if "statement_timeout" in options:
        return None
    return f"{options} -c statement_timeout={1000 * db_statement_timeout()}".strip()


def mysql_args(url: str = "") -> dict[str, Any]:
    """The MySQL drivers' (PyMySQL's, mysqlclient's) bounds on a server's waits, less those the
    URL sets itself: connect, then read and write, each a statement's time."""
    statement = db_statement_timeout()
    args = {"connect_timeout": db_connect_timeout(), "read_timeout": statement, "write_timeout": statement}
    given = _query_keys(url)
    return {k: v for k, v in args.items() if k not in given}


def sqlalchemy_connect_args(url: str) -> dict[str, Any]:
    """The ``connect_args`` that bound a SQLAlchemy engine's waits on the database server at
    ``url`` (an Optuna storage): :func:`libpq_args` for PostgreSQL, :func:`mysql_args` for MySQL,
    none for a file (SQLite)."""
    if url.startswith("postgresql"):
        return libpq_args(url)
    if url.startswith("mysql"):
        return mysql_args(url)
    return {}


def libpq_environment(url: str) -> None:
    """Bound the waits of a PostgreSQL connection that fastlab does not open itself (MLflow's store
    at ``url``, which takes no connection arguments) through libpq's own variables,
    ``PGCONNECT_TIMEOUT`` and ``PGOPTIONS`` (the statement timeout, beside the user's own options),
    where the user set none."""
    if url.startswith("postgres"):
        os.environ.setdefault("PGCONNECT_TIMEOUT", str(db_connect_timeout()))
        options = _bounded_options(os.environ.get("PGOPTIONS", ""))
        if options is not None:
            os.environ["PGOPTIONS"] = options


def _query_keys(url: str) -> set[str]:
    """The parameter names a database URL's query string sets (``?connect_timeout=5&...``)."""
    from urllib.parse import parse_qs, urlsplit

    return set(parse_qs(urlsplit(url).query)) if "?" in url else set()


def db_wait() -> str:
    """The settings of the wait for a database server as they stand, for a one-line error."""
    return (f"{DB_TIMEOUT_ENV}={db_connect_timeout()} s to connect, "
            f"{DB_STATEMENT_ENV}={db_statement_timeout()} s a statement set the wait")


def shown(url: str) -> str:
    """A server's ``url`` as a one-line error or a log names it: without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def timed_out(error: BaseException) -> bool:
    """Whether ``error`` (or one it was raised from) is a client's deadline running out: the
    server did not answer, as opposed to answering with an error."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = f"{type(e).__name__} {e}".lower()
        if isinstance(e, TimeoutError) or "timeout" in text or "timed out" in text:
            return True
        e = e.__cause__ or e.__context__
    return False
