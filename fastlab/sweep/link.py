"""A sweep trial's line back to its study: the objective after each epoch, for pruning.

A job of a fastlab sweep is handed its trial number by its driver (``hydra.sweeper.trial``, a
Hydra override: the trial's own config and its ``override_dirname`` stay what they would be
without pruning) and knows its study from its own Hydra config (``hydra.sweeper.storage``,
``hydra.sweep.dir``). The edge (``fastlab-train``'s ``@hydra.main`` wrapper) reads those into the
run's ``fastlab.context.Trial`` and builds the link with :func:`trial_link`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fastlab.context import Trial
from fastlab.sweep.settings import SweepSettings
from fastlab.sweep.store import open_store


@dataclasses.dataclass
class TrialLink:
    """This trial in its study: ``number``, the sweep's ``settings`` (direction resolved)."""

    settings: SweepSettings
    number: int
    sweep_dir: Path

    def _store(self):
        s = self.settings
        return open_store(s.storage, self.sweep_dir, s.study, s.storage_timeout_s)

    def report(self, epoch: int, value: float) -> None:
        """Record the objective after ``epoch`` (1-based)."""
        with self._store() as store:
            store.report(self.number, epoch, value)

    def history(self) -> dict[int, dict[int, float]]:
        """Every trial's reports, this one's included: number -> {epoch: value}."""
        with self._store() as store:
            return store.reports()

    def finished_count(self) -> int:
        """Trials of the study that are completed or pruned."""
        with self._store() as store:
            return sum(t.status in ("completed", "pruned") for t in store.trials(metrics=False))


def trial_link(trial: Trial) -> TrialLink | None:
    """The link of ``trial`` (a job of a fastlab sweep with a pruner), or None when its driver
    handed it no number (a job launched by hand: nothing to report to). The direction is the one
    the study recorded (the driver resolves it)."""
    if trial.number is None or trial.pruner == "none":
        return None
    settings = SweepSettings.from_config(trial.settings)
    with open_store(settings.storage, trial.sweep_dir, settings.study, settings.storage_timeout_s) as store:
        direction = store.get("direction")
    settings = dataclasses.replace(settings, direction=direction or settings.direction)
    return TrialLink(settings, trial.number, trial.sweep_dir)
