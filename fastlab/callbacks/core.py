"""The closed list of training events, the Callback base, and control flow by exception."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastlab.learner import Learner

# The loop fires exactly these, in this order within each scope (see Learner).
EVENTS = (
    "before_fit", "before_epoch", "before_train", "before_batch", "after_pred", "after_loss",
    "before_backward", "before_step", "after_step", "after_batch", "after_train",
    "before_validate", "after_validate", "after_epoch", "after_fit",
)


class CancelFitException(Exception):
    """Raise in a callback to end training (after_fit still runs)."""


class CancelEpochException(Exception):
    """Skip the rest of this epoch (after_epoch still runs)."""


class CancelTrainException(Exception):
    """Skip the rest of this epoch's training phase."""


class CancelValidException(Exception):
    """Skip this epoch's validation."""


class CancelBatchException(Exception):
    """Skip the rest of this batch (after_batch still runs)."""


class CancelBackwardException(Exception):
    """Skip the backward pass of this batch."""


class CancelStepException(Exception):
    """Skip the optimiser step of this batch."""


class Callback:
    """Override any method named in ``EVENTS``. ``order`` sorts callbacks (lower runs first).

    A callback reads and writes the learner's state through ``self.learn`` explicitly: there is no
    attribute delegation, so what a callback touches is visible where it touches it.
    """

    order: int = 0
    learn: Learner

    @property
    def name(self) -> str:
        return type(self).__name__
