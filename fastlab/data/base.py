"""What the Learner needs from its data, and what every task's data object provides on top.

Two protocols, structural (nothing needs to inherit from them):

- ``LearnerData``: exactly what ``fastlab.learner.Learner``, its callbacks and ``lr_find`` read
  from ``learn.data``. Any object with these attributes trains.
- ``Bunch``: ``LearnerData`` plus what ``fastlab.run.train`` and ``model.pt`` need (outputs, class
  names, items, ``to``, ``meta``). Every built-in bunch (``DataBunch``, ``LoaderBunch``,
  ``MaskBunch``, ``TextBunch``, ``TableBunch``) is one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch


class Loader(Protocol):
    """One split's batches, as the Learner iterates them.

    ``iter(loader)`` yields ``(x, y)`` pairs already on the data's ``device``: ``x`` is what the
    model takes (a tensor such as images ``(B, C, H, W)``, or a tuple of tensors, e.g. a table's
    categorical and continuous columns) and ``y`` what the loss takes with the predictions.
    ``len(loader)`` is the number of batches per pass (the one-cycle schedule and the progress bar
    count steps with it).

    Optional, read with ``getattr`` when present:

    - ``generator`` (``torch.Generator``): the training loader's shuffling generator.
      ``Checkpointer`` saves its state so a resumed run redraws the same order, and ``lr_find``
      restores it so the finder leaves the run's order unchanged. Without it, shuffling is
      assumed to draw from torch's global generator, which both save and restore too.
    - ``channels_last`` (bool): set by ``fastlab.run.prepare.accelerate`` on the GPU path; a loader
      that has it hands out batches in NHWC memory order.
    """

    def __iter__(self) -> Iterator[tuple[Any, Any]]: ...

    def __len__(self) -> int: ...


class LearnerData(Protocol):
    """What ``Learner`` relies on: ``train`` (reshuffled each pass, or not: the loader decides)
    and ``valid`` loaders, and the ``device`` their batches are on (the model is moved there).

    ``Learner.predict`` alone needs more, and only for images: ``classes`` (``None`` for
    regression), ``c``, ``n_channels``, ``size`` and the normalisation ``mean`` and ``std`` of
    uint8 images scaled to [0, 1], as a ``DataBunch`` of uint8 images has them.
    """

    train: Loader
    valid: Loader
    device: torch.device


class Bunch(LearnerData, Protocol):
    """The contract between a task's data and ``fastlab.run.train`` and ``model.pt``.

    ``train`` reshuffles each epoch from a generator seeded with the training seed. ``c`` is the
    number of model outputs (classes, targets or vocabulary size) and ``classes`` their names
    (``None`` for regression). ``train_items`` and ``valid_items`` name what is in each split.
    ``to(device)`` moves the batches there and returns the bunch. ``meta()`` is what ``model.pt``
    records about the data so that the model can be rebuilt and its outputs read.
    """

    c: int
    classes: list[str] | None
    train_items: Sequence[str]
    valid_items: Sequence[str]

    def to(self, device: torch.device | str) -> Bunch: ...

    def meta(self) -> dict[str, Any]: ...


# A validation batch holds at least this many input numbers (1 MiB of float32). No gradients or
# activations are kept for a backward pass, so small items validate in a few big batches: a
# study's 846 digits at 16 px took 86 ms in batches of 16 and 26 ms in one (1 thread).
VALID_BATCH_NUMBERS = 2**18


def valid_batch_size(bs: int, item_numel: int | None, n_valid: int, valid_bs: int | None = None) -> int:
    """The validation loader's batch size: ``valid_bs`` when given (``data.valid_bs``); else twice
    the training batch (fastai's) or, for small items (``item_numel`` numbers each; None for
    items of varying size, such as texts), as many as make ``VALID_BATCH_NUMBERS``, at most the
    whole validation set (``n_valid`` items). Validation metrics do not depend on it."""
    if valid_bs is not None:
        return valid_bs
    size = 2 * bs
    if item_numel:
        size = max(size, min(n_valid, VALID_BATCH_NUMBERS // item_numel))
    return max(1, size)
