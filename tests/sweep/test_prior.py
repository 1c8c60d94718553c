"""``hydra.sweeper.enqueue`` (known configurations first, counted in n_trials, the keys they leave
out drawn by the strategy) and ``hydra.sweeper.warm_start`` (earlier sweeps' trials given to the
forest, neither run nor counted), through the tiny app's real Hydra sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastlab.sweep.errors import SweepError
from fastlab.sweep.prior import enqueued
from fastlab.sweep.space import parse_space
from fastlab.sweep.strategies import random_params
from tests.sweep.test_hydra import job_overrides, killed_mid_sweep, rows, run_app

SPACE = ["x=interval(0,1)", "c=a,b,c", "y=range(1,6)"]
ENQUEUE = "hydra.sweeper.enqueue=[{x:0.3,c:b,y:3},{c:a},{x:0.9}]"


def params(sweep_dir: Path) -> list[dict]:
    return [json.loads(t["params"]) for t in rows(sweep_dir)]


def test_enqueued_configurations_run_first_and_count_in_n_trials(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run_app(sweep_dir, *SPACE, ENQUEUE, "hydra.sweeper.n_trials=5", "hydra.sweeper.seed=7",
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    got = params(sweep_dir)
    assert len(got) == 5 and [t["status"] for t in rows(sweep_dir)] == ["completed"] * 5
    assert got[0] == {"x": 0.3, "c": "b", "y": 3}
    assert got[1]["c"] == "a" and got[2]["x"] == 0.9
    # the keys they leave out, and the trials after them, are the strategy's own points
    space = parse_space(None, SPACE)
    sobol = random_params(space, list(range(5)), seed=7)
    assert {k: got[1][k] for k in ("x", "y")} == {k: sobol[1][k] for k in ("x", "y")}
    assert {k: got[2][k] for k in ("c", "y")} == {k: sobol[2][k] for k in ("c", "y")}
    assert got[3:] == sobol[3:]
    assert job_overrides(sweep_dir, rows(sweep_dir)[0]["job_dir"])[:3] == ["x=0.3", "c=b", "y=3"]
    assert rows(sweep_dir)[0]["value"] == pytest.approx(1.0)  # the app's optimum, enqueued


def test_an_enqueued_sweep_killed_mid_way_resumes_to_the_same_trials(tmp_path: Path) -> None:
    args = [*SPACE, ENQUEUE, "hydra.sweeper.n_trials=6", "hydra.sweeper.seed=3", "sleep=0.4",
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    alone = tmp_path / "alone"
    run_app(alone, *args)
    sweep_dir = tmp_path / "sweep"
    killed_mid_sweep(sweep_dir, *args, completed=2)
    assert [t["status"] for t in rows(sweep_dir)].count("completed") < 6
    run_app(sweep_dir, *args)
    assert params(sweep_dir) == params(alone)


@pytest.mark.parametrize("enqueue,message", [
    ("[{z:1}]", "hydra.sweeper.enqueue[0]: z is not swept, so it cannot be enqueued"),
    ("[{c:d}]", "hydra.sweeper.enqueue[0]: c='d' is not among its choice: ['a', 'b', 'c']"),
    ("[{x:0.5},{x:2}]", "hydra.sweeper.enqueue[1]: x=2 is not a number in interval(0.0, 1.0)"),
    ("[{y:9}]", "hydra.sweeper.enqueue[0]: y=9 is not among its range"),
    ("[{}]", "hydra.sweeper.enqueue[0]={} is not a configuration"),
])
def test_a_bad_enqueued_configuration_is_one_line_before_anything_runs(tmp_path: Path, enqueue, message) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = run_app(sweep_dir, *SPACE, f"hydra.sweeper.enqueue={enqueue}", "hydra.sweeper.n_trials=3", check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(message), last
    assert not sweep_dir.exists() or not any(sweep_dir.iterdir())


def test_enqueue_meets_conditions_and_grids_with_one_line() -> None:
    space = parse_space({"opt": "choice(adamw, sgd)", "wd": "choice(0.0, 0.1)"}, [],
                        conditions={"wd": "opt == 'adamw'"})
    assert enqueued(space, [{"opt": "sgd"}], "random", 0) == [{"opt": "sgd"}]
    assert enqueued(space, [{"opt": "adamw", "wd": 0.1}], "forest", 0) == [{"opt": "adamw", "wd": 0.1}]
    with pytest.raises(SweepError, match=r"enqueue\[0\] gives wd, which is not swept in this configuration "
                                         r"\(its condition: opt == 'adamw'\)"):
        enqueued(space, [{"opt": "sgd", "wd": 0.1}], "random", 0)
    with pytest.raises(SweepError, match="a grid runs every point already"):
        enqueued(space, [{"opt": "sgd"}], "grid", 0)


def test_a_warm_started_forest_learns_from_an_earlier_sweep_without_running_it(tmp_path: Path) -> None:
    earlier = tmp_path / "earlier"
    run_app(earlier, *SPACE, "hydra.sweeper.strategy=random", "hydra.sweeper.n_trials=24", "hydra.sweeper.seed=1")
    forest = ["hydra.sweeper.strategy=forest", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_initial=8",
              "hydra.sweeper.random_fraction=0", "hydra.sweeper.seed=2"]
    cold, warm = tmp_path / "cold", tmp_path / "warm"
    run_app(cold, *SPACE, *forest)
    proc = run_app(warm, *SPACE, *forest, f"hydra.sweeper.warm_start=[{earlier}]")
    assert "warm start from" in proc.stdout + proc.stderr and "24 trial(s) given to the forest" in proc.stdout + proc.stderr
    assert len(rows(warm)) == 4 and len(rows(earlier)) == 24  # neither run again nor counted
    cold_values = [t["value"] for t in rows(cold)]
    warm_values = [t["value"] for t in rows(warm)]
    # cold: 4 of its 8 random trials; warm: the forest proposes from its first trial, near x=0.3, c=b
    assert params(cold) == random_params(parse_space(None, SPACE), list(range(4)), seed=2)
    # (the app's optimum is 1.0 at x=0.3, y=3, c=b; measured: warm 0.92-0.96, cold 0.43-0.99, mean 0.75)
    assert all(p["c"] == "b" for p in params(warm)) and min(warm_values) > 0.9
    assert sum(warm_values) / 4 > sum(cold_values) / 4 + 0.1


def test_a_bad_warm_start_source_is_one_line(tmp_path: Path) -> None:
    earlier = tmp_path / "earlier"
    run_app(earlier, *SPACE, "hydra.sweeper.n_trials=3", "hydra.sweeper.direction=minimize")
    for source, message in [
        (tmp_path / "nowhere", "hydra.sweeper.warm_start: "),
        (earlier, "was a sweep to minimize its objective, this one is to maximize it"),
    ]:
        sweep_dir = tmp_path / f"sweep_{len(message)}"
        proc = run_app(sweep_dir, *SPACE, f"hydra.sweeper.warm_start=[{source}]", "hydra.sweeper.n_trials=2",
                       check=False)
        assert proc.returncode == 2
        assert message in proc.stderr.strip().splitlines()[-1]
        assert not sweep_dir.exists() or not any(sweep_dir.iterdir())


def test_a_warm_started_sweep_through_joblib_resumes_after_a_kill(tmp_path: Path) -> None:
    earlier = tmp_path / "earlier"
    run_app(earlier, *SPACE, "hydra.sweeper.strategy=random", "hydra.sweeper.n_trials=12", "hydra.sweeper.seed=1")
    before = rows(earlier)
    args = [*SPACE, "hydra.sweeper.strategy=forest", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_initial=4",
            f"hydra.sweeper.warm_start=[{earlier}]", "sleep=0.4", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    sweep_dir = tmp_path / "sweep"
    killed_mid_sweep(sweep_dir, *args, completed=2)
    assert len([t for t in rows(sweep_dir) if t["status"] == "completed"]) < 6
    proc = run_app(sweep_dir, *args)
    assert "12 trial(s) given to the forest" in proc.stdout + proc.stderr
    after = rows(sweep_dir)
    assert [t["number"] for t in after] == list(range(6)) and {t["status"] for t in after} == {"completed"}
    assert rows(earlier) == before  # the earlier sweep is read, never written
