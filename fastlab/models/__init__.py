"""Architectures: a registry from ``arch.name`` to a builder ``(cfg, n_in, n_out) -> BodyHead``."""

from __future__ import annotations

from collections.abc import Callable

from fastlab.config import ArchConfig
from fastlab.errors import ConfigError
from fastlab.models.cnn import cnn
from fastlab.models.core import AdaptiveConcatPool2d, BodyHead, create_head
from fastlab.models.resnet import resnet

ARCHS: dict[str, Callable[..., BodyHead]] = {"cnn": cnn, "resnet18": resnet, "resnet34": resnet}


def create_model(cfg: ArchConfig, n_in: int, n_out: int) -> BodyHead:
    """Build ``cfg.name`` for ``n_in`` input channels and ``n_out`` outputs."""
    if cfg.name not in ARCHS:
        raise ConfigError(f"arch.name={cfg.name!r} is not registered: use one of {sorted(ARCHS)}")
    return ARCHS[cfg.name](cfg, n_in, n_out)


__all__ = ["ARCHS", "AdaptiveConcatPool2d", "BodyHead", "create_head", "create_model"]
