"""How long fastlab waits for a server that does not answer: the one place for the deadlines of
its calls to tracking and database servers, shared by what writes (training, sweeps) and what
reads back (``fastlab-meta``). Every wait is bounded, and the line a user sees when it runs out
names the server and the setting that changes it.

- **An MLflow tracking server** (``http(s)://``): MLflow's own variables,
  ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (seconds per request: connect and read),
  ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``; fastlab's
  defaults are :data:`HTTP_DEFAULTS` (10 s, one retry: seconds, not
  MLflow's own 120 s and 7 retries with backoff), and a user's own setting wins
  (:func:`mlflow_http`).
- **A database server** (the sweep store's PostgreSQL, an Optuna storage's PostgreSQL or MySQL):
  ``FASTLAB_DB_CONNECT_TIMEOUT`` seconds to connect (default 10; libpq counts at least 2)
  (:func:`db_connect_timeout`).
- Downloads have their own (``fastlab.fetch``: ``FASTLAB_DOWNLOAD_TIMEOUT``), and W&B its
  ``init_timeout`` (``$WANDB_INIT_TIMEOUT``, ``fastlab.tracking.wandb_run``).
"""

from __future__ import annotations

import os

from fastlab.errors import ConfigError

# A dead tracking server must cost seconds, not MLflow's default of 7 retries with backoff
# (minutes) for every call; the user's own settings of these variables win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}

DB_CONNECT_TIMEOUT = 10  # seconds to reach a database server: a dead one is said soon
DB_TIMEOUT_ENV = "FASTLAB_DB_CONNECT_TIMEOUT"
MLFLOW_TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
MLFLOW_RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"


def mlflow_http(uri: str) -> None:
    """Bound every request to the MLflow server at ``uri`` (an ``http(s)://`` one; other URIs are
    files or databases): fastlab's :data:`HTTP_DEFAULTS`, where the user set none. MLflow reads
    them from the environment at each request."""
    if uri.startswith(("http://", "https://")):
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)


def mlflow_wait() -> str:
    """The settings of the wait for an MLflow server as they stand, for a one-line error."""
    return (f"{MLFLOW_TIMEOUT_ENV}={os.environ.get(MLFLOW_TIMEOUT_ENV, '120')} s a request, "
            f"{MLFLOW_RETRIES_ENV}={os.environ.get(MLFLOW_RETRIES_ENV, '7')} retries set the wait")


def db_connect_timeout() -> int:
    """Seconds to connect to a database server: ``$FASTLAB_DB_CONNECT_TIMEOUT``, else 10 (whole
    seconds: libpq's ``connect_timeout`` takes no fraction)."""
    raw = os.environ.get(DB_TIMEOUT_ENV)
    if raw is None:
        return DB_CONNECT_TIMEOUT
    try:
        seconds = int(raw)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise ConfigError(f"{DB_TIMEOUT_ENV}={raw!r} is not a positive whole number of seconds: "
                          f"e.g. {DB_TIMEOUT_ENV}=30")
    return seconds


def db_wait() -> str:
    """The setting of the wait for a database server as it stands, for a one-line error."""
    return f"{DB_TIMEOUT_ENV}={db_connect_timeout()} s sets the wait"


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
