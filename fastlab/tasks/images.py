"""What the image tasks share: their data bunch, a pretrained body's normalisation, what their
models record (``ImageMeta``) and how they are built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from fastlab.config import DataConfig, RunConfig
from fastlab.data.images.bunch import DataBunch, ImageLoaders
from fastlab.data.place import Place
from fastlab.errors import ConfigError, FastlabError
from fastlab.models.meta import ModelMeta


@dataclass(kw_only=True)
class ImageMeta(ModelMeta):
    """What an image model records: how its inputs are read (``DataBunch.meta()``)."""

    n_in: int  # input channels: 1 for digits, 3 for image files
    size: int  # images are resized to (size, size)
    mean: list[float]  # per channel, of images scaled to [0, 1]
    std: list[float]
    y_range: list[float] | None = None  # a regression model's outputs squashed into [lo, hi]
    points: bool = False  # regression targets are (x, y) points in [-1, 1]

    def check(self, source: str, error: type[FastlabError] = ConfigError) -> None:
        y = self.y_range
        if y is not None and not (isinstance(y, list | tuple) and len(y) == 2 and all(isinstance(v, int | float) for v in y)):
            raise error(f"'{source}' has y_range {y!r}, not [lo, hi]: the file is inconsistent")
        if not isinstance(self.mean, list | tuple) or not isinstance(self.std, list | tuple) or \
                len(self.mean) != self.n_in or len(self.std) != self.n_in:
            raise error(f"'{source}' has {self.n_in} channel(s) but mean/std {self.mean}/{self.std}: "
                        "the file is inconsistent")


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


def image_bunch(run: RunConfig, targets: str, pretrained_meta: dict | None, place: Place) -> DataBunch:
    """The image data of ``run`` with ``targets`` ("category" or "float"), kept where ``place``
    says, normalised for its pretrained body when there is one."""
    data = DataBunch.from_config(run.data, targets, seed=run.seed, place=place)
    return use_pretrained_stats(data, run.data, pretrained_meta)


def image_model(build: Callable[..., nn.Module], arch_cfg, meta: ImageMeta) -> nn.Module:
    """A registered image architecture (a body with fast.ai's head, or a segmenter) for
    ``meta.n_in`` channels in and ``meta.n_out`` outputs: ``build(arch_cfg, n_in, n_out)``."""
    return build(arch_cfg, meta.n_in, meta.n_out)
