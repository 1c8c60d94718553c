"""Batches of images that are not in memory, exactly as ``TensorLoader`` hands them out.

``StreamLoader`` is a ``TensorLoader`` whose ``x`` is ``LazyImages`` (``fastlab.data.images.lazy``):
the same order (one ``randperm`` of its ``generator`` per pass, so the Checkpointer's saved
generator replays it on resume), the same batches, the same values (each uint8 batch is copied to
the device and normalised by ``TensorLoader.normalize``). Each batch is read when it is needed:

- rows of a cache file (``data.cache=disk``) by positioned reads on a thread, one batch ahead of
  the one being trained on;
- image files (``data.cache=none``) decoded by the ``x.workers`` processes of a
  ``torch.utils.data.DataLoader`` (each worker decodes whole batches; 0: in this process).

Resident memory grows with the batch, not with the data. ``loader_for`` picks the loader for an
``x``.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.utils.data import DataLoader, Dataset

from fastlab.data.images.lazy import LazyImages
from fastlab.data.images.loader import TensorLoader
from fastlab.errors import DataError


class StreamLoader(TensorLoader):
    """A ``TensorLoader`` over ``x`` images read batch by batch (see the module). ``y`` stays on
    the CPU and each batch's targets are copied with its images. ``pending_stats``: set by the
    bunch while its statistics are deferred (``ImageLoaders.defer_stats``); called before they
    are read."""

    pending_stats = None
    _mean = _std = None

    @property
    def mean(self) -> torch.Tensor | None:
        if self.pending_stats is not None:
            self.pending_stats()
        return self._mean

    @mean.setter
    def mean(self, value: torch.Tensor | None) -> None:
        self._mean = value

    @property
    def std(self) -> torch.Tensor | None:
        if self.pending_stats is not None:
            self.pending_stats()
        return self._std

    @std.setter
    def std(self, value: torch.Tensor | None) -> None:
        self._std = value

    def to(self, device: torch.device, resident: bool = True) -> StreamLoader:
        """Batches on ``device``; the images are never resident (that is the point)."""
        self.device = torch.device(device)
        if self._mean is not None:
            self._mean, self._std = self._mean.to(self.device), self._std.to(self.device)
        return self

    @property
    def resident(self) -> bool:
        return False

    def normalize(self, xb: torch.Tensor) -> torch.Tensor:
        # Callers such as show_results hand in x[:n], which is read onto the CPU.
        return super().normalize(xb.to(self.device))

    def _batches(self) -> list[torch.Tensor | slice]:
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        return [slice(b * self.bs, (b + 1) * self.bs) if order is None else order[b * self.bs:(b + 1) * self.bs]
                for b in range(len(self))]

    def _to_device(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pinned = self.device.type == "cuda"
        if pinned and not xb.is_pinned():
            xb, yb = xb.pin_memory(), yb.pin_memory()
        return xb.to(self.device, non_blocking=pinned), yb.to(self.device, non_blocking=pinned)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.pending_stats is not None:
            self.pending_stats()  # before the order is drawn: it reads nothing random
        batches = self._batches()  # drawn here, in this process: the generator is the loader's own
        if self.x.workers > 0:
            yield from self._from_workers(batches)
            return
        with ThreadPoolExecutor(1) as pool:
            ahead = pool.submit(self._read, batches[0]) if batches else None
            try:
                for b in range(len(batches)):
                    xb, yb = ahead.result()
                    ahead = pool.submit(self._read, batches[b + 1]) if b + 1 < len(batches) else None
                    yield self.normalize(xb), yb
            finally:
                if ahead is not None:
                    ahead.cancel()

    def _read(self, idx: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        xb, yb = self.x[idx], self.y[idx]
        return self._to_device(xb, yb)

    def _from_workers(self, batches: list) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # Workers for this pass only, shut down when it ends or is left (a persistent pool would
        # be shut down by the garbage collector, which can take seconds per worker). Its own
        # generator: a DataLoader draws its workers' seed from torch's global one otherwise, and
        # training's random numbers would differ from the memory path's.
        order = [b if isinstance(b, slice) else b.tolist() for b in batches]
        dl = DataLoader(_Batches(self.x, self.y), batch_size=None, sampler=order, num_workers=self.x.workers,
                        pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(0))
        it = iter(dl)
        try:
            for b, item in enumerate(it):
                if isinstance(item, DataError):
                    raise item
                if b % 16 == 15:
                    trim_heap()
                yield self.normalize(item[0]), item[1].to(self.device, non_blocking=self.device.type == "cuda")
        finally:
            del it  # the only reference: its workers are told to stop now


class _Batches(Dataset):
    """``dataset[rows]`` is one whole batch ``(x (B, C, S, S) uint8, y)``, decoded in a worker; an
    unreadable file comes back as its ``DataError``, raised as one line in the training process."""

    def __init__(self, x: LazyImages, y: torch.Tensor):
        self.x, self.y = x, y

    def __getitem__(self, rows):
        try:
            return self.x[rows], self.y[rows]
        except DataError as e:
            return e

    def __len__(self) -> int:
        return len(self.x)


def _libc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_MALLOC_TRIM = _libc_trim()


def trim_heap() -> None:
    """Give the heap's free pages back to the OS (glibc's ``malloc_trim``). Batches received from
    worker processes leave the float batches made from them in holes the heap cannot reuse, and
    its resident memory would grow by hundreds of MB over the first epoch; a trim every few
    batches keeps it flat for a fraction of a millisecond."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def loader_for(x, y: torch.Tensor, bs: int, **kwargs) -> TensorLoader:
    """A ``TensorLoader`` for images in memory, a ``StreamLoader`` for ``LazyImages``."""
    return (StreamLoader if isinstance(x, LazyImages) else TensorLoader)(x, y, bs, **kwargs)
