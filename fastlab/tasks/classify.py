"""Single-label image classification."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from fastlab.config import TaskConfig
from fastlab.registry import register
from fastlab.tasks.base import Task
from fastlab.tasks.images import image_bunch, image_model


def accuracy(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """``preds (N, c)`` logits, ``targets (N,)`` class indices."""
    return (preds.argmax(dim=1) == targets).float().mean().item()


def error_rate(preds: torch.Tensor, targets: torch.Tensor) -> float:
    return 1.0 - accuracy(preds, targets)


def build_data(run, pretrained_meta: dict | None):
    return image_bunch(run, "category", pretrained_meta)


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


CLASSIFY = register("task", "classify", TaskConfig, Task(
    name="classify",
    targets="category",
    loss_func=F.cross_entropy,
    metrics={"accuracy": accuracy, "error_rate": error_rate},
    maximize=frozenset({"accuracy"}),
    data_kinds=frozenset({"images"}),
    arch_role="body",
    build_data=build_data,
    build_model=image_model,
    show_results=show_results,
    inference="fastlab.inference.image:ClassifyInference",
))
