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
and of each chunk of rows (about 1 MiB) as they are written, and a reused cache is read through
once and checked against them (a few percent of an epoch read from it): a cache
damaged after it was written (a bad disk, a partial copy between machines, a sync tool: same size,
other bytes), or a ``.json`` that is not the object a build writes, is built again with one
warning naming the file, never trained on. Where it cannot be built again (no room, no write
permission) it is refused with one line.

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
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fastlab.data.images.decode import CHANNEL_MODE, DECODER_VERSION, decode_stream
from fastlab.errors import ConfigError, DataError, FastlabError
from fastlab.rundir import atomic_path, clean_stale_temps, write_json

log = logging.getLogger("fastlab")

FORMAT = "fastlab-image-cache"
VERSION = 2  # of this file layout (the .npy array and its .json); 2: the checksums
CHUNK_BYTES = 1 << 20  # of rows per checksum: a reused cache is read through in these pieces
VERIFY_WINDOW = 64 << 20  # of the file mapped at once while a reused cache is checked


def _hashes() -> dict[str, Callable[[memoryview], int]]:
    """The checksums a cache can record, the first one available is what a build records.
    xxhash's XXH3 (about 12 GB/s a core here; a dependency of fastlab) keeps checking a reused cache a few percent of an epoch read from it; zlib's CRC-32
    (3.5 GB/s; blake2b 0.8, sha256 1.4) is the standard library's fallback. Both catch damage,
    not forgery: the cache is this machine's own file."""
    out = {}
    with contextlib.suppress(ImportError):
        import xxhash

        out["xxh3_64"] = xxhash.xxh3_64_intdigest
    out["crc32"] = zlib.crc32
    return out


HASHES = _hashes()
CHECKSUM = next(iter(HASHES))


@dataclass
class CacheStats:
    """What this process's caches did: ``built`` caches (``decoded`` images into them), ``reused``
    ones, ``damaged`` ones found (and built again) and ``verify_s``, the seconds spent checking
    reused caches against their checksums. Tests and benchmarks read :data:`stats`."""

    built: int = 0
    reused: int = 0
    decoded: int = 0
    damaged: int = 0
    verify_s: float = 0.0


stats = CacheStats()


@dataclass
class CacheFile:
    """An ``(n, *row_shape)`` uint8 array at byte ``offset`` of ``path``. ``bad`` maps the rows
    whose file could not be read (``data.on_bad_file=skip``; left as zeros) to the reason."""

    path: Path
    key: str
    n: int
    row_shape: tuple[int, ...]
    offset: int
    bad: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.row_bytes = int(np.prod(self.row_shape))
        self._fd, self._pid = None, None

    def _fileno(self) -> int:
        # One descriptor per process: a forked worker must not share the parent's.
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def read(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows ``rows`` (any order, repeats allowed) as ``(len(rows), *row_shape)`` uint8: one
        positioned read per run of consecutive rows, so a contiguous slice is one read."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
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

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}


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
            return cache
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
    """The finished cache ``key``, checked against its checksums; None when it was never finished
    (no ``.json``: never built, or its build was killed). Raises :class:`_Damaged` when it is there
    but not what its build wrote."""
    try:
        info = json.loads(meta.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise _Damaged(meta, f"not JSON: {e}") from None
    problem = _meta_problem(info, key, n, row_shape)
    if problem:
        raise _Damaged(meta, f"not the object a build writes: {problem}")
    want = info["offset"] + n * int(np.prod(row_shape))
    try:
        size = data.stat().st_size
    except OSError as e:
        raise _Damaged(data, f"cannot be read: {e.strerror}") from None
    if size != want:
        raise _Damaged(data, f"{size} bytes where its .json says {want}")
    _verify(data, info["offset"], row_shape, info["checksums"])
    return CacheFile(data, key, n, tuple(row_shape), info["offset"], {int(k): v for k, v in info["bad"].items()})


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
    if sums.get("kind") not in HASHES:
        return f"checksums of kind {sums.get('kind')!r}, which this Python cannot check (pip install xxhash)"
    return ""


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _chunk_rows(row_shape: tuple[int, ...]) -> int:
    """Rows per checksum: as many as fit in ``CHUNK_BYTES`` (at least one)."""
    return max(1, CHUNK_BYTES // int(np.prod(row_shape)))


def _verify(data: Path, offset: int, row_shape: tuple[int, ...], sums: dict) -> None:
    """Read ``data`` through once and check its header and every chunk of rows against ``sums``;
    raise :class:`_Damaged` naming the first rows that differ.

    The file is mapped a window (``VERIFY_WINDOW``) at a time and each chunk hashed where it lies:
    a copy into a buffer cost as much as the hash itself. A window is unmapped before the next, so
    the pages it touched stop counting toward the process's resident memory (the reason rows are
    read with ``os.pread`` during training)."""
    row_bytes, k, digest = int(np.prod(row_shape)), sums["rows"], HASHES[sums["kind"]]
    step = k * row_bytes
    with open(data, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if digest(f.read(offset)) != sums["header"]:
            raise _Damaged(data, "its header differs from the checksum recorded when it was built")
        c, chunks = 0, sums["chunks"]
        while c < len(chunks):
            start = offset + c * step
            base = start - start % mmap.ALLOCATIONGRANULARITY
            end = min(size, start + max(1, (VERIFY_WINDOW - (start - base)) // step) * step)
            with mmap.mmap(f.fileno(), end - base, access=mmap.ACCESS_READ, offset=base) as window:
                with memoryview(window) as view:
                    for lo in range(start - base, end - base, step):
                        with view[lo:lo + step] as piece:
                            if digest(piece) != chunks[c]:
                                last = c * k + len(piece) // row_bytes - 1
                                raise _Damaged(data, f"rows {c * k}-{last} differ from the checksum recorded "
                                                     "when it was built")
                        c += 1


def _build(data: Path, meta: Path, key: str, n: int, row_shape: tuple[int, ...],
           rows: Iterable[np.ndarray | str]) -> CacheFile:
    """Write the array (rows in order; a reason string for an unreadable row, left zero) and the
    checksum of its header and of each ``_chunk_rows`` rows, then its ``.json``, each under a
    temporary name renamed into place."""
    meta.unlink(missing_ok=True)  # whatever was there is not whole: no reader may take it from now on
    bad: dict[int, str] = {}
    zeros = bytes(int(np.prod(row_shape)))
    per, digest = _chunk_rows(row_shape), HASHES[CHECKSUM]
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": (n, *row_shape)})
    offset, header, chunks = head.tell(), digest(head.getbuffer()), []
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
                    pending.clear()
            if count != n:
                raise RuntimeError(f"cache build wrote {count} of {n} rows")
            f.flush()
            os.fsync(f.fileno())
    write_json(meta, {"format": FORMAT, "version": VERSION, "key": key, "n": n, "row_shape": list(row_shape),
                      "offset": offset, "decoder": DECODER_VERSION, "bad": {str(k): v for k, v in bad.items()},
                      "checksums": {"kind": CHECKSUM, "rows": per, "header": header, "chunks": chunks}})
    return CacheFile(data, key, n, tuple(row_shape), offset, bad)
