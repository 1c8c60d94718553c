"""Generated scenes for segmentation: shapes of several kinds on textured backgrounds.

Each scene is a background texture (coloured noise, or stripes of two colours) with one to three
non-overlapping shapes (disc, square, triangle) of random size, position, rotation and noisy
colour. Shapes and backgrounds draw their colours from the same distribution (a shape only keeps
clear of its own background's colours), so no colour threshold separates them, and stripes put
strong edges everywhere: a model must learn outlines, and tell the kinds apart by their geometry.
Scene ``i`` depends only on ``scene_seed`` and ``i`` (not on how many scenes are asked for), so
growing ``n_images`` keeps the scenes already there.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SHAPES = ("disc", "square", "triangle")
CODES = ["background", *SHAPES]  # mask value i is CODES[i]

MIN_CONTRAST = 90.0  # least RGB distance between a shape's colours and the background's


def _texture(rng: np.random.Generator, colours: list[np.ndarray], yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A ``(S, S, 3)`` float texture of ``colours[0]``: per-pixel noise, or (when a second colour
    is given, half the time) stripes of the two colours at a random angle and period, with a
    little noise on top."""
    size = yy.shape[0]
    if len(colours) < 2 or rng.random() < 0.5:
        return colours[0] + rng.normal(0.0, rng.uniform(10.0, 35.0), (size, size, 3))
    angle = rng.uniform(0.0, math.pi)
    period = rng.uniform(2.5, 6.0)
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period + rng.random()
    stripes = (phase % 1.0 < 0.5)[..., None]  # (S, S, 1)
    return np.where(stripes, colours[0], colours[1]) + rng.normal(0.0, 8.0, (size, size, 3))


def _shape_mask(kind: str, dy: np.ndarray, dx: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Boolean ``(S, S)``: the pixels inside a shape of ``kind`` centred at offset 0 with radius
    ``r`` rotated by ``angle``. Sizes are chosen so the three kinds cover similar areas."""
    if kind == "disc":
        return dx**2 + dy**2 <= r**2
    c, s = math.cos(angle), math.sin(angle)
    if kind == "square":
        u, v = dx * c + dy * s, -dx * s + dy * c
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85 * r
    # Equilateral triangle: inside all three half-planes whose normals are 120 degrees apart, at the
    # inradius (half the circumradius) from the centre.
    circum = 1.25 * r
    inside = np.ones_like(dx, dtype=bool)
    for k in range(3):
        a = angle + k * 2.0 * math.pi / 3.0
        inside &= dx * math.cos(a) + dy * math.sin(a) <= circum / 2.0
    return inside


def _colours_apart(rng: np.random.Generator, others: list[np.ndarray], n: int = 2) -> list[np.ndarray]:
    """``n`` random RGB colours, each at least ``MIN_CONTRAST`` from every one of ``others`` (a
    shape must stand out from the background it lies on, though not by any one colour)."""
    out = []
    for _ in range(n):
        colour = rng.uniform(0.0, 255.0, 3)
        for _ in range(50):
            if all(np.linalg.norm(colour - o) >= MIN_CONTRAST for o in others):
                break
            colour = rng.uniform(0.0, 255.0, 3)
        out.append(colour)
    return out


def render_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: image ``(size, size, 3)`` uint8 and mask ``(size, size)`` uint8 of codes."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5  # pixel centres
    bg = [rng.uniform(0.0, 255.0, 3) for _ in range(2)]
    image = _texture(rng, bg, yy, xx)
    mask = np.zeros((size, size), dtype=np.uint8)
    placed: list[tuple[float, float, float]] = []  # (cy, cx, r) of the shapes so far
    for _ in range(int(rng.integers(1, 4))):
        code = int(rng.integers(len(SHAPES)))
        r = rng.uniform(0.18, 0.3) * size
        # Shapes do not overlap (a few tries, else fewer shapes): each blob is one whole kind,
        # recognisable by its outline.
        for _ in range(10):
            cy, cx = rng.uniform(0.15, 0.85, 2) * size
            if all(math.hypot(cy - py, cx - px) > 1.1 * (r + pr) for py, px, pr in placed):
                break
        else:
            continue
        placed.append((cy, cx, r))
        inside = _shape_mask(SHAPES[code], yy - cy, xx - cx, r, rng.uniform(0.0, 2.0 * math.pi))
        # Shapes are noisy flat colours: stripes inside a small shape would break its outline.
        texture = _texture(rng, _colours_apart(rng, bg, n=1), yy, xx)
        image[inside] = texture[inside]
        mask[inside] = code + 1
    return np.clip(image, 0, 255).round().astype(np.uint8), mask


def make_scenes(n_images: int, size: int, scene_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_images`` scenes: images ``(N, 3, size, size)`` uint8 and masks ``(N, size, size)``
    uint8 holding indices into :data:`CODES`."""
    images, masks = [], []
    for i in range(n_images):
        image, mask = render_scene(np.random.default_rng([scene_seed, i]), size)
        images.append(image)
        masks.append(mask)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(np.stack(masks))
