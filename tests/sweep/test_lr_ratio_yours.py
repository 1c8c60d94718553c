"""``+study=lr_ratio_yours``: the 2.6 study on the user's own image folder, its head rate's range
centred on the LR finder's pick (``hydra.sweeper.lr_find``), a time estimate before the first
trial, a budget, a resume that keeps the range, and fastlab-meta's report on it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fastlab.cli.meta import main as meta_main
from fastlab.run.find import run_lr_find
from fastlab.sweep.errors import SweepError
from fastlab.sweep.lr_range import LRRange, estimate_line, find_range, resolve, within_budget
from fastlab.sweep.settings import SweepSettings
from fastlab.sweep.space import parse_space
from fastlab.sweep.store import TrialStore, read_sweep
from tests.conftest import compose_cfg, one_thread

TRAIN = Path(sys.executable).with_name("fastlab-train")
# The user's model and data: a generated image folder (digits 0-2) and a tiny CNN; one epoch a
# trial, so a trial takes well under a second.
YOURS = ["data=folder", "data.size=16", "arch=cnn", "arch.channels=[8,16]", "arch.head_hidden=16",
         "schedule.epochs=1", "trainer.threads=1"]
ESTIMATE = re.compile(r"study: about .+? for (\d+) trials on 1 worker \(an estimate: a trial ~.+?, "
                      r"from the LR finder's (\d+) steps on this model\)")


def study(tmp_path: Path, images: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(TRAIN), "-m", "+study=lr_ratio_yours", f"data.path={images}", *YOURS,
           f"hydra.sweep.dir={tmp_path / 'sweep'}", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_the_study_centres_the_head_rate_on_the_lr_finders_pick_and_resumes_without_it(
        tmp_path: Path, image_dirs, monkeypatch) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = study(tmp_path, image_dirs["imagenet"], "hydra.sweeper.n_trials=6")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert out.count("LR finder: on the sweep's config") == 1
    estimate = ESTIMATE.search(out)
    assert estimate is not None and estimate.group(1) == "6", out
    assert out.index("study: about") < out.index("launching trial 0"), "the estimate comes before the trials"

    record = read_sweep(sweep_dir / "trials.db")
    found = LRRange.from_json(record.state["lr_find"])
    assert found.param == "schedule.lr_max" and found.decades == 1 and int(estimate.group(2)) == found.steps
    assert found.low == pytest.approx(found.pick / 10, rel=5e-3) and found.high == pytest.approx(found.pick * 10, rel=5e-3)
    assert found.trial_s > 0 and found.unfrozen_step_s > 0
    # the finder's curve, as fastlab-lr-find writes it, with the pick it returns
    curve = json.loads((sweep_dir / "lr_find" / "lr_find.json").read_text())
    assert curve["suggestions"]["valley"] == found.pick
    assert (sweep_dir / "lr_find" / "plots" / "lr_find.png").stat().st_size > 0
    # fastlab-lr-find's own run on the sweep's config picks the same rate
    monkeypatch.chdir(tmp_path)  # its data cache goes under the test's dir
    with one_thread():
        again = run_lr_find(OmegaConf.create(record.config), tmp_path / "lr_find_again")
    assert again.suggestions["valley"] == found.pick
    # every trial swept the head rate inside the range, on the log scale fastlab-meta reads
    assert [t.status for t in record.trials] == ["completed"] * 6
    rates = [t.params["schedule.lr_max"] for t in record.trials]
    assert all(found.low <= r <= found.high for r in rates), rates
    assert {"name": "schedule.lr_max", "form": f"tag(log, interval({found.low}, {found.high}))"} in record.space["dims"]
    assert {t.params["schedule.freeze_epochs"] for t in record.trials} <= {0, 1, 2}

    # a resume with more trials keeps the recorded range and runs no finder
    stamp = (sweep_dir / "lr_find" / "lr_find.json").stat().st_mtime_ns
    proc = study(tmp_path, image_dirs["imagenet"], "hydra.sweeper.n_trials=8")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "LR finder: on the sweep's config" not in out and "LR finder: the range recorded in" in out
    assert ESTIMATE.search(out).group(1) == "2", "the estimate counts the trials left"
    assert (sweep_dir / "lr_find" / "lr_find.json").stat().st_mtime_ns == stamp
    record = read_sweep(sweep_dir / "trials.db")
    assert LRRange.from_json(record.state["lr_find"]) == found
    assert [t.status for t in record.trials] == ["completed"] * 8
    assert all(found.low <= t.params["schedule.lr_max"] <= found.high for t in record.trials)

    # another range for the same sweep is refused before any finder runs
    settings = SweepSettings(lr_find={"param": "schedule.lr_max", "decades": 2}, direction="maximize").validate()
    with TrialStore(sweep_dir / "trials.db") as store, pytest.raises(SweepError, match="1 decade"):
        resolve(settings, parse_space({"schedule.lr_ratio": "tag(log, interval(1.0, 10.0))"}, []), store,
                record.config, sweep_dir, workers=1)

    # the 2.6 study's report, as on lr_ratio's sweep
    with pytest.raises(SystemExit) as e:
        meta_main([str(sweep_dir), "--reference", "2.6", "--n-boot", "4", "--trees", "30", "--quiet"])
    assert e.value.code == 0
    summary = json.loads((sweep_dir / "meta" / "summary.json").read_text())
    assert summary["recommendation"]["param"] == "schedule.lr_ratio" and summary["n_trials"] == 8
    assert summary["features"]["schedule.lr_max"]["scale"] == "log10"  # the recorded range's log scale
    assert "schedule.lr_max" in summary["importance"]
    assert (sweep_dir / "meta" / "report.md").exists()


def test_a_bad_budget_is_one_line_and_nothing_runs(tmp_path: Path, image_dirs) -> None:
    proc = study(tmp_path, image_dirs["imagenet"], "hydra.sweeper.budget_minutes=-5")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "hydra.sweeper.budget_minutes=-5 must be a positive number" in lines[0], proc.stderr
    assert not (tmp_path / "sweep" / "trials.db").exists() and not (tmp_path / "sweep" / "lr_find").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"budget_minutes": "soon", "lr_find": {"param": "schedule.lr_max"}}, "budget_minutes='soon' must be"),
        ({"budget_minutes": 0, "lr_find": {"param": "schedule.lr_max"}}, "budget_minutes=0 must be"),
        ({"budget_minutes": 30}, "budget_minutes needs hydra.sweeper.lr_find"),
        ({"lr_find": "schedule.lr_max"}, "lr_find='schedule.lr_max' is not a mapping"),
        ({"lr_find": {"param": "schedule.lr_max", "decade": 1}}, r"unknown key\(s\) \['decade'\]"),
        ({"lr_find": {"param": "schedule.lr_max", "decades": 0}}, "decades=0 must be a number in"),
        ({"lr_find": {"decades": 1}}, "lr_find.param=None is not a config key"),
    ],
)
def test_bad_lr_find_and_budget_settings_are_one_line(settings: dict, message: str) -> None:
    with pytest.raises(SweepError, match=message) as e:
        SweepSettings(**settings).validate()
    assert "\n" not in str(e.value)


def _found(trial_s: float) -> LRRange:
    return LRRange(param="schedule.lr_max", decades=1.0, pick=1e-2, low=1e-3, high=1e-1, steps=100, setup_s=1.0,
                   frozen_step_s=0.1, unfrozen_step_s=0.2, trial_s=trial_s, config="x")


def test_the_budget_caps_the_trials_to_what_the_estimate_fits() -> None:
    settings = SweepSettings(lr_find={"param": "schedule.lr_max"}, budget_minutes=10).validate()
    # 600 s at 50 s a trial: 12 rounds of 2 workers
    assert within_budget(_found(50.0), settings, 96, workers=2) == 24
    assert within_budget(_found(1.0), settings, 96, workers=2) == 96  # all fit: n_trials stays
    assert within_budget(_found(50.0), SweepSettings(lr_find={"param": "schedule.lr_max"}), 96, 2) == 96
    with pytest.raises(SweepError, match="fits no trial: one takes about 17 min"):
        within_budget(_found(1000.0), settings, 96, workers=2)
    assert estimate_line(_found(50.0), 24, 2).startswith("study: about 10 min for 24 trials on 2 workers (an estimate")


def test_the_lr_find_param_cannot_be_swept_or_set_twice(tmp_path: Path) -> None:
    from fastlab.sweep.driver import run_sweep

    settings = SweepSettings(lr_find={"param": "schedule.lr_max"}, direction="maximize")
    for overrides in (["schedule.lr_max=0.01"], ["schedule.lr_max=tag(log, interval(1e-4, 1e-1))"]):
        with pytest.raises(SweepError, match="schedule.lr_max is swept by hydra.sweeper.lr_find"):
            run_sweep(settings, parse_space({}, overrides), tmp_path / "sweep", launch=lambda o, i: [])
    assert not (tmp_path / "sweep").exists()


def test_a_config_the_finder_cannot_run_is_one_line(tmp_path: Path) -> None:
    cfg = compose_cfg("data=folder", f"data.path={tmp_path / 'missing'}")
    with pytest.raises(SweepError, match="the LR finder cannot run on the sweep's config") as e:
        find_range(OmegaConf.to_yaml(cfg), "schedule.lr_max", 1.0, tmp_path / "lr_find", parse_space({}, []), 1)
    assert "\n" not in str(e.value) and not (tmp_path / "lr_find").exists()
