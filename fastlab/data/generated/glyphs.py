"""A generated alphabet of stroke glyphs: the zoo's offline source task for transfer to digits.

Class ``c`` is a fixed set of pen strokes (quadratic curves) drawn from ``glyph_seed`` and ``c``;
each sample is that glyph under a random affine jitter and stroke width, white on black like
scikit-learn's digits. Different classes, same kind of image: what pretraining should teach a
body (strokes, curves, junctions) without ever seeing a digit.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

RENDER = 64  # drawn at this size, then downsampled (antialiasing for free)


def _glyph_strokes(rng: np.random.Generator, strokes: int) -> list[np.ndarray]:
    """Each stroke: 3 control points of a quadratic Bezier in the unit square's middle."""
    return [rng.uniform(0.12, 0.88, size=(3, 2)) for _ in range(strokes)]


def _bezier(ctrl: np.ndarray, n: int = 16) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * ctrl[0] + 2 * (1 - t) * t * ctrl[1] + t**2 * ctrl[2]  # (n, 2)


def render_glyph(strokes: list[np.ndarray], rng: np.random.Generator, size: int) -> np.ndarray:
    """One jittered sample: rotation +-15 deg, scale 0.85-1.15, shear +-0.2, shift +-0.08, width
    varying; returns ``(size, size)`` uint8."""
    angle = math.radians(rng.uniform(-15, 15))
    scale, shear = rng.uniform(0.85, 1.15), rng.uniform(-0.2, 0.2)
    shift = rng.uniform(-0.08, 0.08, size=2)
    c, s = math.cos(angle), math.sin(angle)
    affine = scale * np.array([[c, -s], [s, c]]) @ np.array([[1.0, shear], [0.0, 1.0]])
    width = int(round(RENDER * rng.uniform(0.06, 0.1)))
    img = Image.new("L", (RENDER, RENDER), 0)
    draw = ImageDraw.Draw(img)
    for ctrl in strokes:
        pts = (_bezier(ctrl) - 0.5) @ affine.T + 0.5 + shift
        draw.line([tuple(p) for p in pts * RENDER], fill=255, width=width, joint="curve")
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0))


def make_glyphs(n_classes: int, per_class: int, strokes: int, size: int, glyph_seed: int = 0
                ) -> tuple[torch.Tensor, list[int]]:
    """All samples as ``(n_classes * per_class, 1, size, size)`` uint8 and their class ids."""
    images, labels = [], []
    for cls in range(n_classes):
        shape_rng = np.random.default_rng([glyph_seed, cls, 0])
        glyph = _glyph_strokes(shape_rng, strokes)
        sample_rng = np.random.default_rng([glyph_seed, cls, 1])
        for _ in range(per_class):
            images.append(render_glyph(glyph, sample_rng, size))
            labels.append(cls)
    return torch.from_numpy(np.stack(images)).unsqueeze(1), labels
