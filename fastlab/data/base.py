"""What every task's data object provides, whatever it holds (images, masks, tokens, tables)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch


class Bunch(Protocol):
    """The contract between a task's data and the Learner, ``fastlab.train`` and ``model.pt``.

    ``train`` and ``valid`` yield ``(x, y)`` batches on ``device`` (``x`` may be a tuple of
    tensors, e.g. a table's categorical and continuous columns); ``train`` reshuffles each epoch
    from a generator seeded with the training seed. ``c`` is the number of model outputs
    (classes, targets or vocabulary size) and ``classes`` their names (``None`` for regression).
    ``train_items`` and ``valid_items`` name what is in each split. ``meta()`` is what
    ``model.pt`` records about the data so that the model can be rebuilt and its outputs read.
    """

    train: Iterable
    valid: Iterable
    device: torch.device
    c: int
    classes: list[str] | None
    train_items: list[str]
    valid_items: list[str]

    def to(self, device: torch.device | str) -> Bunch: ...

    def meta(self) -> dict[str, Any]: ...
