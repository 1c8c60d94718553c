"""ValidateFinal: validation after the run's last epoch only (``trainer.validate=final``)."""

from __future__ import annotations

from fastlab.callbacks.core import Callback, CancelValidException


class ValidateFinal(Callback):
    """Skips the validation pass of every epoch but the run's last, across all stages of
    ``Learner.fit_stages`` (a sweep trial's objective is its final epoch's metric). Training is
    untouched: validation draws no random numbers and changes no weights, so the final metrics
    are those of a run that validates every epoch. The skipped epochs' history rows have no
    validation columns."""

    order = 51  # after the Recorder (50) has reset its sums, so it records nothing for the epoch

    def before_validate(self) -> None:
        learn = self.learn
        total = learn.total_epochs or learn.epoch_offset + learn.n_epoch
        if learn.epoch_offset + learn.epoch < total - 1:
            raise CancelValidException
