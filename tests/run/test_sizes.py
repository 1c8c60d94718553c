"""Progressive resizing (schedule.sizes): the schedule runs once per image side from the same
weights, on data re-made from the same split; history numbers epochs across sides, metrics.json
records them, model.pt the last; a run stopped inside any side resumes to the same result."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from fastlab.callbacks.core import Callback
from fastlab.config import to_run_config
from fastlab.errors import ConfigError
from fastlab.learner import Learner
from fastlab.run.prepare import prepare
from fastlab.run.train import train
from fastlab.schedules import Stage
from tests.conftest import compose_cfg
from tests.run.test_resume import same_run, stopped_then_resumed

SIZES = ["schedule.sizes=[12,16]", "schedule.epochs=2", "trainer.checkpoint_every_n_steps=7"]


class Sides(Callback):
    """Records the side of every training batch and the items of the validation set per epoch."""

    def __init__(self):
        self.sides: list[int] = []
        self.valid_items: list[list[str]] = []

    def before_batch(self):
        if self.learn.training and self.learn.iter == 0:
            self.sides.append(self.learn.xb.shape[-1])

    def before_validate(self):
        self.valid_items.append(list(self.learn.data.valid_items))


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> tuple[Path, Sides]:
    run_dir, sides = tmp_path_factory.mktemp("unbroken"), Sides()
    train(compose_cfg(*SIZES), run_dir, cbs=[sides])
    return run_dir, sides


def test_each_side_trains_the_whole_schedule_from_the_same_weights(unbroken) -> None:
    run_dir, sides = unbroken
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "completed" and m["sizes"] == [12, 16] and m["epochs"] == 4
    assert [s["size"] for s in m["stages"]] == [12, 16] and all(s["epochs"] == 2 for s in m["stages"])
    assert sides.sides == [12, 12, 16, 16]
    assert sides.valid_items[0] == sides.valid_items[-1]  # the same split at every side
    with open(run_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    # the second side starts from the first side's weights, not from scratch
    assert float(rows[2]["valid_loss"]) < float(rows[0]["valid_loss"])
    assert m["final"]["accuracy"] > 0.85
    meta = torch.load(run_dir / "model.pt", weights_only=True)["meta"]
    assert meta["size"] == 16  # predicting resizes a file to the side trained last


@pytest.mark.parametrize("stop_at,where", [
    (30, {"stage": 0, "epoch": 1, "batch": 6}),  # inside the first side (22 batches an epoch)
    (60, {"stage": 1, "epoch": 0, "batch": 14}),  # inside the second
])
def test_a_run_stopped_inside_any_side_resumes_to_the_same_weights(unbroken, tmp_path: Path, stop_at, where) -> None:
    run_dir, position = stopped_then_resumed(tmp_path, stop_at, *SIZES)
    assert {k: position[k] for k in where} == where
    same_run(unbroken[0], run_dir)


def test_sizes_with_presizing_and_augmentation_keep_the_ratio(tmp_path: Path) -> None:
    sides = Sides()
    m = train(compose_cfg("schedule.sizes=[16,24]", "schedule.epochs=1", "data.presize=20", "aug=no_flip"), tmp_path,
              cbs=[sides])
    assert m["status"] == "completed" and sides.sides == [16, 24]


def test_a_pending_stage_without_a_hook_is_refused() -> None:
    learn: Learner = prepare(to_run_config(compose_cfg())).learn
    with pytest.raises(ValueError, match="pending"):
        learn.fit_stages([Stage(1, (), pending=True)])


@pytest.mark.parametrize("overrides,fragment", [
    (["schedule.sizes=[16,0]"], "schedule.sizes must be null or a list of positive image sides"),
    (["schedule.sizes=[]"], "schedule.sizes must be null or a list of positive image sides"),
    (["data=pydocs", "task=text_classify", "arch=awd_lstm", "schedule.sizes=[16,32]"], "schedule.sizes trains at several"),
])
def test_bad_sizes_are_one_line(overrides, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment) as e:
        prepare(to_run_config(compose_cfg(*overrides, small=False)))
    assert "\n" not in str(e.value)
