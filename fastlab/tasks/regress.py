"""Image regression: one number per image (a label read as a float), or several (a point's x, y).

Targets are ``(N,)`` for one number and ``(N, k)`` for k; the model has ``c = k`` outputs. Point
targets (``data=points``, or ``data=csv`` with ``data.points=true``) are ``(x, y)`` pairs scaled
to [-1, 1] (see ``fastlab.data.generated.points``), and the model ends in ``SigmoidRange(-1, 1)`` unless
``task.y_range`` says otherwise: fast.ai's ``y_range``, which keeps predictions inside the image
and makes the head's job easier.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastlab.config import RunConfig, TaskConfig
from fastlab.data.augment import LABELS, POINTS, point_targets
from fastlab.data.generated.points import unscale_points
from fastlab.data.images.bunch import DataBunch
from fastlab.data.place import Place
from fastlab.errors import ConfigError
from fastlab.models.core import SigmoidRange
from fastlab.registry import register
from fastlab.tasks.base import Task
from fastlab.tasks.images import ImageMeta, image_bunch, image_model

POINT_RANGE = [-1.0, 1.0]  # where scaled points lie: the image's edges


def mse_loss(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``preds (B, k)``, ``targets (B,)`` (k = 1) or ``(B, k)``."""
    return F.mse_loss(preds.reshape(targets.shape).float(), targets)


def mae(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean absolute error over every target of every item."""
    return (preds.reshape(targets.shape) - targets).abs().mean().item()


def rmse(preds: torch.Tensor, targets: torch.Tensor) -> float:
    return (preds.reshape(targets.shape) - targets).pow(2).mean().sqrt().item()


def point_error(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean Euclidean distance between predicted and true points, in the targets' units ([-1, 1]
    for points: 0.1 is 5% of the image's width). The k targets are read as k/2 points ``(x, y)``
    when k is even, else as k one-dimensional points, so one number gives the mae."""
    diff = preds.reshape(targets.shape).float() - targets  # (N,) or (N, k)
    diff = diff.reshape(len(diff), -1)  # (N, k)
    dim = 2 if diff.shape[1] % 2 == 0 else 1
    return diff.reshape(len(diff), -1, dim).norm(dim=-1).mean().item()  # (N, k / dim) distances


def resolve_y_range(y_range, points: bool) -> list[float] | None:
    """``task.y_range`` checked; null gives [-1, 1] for points and no range otherwise."""
    if y_range is None:
        return list(POINT_RANGE) if points else None
    ok = (isinstance(y_range, list | tuple) and len(y_range) == 2
          and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in y_range))
    if not ok or y_range[0] >= y_range[1]:
        raise ConfigError(f"task.y_range={y_range} must be [lo, hi] with finite lo < hi: e.g. task.y_range=[0,10], "
                          "or null")
    return [float(y_range[0]), float(y_range[1])]


@dataclass
class RegressTask(TaskConfig):
    """Regression of numbers per image."""

    name: str = "regress"
    objective: str = "rmse"
    # [lo, hi]: squash outputs into the range with a sigmoid (fast.ai's y_range); null: [-1, 1]
    # for point targets, else a plain linear output
    y_range: list[float] | None = None

    def __post_init__(self) -> None:
        resolve_y_range(self.y_range, points=False)  # checked here, resolved with the data


def moved_targets(data) -> str:
    """What augmentation moves with the images of ``data`` (the run's ``DataConfig``): the points
    when the targets are points on the image (``data=points``, ``data.points=true``), else nothing
    (values per image, which a flip or a zoom leaves as they are)."""
    return POINTS if point_targets(data) else LABELS


def build_data(run: RunConfig, pretrained_meta: dict | None, place: Place) -> DataBunch:
    """Float targets, normalised like a pretrained body's source when there is one (as for
    classification), and the ``y_range`` the model will end in."""
    data = image_bunch(run, "float", pretrained_meta, place)
    data.y_range = resolve_y_range(getattr(run.task, "y_range", None), data.points)
    return data


def add_y_range(model: nn.Module, y_range: list[float] | None) -> nn.Module:
    """Append ``SigmoidRange(lo, hi)`` to the model's head (no weights: the state dict is the same)."""
    if y_range is not None:
        model.head.append(SigmoidRange(*y_range))
    return model


def regress_model(build: Callable[..., nn.Module], arch_cfg, meta: ImageMeta) -> nn.Module:
    """The image model with ``meta.n_out`` outputs, ending in ``meta.y_range`` when set."""
    return add_y_range(image_model(build, arch_cfg, meta), meta.y_range)


@torch.no_grad()
def predict_valid(learn, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``n`` validation images (uint8 ``(n, C, H, W)``), targets and predictions
    ``(n, k)``, all on the CPU; the model's train/eval mode is left as it was."""
    valid, model = learn.data.valid, learn.model
    x, y = valid.x[:n], valid.y[:n]
    was_training = model.training
    model.eval()
    pred = model(valid.normalize(x)).float()
    model.train(was_training)
    return x.cpu(), y.reshape(len(y), -1).float().cpu(), pred.reshape(len(y), -1).cpu()


def show_results(learn, path: Path, n: int = 16, ncols: int = 8) -> Path:
    """Validation images with their targets and predictions: points drawn (true green, predicted
    red) when the targets are points, else each image titled ``true/predicted``."""
    from fastlab.plots import pyplot, save_figure

    x, y, pred = predict_valid(learn, n)
    points = bool(getattr(learn.data, "points", False))
    plt = pyplot()
    n = len(x)
    ncols = min(ncols, max(n, 1))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.8 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = x[i].permute(1, 2, 0).numpy()  # (H, W, C)
        h, w = img.shape[:2]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        if points:
            # [-1, 1] -> pixels in [0, w]; imshow puts pixel centres on integers, hence -0.5.
            for xy, colour, marker in ((y[i], "lime", "o"), (pred[i], "red", "x")):
                px = unscale_points(xy.view(-1, 2), w, h) - 0.5  # (k / 2, 2)
                # A black rim keeps the true point visible on a green shape.
                ax.scatter(px[:, 0], px[:, 1], c=colour, marker=marker, s=36, linewidths=1.5 if marker == "o" else 2,
                           edgecolors="black" if marker == "o" else None)
            ax.set_title(f"err {float((pred[i] - y[i]).view(-1, 2).norm(dim=-1).mean()):.3f}", fontsize=8)
        else:
            true = ",".join(f"{v:.3g}" for v in y[i].tolist())
            guess = ",".join(f"{v:.3g}" for v in pred[i].tolist())
            ax.set_title(f"{true}/{guess}", fontsize=8)
    fig.suptitle("green: true, red: predicted (error in [-1, 1] units)" if points else "true/predicted", fontsize=9)
    return save_figure(fig, path)


REGRESS = register("task", "regress", RegressTask, Task(
    name="regress",
    targets="float",
    loss_func=mse_loss,
    metrics={"mae": mae, "rmse": rmse, "point_error": point_error},
    maximize=frozenset(),
    data_kinds=frozenset({"images", "points"}),
    arch_role="body",
    # blending or pasting values or points of two images means nothing: no mixup, no cutmix
    supports=frozenset({"augment", "tta", "presize", "sizes"}),
    aug_targets=moved_targets,
    build_data=build_data,
    model_from=regress_model,
    show_results=show_results,
    inference="fastlab.inference.image:RegressInference",
    meta_type=ImageMeta,
))
