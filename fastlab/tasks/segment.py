"""Semantic segmentation: a class code per pixel, learned by a U-Net from images with masks.

Targets are ``(B, H, W)`` long code indices in which void pixels are ``IGNORE`` (see
``fastlab.data.masks.bunch``); predictions are ``(B, c, H, W)`` scores. The metrics sum a
confusion matrix batch by batch (per-pixel predictions of a whole validation set are too big to
keep) and read pixel accuracy, mean IoU and Dice off it, over the codes present in the targets.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fastlab import registry
from fastlab.config import RunConfig
from fastlab.data.augment import MASKS
from fastlab.data.masks.bunch import IGNORE, MaskBunch
from fastlab.data.place import Place
from fastlab.errors import ConfigError, FastlabError
from fastlab.metrics import BatchMetric
from fastlab.plots import plot_masks
from fastlab.rundir import write_json
from fastlab.tasks.base import Task
from fastlab.tasks.classify import SmoothedTask
from fastlab.tasks.images import ImageMeta, image_model, use_pretrained_stats

# ---------------------------------------------------------------------------- loss and metrics


@dataclass
class SegmentTask(SmoothedTask):
    """Semantic segmentation; ``label_smoothing`` smooths each non-void pixel's target."""

    name: str = "segment"
    objective: str = "mean_iou"


def segment_loss(pred: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Pixel-wise cross-entropy of ``pred (B, c, H, W)`` scores against ``target (B, H, W)``,
    averaged over the pixels that are not void. A batch of void pixels only gives 0, not NaN
    (PyTorch's mean over no pixels), so it cannot end a run as diverged. With
    ``label_smoothing`` each non-void pixel's target is ``(1 - eps) * one_hot + eps / c``; void
    pixels still count in neither term (PyTorch masks the smoothing term at ``ignore_index`` too)."""
    total = F.cross_entropy(pred.float(), target, ignore_index=IGNORE, reduction="sum",
                            label_smoothing=label_smoothing)
    return total / (target != IGNORE).sum().clamp_min(1)


def build_loss(run: RunConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    eps = run.task.label_smoothing
    return segment_loss if not eps else functools.partial(segment_loss, label_smoothing=float(eps))


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, c: int) -> torch.Tensor:
    """``(c, c)`` long counts, rows the true code and columns the predicted one, of predicted codes
    ``pred (...)`` against ``target (...)``; void pixels (any target outside ``[0, c)``) are
    left out."""
    keep = (target >= 0) & (target < c)
    index = target[keep] * c + pred[keep]
    return torch.bincount(index, minlength=c * c).view(c, c)


def per_class_iou(cm: torch.Tensor) -> torch.Tensor:
    """``(c,)`` intersection over union ``TP / (TP + FP + FN)`` per code; NaN for codes absent
    from the targets (their IoU says nothing about this data)."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = tp / union.clamp_min(1)
    return torch.where(cm.sum(1) > 0, iou, torch.nan)


def per_class_dice(cm: torch.Tensor) -> torch.Tensor:
    """``(c,)`` Dice (F1) ``2 TP / (2 TP + FP + FN)`` per code; NaN for codes absent from the targets."""
    cm = cm.double()
    tp = cm.diag()
    dice = 2 * tp / (cm.sum(0) + cm.sum(1)).clamp_min(1)
    return torch.where(cm.sum(1) > 0, dice, torch.nan)


def pixel_accuracy_of(cm: torch.Tensor) -> float:
    """Correct pixels over all non-void pixels."""
    return (cm.diag().sum() / cm.sum().clamp_min(1)).item()


def mean_iou_of(cm: torch.Tensor) -> float:
    """Mean IoU over the codes present in the targets."""
    return per_class_iou(cm).nanmean().item()


def dice_of(cm: torch.Tensor) -> float:
    """Mean Dice over the codes present in the targets."""
    return per_class_dice(cm).nanmean().item()


def per_class_scores(cm: torch.Tensor, codes: Sequence[str]) -> dict[str, dict]:
    """``{code: {"iou", "dice", "pixels"}}`` from a confusion matrix (None where absent)."""
    iou, dice, pixels = per_class_iou(cm), per_class_dice(cm), cm.sum(1)
    return {code: {"iou": None if iou[i].isnan() else iou[i].item(),
                   "dice": None if dice[i].isnan() else dice[i].item(),
                   "pixels": int(pixels[i])} for i, code in enumerate(codes)}


class ConfusionMetric(BatchMetric):
    """A score read off the confusion matrix summed over the validation batches.

    ``accumulate(pred (B, c, H, W), yb (B, H, W))``; ``score(cm (c, c)) -> float``.
    """

    def __init__(self, score: Callable[[torch.Tensor], float]):
        self.score = score
        self.reset()

    def reset(self) -> None:
        self.cm: torch.Tensor | None = None

    def accumulate(self, pred: torch.Tensor, yb: torch.Tensor) -> None:
        cm = confusion_matrix(pred.argmax(dim=1), yb, pred.shape[1])  # stays on the device
        self.cm = cm if self.cm is None else self.cm + cm

    def value(self) -> float:
        return float("nan") if self.cm is None else self.score(self.cm.cpu())


def validation_confusion(model: torch.nn.Module, data: MaskBunch) -> torch.Tensor:
    """``(c, c)`` confusion matrix of ``model`` over the whole validation set."""
    metric = ConfusionMetric(mean_iou_of)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for xb, yb in data.valid:
            metric.accumulate(model(xb).float(), yb)
    model.train(was_training)
    return metric.cm.cpu() if metric.cm is not None else torch.zeros(data.c, data.c, dtype=torch.long)


# ------------------------------------------------------------------------------------ plots


def show_results(learn, path: Path, n: int = 4) -> Path:
    """``path``: ``n`` validation images with the true and the predicted mask overlaid; beside it
    ``per_class.json``: IoU, Dice and pixel count of each code over the whole validation set."""
    data: MaskBunch = learn.data
    model = learn.model
    n = min(n, len(data.valid.x))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        pred = model(data.valid.normalize(data.valid.x[:n])).argmax(dim=1).cpu()  # (n, H, W)
    model.train(was_training)
    cm = validation_confusion(model, data)
    write_json(Path(path).with_name("per_class.json"),
               {"void": data.classes[data.void] if data.void is not None else None,
                "pixel_accuracy": pixel_accuracy_of(cm), "mean_iou": _or_none(mean_iou_of(cm)),
                "dice": _or_none(dice_of(cm)), "codes": per_class_scores(cm, data.classes)})
    return plot_masks(data.valid.x[:n].cpu(), [data.valid.y[:n].cpu(), pred], ["truth", "prediction"],
                      data.classes, Path(path))


def _or_none(v: float) -> float | None:
    return None if v != v else v


# ------------------------------------------------------------------------------------ hooks


def build_data(run: RunConfig, pretrained_meta: dict | None, place: Place) -> MaskBunch:
    """Images and masks from the data source; normalised as a pretrained encoder's source task
    was, when there is one and ``data.mean`` is not given."""
    return use_pretrained_stats(MaskBunch.from_config(run.data, seed=run.seed, place=place), run.data, pretrained_meta)


@dataclass(kw_only=True)
class SegmentMeta(ImageMeta):
    """What a segmentation model records: an image model's fields plus its codes
    (``MaskBunch.meta()``); its model is a registered segmenter built like an image model."""

    codes: list[str]  # code i names mask value i
    void: int | None = None  # the code training ignored, or None

    def check(self, source: str, error: type[FastlabError] = ConfigError) -> None:
        super().check(source, error)
        if list(self.codes) != list(self.classes or []):
            raise error(f"'{source}' has codes {self.codes} but classes {self.classes}: the file is inconsistent")


SEGMENT = registry.register("task", "segment", SegmentTask, Task(
    name="segment",
    targets="mask",
    loss_func=segment_loss,
    metrics={"pixel_accuracy": ConfusionMetric(pixel_accuracy_of), "mean_iou": ConfusionMetric(mean_iou_of),
             "dice": ConfusionMetric(dice_of)},
    maximize=frozenset({"pixel_accuracy", "mean_iou", "dice"}),
    data_kinds=frozenset({"masks"}),
    arch_role="segmenter",
    # a mask per pixel cannot be blended (mixup) nor averaged over augmented passes (tta)
    supports=frozenset({"augment", "cutmix", "presize", "sizes"}),
    aug_targets=MASKS,
    build_data=build_data,
    model_from=image_model,
    show_results=show_results,
    inference="fastlab.inference.segment:SegmentInference",
    meta_type=SegmentMeta,
    build_loss=build_loss,
))
