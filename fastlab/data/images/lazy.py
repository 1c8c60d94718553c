"""Images that are read when indexed instead of held in memory: a cache file's rows
(``data.cache=disk``) or the image files themselves, decoded at each read (``data.cache=none``).

Both stand where a uint8 tensor ``(N, 3, S, S)`` stands in a ``Source`` and a loader's ``x``:
``len``, ``shape``, ``ndim``, ``dtype``, ``device`` and ``x[i]``, ``x[a:b]``, ``x[[i, j, ...]]``
(or a LongTensor of rows), which return uint8 tensors on the CPU. Whoever iterates batches
(:class:`fastlab.data.images.stream.StreamLoader`), computes channel statistics
(``channel_stats``, streamed) or draws a few images (``show_batch``, ``show_results``, interpret)
takes them as it takes a tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import get_worker_info

from fastlab.data.images.cache import CacheFile, resized_cache
from fastlab.data.images.decode import decode_stream, load_image
from fastlab.data.images.presize import resize_images


class LazyImages:
    """``rows`` of some image store, ``(len(rows), C, S, S)`` uint8; ``workers`` says how a loader
    reads batches: 0 in its own process (cheap reads), else in that many worker processes."""

    dtype = torch.uint8
    device = torch.device("cpu")
    ndim = 4
    workers = 0

    def __init__(self, rows: Sequence[int], row_shape: tuple[int, int, int]):
        self.rows = np.asarray(rows, dtype=np.int64)
        self.row_shape = tuple(row_shape)
        self.bad: dict[int, str] = {}  # rows whose file cannot be read (data.on_bad_file=skip)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.row_shape))

    def __len__(self) -> int:
        return len(self.rows)

    def numel(self) -> int:
        return int(np.prod(self.shape))

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """Store rows ``rows`` as ``(len(rows), C, S, S)`` uint8."""
        raise NotImplementedError

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, int | np.integer):
            return self[[int(idx)]][0]
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        return torch.from_numpy(self._read(self.rows[idx]))

    def take(self, idx: Sequence[int]) -> LazyImages:
        """The images ``idx`` of these, read the same way."""
        raise NotImplementedError

    def resized(self, size: int) -> LazyImages:
        """These images resized to ``(size, size)`` as ``presize.resize_images`` resizes a tensor."""
        raise NotImplementedError


class DiskImages(LazyImages):
    """Rows of a cache file (``fastlab.data.images.cache``), read with positioned reads."""

    def __init__(self, cache: CacheFile, rows: Sequence[int] | None = None):
        super().__init__(range(cache.n) if rows is None else rows, cache.row_shape)
        self.cache = cache

    def _read(self, rows: np.ndarray) -> np.ndarray:
        return self.cache.read(rows)

    def take(self, idx: Sequence[int]) -> DiskImages:
        return DiskImages(self.cache, self.rows[np.asarray(idx, dtype=np.int64)])

    def resized(self, size: int) -> DiskImages:
        if self.row_shape[-2:] == (size, size):
            return self
        return DiskImages(resized_cache(self.cache, self.rows.tolist(), size, resize_images))


class FileImages(LazyImages):
    """Image files decoded at side ``decode_size`` at each read, then resized to ``size`` when it
    differs (presizing's validation images: decoded big, resized as the memory path resizes)."""

    def __init__(self, paths: Sequence[Path], decode_size: int, rows: Sequence[int] | None = None,
                 size: int | None = None, workers: int = 0):
        self.paths, self.decode_size, self.size = list(paths), decode_size, size or decode_size
        super().__init__(range(len(self.paths)) if rows is None else rows, (3, self.size, self.size))
        self.workers = workers

    def _read(self, rows: np.ndarray) -> np.ndarray:
        paths = [self.paths[int(r)] for r in rows]
        if len(paths) >= 32 and get_worker_info() is None:
            # Many at once in the training process (channel statistics): on every core. A
            # DataLoader worker is one of several processes already: one image at a time.
            decoded = decode_stream(paths, self.decode_size, what="images for statistics", summary=False)
        else:
            decoded = (load_image(p, self.decode_size) for p in paths)
        out = np.empty((len(rows), *self.row_shape), dtype=np.uint8)
        for k, x in enumerate(decoded):  # x (3, D, D)
            out[k] = resize_images(x[None], self.size)[0].numpy() if self.size != self.decode_size else x.numpy()
        return out

    def take(self, idx: Sequence[int]) -> FileImages:
        return FileImages(self.paths, self.decode_size, self.rows[np.asarray(idx, dtype=np.int64)], self.size,
                          self.workers)

    def resized(self, size: int) -> FileImages:
        return FileImages(self.paths, self.decode_size, self.rows, size, self.workers)
