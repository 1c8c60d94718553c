"""Single-label image classification."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fastlab.config import TaskConfig, check
from fastlab.data.augment import LABELS
from fastlab.data.place import Place
from fastlab.registry import register
from fastlab.tasks.base import Task
from fastlab.tasks.images import ImageMeta, image_bunch, image_model


def check_label_smoothing(value: float) -> None:
    """``task.label_smoothing`` is a number in [0, 1): the share of each target's probability spread
    evenly over all classes (1 would leave no trace of the label)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value < 1.0
    check(ok, f"task.label_smoothing must lie in [0, 1), got {value}: e.g. task.label_smoothing=0.1, "
              "or 0 for plain cross-entropy")


@dataclass
class SmoothedTask(TaskConfig):
    """The keys of a task that trains with cross-entropy: ``label_smoothing`` as in
    ``F.cross_entropy`` (0: off). Classify, text_classify and segment extend it."""

    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        check_label_smoothing(self.label_smoothing)


@dataclass
class ClassifyTask(SmoothedTask):
    """Single-label image classification."""

    name: str = "classify"
    objective: str = "accuracy"


def cross_entropy(label_smoothing: float = 0.0) -> Callable[..., torch.Tensor]:
    """``loss(preds (B, c), targets (B,), reduction="mean")``: cross-entropy against targets
    smoothed to ``(1 - eps) * one_hot + eps / c`` (PyTorch's ``label_smoothing``); plain
    ``F.cross_entropy`` at 0."""
    return F.cross_entropy if not label_smoothing else functools.partial(F.cross_entropy,
                                                                         label_smoothing=float(label_smoothing))


def classify_loss(run) -> Callable[..., torch.Tensor]:
    """The run's loss: cross-entropy with its ``task.label_smoothing``."""
    return cross_entropy(run.task.label_smoothing)


def accuracy(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """``preds (N, c)`` logits, ``targets (N,)`` class indices."""
    return (preds.argmax(dim=1) == targets).float().mean().item()


def error_rate(preds: torch.Tensor, targets: torch.Tensor) -> float:
    return 1.0 - accuracy(preds, targets)


def class_probs(preds: torch.Tensor) -> torch.Tensor:
    """Logits ``(N, c)`` -> class probabilities ``(N, c)``: what test-time augmentation averages
    (accuracy and error_rate read probabilities as they read logits: the argmax is the same)."""
    return preds.float().softmax(dim=1)


def build_data(run, pretrained_meta: dict | None, place: Place):
    return image_bunch(run, "category", pretrained_meta, place)


@torch.no_grad()
def show_results(learn, path: Path, n: int = 16) -> Path:
    """The first ``n`` validation images titled ``true/predicted`` (the title red when wrong)."""
    from fastlab.plots import show_images

    valid, model = learn.data.valid, learn.model
    x, y = valid.x[:n], valid.y[:n]
    was_training = model.training
    model.eval()
    pred = model(valid.normalize(x)).argmax(dim=1).cpu()  # (n,)
    model.train(was_training)
    classes = learn.data.classes
    titles = [f"{classes[int(t)]}/{classes[int(p)]}" for t, p in zip(y.cpu(), pred)]
    return show_images(x.cpu(), titles, Path(path), wrong=[int(t) != int(p) for t, p in zip(y.cpu(), pred)])


CLASSIFY = register("task", "classify", ClassifyTask, Task(
    name="classify",
    targets="category",
    loss_func=F.cross_entropy,
    metrics={"accuracy": accuracy, "error_rate": error_rate},
    maximize=frozenset({"accuracy"}),
    data_kinds=frozenset({"images"}),
    arch_role="body",
    supports=frozenset({"augment", "tta", "mixup", "cutmix", "presize", "sizes"}),
    aug_targets=LABELS,
    build_data=build_data,
    model_from=image_model,
    show_results=show_results,
    inference="fastlab.inference.image:ClassifyInference",
    meta_type=ImageMeta,
    build_loss=classify_loss,
    activation=class_probs,
))
