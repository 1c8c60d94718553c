"""The pruning callback (``fastlab.callbacks.prune.Prune``) with a fake trial link: what it
reports, when it stops, what ``metrics.json`` says of a pruned trial, and how a trial of a
pruned sweep validates (``fastlab.run.trial``). The real sweep end to end, with the trial
store, is ``tests/sweep/test_prune.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from fastlab.callbacks.prune import Prune
from fastlab.cli.hydra_app import run_context
from fastlab.config import config_dir, to_run_config
from fastlab.context import RunContext, Trial
from fastlab.errors import ConfigError
from fastlab.run.train import train
from fastlab.run.trial import trial_profile
from fastlab.sweep.settings import SweepSettings
from tests.conftest import SMALL, compose_cfg, one_thread
from tests.learner.test_learner import make_learner

LR = 0.003  # SGD on the synthetic regression: valid_loss falls every epoch (tests/callbacks/test_user_callbacks.py)


class FakeLink:
    """``fastlab.sweep.link.TrialLink`` without a store: trial ``number`` of a sweep whose other
    trials reported ``others`` ({number: {epoch: value}}) and have all finished."""

    def __init__(self, settings: SweepSettings, others: dict[int, dict[int, float]], number: int = 9):
        self.settings, self.number, self.others = settings, number, others
        self.reports: dict[int, float] = {}
        self.history_reads = 0

    def report(self, epoch: int, value: float) -> None:
        self.reports[epoch] = value

    def history(self) -> dict[int, dict[int, float]]:
        self.history_reads += 1
        return {**self.others, self.number: dict(self.reports)}

    def finished_count(self) -> int:
        return len(self.others)


def settings(pruner: str, direction: str = "maximize", **kw) -> SweepSettings:
    return SweepSettings(pruner=pruner, direction=direction, **kw)


def every_epoch(value: float, n: int = 10) -> dict[int, float]:
    return dict.fromkeys(range(1, n + 1), value)


# --------------------------------------------------------------- on the synthetic regression


def test_asha_prunes_a_worse_trial_at_its_first_rung():
    # valid_loss falls from ~1 but the others reached 0 at every epoch: minimize, rungs 1, 3, 9
    link = FakeLink(settings("asha", "minimize"), {0: every_epoch(0.0), 1: every_epoch(0.0)})
    cb = Prune(link, "valid_loss")
    learn = make_learner(cb)
    learn.fit(6, lr=LR)
    history = learn.recorder.history
    assert len(history) == 1 and learn.stop_requested
    assert cb.pruned_epoch == 1 and cb.pruned_value == history[0]["valid_loss"]
    assert link.reports == {1: history[0]["valid_loss"]}


def test_asha_reads_the_store_only_at_rungs_and_never_prunes_the_last_epoch():
    # min_epochs=3: the one rung is epoch 3, the run's last; worse than the others, yet it completes
    link = FakeLink(settings("asha", "minimize", min_epochs=3), {0: every_epoch(0.0), 1: every_epoch(0.0)})
    cb = Prune(link, "valid_loss")
    learn = make_learner(cb)
    learn.fit(3, lr=LR)
    assert len(learn.recorder.history) == 3 and cb.pruned_epoch is None and not learn.stop_requested
    assert sorted(link.reports) == [1, 2, 3] and link.history_reads == 0


def test_median_waits_for_startup_and_min_epochs():
    # the others' median is 0 from epoch 1; pruning begins at min_epochs=2, with 2 finished of 2
    others = {0: every_epoch(0.0), 1: every_epoch(0.0)}
    cb = Prune(FakeLink(settings("median", "minimize", min_epochs=2, pruner_startup=2), others), "valid_loss")
    learn = make_learner(cb)
    learn.fit(5, lr=LR)
    assert cb.pruned_epoch == 2 and len(learn.recorder.history) == 2

    waiting = Prune(FakeLink(settings("median", "minimize", pruner_startup=3), others), "valid_loss")
    learn = make_learner(waiting)
    learn.fit(3, lr=LR)
    assert waiting.pruned_epoch is None and len(learn.recorder.history) == 3


def test_a_trial_better_than_the_others_runs_every_epoch():
    link = FakeLink(settings("median", "minimize", pruner_startup=0), {0: every_epoch(1e9)})
    cb = Prune(link, "valid_loss")
    learn = make_learner(cb)
    learn.fit(4, lr=LR)
    assert cb.pruned_epoch is None and len(learn.recorder.history) == 4 and sorted(link.reports) == [1, 2, 3, 4]


def test_without_a_link_nothing_is_reported_or_pruned():
    cb = Prune(None, "valid_loss")  # another rank of a data-parallel trial, outside one
    learn = make_learner(cb)
    learn.fit(2, lr=LR)
    assert cb.pruned_epoch is None and len(learn.recorder.history) == 2


# --------------------------------------------------------- a real small run through train()


def trial_context(pruner: str, link=None) -> RunContext:
    """The context of a trial of a sweep with ``pruner`` that reports through ``link``."""
    return RunContext(Trial(0, Path("sweep"), {"pruner": pruner}), link=link)


@pytest.fixture
def pruned_sweep():
    """``train`` as a trial of a pruned sweep with ``link``: the context the edge would build."""

    def use(link: FakeLink) -> tuple[FakeLink, RunContext]:
        return link, trial_context(link.settings.pruner, link)

    return use


def test_a_trial_worse_than_the_others_is_pruned_at_a_rung(tmp_path, pruned_sweep):
    # rungs 1 and 3 of 4 epochs: the others are worse at rung 1 (it goes on), better at rung 3
    others = {n: {1: -1.0, 2: 2.0, 3: 2.0, 4: 2.0} for n in range(3)}
    link, context = pruned_sweep(FakeLink(settings("asha"), others))
    with one_thread():
        metrics = train(compose_cfg("schedule.epochs=4"), run_dir=tmp_path, context=context)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == on_disk["status"] == "pruned"
    assert metrics["epochs"] == 3 and metrics["stopped_early"]
    assert sorted(link.reports) == [1, 2, 3]
    assert on_disk["pruned"] == {"epoch": 3, "value": link.reports[3]}
    assert on_disk["objective"] == on_disk["final"]["accuracy"] == link.reports[3]


def test_a_trial_better_than_the_others_completes(tmp_path, pruned_sweep):
    link, context = pruned_sweep(FakeLink(settings("asha"), {n: every_epoch(-1.0) for n in range(3)}))
    with one_thread():
        metrics = train(compose_cfg("schedule.epochs=4"), run_dir=tmp_path, context=context)
    assert metrics["status"] == "completed" and metrics["epochs"] == 4 and "pruned" not in metrics
    assert sorted(link.reports) == [1, 2, 3, 4] and metrics["objective"] == link.reports[4]


# ------------------------------------------------------------- the trial profile of a pruned sweep


def run_config(*overrides: str):
    return to_run_config(compose_cfg(*overrides))


def test_a_pruned_sweep_validates_every_epoch():
    assert trial_profile(run_config(), trial_context("none")).trainer.validate == "final"
    assert trial_profile(run_config(), trial_context("asha")).trainer.validate == "epoch"
    assert trial_profile(run_config("trainer.validate=epoch"), trial_context("asha")).trainer.validate == "epoch"
    with pytest.raises(ConfigError, match=r"hydra.sweeper.pruner=asha .*trainer.validate=epoch"):
        trial_profile(run_config("trainer.validate=final"), trial_context("asha"))
    # a run alone is no trial: the pruner is not asked
    assert trial_profile(run_config("trainer.validate=final"), RunContext()).trainer.validate == "final"


@pytest.mark.parametrize("mode, pruner, expected", [
    ("MULTIRUN", "median", "median"),
    ("MULTIRUN", "none", "none"),
    ("RUN", "asha", "none"),  # not a multirun: no sweep
])
def test_the_edge_reads_the_pruner_off_hydras_config(mode, pruner, expected):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[*SMALL, "hydra/sweeper=fastlab", f"hydra.sweeper.pruner={pruner}",
                                          f"hydra.mode={mode}"], return_hydra_config=True)
    hydra = HydraConfig.instance()
    try:
        hydra.set_config(cfg)
        # no trial number handed (a job launched by hand): no link, but the trial's pruner
        assert run_context()[0].pruner == expected
    finally:
        hydra.cfg = None
    assert RunContext().pruner == "none"
