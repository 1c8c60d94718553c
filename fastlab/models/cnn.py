"""A small plain CNN: quick on a CPU, and enough for digits-sized problems."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from fastlab.config import ArchConfig, check
from fastlab.models.core import BodyHead, check_head, create_head
from fastlab.models.groups import parse_groups, split_points
from fastlab.registry import register


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@dataclass
class CnnArch(ArchConfig):
    """A small plain CNN body with fast.ai's head (concat pooling, batch norm, dropout, linear)."""

    name: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    head_hidden: int = 256
    dropout: float = 0.5
    groups: Any = "halves"  # layer groups of the body (fastlab.models.groups): halves | stages | n >= 2

    def __post_init__(self) -> None:
        check(len(self.channels) > 0 and all(c >= 1 for c in self.channels),
              f"arch.channels={list(self.channels)} must be one or more positive widths: e.g. arch.channels=[32,64,128]")
        check_head(self.head_hidden, self.dropout)
        self.groups = parse_groups(self.groups)
        self.splits()  # an n above the stages + 1 is refused here, before any data is built

    def splits(self) -> tuple[int, ...]:
        """Body indices where a layer group starts: one stage per ``channels`` entry."""
        return split_points(len(self.channels), self.groups, f"the cnn of arch.channels={list(self.channels)}")


@register("arch", "cnn", CnnArch, tags={"body"})
def cnn(cfg: CnnArch, n_in: int, n_out: int) -> BodyHead:
    """One stage per entry of ``cfg.channels``: a stride-2 conv (halving the resolution) then a
    stride-1 conv, so 32 px becomes 4 px over three stages. Layer groups: the stages split as
    ``arch.groups`` says (default ``halves``: the first half, the second half), then the head."""
    stages, c_in = [], n_in
    for c in cfg.channels:
        stages.append(nn.Sequential(conv_bn_relu(c_in, c, stride=2), conv_bn_relu(c, c)))
        c_in = c
    body = nn.Sequential(*stages)
    return BodyHead(body, create_head(c_in, n_out, cfg.head_hidden, cfg.dropout), cfg.splits())
