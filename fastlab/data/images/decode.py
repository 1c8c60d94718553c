"""Decode image files into one uint8 tensor, resized; every failure names the file."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from fastlab.errors import DataError
from fastlab.portable.images import decode_rgb

log = logging.getLogger("fastlab")

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

# What decode_image makes of a file. Bump it whenever its output changes (a resampling, the
# orientation rule, the channel conversion): caches of decoded images (fastlab.data.images.cache)
# are keyed by it, so a new decoder never reads an old decoder's pixels.
DECODER_VERSION = 2  # 2: EXIF orientation applied
CHANNEL_MODE = "RGB"  # every image is decoded to 3 channels (grey, RGBA, CMYK, palette included)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def decode_image(source: Path | bytes, size: int, name: str | None = None) -> torch.Tensor:
    """Decode a file or encoded bytes with Pillow (torchvision's decoders are deprecated since
    0.29) and resize to ``(3, size, size)`` uint8 RGB; the aspect ratio is not kept. Training,
    prediction and serving all decode here, so an image means the same to each. Truncated,
    empty, non-image and decompression-bomb files raise ``DataError`` naming the file."""
    name = name or str(source)
    try:
        rgb = decode_rgb(source, size)  # (size, size, 3): Pillow's part, shared with the ONNX runtime
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image '{name}' ({type(e).__name__}: {e}): fix or remove the file, "
                        "or set data.on_bad_file=skip") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)  # (3, size, size)


def load_image(path: Path, size: int) -> torch.Tensor:
    """The image file at ``path`` as ``(3, size, size)`` uint8 (see :func:`decode_image`)."""
    if not path.exists():
        raise DataError(f"image '{path}' does not exist: check data.path and the file list")
    return decode_image(path, size)


def unreadable(path: Path) -> str | None:
    """Why ``path`` is plainly not an image (missing, empty, no known header), or None. Only the
    header is read: a file truncated inside its pixels passes."""
    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - opening parses the header; the size proves it has one
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return (f"cannot read image '{path}' ({type(e).__name__}: {e}): fix or remove the file, "
                "or set data.on_bad_file=skip")
    return None


@dataclass
class Loaded:
    """``x (N_kept, 3, size, size)`` uint8, which of the paths it holds, and the bad ones."""

    x: torch.Tensor
    kept: list[int]
    bad: list[tuple[str, str]]  # (path, reason)


def decode_workers() -> int:
    """Threads that decode: one per core this process may use (at most 8). Pillow releases the
    GIL while it decodes and resizes, so threads use the cores without worker processes' cost of
    sending every image back (measured in ``scripts/bench_data.py``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores))


def decode_stream(paths: Sequence[Path], size: int, on_bad_file: str = "error",
                  what: str = "images", summary: bool = True) -> Iterator[torch.Tensor | DataError]:
    """Each of ``paths`` decoded to ``(3, size, size)`` uint8, in order, on every core; a bad file
    raises its ``DataError`` (``on_bad_file="error"``) or is yielded as one (``"skip"``). Only a
    few images per thread are in flight, so a caller that writes each away holds no more.
    Progress: a bar (items/s, ETA) on a terminal, else a log line every 30 s, and one when done
    (``summary``; a caller with more to say says it itself)."""
    if on_bad_file not in ("error", "skip"):
        raise ValueError(f"on_bad_file={on_bad_file!r}: use error or skip")

    def one(path: Path) -> torch.Tensor | DataError:
        try:
            return load_image(path, size)
        except DataError as e:
            if on_bad_file == "error":
                raise
            return e

    workers = decode_workers()
    progress = _Progress(len(paths), what, summary)
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        todo = iter(paths)
        try:
            for path in todo:
                pending.append(pool.submit(one, path))
                if len(pending) >= 4 * workers:
                    yield pending.popleft().result()
                    progress.step()
            while pending:
                yield pending.popleft().result()
                progress.step()
        finally:
            for f in pending:  # stopped early (an error, a consumer gone): no more decoding
                f.cancel()
            progress.close()


class _Progress:
    """tqdm's bar on a terminal (stderr), else a log line every 30 s and one at the end; nothing
    for a handful of images."""

    def __init__(self, total: int, what: str, summary: bool = True):
        self.total, self.what, self.done, self.summary = total, what, 0, summary
        self.start = self.last = time.perf_counter()
        self.bar = None
        if total >= 64 and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"decoding {what}", unit="img", leave=False, smoothing=0.1)

    def step(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update()
        elif self.total >= 64 and time.perf_counter() - self.last > 30:
            self.last = time.perf_counter()
            rate = self.done / (self.last - self.start)
            log.info("decoding %s: %d/%d (%.0f/s, %.0f s left)", self.what, self.done, self.total, rate,
                     (self.total - self.done) / rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        seconds = time.perf_counter() - self.start
        if self.summary and self.total >= 64 and self.done == self.total:
            log.info("decoded %d %s in %.1f s (%.0f images/s)", self.done, self.what, seconds,
                     self.done / max(seconds, 1e-9))


def read_images(paths: Sequence[Path], size: int, on_bad_file: str = "error") -> Loaded:
    """Decode all ``paths`` (see :func:`decode_stream`); a bad file raises its ``DataError``
    (``on_bad_file="error"``) or is left out and reported (``"skip"``)."""
    # Each image goes straight into its row: a list of them stacked at the end would hold the
    # whole set twice at the peak.
    x = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    kept, bad = [], []
    for i, r in enumerate(decode_stream(paths, size, on_bad_file)):
        if isinstance(r, torch.Tensor):
            x[len(kept)] = r
            kept.append(i)
        else:
            bad.append((str(paths[i]), str(r)))
    report_bad(bad, len(paths))
    return Loaded(x[:len(kept)].clone() if bad else x, kept, bad)


def report_bad(bad: Sequence[tuple[str, str]], total: int) -> None:
    """The one warning for images that ``data.on_bad_file=skip`` left out: how many, and which."""
    if bad:
        names = ", ".join(Path(p).name for p, _ in bad[:10]) + (" ..." if len(bad) > 10 else "")
        log.warning("data.on_bad_file=skip: left out %d of %d images that cannot be read: %s", len(bad), total, names)


def load_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """All ``paths`` as ``(N, 3, size, size)`` uint8; the first bad file raises its DataError."""
    return read_images(paths, size).x
