"""GradientClip: clip the global norm of the gradients before each optimiser step."""

from __future__ import annotations

import torch

from fastlab.callbacks.core import Callback


class GradientClip(Callback):
    """``clip_grad_norm_`` over the model's parameters in ``before_step``, to ``max_norm``.

    The gradients are unscaled first: with fp16 the scaler has multiplied the loss, and clipping
    scaled gradients would clip at the wrong norm. ``GradScaler.unscale_`` returns at once when the
    scaler is disabled (every precision but ``16-mixed``), and ``scaler.step`` then knows not to
    unscale again. With inf gradients (fp16 overflow) the norm is inf, the gradients become zero or
    NaN, and the scaler skips the step as it would have anyway.

    Attributes
    ----------
    last_norm : float or None
        The total norm before clipping at the latest step (a tensor until read, to avoid a sync).
    """

    order = 20

    def __init__(self, max_norm: float):
        if not max_norm > 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        self.max_norm = float(max_norm)
        self._last_norm: torch.Tensor | None = None

    def before_step(self) -> None:
        learn = self.learn
        learn.scaler.unscale_(learn.opt)
        params = [p for p in learn.model.parameters() if p.grad is not None]
        self._last_norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm)

    @property
    def last_norm(self) -> float | None:
        return None if self._last_norm is None else float(self._last_norm)
