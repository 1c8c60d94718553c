"""A batch as training sees it: stored images and their targets through a run's augmentation,
for ``show_batch`` (``DataBunch`` and ``MaskBunch``) and ``plots/batch.png``.

The augmentation is a fresh :class:`fastlab.data.augment.BatchAugment` with its own seeded
generator, so drawing a batch never moves the training run's streams (the loader's shuffling
generator, the ``Augment`` callback's generator, torch's global RNG).
"""

from __future__ import annotations

import torch

from fastlab.config import AugConfig
from fastlab.data.augment import BatchAugment


def unit_images(x: torch.Tensor) -> torch.Tensor:
    """Images ``(N, C, H, W)`` -> float32 in [0, 1], what ``BatchAugment`` works on: uint8 scaled
    by 1/255 (as the loaders do); float images kept when they already lie in [0, 1], else
    stretched from their min and max (``from_tensors`` takes floats of any range, and a picture
    needs [0, 1])."""
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    x = x.float()
    if not x.numel():
        return x.clone()
    lo, hi = float(x.min()), float(x.max())
    if 0.0 <= lo and hi <= 1.0:
        return x.clone()
    return (x - lo) / max(hi - lo, 1e-12)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] ``(N, C, H, W)`` -> uint8, as the plots draw them."""
    return (x * 255.0).round().clamp(0, 255).to(torch.uint8)


def seen_batch(x: torch.Tensor, y: torch.Tensor, aug: AugConfig | None, seed: int, kind: str = "labels",
               void: int = 255, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stored images ``x`` ``(N, C, H, W)`` (uint8, or float) and targets ``y`` of ``kind``
    (``labels`` ``(N,)``/``(N, k)``, ``points`` ``(N, 2k)`` in [-1, 1], ``masks`` ``(N, H, W)``)
    -> uint8 images ``(N, C, S, S)`` and targets moved with them.

    ``aug`` active: each image drawn through ``BatchAugment(aug, seed, kind, void, size)``. ``None``
    or inactive: the images as they are, only resized to ``size`` when it differs from the stored
    side (presized data), so the plot has the side training uses. ``x`` and ``y`` are not changed.
    """
    x01, y = unit_images(x.cpu()), y.cpu()
    augment = BatchAugment(aug if aug is not None else AugConfig(), seed, kind, void, size)
    x01, y = augment(x01, y) if aug is not None and aug.active else augment.plain(x01, y)
    return to_uint8(x01), y
