"""Building blocks shared by every architecture: fast.ai's head, a body+head model and the
sigmoid range a regression head ends with."""

from __future__ import annotations

import torch
from torch import nn

from fastlab import registry
from fastlab.config import check
from fastlab.errors import ConfigError


class AdaptiveConcatPool2d(nn.Module):
    """Average and max pooling side by side: ``(B, C, H, W) -> (B, 2C, 1, 1)``."""

    def __init__(self):
        super().__init__()
        self.avg, self.max = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.max(x), self.avg(x)], dim=1)


def check_head(hidden: int, dropout: float) -> None:
    """``arch.head_hidden`` and ``arch.dropout`` of an architecture with fast.ai's head."""
    check(hidden >= 1, f"arch.head_hidden must be a positive integer, got {hidden}: e.g. arch.head_hidden=256")
    check(0.0 <= dropout < 1.0, f"arch.dropout must lie in [0, 1), got {dropout}: e.g. arch.dropout=0.5")


def create_head(n_features: int, n_out: int, hidden: int = 512, dropout: float = 0.5,
                pool: bool = True) -> nn.Sequential:
    """fast.ai's head: concat pooling, then (BN, dropout, linear) twice with a ReLU between.

    ``(B, n_features, H, W) -> (B, n_out)``. The first dropout is half the second, as in fastai.
    ``pool=False`` (fastai's too) is for a body that pools itself (a vision transformer's
    tokens): ``(B, n_features) -> (B, n_out)``.
    """
    nf = 2 * n_features if pool else n_features
    return nn.Sequential(
        *([AdaptiveConcatPool2d(), nn.Flatten()] if pool else []),  # (B, nf)
        nn.BatchNorm1d(nf),
        nn.Dropout(dropout / 2),
        nn.Linear(nf, hidden, bias=False),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden),
        nn.Dropout(dropout),
        nn.Linear(hidden, n_out),
    )


class SigmoidRange(nn.Module):
    """fast.ai's ``y_range``: ``lo + (hi - lo) * sigmoid(x)``, so outputs stay strictly inside
    (lo, hi), e.g. (-1, 1) for points scaled to the image. ``(B, k) -> (B, k)``.

    No parameters and no buffers: appending it to a head leaves the ``state_dict`` unchanged, so
    a checkpoint records the range in its metadata and the loader appends the same module.
    """

    def __init__(self, lo: float, hi: float):
        super().__init__()
        self.lo, self.hi = float(lo), float(hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) * (self.hi - self.lo) + self.lo

    def extra_repr(self) -> str:
        return f"lo={self.lo:g}, hi={self.hi:g}"


class BodyHead(nn.Module):
    """``head(body(x))`` with layer groups for discriminative rates and freezing.

    ``body`` is an ``nn.Sequential`` of stages; ``splits`` are the stage indices where a new layer
    group starts (after index 0). The head is always the last group.
    """

    def __init__(self, body: nn.Sequential, head: nn.Sequential, splits: tuple[int, ...]):
        super().__init__()
        self.body, self.head = body, head
        self.splits = tuple(splits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def layer_groups(self) -> list[nn.Module]:
        bounds = [0, *self.splits, len(self.body)]
        return [self.body[a:b] for a, b in zip(bounds[:-1], bounds[1:])] + [self.head]


def create_model(cfg, n_in: int, n_out: int) -> BodyHead:
    """The image classifier ``cfg.name`` (a registered ``body`` architecture: fast.ai's head on
    its body) for ``n_in`` input channels and ``n_out`` outputs."""
    entry = registry.get("arch", cfg.name)
    if "body" not in entry.tags:
        bodies = sorted(registry.options("arch", lambda e: "body" in e.tags))
        raise ConfigError(f"arch={cfg.name} is not an image classifier body: use one of {bodies}")
    return entry.builder(cfg, n_in, n_out)
