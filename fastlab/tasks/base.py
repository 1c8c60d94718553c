"""What a task is: its data, model, targets, loss, metrics and which way each metric is better."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastlab.metrics import BatchMetric, Metric


@dataclass(frozen=True)
class Task:
    """A task is the whole extension point: its data, model, loss, metrics and results.

    ``metrics`` map a name to ``metric(preds (N, c), targets (N,)) -> float`` or to a
    :class:`BatchMetric` prototype (each Learner gets its own copy: :meth:`new_metrics`);
    ``maximize`` names the metrics where higher is better (every other metric and
    ``valid_loss`` is minimised).

    The hooks build what ``fastlab.prepare`` needs, for images as for any other data:

    - ``data_kinds``: the kinds of data source (``DataConfig.kind``) the task learns from.
    - ``arch_role``: the tag of the registered architectures it builds (``body``, ``segmenter``,
      ``text``, ``table``; see ``fastlab.models``).
    - ``build_data(run, pretrained_meta) -> bunch`` (see ``fastlab.data.base.Bunch``) from the
      ``RunConfig``; ``pretrained_meta`` is the ``meta`` of ``arch.pretrained``'s checkpoint, or
      ``None`` (its normalisation, or a language model's vocabulary, comes from it).
    - ``build_model(run, data) -> nn.Module`` with ``layer_groups()``.
    - ``show_results(learn, path) -> Path``: a PNG of predictions next to targets.
    """

    name: str
    targets: str  # what a target is: "category" | "float" | "mask" | "tokens" | "auto" (tables)
    loss_func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metrics: dict[str, Metric | BatchMetric]
    maximize: frozenset[str]
    data_kinds: frozenset[str]
    arch_role: str
    build_data: Callable[..., Any]
    build_model: Callable[..., Any]
    show_results: Callable[..., Path]
    # Its inference behaviour (rebuild the model from a saved meta, read inputs, decode, interpret):
    # a fastlab.inference.base.TaskInference class, or its "module:Class" imported only when a saved
    # model is used, so that training never imports serving code.
    inference: str | type
    # The loss a run trains with when it depends on the run's config (task.label_smoothing):
    # ``build_loss(run) -> loss``; None trains every run with ``loss_func``. Read through loss().
    build_loss: Callable[..., Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] | None = None
    # What the model's outputs mean as the task reads them, where predictions are averaged
    # (test-time augmentation, fastlab.tta): ``activation(preds (N, c)) -> (N, c)``, e.g. class
    # probabilities from logits (fastai's ``loss_func.activation``); None: the outputs as they are.
    activation: Callable[[torch.Tensor], torch.Tensor] | None = None

    def activate(self, preds: torch.Tensor) -> torch.Tensor:
        """``preds`` through :attr:`activation` (unchanged when the task has none)."""
        return preds if self.activation is None else self.activation(preds)

    def loss(self, run) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The loss of ``run`` (a ``RunConfig``), for training and validation alike: the same
        function scores ``valid_loss``, as fast.ai's ``LabelSmoothingCrossEntropy`` does."""
        return self.loss_func if self.build_loss is None else self.build_loss(run)

    @property
    def objectives(self) -> list[str]:
        return ["valid_loss", *self.metrics]

    def direction(self, metric: str) -> str:
        return "maximize" if metric in self.maximize else "minimize"

    def new_metrics(self) -> dict[str, Metric | BatchMetric]:
        """The metrics for one Learner: batch metrics hold state while validating, so every
        Learner gets fresh copies instead of sharing the prototypes of this (shared) Task."""
        return {k: copy.deepcopy(m) if isinstance(m, BatchMetric) else m for k, m in self.metrics.items()}
