"""What the image tasks share: their data bunch, a pretrained body's normalisation, their model."""

from __future__ import annotations

from torch import nn

from fastlab.config import DataConfig, RunConfig
from fastlab.data.images.bunch import DataBunch, ImageLoaders
from fastlab.models.core import create_model


def use_pretrained_stats(data: ImageLoaders, cfg: DataConfig, pretrained_meta: dict | None) -> ImageLoaders:
    """Normalise ``data`` as a pretrained body's source task was: a zoo checkpoint's data, or
    ImageNet's statistics for ``arch.pretrained=imagenet`` (torchvision's, or the timm model's
    ``pretrained_cfg`` mean and std), as fastai does; unless ``data.mean``/``data.std`` are given
    or the channel counts differ (fastai, too, leaves a 1-channel input unnormalised by ImageNet).
    The one place that rule lives, for labelled images, points and masks alike."""
    meta = pretrained_meta or {}
    if cfg.mean is None and len(meta.get("mean") or []) == data.n_channels:
        data.set_stats(meta["mean"], meta["std"])
    return data


def image_bunch(run: RunConfig, targets: str, pretrained_meta: dict | None) -> DataBunch:
    """The image data of ``run`` with ``targets`` ("category" or "float"), normalised for its
    pretrained body when there is one."""
    data = DataBunch.from_config(run.data, targets, seed=run.seed)
    return use_pretrained_stats(data, run.data, pretrained_meta)


def image_model(run: RunConfig, data: DataBunch) -> nn.Module:
    """The registered body ``arch.name`` with fast.ai's head and ``data.c`` outputs."""
    return create_model(run.arch, data.n_channels, data.c)
