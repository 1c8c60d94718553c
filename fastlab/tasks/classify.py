"""Single-label classification."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastlab.tasks.base import Task


def accuracy(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """``preds (N, c)`` logits, ``targets (N,)`` class indices."""
    return (preds.argmax(dim=1) == targets).float().mean().item()


def error_rate(preds: torch.Tensor, targets: torch.Tensor) -> float:
    return 1.0 - accuracy(preds, targets)


CLASSIFY = Task(
    name="classify",
    targets="category",
    loss_func=F.cross_entropy,
    metrics={"accuracy": accuracy, "error_rate": error_rate},
    maximize=frozenset({"accuracy"}),
    default_objective="accuracy",
)
