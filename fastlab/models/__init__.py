"""Architectures. Each registers itself in ``fastlab.registry`` (group ``arch``) beside its
builder, tagged with its role: ``body`` (an image body with fast.ai's head: cnn, resnet18,
resnet34, resnet50, timm; built by ``create_model(cfg, n_in, n_out)``), ``segmenter`` (unet),
``text`` (awd_lstm) and ``table`` (tabular_mlp). ``arch.pretrained=imagenet`` is
``fastlab.models.imagenet``."""

from fastlab.models import awd_lstm, cnn, resnet, tabular, timm_arch, unet  # noqa: F401  (they register)
from fastlab.models.core import AdaptiveConcatPool2d, BodyHead, create_head, create_model

__all__ = ["AdaptiveConcatPool2d", "BodyHead", "create_head", "create_model"]
