"""fastlab's one way to fetch a file over http(s) (or copy a ``file://`` one) into a cache.

``data.url``'s archives (``fastlab.data.external``) and the ImageNet weights torch.hub caches
(``fastlab.models.imagenet``) both come through ``download``: a lock (``filelock``), so the
parallel trials of a sweep fetch a file once and the others wait and find it; the bytes written
to ``<file>.part`` and renamed into place only once whole (the size the server announced, and the
SHA-256 prefix when one is given, as ``torch.hub.load_state_dict_from_url(check_hash=True)``
checks), so a partial or corrupt file is never where a cache looks; a connect and a read timeout;
a progress bar on a terminal and a log line otherwise. ``torch.hub.download_url_to_file`` has
neither timeouts nor a lock, so it is not used; the Hugging Face hub's files go through
``huggingface_hub`` itself.

Failures are one line (``FetchError.why``); ``FetchError.unreachable`` says the server could not
be reached at all (a failed name lookup, no route, a refused or timed-out connect): offline.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from fastlab.errors import FastlabError

log = logging.getLogger("fastlab")

CHUNK = 1 << 16
CONNECT_TIMEOUT = 10.0  # seconds to reach the server: an unreachable one is offline, said soon
READ_TIMEOUT = 30.0  # seconds without a byte before a download is given up
TIMEOUT_ENV = "FASTLAB_DOWNLOAD_TIMEOUT"  # seconds: the read timeout (and the connect one, when lower)


class FetchError(FastlabError):
    """A download that failed; ``why`` is one line saying how. ``unreachable``: the server could
    not be reached at all, so the machine is (for this file) offline."""

    def __init__(self, why: str, unreachable: bool = False):
        super().__init__(why)
        self.why, self.unreachable = why, unreachable


def timeouts() -> tuple[float, float]:
    """(connect, read) timeouts in seconds: ``FASTLAB_DOWNLOAD_TIMEOUT`` sets the read timeout
    (default 30) and caps the connect one (default 10)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return CONNECT_TIMEOUT, READ_TIMEOUT
    try:
        read = float(raw)
    except ValueError:
        read = -1.0
    if not read > 0:
        raise FetchError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds: e.g. {TIMEOUT_ENV}=60")
    return min(CONNECT_TIMEOUT, read), read


class _ReadTimeout:
    """An HTTP(S) connection that connects within its ``timeout`` and then waits ``read_timeout``
    for each read (urllib has one timeout for both)."""

    read_timeout: float = READ_TIMEOUT

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self.read_timeout)


def _opener(read_timeout: float) -> urllib.request.OpenerDirector:
    """urllib's opener (proxies from the environment included) with the read timeout set."""
    timed = {"read_timeout": read_timeout}
    http_cls = type("TimedHTTPConnection", (_ReadTimeout, http.client.HTTPConnection), timed)
    https_cls = type("TimedHTTPSConnection", (_ReadTimeout, http.client.HTTPSConnection), timed)

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(http_cls, req)

    context = ssl.create_default_context()  # the system's certificates, hostnames checked

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(https_cls, req, context=context)

    return urllib.request.build_opener(Http, Https)


class Progress:
    """A download's progress: a tqdm bar when stderr is a terminal (unless ``bar=False``: the
    downloader draws its own), else a log line as it starts and one as it ends."""

    def __init__(self, name: str, url: str, folder: Path, total: int | None, initial: int, bar: bool = True):
        self.name, self.start, self.bar = name, time.perf_counter(), None
        self.tty = sys.stderr.isatty()
        if self.tty and bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name)
        elif not self.tty:
            size = f" ({total / 2**20:.1f} MiB)" if total else ""
            log.info("downloading %s%s from %s into %s", name, size, url, folder)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self, done: int | None) -> None:
        if self.bar is not None:
            self.bar.close()
        elif done is not None and not self.tty:
            log.info("downloaded %s (%.1f MiB in %.1f s)", self.name, done / 2**20, time.perf_counter() - self.start)


def _copy_file(url: str, src: Path, part: Path, dest: Path) -> None:
    if not src.is_file():
        raise FetchError(f"no file at {src} (from {url})")
    progress = Progress(dest.name, url, dest.parent, src.stat().st_size, 0)
    with open(src, "rb") as fin, open(part, "wb") as fout:
        for block in iter(lambda: fin.read(CHUNK), b""):
            fout.write(block)
            progress.update(len(block))
    progress.close(part.stat().st_size)


def _get(url: str, part: Path, dest: Path, resume: bool) -> None:
    """GET ``url`` into ``part`` (continued with a range request when ``resume`` and a part is
    there); raises ``FetchError`` for what went wrong, ``part`` left as it is."""
    connect, read = timeouts()
    have = part.stat().st_size if resume and part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = _opener(read).open(request, timeout=connect)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the range starts at the end: the part file is whole
            return
        raise FetchError(f"HTTP {e.code} {e.reason} from {url}") from None
    except urllib.error.URLError as e:
        reason = e.reason if isinstance(e.reason, str) else f"{type(e.reason).__name__}: {e.reason}"
        raise FetchError(f"cannot reach {urllib.parse.urlparse(url).netloc} ({reason})",
                         unreachable=isinstance(e.reason, OSError)) from None
    except (OSError, http.client.HTTPException) as e:  # e.g. no answer within the read timeout
        raise FetchError(f"cannot reach {urllib.parse.urlparse(url).netloc} ({type(e).__name__}: {e})",
                         unreachable=isinstance(e, OSError)) from None
    with response:
        resumed = have > 0 and response.status == 206
        length = response.headers.get("Content-Length")
        total = (int(length) + (have if resumed else 0)) if length else None
        progress = Progress(dest.name, url, dest.parent, total, have if resumed else 0)
        try:
            with open(part, "ab" if resumed else "wb") as fout:
                for block in iter(lambda: response.read(CHUNK), b""):
                    fout.write(block)
                    progress.update(len(block))
        except TimeoutError:
            progress.close(None)
            raise FetchError(f"the server sent nothing for {read:g} s while {dest.name} was downloading "
                             f"({TIMEOUT_ENV} sets how long to wait)") from None
        except (OSError, http.client.HTTPException) as e:
            progress.close(None)
            raise FetchError(f"the download of {dest.name} broke off ({type(e).__name__}: {e})") from None
        got = part.stat().st_size
        progress.close(got)
    if total is not None and got != total:
        raise FetchError(f"the download of {dest.name} ended early ({got} of {total} bytes)")


@contextlib.contextmanager
def locked(path: Path):
    """Hold ``<path>.lock`` (``filelock``, across processes) while the body runs; a process that
    finds it held says so once and waits."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.with_name(path.name + ".lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process fetching %s", path.name)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def download(url: str, dest: Path, *, sha256_prefix: str | None = None, resume: bool = False) -> Path:
    """Fetch ``url`` (http, https or file) to ``dest`` once, under a lock; returns ``dest``.

    A ``dest`` already there (fetched by another process while this one waited) is returned as it
    is. Otherwise the bytes go to ``dest.part`` and are renamed to ``dest`` only when whole: the
    announced size reached and the SHA-256 starting with ``sha256_prefix`` when given.

    Parameters
    ----------
    url : str
        ``http://``, ``https://`` or ``file://`` URL.
    dest : Path
        Where the file goes.
    sha256_prefix : str, optional
        What the file's SHA-256 must start with (torchvision names its files so); a mismatch
        removes the download.
    resume : bool
        Keep a part file that broke off and continue it next time with a range request (archives
        of ``data.url``); otherwise any failure removes it.

    Raises
    ------
    FetchError
        One line; ``unreachable`` when the server could not be reached at all.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https", "file"):
        raise FetchError(f"'{url}' is not an http(s) or file:// URL")
    part = dest.with_name(dest.name + ".part")
    with locked(dest):
        if dest.is_file():
            return dest
        ok = False
        try:
            if parsed.scheme == "file":
                _copy_file(url, Path(urllib.request.url2pathname(parsed.path)), part, dest)
            else:
                _get(url, part, dest, resume)
            if sha256_prefix:
                digest = sha256_of(part)
                if not digest.startswith(sha256_prefix):
                    part.unlink()
                    raise FetchError(f"{dest.name} downloaded from {url} has SHA-256 {digest[:16]}..., not "
                                     f"{sha256_prefix}...: the file is corrupt or another one; it was removed")
            os.replace(part, dest)
            ok = True
        finally:
            if not ok and not resume:
                part.unlink(missing_ok=True)
    return dest


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
