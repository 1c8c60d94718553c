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

Rows are read with positioned reads (``os.pread``) rather than through a memory map: pages a map
has touched count toward the process's resident memory until the kernel evicts them, pages read
into the page cache do not, so a run's memory grows with its batch and not with its data.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fastlab.data.images.decode import CHANNEL_MODE, DECODER_VERSION, decode_stream
from fastlab.errors import DataError
from fastlab.rundir import atomic_path, clean_stale_temps, write_json

log = logging.getLogger("fastlab")

FORMAT = "fastlab-image-cache"
VERSION = 1  # of this file layout (the .npy array and its .json)


@dataclass
class CacheStats:
    """What this process's caches did: ``built`` caches (``decoded`` images into them) and
    ``reused`` ones. Tests and benchmarks read :data:`stats`."""

    built: int = 0
    reused: int = 0
    decoded: int = 0


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


def _open_or_build(root: Path, key: str, n: int, row_shape: tuple[int, ...],
                   rows: Callable[[], Iterable[np.ndarray | str]], what: str) -> CacheFile:
    root.mkdir(parents=True, exist_ok=True)
    data, meta = root / f"{key}.npy", root / f"{key}.json"
    with _locked(root / f".{key}.lock"):
        cache = _read(data, meta, key, n, row_shape)
        if cache is not None:
            stats.reused += 1
            log.info("reusing cache %s (%d images)", data, n)
            return cache
        for tmp in clean_stale_temps(root):
            log.info("removed %s, left by a cache build that was killed", tmp.name)
        start = time.perf_counter()
        cache = _build(data, meta, key, n, row_shape, rows())
        seconds = time.perf_counter() - start
        stats.built += 1
        stats.decoded += n
        log.info("%s into cache %s in %.1f s (%.0f images/s)", what.format(n=n), data, seconds, n / max(seconds, 1e-9))
        return cache


def _read(data: Path, meta: Path, key: str, n: int, row_shape: tuple[int, ...]) -> CacheFile | None:
    """The finished cache ``key``, or None when it is missing, half-made or not what it says."""
    try:
        info = json.loads(meta.read_text())
        ok = (info.get("format") == FORMAT and info.get("version") == VERSION and info.get("key") == key
              and info.get("n") == n and tuple(info.get("row_shape", ())) == tuple(row_shape))
        size = data.stat().st_size
    except (OSError, ValueError):
        return None
    if not ok or size != info["offset"] + n * int(np.prod(row_shape)):
        return None
    return CacheFile(data, key, n, tuple(row_shape), int(info["offset"]), {int(k): v for k, v in info["bad"].items()})


def _build(data: Path, meta: Path, key: str, n: int, row_shape: tuple[int, ...],
           rows: Iterable[np.ndarray | str]) -> CacheFile:
    """Write the array (rows in order; a reason string for an unreadable row, left zero), then its
    ``.json``, each under a temporary name renamed into place."""
    meta.unlink(missing_ok=True)  # whatever was there is not whole: no reader may take it from now on
    bad: dict[int, str] = {}
    zeros = bytes(int(np.prod(row_shape)))
    with atomic_path(data) as tmp:
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                     "shape": (n, *row_shape)})
            offset = f.tell()
            count = 0
            for i, r in enumerate(rows):
                if isinstance(r, str):
                    bad[i] = r
                    f.write(zeros)
                else:
                    f.write(np.ascontiguousarray(r, dtype=np.uint8).tobytes())
                count += 1
            if count != n:
                raise RuntimeError(f"cache build wrote {count} of {n} rows")
            f.flush()
            os.fsync(f.fileno())
    write_json(meta, {"format": FORMAT, "version": VERSION, "key": key, "n": n, "row_shape": list(row_shape),
                      "offset": offset, "decoder": DECODER_VERSION, "bad": {str(k): v for k, v in bad.items()}})
    return CacheFile(data, key, n, tuple(row_shape), offset, bad)
