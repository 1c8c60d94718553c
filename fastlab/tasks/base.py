"""What a task is: its data, model, targets, loss, metrics and which way each metric is better."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastlab.metrics import BatchMetric, Metric


@dataclass(frozen=True)
class Task:
    """A task binds its data, its model, target encoding, loss and metrics.

    ``metrics`` map a name to ``metric(preds (N, c), targets (N,)) -> float`` or to a
    :class:`BatchMetric`; ``maximize`` names the metrics where higher is better (every other
    metric and ``valid_loss`` is minimised).

    The hooks build what ``fastlab.train.prepare`` needs; left ``None`` they build images:

    - ``data_kinds``: the kinds of data source (``DataConfig.kind``) the task learns from.
    - ``arch_names``: the ``arch.name`` values it can build.
    - ``build_data(run, pretrained_meta) -> bunch`` (see ``fastlab.data.base.Bunch``) from the
      ``RunConfig``; ``pretrained_meta`` is the ``meta`` of ``arch.pretrained``'s checkpoint, or
      ``None`` (a text classifier takes its language model's vocabulary from it).
    - ``build_model(run, data) -> nn.Module`` with ``layer_groups()``.
    - ``show_results(learn, path) -> Path``: a PNG of predictions next to targets.
    """

    name: str
    targets: str  # "category" | "float" | what the task's own data builder understands
    loss_func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metrics: dict[str, Metric | BatchMetric]
    maximize: frozenset[str]
    default_objective: str
    data_kinds: frozenset[str] = frozenset({"images"})
    arch_names: frozenset[str] = frozenset({"cnn", "resnet18", "resnet34"})
    build_data: Callable[..., Any] | None = None
    build_model: Callable[..., Any] | None = None
    show_results: Callable[..., Path] | None = None

    @property
    def objectives(self) -> list[str]:
        return ["valid_loss", *self.metrics]

    def direction(self, metric: str) -> str:
        return "maximize" if metric in self.maximize else "minimize"
