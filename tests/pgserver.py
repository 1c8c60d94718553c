"""A throwaway PostgreSQL server for tests: a fresh cluster in a temporary folder, reached through a
unix socket in that folder (and, when asked, 127.0.0.1 on a free port), gone again on ``stop()``.

It needs the server binaries (``initdb``, ``pg_ctl``; ``psql`` to create databases), found on PATH
or under ``/usr/lib/postgresql/<version>/bin``; ``bash scripts/test.sh`` installs them. ``initdb``
refuses to run as root, so as root the server runs as the ``postgres`` system user (or ``nobody``).
Durability is switched off (fsync, full-page writes, synchronous commit): nothing here outlives
the test session, so there is no reason to wait for disks.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MISSING = ("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under "
           "/usr/lib/postgresql/*/bin: run `bash scripts/test.sh`, which installs them")
SUPERUSER = "postgres"  # the role initdb makes, whatever OS user runs the server
DEFAULT_PORT = 5432  # unix-only servers keep it: the socket folder alone makes them distinct
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # database names used unquoted in SQL and URLs

# Settings for speed and isolation, appended to postgresql.conf so a restart keeps them.
SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "'16MB'",
    "max_connections": "100",  # many sweep drivers at once; 16MB of buffers still suffice
    "max_wal_size": "'256MB'",
    "dynamic_shared_memory_type": "posix",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] '",
}


def _version_key(path: Path) -> tuple:
    """Sort key for ``/usr/lib/postgresql/<version>/bin``: 15 after 9.6, numbers before names."""
    parts = re.findall(r"\d+", path.parent.name)
    return tuple(int(p) for p in parts) or (-1,)


def find_bindir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: PATH first, then the newest Debian install.

    Raises RuntimeError (one line, saying how to install them) when neither has both."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        # Resolve links (Debian's wrappers in /usr/local/bin point into the versioned folder)
        # so that psql and postgres are looked up beside the real pg_ctl.
        return Path(os.path.realpath(pg_ctl)).parent
    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin")
                  if (p / "initdb").is_file() and (p / "pg_ctl").is_file()]
    if not candidates:
        raise RuntimeError(MISSING)
    return max(candidates, key=_version_key)


def _tool(bindir: Path, name: str) -> str:
    """``bindir/name`` when there, else ``name`` on PATH (Debian puts psql in both)."""
    here = bindir / name
    found = str(here) if here.is_file() else shutil.which(name)
    if not found:
        raise RuntimeError(MISSING.replace("(initdb, pg_ctl)", f"({name})"))
    return found


def _server_user() -> pwd.struct_passwd | None:
    """The OS user to run the server as: ``None`` (ourselves) unless we are root, which initdb
    refuses; then Debian's ``postgres`` system user, or ``nobody`` where there is none."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One throwaway cluster. ``start()`` it, take ``url`` (a libpq URL psycopg 3 accepts), make
    more databases with ``fresh_database(name)``, ``restart()`` or ``kill()`` it in fault tests,
    and ``stop()`` it, which also deletes every file it made. Also a context manager.

    ``tcp=True`` listens on 127.0.0.1 as well (``tcp_url``); by default only the unix socket."""

    def __init__(self, dbname: str = "test", tcp: bool = False, start_timeout_s: float = 60.0):
        if not _NAME.fullmatch(dbname):
            raise ValueError(f"database name {dbname!r} must match {_NAME.pattern}")
        self.bindir = find_bindir()
        self.initdb, self.pg_ctl = _tool(self.bindir, "initdb"), _tool(self.bindir, "pg_ctl")
        self.psql = _tool(self.bindir, "psql")
        self.user = _server_user()
        self.dbname, self.tcp, self.start_timeout_s = dbname, tcp, start_timeout_s
        self.port = _free_port() if tcp else DEFAULT_PORT
        self.base: Path | None = None  # the temp folder: data/, server.log, and the socket
        self.running = False

    # -- paths and URLs -------------------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        """Where the unix socket lives: the short temp folder itself (paths are capped ~107)."""
        assert self.base is not None, "PgServer not started"
        return self.base

    @property
    def data_dir(self) -> Path:
        return self.socket_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.socket_dir / "server.log"

    def url_for(self, dbname: str) -> str:
        """The unix-socket URL of database ``dbname`` on this server."""
        port = "" if self.port == DEFAULT_PORT else f"&port={self.port}"
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.socket_dir}{port}"

    @property
    def url(self) -> str:
        """``postgresql://postgres@/test?host=/tmp/pgXXXX`` (plus ``&port=N`` with tcp)."""
        return self.url_for(self.dbname)

    @property
    def tcp_url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/test``; only with ``tcp=True``."""
        if not self.tcp:
            raise RuntimeError("PgServer was started without tcp=True")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{self.dbname}"

    # -- running commands -----------------------------------------------------------------

    def _as_server_user(self, argv: list[str]) -> list[str]:
        """``argv`` run as the server's OS user: directly, or through runuser/setpriv as root."""
        if self.user is None:
            return argv
        if shutil.which("runuser"):
            return ["runuser", "-u", self.user.pw_name, "--", *argv]
        return ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
                "--clear-groups", "--", *argv]

    def _run(self, argv: list[str], as_server: bool = True, timeout: float | None = None) -> str:
        """Run one command, returning its output; on failure raise with its output and the
        server log's tail, which is where PostgreSQL says why it would not start."""
        cmd = self._as_server_user(argv) if as_server else argv
        # C locale: initdb takes its locale from the environment, and the one here may not be
        # installed; cwd: the server user may not be allowed into ours.
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        proc = subprocess.run(cmd, cwd=self.socket_dir, env=env, capture_output=True, text=True,
                              timeout=timeout or self.start_timeout_s)
        if proc.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({proc.returncode}):\n"
                               f"{proc.stdout}{proc.stderr}\n--- server log ---\n{log}")
        return proc.stdout

    def _psql(self, sql: str) -> None:
        """One statement as the superuser, through the socket (a client: runs as ourselves)."""
        self._run([self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url_for("postgres"),
                   "-c", sql], as_server=False)

    # -- lifecycle ------------------------------------------------------------------------

    def _make_cluster(self) -> None:
        """A temp folder owned by the server user, a cluster in it, our settings appended."""
        self.base = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
        # 0755: clients of any user can reach the socket; initdb makes data/ itself, 0700.
        self.base.chmod(0o755)
        if self.user is not None:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        self._run([self.initdb, "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
                   "-E", "UTF8", "--locale=C", "--no-sync"])
        settings = {**SETTINGS, "port": str(self.port),
                    "listen_addresses": "'127.0.0.1'" if self.tcp else "''",
                    "unix_socket_directories": f"'{self.socket_dir}'"}
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write("\n# tests/pgserver.py\n")
            f.writelines(f"{k} = {v}\n" for k, v in settings.items())

    def _pg_ctl_start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run([self.pg_ctl, "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                   "-t", str(int(self.start_timeout_s)), "start"])
        self.running = True

    def start(self) -> PgServer:
        """Make the cluster, start it and create the ``dbname`` database; returns self."""
        if self.base is not None:
            raise RuntimeError("PgServer already started")
        atexit.register(self.stop)  # a session that dies early still leaves nothing behind
        try:
            self._make_cluster()
            self._pg_ctl_start()
            self.fresh_database(self.dbname)
        except BaseException:
            self.stop()
            raise
        return self

    def fresh_database(self, name: str) -> str:
        """Create an empty database ``name`` on this server and return its URL."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"database name {name!r} must match {_NAME.pattern}")
        self._psql(f"CREATE DATABASE {name}")
        return self.url_for(name)

    def _pg_ctl_stop(self, mode: str) -> None:
        """``pg_ctl stop -m mode``, waiting until the server is gone."""
        self._run([self.pg_ctl, "-D", str(self.data_dir), "-m", mode, "-w", "stop"])
        self.running = False

    def restart(self, down_s: float = 0.0) -> None:
        """Stop fast (clients are disconnected), stay down ``down_s`` seconds, start again on the
        same socket and port. After ``kill()`` only the start half runs."""
        if self.running:
            self._pg_ctl_stop("fast")
        if down_s > 0:
            time.sleep(down_s)
        self._pg_ctl_start()

    def _postmaster_pid(self) -> int | None:
        """The server's pid from ``postmaster.pid``, or None when there is no such file."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """SIGKILL the server and all its backends at once, as a crash would: nothing is flushed
        or checkpointed. ``restart()`` then brings it back through crash recovery."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        # pg_ctl starts the postmaster in a session of its own, so its group is exactly the
        # server; killing only the postmaster would leave backends holding shared memory.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        # The stale pid file would make a restart wait for it; the server is known dead.
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "postmaster.pid").unlink()
        self.running = False

    def stop(self) -> None:
        """Stop the server (immediately: its data is thrown away) and delete its folder.
        Safe to call twice, or after a failed start."""
        atexit.unregister(self.stop)
        if self.base is None:
            return
        if self.running:
            try:
                self._pg_ctl_stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                self.kill()  # still gone before its folder is
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"PgServer({self.url if self.base else 'not started'}, {state})"


def _alive(pid: int) -> bool:
    """Whether ``pid`` is still a live process (a zombie, left for a parent to reap, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
