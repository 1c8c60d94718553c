"""A U-Net on a registered encoder body: skip connections from each encoder stage, learned
(transposed-conv) upsampling, per-pixel class scores at the input's size.

The encoder is the ``body`` of a classifier of ``arch.encoder`` built by ``create_model``, so its
parameters carry the same ``body.*`` names: a zoo classifier of that architecture loads into it
with ``fastlab.models.zoo.load_pretrained``, exactly as for transfer between classifiers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastlab import registry
from fastlab.config import IMAGENET, ArchConfig, check
from fastlab.errors import ConfigError
from fastlab.models.cnn import conv_bn_relu
from fastlab.models.core import create_model
from fastlab.models.imagenet import ImagenetWeights, check_weights

# Body indices whose outputs feed the decoder. A ResNet body is (conv1, bn1, relu, maxpool,
# layer1..layer4): the stem's ReLU (1/2 resolution), then each layer (1/4 ... 1/32).
RESNET_TAPS = (2, 4, 5, 6, 7)


@dataclass
class UnetArch(ArchConfig):
    """A U-Net: the encoder is a registered body (cnn, resnet18, resnet34, resnet50); skip
    connections from each encoder stage; learned (transposed-conv) upsampling. ``arch.pretrained``
    names a checkpoint of the encoder's architecture (e.g. a zoo classifier), or ``imagenet`` for
    a ResNet encoder's ImageNet weights (``arch.weights``: their file, in place of the cache).
    ``arch.groups`` splits the encoder into layer groups as it splits the classifier's body."""

    name: str = "unet"
    encoder: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # the cnn encoder's stages
    weights: str | None = None
    groups: Any = "halves"  # the encoder's layer groups (fastlab.models.groups); the decoder is the last

    def __post_init__(self) -> None:
        # A body built as stages (BodyHead) can be tapped; timm's networks are not (unet_encoder).
        bodies = sorted(registry.options("arch", lambda e: "body" in e.tags and getattr(e.schema, "unet_encoder", True)))
        check(self.encoder in bodies, f"arch.encoder={self.encoder!r} is not known: use one of {bodies}")
        check_weights(self.pretrained, self.weights, self.download)
        self.groups = encoder_config(self).groups  # checked (and normalised) by the encoder's schema

    def imagenet_weights(self) -> ImagenetWeights:
        """The encoder's ImageNet weights: its ``body.*`` are the U-Net's encoder."""
        find = getattr(encoder_config(self), "imagenet_weights", None)
        if find is None:
            have = sorted(registry.options("arch", lambda e: "body" in e.tags and hasattr(e.schema, "imagenet_weights")
                                           and getattr(e.schema, "unet_encoder", True)))
            raise ConfigError(f"arch=unet with arch.encoder={self.encoder} has no ImageNet weights: use "
                              f"arch.encoder= one of {have} with arch.pretrained={IMAGENET}")
        return find()

    @property
    def body_arch(self) -> str:
        """A U-Net's pretrained body is a classifier of its encoder's architecture."""
        return self.encoder


def encoder_config(cfg: UnetArch) -> ArchConfig:
    """The classifier config whose body is this U-Net's encoder (``arch.channels`` passed on to
    an encoder that has them, ``arch.groups``, and ``arch.pretrained=imagenet`` with its
    ``arch.weights``)."""
    schema = registry.get("arch", cfg.encoder).schema
    values = {"name": cfg.encoder, "groups": cfg.groups}
    if "channels" in schema.__dataclass_fields__:
        values["channels"] = list(cfg.channels)
    if cfg.pretrained == IMAGENET and "weights" in schema.__dataclass_fields__:
        values.update(pretrained=IMAGENET, weights=cfg.weights, download=cfg.download)
    return schema(**values)


class UpBlock(nn.Module):
    """Upsample ``x`` 2x with a transposed conv (channels halved), concatenate the skip ``(B, c_skip,
    h, w)`` and mix with two conv-BN-ReLUs: ``(B, c_in, h/2, w/2) -> (B, c_out, h, w)``."""

    def __init__(self, c_in: int, c_skip: int, c_out: int):
        super().__init__()
        c_up = max(c_in // 2, 1)
        self.up = nn.ConvTranspose2d(c_in, c_up, kernel_size=2, stride=2)
        self.conv = nn.Sequential(conv_bn_relu(c_up + c_skip, c_out), conv_bn_relu(c_out, c_out))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:
            # Odd sizes: a stride-2 stage rounds up, 2x upsampling gives back one pixel too many or few.
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.conv(torch.cat([x, skip], dim=1))


class Decoder(nn.Module):
    """From the encoder's tapped features (finest first) back to ``(B, n_out, H, W)``: one
    :class:`UpBlock` per skip, a last one onto the input image itself, then a 1x1 conv."""

    def __init__(self, tap_channels: list[int], n_in: int, n_out: int):
        super().__init__()
        c = tap_channels[-1]
        blocks = []
        for c_skip in reversed(tap_channels[:-1]):
            blocks.append(UpBlock(c, c_skip, c_skip))
            c = c_skip
        self.blocks = nn.ModuleList(blocks)
        c_final = max(16, c // 2)
        self.final = UpBlock(c, n_in, c_final)
        self.out = nn.Conv2d(c_final, n_out, kernel_size=1)

    def forward(self, feats: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = feats[-1]
        for block, skip in zip(self.blocks, reversed(feats[:-1])):
            h = block(h, skip)
        return self.out(self.final(h, x))


class Unet(nn.Module):
    """``(B, n_in, H, W) -> (B, n_out, H, W)`` class scores per pixel.

    Layer groups: the encoder's, split where its classifier splits them, then the decoder; so
    ``fine_tune`` trains the decoder on a frozen pretrained encoder first, and discriminative
    rates give the encoder the lower ones.
    """

    def __init__(self, cfg: UnetArch, n_in: int, n_out: int):
        super().__init__()
        classifier = create_model(encoder_config(cfg), n_in, 2)  # its head is dropped
        self.body, self.splits = classifier.body, classifier.splits
        self.taps = RESNET_TAPS if cfg.encoder.startswith("resnet") else tuple(range(len(self.body)))
        self.decoder = Decoder(self._tap_channels(n_in), n_in, n_out)

    @torch.no_grad()
    def _tap_channels(self, n_in: int) -> list[int]:
        """Channels of each tapped feature, from one pass of a blank image (in eval mode, so the
        batch-norm statistics stay untouched)."""
        was_training = self.body.training
        self.body.eval()
        try:
            return [f.shape[1] for f in self.encode(torch.zeros(1, n_in, 64, 64))]
        finally:
            self.body.train(was_training)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The body's outputs at ``taps``, finest (largest) first."""
        feats = []
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self.taps:
                feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x), x)

    def layer_groups(self) -> list[nn.Module]:
        bounds = [0, *self.splits, len(self.body)]
        return [self.body[a:b] for a, b in zip(bounds[:-1], bounds[1:])] + [self.decoder]


@registry.register("arch", "unet", UnetArch, tags={"segmenter"})
def unet(cfg: UnetArch, n_in: int, n_out: int) -> Unet:
    return Unet(cfg, n_in, n_out)
