"""Decode image files into one uint8 tensor, resized; every failure names the file."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastlab.errors import DataError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def decode_image(source: Path | bytes, size: int, name: str | None = None) -> torch.Tensor:
    """Decode a file or encoded bytes with Pillow (torchvision's decoders are deprecated since
    0.29) and resize to ``(3, size, size)`` uint8 RGB; the aspect ratio is not kept. Training,
    prediction and serving all decode here, so an image means the same to each."""
    name = name or str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes | bytearray) else source) as im:
            # JPEG can decode straight at a reduced scale: much faster for large photos.
            im.draft("RGB", (size, size))
            rgb = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image '{name}' ({type(e).__name__}: {e}): fix or remove the file") from None
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)  # (3, size, size)


def load_image(path: Path, size: int) -> torch.Tensor:
    """The image file at ``path`` as ``(3, size, size)`` uint8 (see :func:`decode_image`)."""
    if not path.exists():
        raise DataError(f"image '{path}' does not exist: check data.path and the file list")
    return decode_image(path, size)


def load_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Decode all ``paths`` into ``(N, 3, size, size)`` uint8. Decoding releases the GIL, so a
    thread pool uses every core without the cost of worker processes."""
    if not paths:
        return torch.empty(0, 3, size, size, dtype=torch.uint8)
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        return torch.stack(list(pool.map(lambda p: load_image(p, size), paths)))
