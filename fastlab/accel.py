"""The device path: what makes a convnet fast on a GPU, applied from ``trainer`` settings.

- cuDNN benchmark mode on CUDA: every batch has the same shape, so picking the fastest
  convolution algorithm once pays off from the second batch on.
- channels-last memory format (``trainer.channels_last``; default on CUDA for image batches):
  tensor cores read NHWC convolutions without transposes.
- ``torch.compile`` (``trainer.compile``): tried on one real batch first; when it cannot
  compile here (no compiler, an unsupported op) the run says so in one line and trains eagerly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger("fastlab")


def use_channels_last(setting: bool | None, device: torch.device, sample) -> bool:
    """``trainer.channels_last``, with null meaning: on CUDA, for 4-D image batches."""
    is_image = isinstance(sample, torch.Tensor) and sample.ndim == 4
    return is_image and (device.type == "cuda" if setting is None else bool(setting))


def tune_backends(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def compile_forward(model: nn.Module, sample, autocast) -> Callable:
    """``torch.compile(model)`` if it compiles and runs on ``sample`` (in eval mode, without
    gradients, under the run's ``autocast``), else ``model`` itself with a one-line warning."""
    compiled = torch.compile(model)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), autocast():
            compiled(sample)
    except Exception as e:  # whatever the compiler stack raises: the run goes on uncompiled
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        log.warning("trainer.compile: torch.compile cannot compile this model here (%s: %s); training without it",
                    type(e).__name__, first)
        return model
    finally:
        model.train(was_training)
    return compiled
