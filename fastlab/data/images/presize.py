"""Presizing (fast.ai's recipe): decode big, then crop and warp to the final side on the batch.

A source is built at ``data.presize``; its training images stay that large (the run's batch
augmentation, :class:`fastlab.data.augment.BatchAugment` with ``size=data.size``, crops, warps and
resizes them to ``data.size`` in one resampling), and its validation images are resized whole to
``data.size`` here, once, as every validation batch would otherwise be (fastai's centre resize:
the images are already square).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
import torch.nn.functional as F

from fastlab import registry
from fastlab.config import DataConfig
from fastlab.data.place import Place

log = logging.getLogger("fastlab")


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images ``(N, C, H, W)`` -> ``(N, C, size, size)`` uint8, bilinear with antialiasing
    (a downscale by 1.25 without it would alias). Done in chunks to bound the float copy. Images
    that are not in memory (``fastlab.data.images.lazy``) stay so: resized chunk by chunk into a
    cache of their own, or resized as each file is decoded."""
    if not isinstance(x, torch.Tensor):
        return x.resized(size)
    if tuple(x.shape[-2:]) == (size, size) or x.dtype != torch.uint8:
        return x
    out = torch.empty((*x.shape[:2], size, size), dtype=torch.uint8)
    for i in range(0, len(x), 512):
        chunk = F.interpolate(x[i:i + 512].float(), size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
        out[i:i + 512] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


def resize_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Code masks ``(N, H, W)`` -> ``(N, size, size)``, nearest: codes never blend."""
    if tuple(masks.shape[-2:]) == (size, size):
        return masks
    out = F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest-exact")
    return out[:, 0].round().to(masks.dtype)


def build_source(cfg: DataConfig, place: Place) -> Any:
    """The registered image source ``cfg.name`` (a ``Source`` or ``MaskSource``), presized when
    ``cfg.presize`` is set: training images at ``presize``, validation images (and masks) at
    ``size``. The split is the same either way: it depends on ``data.seed`` only. A source whose
    schema ``streams`` is built with ``place.storage`` (where its decoded images live)."""
    # A sweep worker decodes its trials' images once (place.keep): the source depends on data.*
    # (not the batch size) and where decoded images live, and no run changes it.
    key = (repr(dataclasses.replace(cfg, bs=1)), repr(place.storage))
    return place.keep.kept("image source", key, lambda: _build_source(cfg, place))


def _build_source(cfg: DataConfig, place: Place) -> Any:
    entry = registry.get("data", cfg.name)
    streams = type(cfg).streams
    if cfg.cache in ("disk", "none") and not streams:
        log.info("data.cache=%s reads images batch by batch from folder, name_re and csv data; data=%s keeps "
                 "its images in memory", cfg.cache, cfg.name)

    def builder(c: DataConfig) -> Any:
        return entry.builder(c, place.storage) if streams else entry.builder(c)

    if cfg.presize is None or cfg.presize == cfg.size:
        return builder(cfg)
    source = builder(dataclasses.replace(cfg, size=cfg.presize))
    source.valid_x = resize_images(source.valid_x, cfg.size)
    if hasattr(source, "valid_masks"):
        source.valid_masks = resize_masks(source.valid_masks, cfg.size)
    return source
