"""schedule=course, the course's two-finder fine-tune: on a pretrained body (transfer_digits) it
runs both finders, records both picks and trains at lowest = second pick / 10 and head = first
pick / 5; the second finder leaves weights and random state as it found them; a run stopped in
either stage resumes to the same weights, history and picks, running only the finder it had not
run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException

from fastlab.config import to_run_config
from fastlab.errors import ConfigError
from fastlab.lr_find import LRFindResult, rise
from fastlab.rng import random_states
from fastlab.run.course import course_rates, decide
from fastlab.run.prepare import prepare
from fastlab.run.train import train
from fastlab.schedules import CourseSchedule, plan_stages
from tests.conftest import compose_cfg
from tests.run.test_resume import Stop, processes, resume, same_run
from tests.test_cli import run_cli

TINY = ["data.size=16", "arch.channels=[16,32]", "arch.head_hidden=32", "trainer.progress=none"]
# +experiment=transfer_digits without its schedule: it sets schedule.lr_max for fine_tune, a key
# schedule=course does not have (the course's rates are lr_frozen, lr_low and lr_high)
TRANSFER_DIGITS = ["data=digits", "arch=cnn", "data.classes=[5,6,7,8,9]", "data.train_per_class=10", "data.bs=16",
                   "arch.pretrained=glyphs"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """A glyphs body pretrained once (the transfer_digits experiment's arch.pretrained)."""
    root = tmp_path_factory.mktemp("zoo")
    metrics = train(compose_cfg("+experiment=pretrain_glyphs", *TINY, "trainer.plots=false", "data.n_classes=20",
                                "data.per_class=30", "schedule.epochs=3", f"paths.models={root}", small=False),
                    run_dir=root / "pretrain_run")
    assert metrics["status"] == "completed"
    return root


def course_cfg(zoo: Path, *extra: str):
    return compose_cfg(*TRANSFER_DIGITS, "schedule=course", *TINY, "schedule.epochs=2",
                       "schedule.freeze_epochs=1", f"paths.models={zoo}", *extra, small=False)


def test_course_on_transfer_digits_runs_both_finders_and_trains_at_their_picks(zoo: Path, tmp_path: Path) -> None:
    m = train(course_cfg(zoo), tmp_path)
    assert m["status"] == "completed" and m["pretrained"]["loaded"] > 0
    (c,) = m["course"]
    first = m["lr_find"]["steep"]  # the course trains the frozen head where the loss falls fastest
    assert c["frozen_pick"] == pytest.approx(first)
    frozen, unfrozen = m["stages"]
    assert frozen["frozen"] == m["layer_groups"] - 1 and frozen["lrs"][-1] == pytest.approx(first)
    # lowest group = second pick / 10, head = first pick / 5, geometric in between
    lrs = unfrozen["lrs"]
    assert unfrozen["frozen"] == 0 and lrs == m["group_lrs"] == c["lrs"]
    assert lrs[0] == pytest.approx(c["unfrozen_pick"] / 10) and lrs[-1] == pytest.approx(first / 5)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert all(r == pytest.approx(ratios[0]) for r in ratios)
    # the second pick is where the unfrozen curve is lowest, read off its own curve
    state = m["course"][0]
    assert state["unfrozen_pick"] > 0
    for name in ("lr_find_frozen.png", "lr_find_unfrozen.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 0
    assert not (tmp_path / "plots" / "lr_find.png").exists()


def test_course_rates_arithmetic() -> None:
    assert course_rates(1e-4, 1e-2, 3) == pytest.approx([1e-4, 1e-3, 1e-2])
    assert course_rates(2e-4, 2e-4, 2) == pytest.approx([2e-4, 2e-4])
    stages = plan_stages("course", 3, [1.0, 1.0, 0.05], 2)
    assert [(s.epochs, s.frozen, s.pending) for s in stages] == [(2, 2, False), (3, 0, True)]
    assert stages[0].lrs == pytest.approx((0.005, 0.005, 0.05)) and stages[1].lrs == ()


def test_a_model_of_one_layer_group_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="schedule=course trains a frozen body") as e:
        plan_stages("course", 3, [1e-3], 1)
    assert "\n" not in str(e.value)


def test_rise_is_the_lowest_point_of_the_trimmed_curve() -> None:
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    losses = [2.0 - i / 100 if i < 70 else 1.3 + (i - 70) ** 2 / 50 for i in range(100)]
    assert rise(lrs, losses, 100) == lrs[70]  # 1.3, after 1.31 and before 1.32


def test_the_second_finder_leaves_weights_and_random_state_as_it_found_them(zoo: Path) -> None:
    prep = prepare(to_run_config(course_cfg(zoo)))
    learn, s = prep.learn, prep.run.schedule
    learn.fit_one_cycle(1, 1e-3)
    stages = plan_stages("course", s.epochs, [1.0] * len(learn.layer_groups), s.freeze_epochs)
    weights = {k: v.clone() for k, v in learn.model.state_dict().items()}
    states = random_states(learn.data.train.generator)
    stage, record = decide(learn, s, stages[1], 2e-3)
    assert all(torch.equal(weights[k], v) for k, v in learn.model.state_dict().items())
    after = random_states(learn.data.train.generator)
    assert torch.equal(after["torch"], states["torch"]) and torch.equal(after["loader"], states["loader"])
    assert after["numpy"]["pos"] == states["numpy"]["pos"] and after["python"] == states["python"]
    curve = LRFindResult(**record["lr_find"])
    assert record["unfrozen_pick"] == rise(curve.lrs, curve.losses, 100)
    assert stage.lrs[0] == pytest.approx(record["unfrozen_pick"] / 10) and stage.lrs[-1] == pytest.approx(2e-3 / 5)
    assert not stage.pending


def test_numbers_fix_either_end_without_a_second_finder(zoo: Path, tmp_path: Path) -> None:
    m = train(course_cfg(zoo, "schedule.lr_frozen=4e-3", "schedule.lr_low=1e-5", "schedule.lr_high=frozen/2",
                         "trainer.plots=false"), tmp_path)
    assert "lr_find" not in m
    (c,) = m["course"]
    assert c["unfrozen_pick"] is None and c["lrs"][0] == pytest.approx(1e-5) and c["lrs"][-1] == pytest.approx(2e-3)


RESUMED = ["trainer.plots=false", "trainer.checkpoint_every_n_steps=2", "aug=no_flip"]


@pytest.fixture(scope="module")
def unbroken(zoo: Path, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("unbroken")
    train(course_cfg(zoo, *RESUMED), run_dir)
    return run_dir


# 3 batches an epoch; the unfrozen stage's batch 1 (4) saves nothing, so last.pt is the frozen
# stage's end and the resumed run decides the pending stage itself; batch 5 of it (8) resumes
# inside the decided stage.
@pytest.mark.parametrize("stop_at,where", [(4, {"stage": 1, "epoch": 0, "batch": 0}),
                                           (8, {"stage": 1, "epoch": 1, "batch": 1})])
def test_a_stopped_course_run_resumes_to_the_same_weights_history_and_picks(zoo: Path, unbroken: Path, tmp_path: Path,
                                                                            stop_at: int, where: dict) -> None:
    stopped = tmp_path / "stopped"
    with pytest.raises(SystemExit):
        train(course_cfg(zoo, *RESUMED), stopped, cbs=[Stop(stop_at)])
    saved = torch.load(stopped / "last.pt", weights_only=True)
    assert {k: saved["position"][k] for k in where} == where
    assert bool(saved["decided"]) == (stop_at == 8)  # the decision is kept once made
    resume(stopped, f"trainer.resume={stopped}", into=tmp_path / "elsewhere")
    same_run(unbroken, stopped)
    # both finders ran before batch 8's checkpoint; before batch 4's only the first, so the
    # resumed process runs the second (never run) and not the first
    assert [p["lr_find"] for p in processes(stopped)] == ([2, 0] if stop_at == 8 else [1, 1])
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (unbroken, stopped))
    assert a["lr_find"] == b["lr_find"] and a["course"] == b["course"] and a["stages"] == b["stages"]


@pytest.mark.parametrize("override,key", [
    ("schedule.lr_high=half", "schedule.lr_high"),
    ("schedule.lr_high=frozen/0", "schedule.lr_high"),
    ("schedule.lr_low=-1", "schedule.lr_low"),
    ("schedule.lr_frozen=valley", "schedule.lr_frozen"),
    ("schedule.freeze_epochs=0", "schedule.freeze_epochs"),
])
def test_bad_course_settings_are_one_line(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        to_run_config(compose_cfg("schedule=course", override, small=False))
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------- the course's own keys


def test_the_cli_refuses_a_key_course_does_not_use(tmp_path: Path) -> None:
    out = run_cli(["schedule=course", "schedule.lr_max=1e-3"], cwd=tmp_path, module=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr  # Hydra's error exit, before any run
    lines = out.stderr.strip().splitlines()
    assert lines[0] == "Could not override 'schedule.lr_max'."
    assert "Key 'lr_max' not in 'CourseSchedule'" in lines
    assert not (tmp_path / "outputs").exists()


def test_course_has_only_the_keys_it_uses() -> None:
    keys = {f.name for f in dataclasses.fields(CourseSchedule)}
    assert {"lr_frozen", "lr_low", "lr_high", "epochs", "freeze_epochs", "sizes"} <= keys
    assert not keys & {"lr_max", "lr_ratio"}
    with pytest.raises(ConfigCompositionException, match="lr_ratio"):
        compose_cfg("schedule=course", "schedule.lr_ratio=2.6", small=False)
    s = to_run_config(compose_cfg("schedule=course", "schedule.lr_frozen=4e-3", small=False)).schedule
    # what the planner and the Learner read of any schedule: the head rate, and no ratio
    assert isinstance(s, CourseSchedule) and s.head_lr == 4e-3 and s.lr_ratio == 1


def test_a_course_config_saved_with_the_common_rate_keys_reads_back() -> None:
    composed = to_run_config(compose_cfg("schedule=course", small=False))
    saved = composed.to_dict()
    assert "lr_max" not in saved["schedule"]
    saved["schedule"] |= {"lr_max": 3e-3, "lr_ratio": 1.0}  # a course run saved when it had them
    assert to_run_config(saved).schedule == composed.schedule
