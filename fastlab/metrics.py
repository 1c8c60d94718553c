"""The two shapes a metric takes: a function of the whole validation set, or a BatchMetric."""

from __future__ import annotations

from collections.abc import Callable

import torch

Metric = Callable[[torch.Tensor, torch.Tensor], float]


class BatchMetric:
    """A metric summed batch by batch over the validation set, for predictions too big to keep
    whole (per-pixel masks, per-token vocabularies): fastai's ``AccumMetric`` idea.

    The Recorder calls ``reset()`` before validating, ``accumulate(pred, yb)`` after each batch
    and ``value()`` at the end. Plain metrics get the concatenated predictions instead.
    """

    def reset(self) -> None:
        raise NotImplementedError

    def accumulate(self, pred: torch.Tensor, yb: torch.Tensor) -> None:
        raise NotImplementedError

    def value(self) -> float:
        raise NotImplementedError
