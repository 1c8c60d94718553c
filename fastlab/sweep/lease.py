"""Which drivers of a study are alive: a lock file each, and the heartbeat in the store.

A driver holds an exclusive ``flock`` on ``<sweep dir>/.drivers/<host>:<pid>:<token>.lock`` for as
long as it runs; the OS drops it when the process dies, even by SIGKILL. Another driver on the same
host tells a dead one at once by taking that lock. Drivers on other hosts (where a lock over a
network filesystem cannot be trusted) are judged by the heartbeat the store records for their
trials: none for ``heartbeat_s`` means dead.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
from datetime import datetime, timezone
from pathlib import Path

HOST = socket.gethostname()


class DriverLease:
    """This driver's identity and lock file; use as a context manager."""

    def __init__(self, sweep_dir: str | os.PathLike) -> None:
        self.dir = Path(sweep_dir) / ".drivers"
        self.id = f"{HOST}:{os.getpid()}:{secrets.token_hex(3)}"
        self._file = None

    def __enter__(self) -> DriverLease:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.dir / f"{self.id}.lock", "w")
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            (self.dir / f"{self.id}.lock").unlink(missing_ok=True)
            self._file = None

    def alive(self, driver: str | None, heartbeat_at: str | None, heartbeat_s: float) -> bool:
        """Whether the driver named ``driver`` still runs a trial it beat for at ``heartbeat_at``.
        None (a store from before many drivers): its driver is gone."""
        if driver is None:
            return False
        if driver == self.id:
            return True
        if driver.split(":", 1)[0] == HOST:
            return _locked(self.dir / f"{driver}.lock")
        if heartbeat_at is None:
            return False
        age = (datetime.now(timezone.utc) - datetime.fromisoformat(heartbeat_at)).total_seconds()
        return age < heartbeat_s


def _locked(path: Path) -> bool:
    """Whether some live process holds ``path``'s lock (a missing file: nobody does)."""
    try:
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except FileNotFoundError:
        return False
