"""Decode image files into one uint8 tensor, resized; every failure names the file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as TF

from fastlab.errors import DataError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def _decode(path: Path) -> torch.Tensor:
    """One image as ``(3, H, W)`` uint8 RGB: torchvision's decoders first, Pillow for the rest."""
    try:
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        pass
    try:
        with Image.open(path) as im:
            return TF.pil_to_tensor(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image '{path}' ({type(e).__name__}: {e}): fix or remove the file") from None


def load_image(path: Path, size: int) -> torch.Tensor:
    """Decode and resize to ``(3, size, size)`` uint8 (antialiased; aspect ratio not kept)."""
    if not path.exists():
        raise DataError(f"image '{path}' does not exist: check data.path and the file list")
    img = _decode(path)
    return TF.resize(img, [size, size], antialias=True)


def load_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Decode all ``paths`` into ``(N, 3, size, size)`` uint8. Decoding releases the GIL, so a
    thread pool uses every core without the cost of worker processes."""
    if not paths:
        return torch.empty(0, 3, size, size, dtype=torch.uint8)
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        return torch.stack(list(pool.map(lambda p: load_image(p, size), paths)))
