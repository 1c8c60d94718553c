"""What a task is: targets, loss, metrics and which way each metric is better."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Metric = Callable[[torch.Tensor, torch.Tensor], float]


@dataclass(frozen=True)
class Task:
    """A task binds target encoding, loss and metrics.

    ``metrics`` map a name to ``metric(preds (N, c), targets (N,)) -> float`` and ``maximize``
    names the metrics where higher is better (every other metric and ``valid_loss`` is minimised).
    """

    name: str
    targets: str  # "category" | "float": how the DataBunch encodes labels
    loss_func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metrics: dict[str, Metric]
    maximize: frozenset[str]
    default_objective: str

    @property
    def objectives(self) -> list[str]:
        return ["valid_loss", *self.metrics]

    def direction(self, metric: str) -> str:
        return "maximize" if metric in self.maximize else "minimize"
