"""Augment: fast.ai's batch augmentation of each training batch, as a callback.

The loaders hand out normalised float batches, always (validation, prediction and the LR finder,
which runs without the run's callbacks, must see normalised images). So this callback undoes the
normalisation of a training batch (``x * std + mean``: the images in [0, 1] again, up to float
rounding), augments it with :class:`fastlab.data.augment.BatchAugment` and normalises it again.
That costs two elementwise passes, little beside the resampling, and leaves every loader as it was.
"""

from __future__ import annotations

import torch

from fastlab.callbacks.core import Callback
from fastlab.config import AugConfig
from fastlab.data.augment import LABELS, MASKS, BatchAugment
from fastlab.errors import ConfigError
from fastlab.tasks import Task, get_task, supporting

# The augmentation generator's seed is the run's seed moved off the loader's (which shuffles with
# the run's seed itself), so the two streams are not the same numbers.
SEED_OFFSET = 0x5EED_A06


class Augment(Callback):
    """Augments ``learn.xb`` (images ``(B, C, H, W)``) and ``learn.yb`` of every training batch
    before anything else sees them; ``kind`` is what the targets are (``labels``, ``points`` or
    ``masks``, see ``BatchAugment``). Its generator's state is saved in ``last.pt`` (the
    Checkpointer saves every callback's ``state_dict``), so a resumed run draws what the unbroken
    run would have drawn."""

    # First in before_batch: mixing callbacks (mixup) and the rest must see augmented images.
    order = -10
    # The LR finder keeps it: presized batches must still come out at data.size. In the finder
    # it only resizes (``plain``), so the finder sees unaugmented batches and draws nothing.
    keep_in_lr_find = True

    def __init__(self, cfg: AugConfig, seed: int, kind: str = LABELS, void: int = 255, size: int | None = None):
        self.augment = BatchAugment(cfg, seed + SEED_OFFSET, kind, void, size)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        loader = self.learn.data.train  # (1, C, 1, 1) each, or None when the loader does not normalise
        mean, std = getattr(loader, "mean", None), getattr(loader, "std", None)
        if mean is None or std is None:
            return None, None
        return mean.to(like.device), std.to(like.device)

    def before_batch(self) -> None:
        learn = self.learn
        if not learn.training:
            return
        xb = learn.xb  # (B, C, H, W) float, normalised
        channels_last = xb.ndim == 4 and xb.is_contiguous(memory_format=torch.channels_last) and not xb.is_contiguous()
        mean, std = self._stats(xb)
        # [0, 1] again, in a new tensor (the loader's batch is left as it is)
        x = torch.addcmul(mean, xb.float(), std) if mean is not None else xb.float().clone()
        x, learn.yb = self.augment.plain(x, learn.yb) if learn.lr_finding else self.augment(x, learn.yb)
        if mean is not None:
            x = x.sub_(mean).div_(std)  # x is this callback's own tensor: normalised in place
        learn.xb = x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def state_dict(self) -> dict:
        return self.augment.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.augment.load_state_dict(state)


def augment_callback(run, rank: int = 0, task: Task | None = None) -> Augment:
    """The run's ``Augment``: ``run.aug`` (active: the task must support ``augment``), or only
    presizing's resize (the task must support ``presize``); a task that cannot is refused with one
    line. What moves with the images is the task's ``targets_moved`` of the run's data. ``task``:
    the run's (``task.name``) by default. Each data-parallel rank draws from its own stream
    (``rank`` moves the seed), as its shard holds other images."""
    task = task if task is not None else get_task(run.task.name)
    if run.aug.active and not task.can("augment"):
        raise ConfigError(f"aug={run.aug.name} transforms images but data={run.data.name} gives "
                          f"{type(run.data).kind}, which task={task.name} does not augment: use aug=none "
                          f"(aug works with task= one of {supporting('augment')})")
    if not run.aug.active and run.data.presize is not None and not task.can("presize"):
        raise ConfigError(f"data.presize resizes images in the batch, but task={task.name} does not presize its "
                          f"data: set data.presize=null (it works with task= one of {supporting('presize')})")
    # Presized training images come out at data.size (progressive resizing moves it per stage).
    size = run.data.size if run.data.presize is not None else None
    kind = task.targets_moved(run.data)
    if kind == MASKS:
        from fastlab.data.masks.bunch import IGNORE  # pixels outside the image are void

        return Augment(run.aug, run.seed + rank, kind, IGNORE, size)
    return Augment(run.aug, run.seed + rank, kind, size=size)
