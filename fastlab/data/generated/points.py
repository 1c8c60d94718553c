"""Points on images: the generated ``points`` data, and scaling pixel coordinates to [-1, 1].

Convention (fast.ai's ``PointScaler``): a coordinate is continuous, the image spans ``[0, w]``
horizontally and ``[0, h]`` vertically (pixel ``i`` covers ``[i, i + 1)``), and
``x' = 2 x / w - 1``, ``y' = 2 y / h - 1``: the left/top edge is -1, the right/bottom edge +1,
the image centre 0. Scaled points survive resizing the image to any size unchanged.

The generated set: each image is one shape (a disc or a square, random size and colour) on a
textured background (two colours mixed by a random wave pattern, plus noise); the target is the
shape's centre. Image ``i`` is drawn from ``numpy.random.default_rng([points_seed, i])`` alone, so
it is the same whatever ``n_images`` is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from fastlab.errors import DataError

OVERSAMPLE = 4  # drawn this many times larger, then downsampled: antialiased edges, sub-pixel centres


def scale_points(xy: Sequence[float], width: int, height: int) -> list[float]:
    """Pixel coordinates ``[x1, y1, x2, y2, ...]`` of an image ``width`` x ``height`` -> [-1, 1]."""
    return [2.0 * v / (width if i % 2 == 0 else height) - 1.0 for i, v in enumerate(xy)]


def unscale_points(xy: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The inverse of :func:`scale_points`: ``(..., 2)`` in [-1, 1] -> pixel coordinates."""
    wh = torch.tensor([width, height], dtype=xy.dtype, device=xy.device)
    return (xy + 1.0) * wh / 2.0


def image_sizes(paths: Sequence[Path]) -> list[tuple[int, int]]:
    """``(width, height)`` of each image file, read from its header only (no pixels decoded)."""
    sizes = []
    for path in paths:
        if not path.is_file():
            raise DataError(f"image '{path}' does not exist: check data.path and the file list")
        try:
            with Image.open(path) as im:
                sizes.append(im.size)
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"cannot read image '{path}' ({type(e).__name__}): fix or remove the file") from None
    return sizes


def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """Two random colours mixed by a wave of random direction and frequency, plus pixel noise:
    ``(side, side, 3)`` float in [0, 255]. The shape must be found, not just the brightest blob."""
    c1, c2 = rng.uniform(20, 235, size=3), rng.uniform(20, 235, size=3)
    angle, freq = rng.uniform(0, np.pi), rng.uniform(1.0, 4.0)
    u = np.linspace(0, 1, side)
    gx, gy = np.meshgrid(u, u)  # (side, side)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (gx * np.cos(angle) + gy * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    img = c1 * wave[..., None] + c2 * (1 - wave[..., None])
    return np.clip(img + rng.normal(0, 12, size=img.shape), 0, 255)


def render_point_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, tuple[float, float]]:
    """One image ``(size, size, 3)`` uint8 and its shape's centre ``(x, y)`` in pixels."""
    side = size * OVERSAMPLE
    bg = _background(rng, side)
    radius = rng.uniform(0.1, 0.2) * side
    cx, cy = rng.uniform(radius, side - radius, size=2)  # the whole shape stays inside the image
    # A colour far from the background's mean, so the shape shows whatever the texture.
    colour = np.where(bg.mean(axis=(0, 1)) > 127, rng.uniform(0, 60, 3), rng.uniform(195, 255, 3))
    img = Image.fromarray(bg.astype(np.uint8), "RGB")
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    fill = tuple(int(c) for c in colour)
    draw = ImageDraw.Draw(img)
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    small = img.resize((size, size), Image.Resampling.BOX)  # box filter: the centre scales exactly
    return np.asarray(small), (cx / OVERSAMPLE, cy / OVERSAMPLE)


def make_points(n_images: int, size: int, points_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(n_images, 3, size, size)`` uint8 and centres ``(n_images, 2)`` float32 in [-1, 1]."""
    images, centres = [], []
    for i in range(n_images):
        img, (x, y) = render_point_image(np.random.default_rng([points_seed, i]), size)
        images.append(img)
        centres.append(scale_points([x, y], size, size))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S)
    return x, torch.tensor(centres, dtype=torch.float32)
