"""Decode-once image caches: every image of a file list decoded at one side into one uint8 file.

A cache is ``<paths.cache>/<key>.npy``, a NumPy array file ``(N, 3, S, S)`` uint8 (readable with
``np.load(path, mmap_mode="r")``), and ``<key>.json`` beside it, which says what it holds. The
key hashes the decoder's version, the channel mode, the side and every file's path, size and
modification time, so a changed, added or removed file makes another key and a stale cache is
never read. A cache of another cache's rows resized (presizing's validation images) is keyed by
its parent's key, the rows and the side.

A build writes both files under temporary names and renames them, the array first and the
``.json`` last: the ``.json`` is what says a cache is whole, so a build killed at any point leaves
nothing that is read, and the next run builds it again. A lock file serialises builders (the
parallel trials of a sweep, the ranks of a data-parallel run): the second waits, then reuses.

The ``.json`` records a checksum (XXH3, else CRC-32: :func:`_hashes`) of the array file's header
and of each chunk of rows (about 1 MiB) and each window of chunks (``VERIFY_WINDOW``, 64 MiB) as
they are written. A reused cache's ``.json`` and header are checked when it is opened, and its
rows (:class:`_Check`): a cache of one window there and then, a larger one by a thread that runs
ahead of the readers, beside the statistics pass and the first epoch, while a read waits until
every chunk up to its last row is checked, so no row is handed out unchecked. A cache damaged
after it was written (a bad disk, a partial copy between machines, a sync tool: same size, other
bytes), or a ``.json`` that is not the object a build writes, is built again with one warning
naming the file, never trained on: the rows read before the damaged chunk were checked, and a
build writes the same bytes again. Where it cannot be built again (no room, no write permission)
it is refused with one line.

Rows are read with positioned reads (``os.pread``) rather than through a memory map: pages a map
has touched count toward the process's resident memory until the kernel evicts them, pages read
into the page cache do not, so a run's memory grows with its batch and not with its data.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import mmap
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from fastlab.data.images.decode import CHANNEL_MODE, DECODER_VERSION, decode_stream
from fastlab.errors import ConfigError, DataError, FastlabError
from fastlab.rundir import atomic_path, clean_stale_temps, write_json

log = logging.getLogger("fastlab")

FORMAT = "fastlab-image-cache"
VERSION = 3  # of this file layout (the .npy array and its .json); 2: the checksums, 3: of windows too
CHUNK_BYTES = 1 << 20  # of rows per checksum: a reused cache is read through in these pieces
VERIFY_WINDOW = 64 << 20  # of chunks with a checksum of their own: checked in one call, mapped at once


class _Crc32:
    """CRC-32 fed in pieces, as ``xxhash.xxh3_64`` is: the same value as over their concatenation."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes | memoryview) -> None:
        self.value = zlib.crc32(data, self.value)

    def intdigest(self) -> int:
        return self.value


def _hashes() -> dict[str, tuple[Callable[[memoryview], int], Callable[[], _Crc32]]]:
    """The checksums a cache can record, each as a function of a buffer and a maker of a hash fed
    in pieces; the first one available is what a build records. xxhash's XXH3 (about 12 GB/s a core
    here; a dependency of fastlab) is the fastest; zlib's CRC-32 (3.5 GB/s; blake2b 0.8, sha256
    1.4) is the standard library's fallback. Both let go of the GIL while they hash, so a thread
    checks a window of a cache beside the readers. Both catch damage, not forgery: the cache is
    this machine's own file."""
    out = {}
    with contextlib.suppress(ImportError):
        import xxhash

        out["xxh3_64"] = (xxhash.xxh3_64_intdigest, xxhash.xxh3_64)
    out["crc32"] = (zlib.crc32, _Crc32)
    return out


HASHES = _hashes()
CHECKSUM = next(iter(HASHES))


@dataclass
class CacheStats:
    """What this process's caches did: ``built`` caches (``decoded`` images into them), ``reused``
    ones (opened to be read, their rows checked as they are read), ``damaged`` ones found (and
    built again); ``verify_s``, the seconds readers spent on checks (opening a reused cache's
    ``.json`` and header, checking chunks and waiting for those being checked), and ``check_s``,
    the CPU seconds the checks' threads spent beside them. Tests and benchmarks read :data:`stats`."""

    built: int = 0
    reused: int = 0
    decoded: int = 0
    damaged: int = 0
    verify_s: float = 0.0
    check_s: float = 0.0


stats = CacheStats()


@dataclass
class CacheFile:
    """An ``(n, *row_shape)`` uint8 array at byte ``offset`` of ``path``. ``bad`` maps the rows
    whose file could not be read (``data.on_bad_file=skip``; left as zeros) to the reason. A
    reused one holds the :class:`_Check` of its chunks until it is done, and how to build it again
    should the check find it damaged."""

    path: Path
    key: str
    n: int
    row_shape: tuple[int, ...]
    offset: int
    bad: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.row_bytes = int(np.prod(self.row_shape))
        self._fd, self._pid = None, None
        self._check: _Check | None = None
        self._build_again: Callable[[_Damaged], CacheFile] | None = None

    def _fileno(self) -> int:
        # One descriptor per process: a forked worker must not share the parent's.
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def read(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows ``rows`` (any order, repeats allowed) as ``(len(rows), *row_shape)`` uint8: one
        positioned read per run of consecutive rows, so a contiguous slice is one read."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if self._check is not None and len(rows):
            self._checked_through(int(rows.max()))
        out = np.empty((len(rows), *self.row_shape), dtype=np.uint8)
        flat = out.reshape(len(rows), self.row_bytes)
        fd, start = self._fileno(), 0
        while start < len(rows):
            end = start + 1
            while end < len(rows) and rows[end] == rows[end - 1] + 1:
                end += 1
            want = (end - start) * self.row_bytes
            got = os.preadv(fd, [memoryview(flat[start:end]).cast("B")], self.offset + int(rows[start]) * self.row_bytes)
            if got != want:
                raise DataError(f"cache '{self.path}' is shorter than it says ({got} of {want} bytes at row "
                                f"{rows[start]}): remove it (rm -rf {self.path.parent}) and run again")
            start = end
        return out

    def _checked_through(self, row: int) -> None:
        """Wait until every chunk up to ``row``'s is checked; a damaged one is built again here
        (one warning), and the reads go on from the file built again."""
        check = self._check
        if check.pid != os.getpid() and check.done < len(check.chunks):  # forked: the thread stayed behind
            check = self._check = _Check(self.path, self.offset, self.row_shape, check.sums)
        start = time.perf_counter()
        reason = check.through(row // check.rows)
        stats.verify_s += time.perf_counter() - start
        if check.done == len(check.chunks):
            self._check = None
        if reason is None:
            return
        self._check = None
        stats.damaged += 1
        log.warning("cache %s is damaged (%s): building it again", self.path, reason)
        self.close()
        self.offset = self._build_again(_Damaged(self.path, reason)).offset

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
            if self._check is not None:
                self._check.close()

    def __getstate__(self) -> dict:
        # another process gets a cache whose every row is checked, not a check it cannot wait for
        if self._check is not None:
            self._checked_through(self.n - 1)
        return {**self.__dict__, "_fd": None, "_pid": None, "_check": None, "_build_again": None}


def file_key(paths: Sequence[Path], size: int) -> str:
    """The key of the images ``paths`` decoded at ``size``: it changes with any file's absolute
    path, size or modification time (a link's target's), the decoder's version and the channel
    mode. One ``stat`` per file: a few tenths of a second for 20,000."""
    h = hashlib.sha256(json.dumps([FORMAT, VERSION, DECODER_VERSION, CHANNEL_MODE, int(size)]).encode())
    for p in paths:
        try:
            st = os.stat(p)
            facts = [os.path.abspath(p), st.st_size, st.st_mtime_ns]
        except OSError:  # a missing file is decoded (and fails) like the rest
            facts = [os.path.abspath(p), -1, -1]
        h.update(json.dumps(facts).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def image_cache(paths: Sequence[Path], size: int, on_bad_file: str, root: Path) -> CacheFile:
    """The cache of ``paths`` decoded at ``size`` in ``root``: reused when one is there, else
    decoded (on every core) into it. With ``on_bad_file="error"`` the first unreadable file
    stops the build with its ``DataError``; with ``"skip"`` it is recorded in ``bad``."""
    key = file_key(paths, size)

    def rows() -> Iterator[np.ndarray | str]:
        for r in decode_stream(paths, size, on_bad_file, what="images into the cache", summary=False):
            yield r.numpy() if isinstance(r, torch.Tensor) else str(r)

    return _open_or_build(Path(root), key, len(paths), (3, size, size), rows, what="decoded {n} images")


def resized_cache(parent: CacheFile, rows: Sequence[int], size: int,
                  resize: Callable[[torch.Tensor, int], torch.Tensor]) -> CacheFile:
    """A cache of ``parent``'s ``rows`` resized to ``size`` by ``resize`` (uint8 ``(n, C, H, W)``
    -> ``(n, C, size, size)``), applied to chunks of 512 as presizing does in memory."""
    rows = [int(r) for r in rows]
    h = hashlib.sha256(json.dumps([FORMAT, VERSION, parent.key, int(size)]).encode())
    h.update(np.asarray(rows, dtype=np.int64).tobytes())
    key = h.hexdigest()[:32]

    def chunks() -> Iterator[np.ndarray]:
        for i in range(0, len(rows), 512):
            yield from resize(torch.from_numpy(parent.read(rows[i:i + 512])), size).numpy()

    cache = _open_or_build(parent.path.parent, key, len(rows), (parent.row_shape[0], size, size), chunks,
                           what=f"resized {{n}} images to {size} px")
    cache.bad = {k: parent.bad[r] for k, r in enumerate(rows) if r in parent.bad}
    return cache


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (the OS drops it when its holder dies)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _Damaged(Exception):
    """A cache that is there but not what its build wrote: ``path`` (the file at fault) and why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _make_root(root: Path) -> None:
    """``root`` as a folder, or one line saying why ``paths.cache`` cannot be one."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not root.is_dir():  # mkdir(exist_ok=True) lets a link to a file through
            raise FileExistsError(f"[Errno 17] File exists: '{root}'")
    except (FileExistsError, NotADirectoryError):
        in_the_way = next((p for p in (root, *root.parents) if p.exists() and not p.is_dir()), root)
        raise ConfigError(f"paths.cache '{root}' cannot be a folder: '{in_the_way}' is a file; set paths.cache "
                          "to a folder (or move the file)") from None
    except OSError as e:
        raise ConfigError(f"paths.cache '{root}' cannot be made: {e.strerror}; set paths.cache to a folder you "
                          "can write") from None


def _open_or_build(root: Path, key: str, n: int, row_shape: tuple[int, ...],
                   rows: Callable[[], Iterable[np.ndarray | str]], what: str) -> CacheFile:
    _make_root(root)
    data, meta = root / f"{key}.npy", root / f"{key}.json"
    build = partial(_build_logged, root, key, n, row_shape, rows, what)
    with _locked(root / f".{key}.lock"):
        damaged = None
        try:
            start = time.perf_counter()
            cache = _read(data, meta, key, n, row_shape)
            stats.verify_s += time.perf_counter() - start
        except _Damaged as e:
            stats.damaged += 1
            log.warning("cache %s is damaged (%s): building it again", e.path, e.reason)
            cache, damaged = None, e
        if cache is not None:
            stats.reused += 1
            log.info("reusing cache %s (%d images)", data, n)
            cache._build_again = partial(_locked_build, build, root / f".{key}.lock")
            return cache
        return build(damaged)


def _locked_build(build: Callable[[_Damaged], CacheFile], lock: Path, damaged: _Damaged) -> CacheFile:
    """``build(damaged)`` under the cache's lock: a reused cache whose check found it damaged."""
    with _locked(lock):
        return build(damaged)


def _build_logged(root: Path, key: str, n: int, row_shape: tuple[int, ...],
                  rows: Callable[[], Iterable[np.ndarray | str]], what: str, damaged: _Damaged | None) -> CacheFile:
    """Build cache ``key`` (its lock held), logging what it took; where it replaces a ``damaged``
    one and cannot be built, one line naming both."""
    data, meta = root / f"{key}.npy", root / f"{key}.json"
    for tmp in clean_stale_temps(root):
        log.info("removed %s, left by a cache build that was killed", tmp.name)
    start = time.perf_counter()
    try:
        cache = _build(data, meta, key, n, row_shape, rows())
    except (OSError, FastlabError) as e:
        if damaged is None or isinstance(e, DataError):  # a bad image file is the source's error
            raise
        # the .json is gone by now, so the damaged array is never read; say what to free
        why = e.strerror if isinstance(e, OSError) else str(e)
        raise DataError(f"cache {damaged.path} is damaged ({damaged.reason}) and cannot be built again: "
                        f"{why}; remove {root / key}.* and run again with room in paths.cache") from None
    seconds = time.perf_counter() - start
    stats.built += 1
    stats.decoded += n
    log.info("%s into cache %s in %.1f s (%.0f images/s)", what.format(n=n), data, seconds, n / max(seconds, 1e-9))
    return cache


def _read(data: Path, meta: Path, key: str, n: int, row_shape: tuple[int, ...]) -> CacheFile | None:
    """The finished cache ``key``, its ``.json``, size and header checked, and its chunks (one
    window: checked here; more: being checked by :class:`_Check`'s thread); None when it was never
    finished (no ``.json``: never built, or its build was killed). Raises :class:`_Damaged` when it
    is there but not what its build wrote."""
    try:
        info = json.loads(meta.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise _Damaged(meta, f"not JSON: {e}") from None
    problem = _meta_problem(info, key, n, row_shape)
    if problem:
        raise _Damaged(meta, f"not the object a build writes: {problem}")
    try:
        check = _Check(data, info["offset"], tuple(row_shape), info["checksums"])
    except OSError as e:
        raise _Damaged(data, f"cannot be read: {e.strerror}") from None
    problem = check.unlike(info["offset"] + n * int(np.prod(row_shape)))
    if problem:
        raise _Damaged(data, problem)
    cache = CacheFile(data, key, n, tuple(row_shape), info["offset"], {int(k): v for k, v in info["bad"].items()})
    if len(check.windows) == 1:  # checked here: starting a thread costs about what hashing 64 MiB does
        reason = check.through(len(check.chunks) - 1)
        if reason is not None:
            raise _Damaged(data, reason)
    else:
        check.start()
        cache._check = check
    return cache


def _meta_problem(info: object, key: str, n: int, row_shape: tuple[int, ...]) -> str:
    """What is wrong with a ``.json``'s object (``""``: nothing): every field a build writes, of
    its type, and the values this cache must have."""
    if not isinstance(info, dict):
        return f"a JSON {type(info).__name__}, not an object"
    missing = [k for k in ("format", "version", "key", "n", "row_shape", "offset", "bad", "checksums") if k not in info]
    if missing:
        return f"no {', '.join(missing)}"
    expected = {"format": FORMAT, "version": VERSION, "key": key, "n": n, "row_shape": list(row_shape)}
    wrong = [k for k, v in expected.items() if info[k] != v]
    if wrong:
        return ", ".join(f"{k} {info[k]!r} where {expected[k]!r} was expected" for k in wrong)
    if not _is_int(info["offset"]) or info["offset"] < 0:
        return f"offset {info['offset']!r}"
    bad = info["bad"]
    if not isinstance(bad, dict) or not all(k.isdigit() and int(k) < n and isinstance(v, str) for k, v in bad.items()):
        return "bad is not {row: reason}"
    sums = info["checksums"]
    chunks = -(-n // _chunk_rows(row_shape))
    if not (isinstance(sums, dict) and sums.get("rows") == _chunk_rows(row_shape) and _is_int(sums.get("header"))
            and isinstance(sums.get("chunks"), list) and len(sums["chunks"]) == chunks
            and all(_is_int(c) for c in sums["chunks"])):
        return f"checksums is not {{kind, rows: {_chunk_rows(row_shape)}, header, {chunks} chunks}}"
    per = _window_chunks(row_shape)
    windows = -(-chunks // per)
    if not (sums.get("window") == per and isinstance(sums.get("windows"), list) and len(sums["windows"]) == windows
            and all(_is_int(w) for w in sums["windows"])):
        return f"checksums is not {{window: {per}, {windows} windows}}"
    if sums.get("kind") not in HASHES:
        return f"checksums of kind {sums.get('kind')!r}, which this Python cannot check (pip install xxhash)"
    return ""


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _chunk_rows(row_shape: tuple[int, ...]) -> int:
    """Rows per checksum: as many as fit in ``CHUNK_BYTES`` (at least one)."""
    return max(1, CHUNK_BYTES // int(np.prod(row_shape)))


def _window_chunks(row_shape: tuple[int, ...]) -> int:
    """Chunks per window: as many as fit in ``VERIFY_WINDOW`` (at least one)."""
    return max(1, VERIFY_WINDOW // (_chunk_rows(row_shape) * int(np.prod(row_shape))))


class _Check:
    """The chunks of a reused cache ``data`` checked against their checksums ``sums``, a window
    (``VERIFY_WINDOW``, its own checksum) at a time, in order, by a thread of its own
    (:meth:`start`) and by the readers: :meth:`through` checks the windows a read needs that the
    thread has not taken yet, then waits for those it is checking. A window is one call to the
    hash, which lets go of the GIL, so the thread checks while the reader works and needs the GIL
    only between windows.

    A window is mapped and hashed where it lies (a copy into a buffer cost as much as the hash
    itself), then unmapped, so the pages it touched stop counting toward the process's resident
    memory (the reason rows are read with ``os.pread``). A window that differs is hashed chunk by
    chunk to name the rows at fault. No window is taken after the first damaged one is found, or
    once the cache is dropped (``stop``)."""

    def __init__(self, data: Path, offset: int, row_shape: tuple[int, ...], sums: dict) -> None:
        self.data, self.offset, self.row_bytes, self.sums = data, offset, int(np.prod(row_shape)), sums
        self.rows, self.chunks, self.digest = sums["rows"], sums["chunks"], HASHES[sums["kind"]][0]
        self.per_window, self.windows = sums["window"], sums["windows"]
        self.step = self.rows * self.row_bytes
        self.taken = 0  # windows taken by a checker
        self.whole = bytearray(len(self.chunks))  # chunks checked and whole
        self.done = 0  # chunks 0..done-1 checked and whole
        self.bad: int | None = None  # the first damaged chunk found, and why
        self.damage: str | None = None
        self.error: BaseException | None = None  # the check itself failed (a bug, not damage)
        self.stop, self.pid, self.active = False, os.getpid(), 0
        self._cond = threading.Condition()
        self._file = open(data, "rb")  # noqa: SIM115 - closed by the last checker
        self._size = os.fstat(self._file.fileno()).st_size
        self._mapped: tuple[mmap.mmap, int] | None = None
        self._clock = 0.0  # the thread's CPU seconds when it last counted them
        self._ident: int | None = None  # the thread's

    def unlike(self, size: int) -> str:
        """Why the file is not the array its ``.json`` describes (``size`` bytes, the header it
        recorded), closing this check; ``""`` when it may be."""
        try:
            if self._size != size:
                why = f"{self._size} bytes where its .json says {size}"
            elif self.digest(os.pread(self._file.fileno(), self.offset, 0)) != self.sums["header"]:
                why = "its header differs from the checksum recorded when it was built"
            else:
                return ""
        except OSError as e:
            why = f"cannot be read: {e.strerror}"
        self.close()
        return why

    def close(self) -> None:
        """No more windows: the file is closed once no checker is hashing one."""
        with self._cond:
            self.stop = True
            if self.active == 0:
                self._file.close()

    def start(self) -> None:
        """Start the thread. The first window is mapped here, so the thread's first call that lets
        go of the GIL is the hash: after the map it would wait up to ``sys.getswitchinterval()``
        for the GIL, while the opener goes on."""
        self._mapped = self._map(0)
        threading.Thread(target=self._run, name=f"fastlab-cache-check-{self.data.stem[:8]}", daemon=True).start()

    def through(self, chunk: int) -> str | None:
        """Chunks ``0..chunk`` checked (here, or by the thread: waited for); why one of them is
        damaged, else None."""
        while (w := self._take(chunk // self.per_window)) is not None:
            self._check(w)
        with self._cond:
            self._cond.wait_for(lambda: self.done > chunk or self.error is not None
                                or (self.bad is not None and self.bad <= chunk))
        if self.done > chunk:
            return None
        if self.error is not None:
            raise self.error
        return self.damage

    def _run(self) -> None:
        self._clock, self._ident = time.thread_time(), threading.get_ident()
        while (w := self._take(len(self.windows) - 1)) is not None:
            self._check(w)

    def _take(self, last: int) -> int | None:
        """The next window for this checker, none past window ``last``."""
        with self._cond:
            if self.stop or self.error is not None or self.bad is not None or self.taken > last:
                return None
            self.taken += 1
            self.active += 1
            return self.taken - 1

    def _map(self, w: int) -> tuple[mmap.mmap, int]:
        """Window ``w`` of the file mapped, and where its first chunk starts in the map."""
        start = self.offset + w * self.per_window * self.step
        base = start - start % mmap.ALLOCATIONGRANULARITY
        stop = min(self._size, start + self.per_window * self.step)
        return mmap.mmap(self._file.fileno(), stop - base, access=mmap.ACCESS_READ, offset=base), start - base

    def _check(self, w: int) -> None:
        """Hash window ``w`` where it lies in the file (chunk by chunk if it differs) and record it."""
        first, end = w * self.per_window, min(len(self.chunks), (w + 1) * self.per_window)
        try:
            mapped = None
            if w == 0:
                mapped, self._mapped = self._mapped, None
            window, lo = mapped or self._map(w)
            with window, memoryview(window) as view:
                with view[lo:] as span:
                    whole = self.digest(span) == self.windows[w]
                if whole:
                    bad = None
                else:  # the rows at fault: a chunk, or the window where its chunks all match (its .json)
                    bad = next((c for c in range(first, end) if self._differs(view, lo, first, c)), None)
                    bad = (bad, bad + 1) if bad is not None else (first, end)
            self._record(first, end, bad)
        except (OSError, ValueError) as e:  # ValueError: a map past the end of a file cut short since
            with self._cond:
                self._damaged(first, f"cannot be read: {getattr(e, 'strerror', None) or e}")
        except BaseException as e:  # noqa: BLE001 - the readers raise it
            with self._cond:
                self.error = self.error or e
        finally:
            with self._cond:
                self.active -= 1
                self._cond.notify_all()
                if self.active == 0 and (self.taken == len(self.windows) or self.stop or self.error is not None
                                         or self.bad is not None):
                    self._file.close()

    def _differs(self, view: memoryview, lo: int, first: int, c: int) -> bool:
        lo += (c - first) * self.step
        with view[lo:lo + self.step] as piece:
            return self.digest(piece) != self.chunks[c]

    def _record(self, first: int, end: int, bad: tuple[int, int] | None) -> None:
        """Chunks ``first..end-1`` checked: whole, or whole up to the damaged chunks ``bad``."""
        with self._cond:
            upto = end if bad is None else bad[0]
            self.whole[first:upto] = b"\1" * (upto - first)
            while self.done < len(self.chunks) and self.whole[self.done]:
                self.done += 1
            if bad is not None:
                last = min(bad[1] * self.rows, (self._size - self.offset) // self.row_bytes) - 1
                self._damaged(bad[0], f"rows {bad[0] * self.rows}-{last} differ from the checksum recorded when it "
                                      "was built")
            if threading.get_ident() == self._ident:  # before the readers wake: what it did is counted
                self._clock = _count_check(self._clock)
            self._cond.notify_all()

    def _damaged(self, c: int, why: str) -> None:
        if self.bad is None or c < self.bad:
            self.bad, self.damage = c, why


_STATS_LOCK = threading.Lock()


def _new_stats_lock() -> None:
    global _STATS_LOCK
    _STATS_LOCK = threading.Lock()  # a forked child's copy may be held by a thread that stayed behind


os.register_at_fork(after_in_child=_new_stats_lock)


def _count_check(since: float) -> float:
    """Add the calling thread's CPU seconds since ``since`` to ``stats.check_s``; its CPU seconds."""
    now = time.thread_time()
    with _STATS_LOCK:
        stats.check_s += now - since
    return now


def _build(data: Path, meta: Path, key: str, n: int, row_shape: tuple[int, ...],
           rows: Iterable[np.ndarray | str]) -> CacheFile:
    """Write the array (rows in order; a reason string for an unreadable row, left zero) and the
    checksum of its header, of each ``_chunk_rows`` rows and of each ``_window_chunks`` chunks,
    then its ``.json``, each under a temporary name renamed into place."""
    meta.unlink(missing_ok=True)  # whatever was there is not whole: no reader may take it from now on
    bad: dict[int, str] = {}
    zeros = bytes(int(np.prod(row_shape)))
    per, per_window, (digest, stream) = _chunk_rows(row_shape), _window_chunks(row_shape), HASHES[CHECKSUM]
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": (n, *row_shape)})
    offset, header, chunks, windows, window = head.tell(), digest(head.getbuffer()), [], [], stream()
    with atomic_path(data) as tmp:
        with open(tmp, "wb") as f:
            f.write(head.getvalue())
            count, pending = 0, bytearray()  # the rows of the chunk being written
            for i, r in enumerate(rows):
                if isinstance(r, str):
                    bad[i] = r
                    pending += zeros
                else:
                    pending += np.ascontiguousarray(r, dtype=np.uint8).tobytes()
                count += 1
                if count % per == 0 or count == n:
                    f.write(pending)
                    chunks.append(digest(memoryview(pending)))
                    window.update(memoryview(pending))
                    if len(chunks) % per_window == 0 or count == n:
                        windows.append(window.intdigest())
                        window = stream()
                    pending.clear()
            if count != n:
                raise RuntimeError(f"cache build wrote {count} of {n} rows")
            f.flush()
            os.fsync(f.fileno())
    write_json(meta, {"format": FORMAT, "version": VERSION, "key": key, "n": n, "row_shape": list(row_shape),
                      "offset": offset, "decoder": DECODER_VERSION, "bad": {str(k): v for k, v in bad.items()},
                      "checksums": {"kind": CHECKSUM, "rows": per, "header": header, "chunks": chunks,
                                    "window": per_window, "windows": windows}})
    return CacheFile(data, key, n, tuple(row_shape), offset, bad)
