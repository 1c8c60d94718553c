"""Regression of one number per item."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastlab.tasks.base import Task


def mse_loss(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``preds (B, 1)``, ``targets (B,)``."""
    return F.mse_loss(preds.view(-1).float(), targets)


def mae(preds: torch.Tensor, targets: torch.Tensor) -> float:
    return (preds.view(-1) - targets).abs().mean().item()


def rmse(preds: torch.Tensor, targets: torch.Tensor) -> float:
    return (preds.view(-1) - targets).pow(2).mean().sqrt().item()


REGRESS = Task(
    name="regress",
    targets="float",
    loss_func=mse_loss,
    metrics={"mae": mae, "rmse": rmse},
    maximize=frozenset(),
    default_objective="rmse",
)
