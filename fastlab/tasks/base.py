"""What a task is: its data, model, targets, loss, metrics and which way each metric is better."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastlab import registry
from fastlab.data.augment import LABELS, TARGET_KINDS
from fastlab.errors import ConfigError, FastlabError
from fastlab.metrics import BatchMetric, Metric
from fastlab.models.meta import ModelMeta

# What a task can do besides training, each with the setting that asks for it: the closed set of
# ``Task.supports``. Every check of those settings reads the task's capabilities, never the kind
# of its data.
CAPABILITIES = {
    "augment": "aug (batch augmentation of the training images)",
    "tta": "trainer.tta (test-time augmentation)",
    "mixup": "trainer.callbacks.mixup.alpha (blending pairs of images and their targets)",
    "cutmix": "trainer.callbacks.cutmix.alpha (pasting a patch of one image, and its targets, into another)",
    "presize": "data.presize (images stored larger, resized to data.size in the batch)",
    "sizes": "schedule.sizes (progressive resizing: the schedule once per image side)",
}


@dataclass(frozen=True)
class Task:
    """A task is the whole extension point: its data, model, loss, metrics and results.

    ``metrics`` map a name to ``metric(preds (N, c), targets (N,)) -> float`` or to a
    :class:`BatchMetric` prototype (each Learner gets its own copy: :meth:`new_metrics`);
    ``maximize`` names the metrics where higher is better (every other metric and
    ``valid_loss`` is minimised).

    The hooks build what ``fastlab.run.prepare`` needs, for images as for any other data:

    - ``data_kinds``: the kinds of data source (``DataConfig.kind``) the task learns from.
    - ``arch_role``: the tag of the registered architectures it builds (``body``, ``segmenter``,
      ``text``, ``table``; see ``fastlab.models``).
    - ``supports``: what it can do besides training (:data:`CAPABILITIES`: ``augment``, ``tta``,
      ``mixup``, ``cutmix``, ``presize``, ``sizes``); a setting that asks for anything else is one
      ``ConfigError`` line. ``aug_targets``: what the augmentation moves with its images.
    - ``build_data(run, pretrained_meta, place) -> bunch`` (see ``fastlab.data.base.Bunch``) from
      the ``RunConfig``; ``pretrained_meta`` is the ``meta`` of ``arch.pretrained``'s checkpoint, or
      ``None`` (its normalisation, or a language model's vocabulary, comes from it); ``place``
      (``fastlab.data.place.Place.of(run, keep)``) is where decoded data lives and what the
      process keeps between runs.
    - ``model_from(build, arch_cfg, meta) -> nn.Module`` with ``layer_groups()``: the registered
      architecture's builder ``build`` called with what the model needs of ``meta`` (a
      ``meta_type``: outputs, channels, vocabulary, table columns, y_range...). :meth:`build` is
      the one way a model of the task is built, for training (:meth:`build_model`) and for a
      saved model alike, so an architecture that trains also predicts, exports and serves.
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
    model_from: Callable[..., nn.Module]
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
    # What the task can do besides training: names of CAPABILITIES (none: it trains, nothing more).
    supports: frozenset[str] = frozenset()
    # What batch augmentation (and test-time augmentation) moves with the images, as
    # fastlab.data.augment names it: LABELS (nothing moves: a class or values per image), POINTS or
    # MASKS; or ``aug_targets(data config) -> one of them`` where the data decides (regress:
    # points when its targets are points). Read through targets_moved().
    aug_targets: str | Callable[..., str] = LABELS
    # What its models record (learn.meta, model.pt, bundles): a ModelMeta subclass whose fields
    # are the common ones plus the keys of its data's meta().
    meta_type: type[ModelMeta] = ModelMeta

    def model_meta(self, run, data) -> ModelMeta:
        """What a model of ``run`` (a ``RunConfig``) trained on ``data`` (its bunch) records: the
        architecture, the task, the run's config and what the data told training (``data.meta()``)."""
        return self.meta_type.of({"arch": run.arch.name, "arch_config": dict(vars(run.arch)), "task": self.name,
                                  "config": run.to_dict(), **data.meta()})

    def build(self, arch_cfg, meta: ModelMeta, error: type[FastlabError] = ConfigError) -> nn.Module:
        """The model of this task that ``meta`` describes, untrained: the registered architecture
        ``arch_cfg.name`` (an entry of the role ``arch_role``) built by :attr:`model_from`. Training
        and every use of a saved model build through here; a mismatch is one ``error`` line."""
        entry = registry.get("arch", arch_cfg.name)
        if self.arch_role not in entry.tags:
            fits = sorted(registry.options("arch", lambda e: self.arch_role in e.tags))
            raise error(f"arch={arch_cfg.name} does not fit task={self.name}: use arch= one of {fits}")
        return self.model_from(entry.builder, arch_cfg, meta)

    def build_model(self, run, data) -> nn.Module:
        """The model ``run`` trains on ``data``: :meth:`build` with the meta of the data as it is
        (no builder reads the statistics a source may settle only when it moves to its device)."""
        return self.build(run.arch, self.model_meta(run, data))

    def __post_init__(self) -> None:
        unknown = sorted(set(self.supports) - set(CAPABILITIES))
        if unknown:
            raise ValueError(f"task {self.name!r} supports unknown capabilities {unknown}: use some of "
                             f"{sorted(CAPABILITIES)}")
        if isinstance(self.aug_targets, str) and self.aug_targets not in TARGET_KINDS:
            raise ValueError(f"task {self.name!r} has aug_targets={self.aug_targets!r}: use one of {TARGET_KINDS}, "
                             "or a function of the data config that returns one")

    def can(self, capability: str) -> bool:
        """Whether the task supports ``capability`` (one of :data:`CAPABILITIES`)."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}: use one of {sorted(CAPABILITIES)}")
        return capability in self.supports

    def targets_moved(self, data) -> str:
        """What batch augmentation moves with the images of ``data`` (the run's ``DataConfig``):
        ``LABELS``, ``POINTS`` or ``MASKS`` of ``fastlab.data.augment``."""
        return self.aug_targets(data) if callable(self.aug_targets) else self.aug_targets

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
