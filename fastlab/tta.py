"""Test-time augmentation: fast.ai's ``learn.tta()``.

A model's prediction for an image is averaged over ``n`` augmented copies of it, each drawn with
the augmentation it was trained with (``fastlab.data.augment.BatchAugment``), and mixed with the
prediction for the plain image: ``torch.lerp(aug_mean, plain, beta)`` (``beta=None`` gives both).
The average is taken over what the task reads off the model (``Task.activation``: class
probabilities for classification; the raw values for regression, which end in their
``y_range``). Point targets move with the image, so each augmented pass's points are first
mapped back to the original image (:func:`unwarp_points`).

The draws come from a fresh CPU generator seeded from ``seed``: TTA is deterministic and never
touches the training augmentation's generator (which ``last.pt`` carries) nor the model.
A task that does not support it (``Task.supports`` without ``tta``: segmentation's masks, text,
tables) is refused with one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from fastlab.callbacks.augment import Augment, augment_callback
from fastlab.config import AugConfig, RunConfig
from fastlab.data.augment import LABELS, MASKS, POINTS, AugParams, BatchAugment, draw_params
from fastlab.errors import ConfigError
from fastlab.metrics import BatchMetric
from fastlab.tasks import Task, get_task, supporting

# images (B, C, H, W) in [0, 1] -> the task's predictions (B, ...) on the CPU
Forward = Callable[[torch.Tensor], torch.Tensor]
KINDS = (LABELS, POINTS)  # what can be averaged: one answer per image, or points on it


# ------------------------------------------------------------------------- pure pieces


def unwarp_points(pts: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
    """Points ``(B, 2k)`` (``x1, y1, ...`` in [-1, 1]) of an augmented image -> the same points in
    the original image. ``mat`` ``(B, 3, 3)`` is the sampling matrix ``S`` of the augmentation: an
    output pixel ``q`` reads the input at ``S q``, which is therefore where ``q`` came from (the
    inverse of ``fastlab.data.augment.warp_points``, with no matrix inverted)."""
    xy = pts.double().view(len(pts), -1, 2)  # (B, k, 2)
    hom = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1) @ mat.to(pts.device, torch.float64).transpose(1, 2)
    return (hom[..., :2] / hom[..., 2:]).reshape(pts.shape).to(pts.dtype)  # (B, 2k)


def mix(aug_mean: torch.Tensor, plain: torch.Tensor, beta: float | None):
    """fastai's mix of the augmented passes' mean and the plain pass: ``lerp(aug_mean, plain, beta)``
    (``beta`` 0: augmented only, 1: plain only); ``beta=None`` gives ``(aug_mean, plain)``."""
    return (aug_mean, plain) if beta is None else torch.lerp(aug_mean, plain, float(beta))


def pass_params(p: AugParams, j: int, n: int) -> AugParams:
    """Draw ``j`` of ``p`` for each of ``n`` images: one transform shared by a whole batch."""
    return AugParams(**{f.name: getattr(p, f.name)[j:j + 1].expand(n) for f in dataclasses.fields(p)})


def check_kind(kind: str) -> str:
    """``kind``, the targets the augmentation moves (``fastlab.data.augment``), when their
    predictions can be averaged: labels or points, never masks."""
    if kind == MASKS:
        raise ConfigError("test-time augmentation averages one prediction per image (classes, values or points), "
                          "not masks: drop TTA for segmentation (trainer.tta=false, no --tta)")
    if kind not in KINDS:
        raise ConfigError(f"test-time augmentation has no target kind {kind!r}: use kind='labels' or kind='points'")
    return kind


# ------------------------------------------------------------------ one batch, n passes


def augment(aug: BatchAugment, x: torch.Tensor, p: AugParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``x`` ``(B, C, H, W)`` in [0, 1] through the draws ``p``, exactly as ``aug`` changes a
    training batch (``BatchAugment.apply``), with the sampling matrix ``S`` ``(B, 3, 3)`` for
    mapping points back."""
    xa, _, mat = aug.apply(x, None, p)
    return xa, mat


def augmented_preds(forward: Forward, x: torch.Tensor, aug: BatchAugment, params: Sequence[AugParams],
                    kind: str) -> torch.Tensor:
    """The predictions ``(n, B, ...)`` of ``x`` (``(B, C, H, W)`` in [0, 1]) under each of the ``n``
    draws ``params``; point predictions mapped back to the original image."""
    out = []
    for p in params:
        xa, mat = augment(aug, x, p)
        pred = forward(xa)
        out.append(unwarp_points(pred, mat) if kind == POINTS else pred)
    return torch.stack(out)


def tta_images(forward: Forward, x: torch.Tensor, aug: BatchAugment, n: int = 4, beta: float | None = 0.25,
               seed: int = 0, kind: str | None = None):
    """TTA of a batch of images ``x`` ``(B, C, H, W)`` in [0, 1] (``fastlab-predict --tta``). The
    ``n`` transforms are drawn from ``seed`` once and each is applied to every image, so an image's
    answer does not depend on what else is predicted with it."""
    kind = check_kind(kind or aug.kind)
    drawn = draw_params(aug.cfg, n, torch.Generator().manual_seed(seed))
    passes = augmented_preds(forward, x, aug, [pass_params(drawn, j, len(x)) for j in range(n)], kind)
    return mix(passes.mean(0), forward(aug.plain(x)[0]), beta)


# ------------------------------------------------------------------------- a Learner


def learner_activation(learn) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the Learner's task averages: its ``Task.activation`` when the Learner knows its task
    (``learn.meta``, set by ``fastlab.run.prepare``); for one built by hand, class probabilities when
    its data has classes, else the outputs as they are (``Learner.predict``'s rule)."""
    from fastlab.tasks import get_task
    from fastlab.tasks.classify import class_probs

    if learn.meta is not None:
        return get_task(learn.meta.task).activate
    return class_probs if getattr(learn.data, "classes", None) else (lambda preds: preds)


def learner_augment(learn, aug: AugConfig | BatchAugment | None, seed: int, kind: str | None) -> BatchAugment:
    """The augmentation to test with: ``aug`` (an ``AugConfig`` or a ``BatchAugment``), or by
    default the one the Learner trains with (its ``Augment`` callback). Only its settings are read:
    its generator is left alone."""
    if isinstance(aug, AugConfig):
        aug = BatchAugment(aug, seed, kind or LABELS)
    elif aug is None:
        # A presizing run has the callback with no augmentation (it only resizes): refused below.
        cbs = [cb for cb in learn.cbs if isinstance(cb, Augment)]
        if not cbs:
            raise ConfigError("learn.tta() augments as training did, but this Learner trains without augmentation "
                              "(no Augment callback): train with e.g. aug=no_flip, or pass aug=AugConfig(...)")
        aug = cbs[0].augment
    elif not isinstance(aug, BatchAugment):
        raise ConfigError(f"aug must be an AugConfig, a BatchAugment or None, got {type(aug).__name__}: "
                          "e.g. learn.tta(aug=AugConfig(max_rotate=10))")
    if not aug.cfg.active:
        raise ConfigError(f"learn.tta() averages over augmented passes, but aug={aug.cfg.name} changes nothing: "
                          "train with e.g. aug=no_flip, or pass an active aug=AugConfig(...)")
    return aug


def check_learner_task(learn) -> None:
    """A Learner that knows its task (``learn.meta``, set by ``fastlab.run.prepare``) must train one
    that supports ``tta``; one built by hand is checked by what its batches are."""
    if learn.meta is None:
        return
    task = get_task(learn.meta.task)
    if not task.can("tta"):
        raise ConfigError(f"learn.tta() averages one prediction per augmented image, which task={task.name} does "
                          f"not support: use get_preds (test-time augmentation works with task= one of "
                          f"{supporting('tta')})")


def loader_stats(dl, learn) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The normalisation ``(1, C, 1, 1)`` each of the loader's batches went through (else the
    training loader's, as the ``Augment`` callback reads it), or ``(None, None)``."""
    for loader in (dl, learn.data.train):
        mean, std = getattr(loader, "mean", None), getattr(loader, "std", None)
        if torch.is_tensor(mean) and torch.is_tensor(std):
            return mean, std
    return None, None


def tta(learn, dl=None, n: int = 4, beta: float | None = 0.25, aug: AugConfig | BatchAugment | None = None,
        seed: int = 0, kind: str | None = None):
    """``Learner.tta``: predictions and targets over ``dl`` (the validation set by default), as
    ``get_preds`` gives them but the task's activated predictions, TTA'd: each batch is unnormalised
    to [0, 1], augmented ``n`` times (every image its own draws, from a generator seeded with
    ``seed``), renormalised and predicted; the passes' mean is mixed with the plain batch's
    predictions by ``beta`` (see :func:`mix`). ``kind``: ``labels`` or ``points`` (mapped back to
    the original image before averaging); by default the augmentation's own.

    Returns ``(preds (N, c), targets (N, ...))`` on the CPU, or ``((aug_mean, plain), targets)``
    with ``beta=None``. The model's weights and train/eval mode, and the training augmentation's
    generator, are as they were."""
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise ConfigError(f"n must be a positive number of augmented passes, got {n!r}: e.g. n=4")
    if beta is not None and not 0 <= beta <= 1:
        raise ConfigError(f"beta must lie in [0, 1] (the plain pass's weight) or be None, got {beta}: e.g. beta=0.25")
    dl = learn.data.valid if dl is None else dl
    check_learner_task(learn)
    aug = learner_augment(learn, aug, seed, kind)
    kind = check_kind(kind or aug.kind)
    activate = learner_activation(learn)
    mean, std = loader_stats(dl, learn)
    gen = torch.Generator().manual_seed(seed)
    model, was_training = learn.model, learn.model.training

    def predict(xb: torch.Tensor) -> torch.Tensor:  # a normalised batch -> activated (B, ...) on the CPU
        return activate(model(xb).float()).cpu()

    def forward(x: torch.Tensor) -> torch.Tensor:  # [0, 1] -> renormalised -> predicted
        return predict((x - mean) / std if mean is not None else x)

    plains, passes, targets = [], [], []
    model.eval()
    try:
        with torch.no_grad(), learn._autocast():
            for xb, yb in dl:
                if not (torch.is_tensor(xb) and xb.ndim == 4 and xb.is_floating_point()):
                    raise ConfigError("test-time augmentation transforms image batches (B, C, H, W), but this "
                                      f"loader gives {type(xb).__name__} {tuple(getattr(xb, 'shape', ()))}: "
                                      "use get_preds for text and tables")
                x = xb.float() * std + mean if mean is not None else xb.float()  # (B, C, H, W) in [0, 1]
                # The plain pass is get_preds' own (resized only when presizing).
                plains.append(forward(aug.plain(x)[0]) if aug.resizes(x) else predict(xb))
                # Each batch's passes together: a shuffling loader still pairs predictions and targets.
                params = [draw_params(aug.cfg, len(x), gen) for _ in range(n)]
                passes.append(augmented_preds(forward, x, aug, params, kind))
                targets.append(yb.cpu())
    finally:
        model.train(was_training)
    aug_mean = torch.cat(passes, dim=1).mean(0)  # (N, ...)
    return mix(aug_mean, torch.cat(plains), beta), torch.cat(targets)


# ------------------------------------------------------------------------------- a run


def check_tta(run: RunConfig, task: Task | None = None) -> None:
    """``trainer.tta`` needs a task that supports ``tta`` (one whose predictions for an image can
    be averaged over augmented copies of it: labels, values or points) and an active augmentation
    (the one TTA draws from). ``task``: the run's (``task.name``) by default. Called before
    training."""
    if not run.trainer.tta:
        return
    task = task if task is not None else get_task(run.task.name)
    if not task.can("tta"):
        raise ConfigError(f"trainer.tta=true averages one prediction per augmented image, which task={task.name} does "
                          f"not support (data={run.data.name} gives {type(run.data).kind}): use trainer.tta=false "
                          f"(it works with task= one of {supporting('tta')})")
    if not run.aug.active:
        raise ConfigError(f"trainer.tta=true draws from the run's augmentation but aug={run.aug.name} changes "
                          "nothing: train with e.g. aug=no_flip (or aug=fastai), or use trainer.tta=false")


def score(metrics: dict, preds: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Each metric over the whole set, a ``BatchMetric`` fed it as one batch (as the Recorder feeds
    batches)."""
    out = {}
    for name, metric in metrics.items():
        if isinstance(metric, BatchMetric):
            metric.reset()
            metric.accumulate(preds, targets)
            out[name] = float(metric.value())
        else:
            out[name] = float(metric(preds, targets))
    return out


def tta_metrics(learn, run: RunConfig) -> dict:
    """The task's validation metrics with TTA (``trainer.tta_n`` passes mixed by ``trainer.tta_beta``,
    drawn from the run's seed) and, under ``"plain"``, without: metrics.json's ``"tta"``."""
    n, beta = run.trainer.tta_n, run.trainer.tta_beta
    has_cb = any(isinstance(cb, Augment) for cb in learn.cbs)
    aug = None if has_cb else augment_callback(run).augment
    (aug_mean, plain), targets = tta(learn, n=n, beta=None, aug=aug, seed=run.seed)
    return {"n": n, "beta": beta, "seed": run.seed, **score(learn.metrics, mix(aug_mean, plain, beta), targets),
            "plain": score(learn.metrics, plain, targets)}
