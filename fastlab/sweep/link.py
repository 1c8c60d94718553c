"""A sweep trial's line back to its study: the objective after each epoch, for pruning.

A job of a fastlab sweep knows its study from its own Hydra config (``hydra.sweeper.storage``,
``hydra.sweep.dir``) and finds its trial by its job dir, which its driver recorded when it claimed
the trial. Nothing is passed through the trial's overrides, so a trial's config (and its
``override_dirname``) is what it would be without pruning.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

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


def trial_link() -> TrialLink | None:
    """The link of this process's trial when it is a job of a fastlab sweep with a pruner, else
    None. The direction is the one the study recorded (the driver resolves it)."""
    from hydra.core.hydra_config import HydraConfig

    from fastlab.run.trial import in_fastlab_sweep

    if not in_fastlab_sweep():
        return None
    hydra = HydraConfig.get()
    if str(hydra.sweeper.get("pruner", "none")) == "none":
        return None
    settings = SweepSettings.from_config(hydra.sweeper)
    sweep_dir = Path(str(hydra.sweep.dir))
    output = Path(str(hydra.runtime.output_dir))
    try:
        job_dir = str(output.resolve().relative_to(sweep_dir.resolve()))
    except ValueError:
        job_dir = str(output)
    with open_store(settings.storage, sweep_dir, settings.study, settings.storage_timeout_s) as store:
        number = store.trial_for_job(job_dir)
        direction = store.get("direction")
    if number is None:  # not claimed through a store (a launcher run by hand): nothing to prune by
        return None
    settings = dataclasses.replace(settings, direction=direction or settings.direction)
    return TrialLink(settings, number, sweep_dir)
