"""MaskBunch: images with per-pixel masks, batched like a DataBunch.

Masks become ``(N, H, W)`` long targets in which the void code's pixels are :data:`IGNORE`
(255), so a static loss (``ignore_index=IGNORE``) and static metrics skip them whatever the data:
the void code's index itself is kept in ``meta()`` for reading predictions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from fastlab.config import AugConfig, DataConfig
from fastlab.data.base import valid_batch_size
from fastlab.data.images.bunch import ImageLoaders, TensorLoader, channel_stats
from fastlab.data.images.presize import build_source
from fastlab.data.masks.sources import MaskSource
from fastlab.data.place import Place

IGNORE = 255  # target value of pixels that neither the loss nor the metrics count


def encode_masks(masks: torch.Tensor, void: int | None) -> torch.Tensor:
    """uint8 code masks ``(N, H, W)`` -> long targets with the ``void`` code's pixels set to IGNORE."""
    y = masks.long()
    if void is not None:
        y[masks == void] = IGNORE
    return y


class MaskBunch(ImageLoaders):
    """Train and valid loaders of ``(x (B, 3, H, W) normalised, y (B, H, W) long)``: the Bunch
    contract (``fastlab.data.base``) for segmentation.

    Images stay uint8 in memory and are normalised after the device copy (``TensorLoader``);
    ``classes`` are the codes, ``c`` their number (the model's output channels) and ``void`` the
    index of the ignored code, or ``None``.
    """

    def __init__(self, source: MaskSource, bs: int, seed: int = 0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 valid_bs: int | None = None):
        self.train_items, self.valid_items = source.train_items, source.valid_items
        # The side the model sees: the validation images' (presized training images are larger).
        self.n_channels, self.size = source.train_x.shape[1], source.valid_x.shape[-1]
        self.classes, self.c, self.void = list(source.codes), len(source.codes), source.void
        y_train, y_valid = encode_masks(source.train_masks, self.void), encode_masks(source.valid_masks, self.void)
        if mean is None:
            mean, std = channel_stats(source.train_x)
        m, s = torch.tensor([float(v) for v in mean]), torch.tensor([float(v) for v in std])
        self.train = TensorLoader(source.train_x, y_train, bs, m, s, shuffle=True, drop_last=True,
                                  generator=torch.Generator().manual_seed(seed))
        n_valid, item = len(source.valid_x), math.prod(source.valid_x.shape[1:])
        self.valid = TensorLoader(source.valid_x, y_valid, valid_batch_size(bs, item, n_valid, valid_bs), m, s)
        self.device = torch.device("cpu")
        self.set_stats(mean, std)

    @property
    def codes(self) -> list[str]:
        return self.classes

    def meta(self) -> dict:
        """What ``model.pt`` records: codes, void index, channels, size, normalisation."""
        return {"classes": self.classes, "codes": self.classes, "void": self.void, "n_in": self.n_channels,
                "n_out": self.c, "size": self.size, "mean": self.mean, "std": self.std}

    def show_batch(self, path: str | Path, n: int = 8, aug: AugConfig | None = None, seed: int = 0,
                   size: int | None = None) -> Path:
        """Save the first ``n`` training images with their masks overlaid as a PNG, as a training
        batch sees them: through ``aug`` (an active ``AugConfig``; ``None`` or inactive: plain
        images) drawn from a generator of its own seeded with ``seed``, masks moved with their
        images (void, left clear, where a pixel reads from outside), resized to the side ``size``
        when it differs from the stored one (presized data)."""
        from fastlab.data.images.seen import seen_batch
        from fastlab.plots import plot_masks

        n = min(n, len(self.train.x))
        x, y = seen_batch(self.train.x[:n], self.train.y[:n], aug, seed, "masks", IGNORE, size)
        return plot_masks(x, [y], ["mask"], self.classes, Path(path))

    @classmethod
    def from_config(cls, cfg: DataConfig, seed: int = 0, place: Place | None = None) -> MaskBunch:
        """The bunch of ``cfg``, its images kept where ``place`` says (see ``DataBunch.from_config``)."""
        return cls(build_source(cfg, place or Place()), cfg.bs, seed, cfg.mean, cfg.std, cfg.valid_bs)
