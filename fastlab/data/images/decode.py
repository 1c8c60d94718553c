"""Decode image files into one uint8 tensor, resized; every failure names the file."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastlab.errors import DataError

log = logging.getLogger("fastlab")

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: 16- and 32-bit greyscale scaled down (a plain convert would
    clip them to white), transparency composited over white (a convert would show whatever
    colour hides under transparent pixels), CMYK, palette and the rest by Pillow's convert."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray((a * (255.0 / top)).round().clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        return Image.fromarray(((a - lo) * (255.0 / max(hi - lo, 1e-12))).round().astype(np.uint8), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def decode_image(source: Path | bytes, size: int, name: str | None = None) -> torch.Tensor:
    """Decode a file or encoded bytes with Pillow (torchvision's decoders are deprecated since
    0.29) and resize to ``(3, size, size)`` uint8 RGB; the aspect ratio is not kept. Training,
    prediction and serving all decode here, so an image means the same to each. Truncated,
    empty, non-image and decompression-bomb files raise ``DataError`` naming the file."""
    name = name or str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes | bytearray) else source) as im:
            # JPEG can decode straight at a reduced scale: much faster for large photos.
            im.draft("RGB", (size, size))
            rgb = to_rgb(im).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image '{name}' ({type(e).__name__}: {e}): fix or remove the file, "
                        "or set data.on_bad_file=skip") from None
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)  # (3, size, size)


def load_image(path: Path, size: int) -> torch.Tensor:
    """The image file at ``path`` as ``(3, size, size)`` uint8 (see :func:`decode_image`)."""
    if not path.exists():
        raise DataError(f"image '{path}' does not exist: check data.path and the file list")
    return decode_image(path, size)


@dataclass
class Loaded:
    """``x (N_kept, 3, size, size)`` uint8, which of the paths it holds, and the bad ones."""

    x: torch.Tensor
    kept: list[int]
    bad: list[tuple[str, str]]  # (path, reason)


def read_images(paths: Sequence[Path], size: int, on_bad_file: str = "error") -> Loaded:
    """Decode all ``paths``; a bad file raises its ``DataError`` (``on_bad_file="error"``) or is
    left out and reported (``"skip"``). Decoding releases the GIL, so a thread pool uses every
    core without the cost of worker processes."""
    if on_bad_file not in ("error", "skip"):
        raise ValueError(f"on_bad_file={on_bad_file!r}: use error or skip")

    def one(path: Path) -> torch.Tensor | DataError:
        try:
            return load_image(path, size)
        except DataError as e:
            if on_bad_file == "error":
                raise
            return e

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, paths))
    kept = [i for i, r in enumerate(results) if isinstance(r, torch.Tensor)]
    bad = [(str(paths[i]), str(r)) for i, r in enumerate(results) if not isinstance(r, torch.Tensor)]
    x = torch.stack([results[i] for i in kept]) if kept else torch.empty(0, 3, size, size, dtype=torch.uint8)
    if bad:
        names = ", ".join(Path(p).name for p, _ in bad[:10]) + (" ..." if len(bad) > 10 else "")
        log.warning("data.on_bad_file=skip: left out %d of %d images that cannot be read: %s", len(bad), len(paths), names)
    return Loaded(x, kept, bad)


def load_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """All ``paths`` as ``(N, 3, size, size)`` uint8; the first bad file raises its DataError."""
    return read_images(paths, size).x
