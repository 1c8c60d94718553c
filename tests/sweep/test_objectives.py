"""Several objectives (``hydra.sweeper.objectives``, ``constraints``): names read from the job's
returned mapping or its metrics.json, constraints marking trials infeasible, every objective in
trials.db, the Pareto front in best.yaml, a resume after a kill; and fastlab-train's metrics.json
``n_params`` as an objective."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from fastlab.sweep.errors import SweepError
from fastlab.sweep.objectives import pareto_mask, parse_objectives, resolve, scalarise
from fastlab.sweep.store import read_sweep
from tests.sweep.test_hydra import killed_mid_sweep, rows, run_app
from tests.sweep.test_sweep_train import TINY, TRAIN

MULTI = ["x=interval(0,1)", "c=a,b,c", "y=range(1,6)", "by_name=true",
         "+hydra.sweeper.objectives={value: maximize, cost: minimize}", "hydra.sweeper.constraints=['cost < 4']"]


def test_names_are_read_from_the_return_then_metrics_json() -> None:
    metrics = {"n_params": 1200, "final": {"accuracy": 0.9, "valid_loss": 0.3}, "seconds": {"total": 4.5},
               "objective": 0.9, "best": {"accuracy": 0.95}}
    assert resolve("accuracy", None, metrics) == 0.9
    assert resolve("n_params", None, metrics) == 1200.0
    assert resolve("seconds.total", None, metrics) == 4.5
    assert resolve("best.accuracy", None, metrics) == 0.95
    assert resolve("accuracy", {"accuracy": 0.5}, metrics) == 0.5  # the returned mapping first
    assert resolve("missing", None, metrics) is None
    assert resolve("accuracy", {"accuracy": float("nan")}, None) is None


@pytest.mark.parametrize("objectives,constraints,message", [
    ({"accuracy": "up"}, [], "hydra.sweeper.objectives.accuracy='up' is not a direction"),
    ({}, ["n_params < 10"], "hydra.sweeper.constraints need hydra.sweeper.objectives"),
    ({"accuracy": "maximize"}, ["n_params <"], "hydra.sweeper.constraints[0]='n_params <': cannot parse it"),
    ({"accuracy": "maximize"}, ["open('x')"], "is not allowed in an expression"),
])
def test_bad_objectives_are_one_line(objectives, constraints, message) -> None:
    with pytest.raises(SweepError) as e:
        parse_objectives(objectives, constraints)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_constraints_mark_a_trial_infeasible() -> None:
    o = parse_objectives({"accuracy": "maximize", "n_params": "minimize"}, ["n_params < 1000", "epochs >= 2"])
    ok = o.judge(None, {"n_params": 800, "epochs": 3, "final": {"accuracy": 0.9}})
    assert ok == {"values": {"accuracy": 0.9, "n_params": 800.0}, "violated": []}
    bad = o.judge(None, {"n_params": 1800, "epochs": 1, "final": {"accuracy": 0.95}})
    assert bad["violated"] == ["n_params < 1000", "epochs >= 2"]
    assert o.judge(None, {"final": {"accuracy": 0.9}})["violated"] == ["n_params < 1000", "epochs >= 2"]


def test_the_pareto_mask_is_the_non_dominated_set() -> None:
    rng = np.random.default_rng(0)
    points = rng.random((60, 3))
    signs = np.asarray([1.0, -1.0, 1.0])
    mask = pareto_mask(points, signs)
    g = points * signs
    for i in range(60):
        dominated = any(np.all(g[j] >= g[i]) and np.any(g[j] > g[i]) for j in range(60))
        assert mask[i] == (not dominated)
    # ParEGO's scalarisation is largest at a point that is best on every objective
    rows = [np.asarray([1.0, 0.0]), np.asarray([0.5, 0.5]), None]
    values = scalarise(rows, np.asarray([1.0, -1.0]), np.asarray([0.5, 0.5]))
    assert values[0] > values[1] and values[2] is None


def brute_front(trials) -> list[int]:
    ok = [t for t in trials if t.status == "completed" and not t.objectives["violated"]]
    front = []
    for t in ok:
        a = (t.objectives["values"]["value"], -t.objectives["values"]["cost"])
        if not any(b != a and b[0] >= a[0] and b[1] >= a[1] for b in
                   ((u.objectives["values"]["value"], -u.objectives["values"]["cost"]) for u in ok)):
            front.append(t.number)
    return sorted(front)


def check_multi(sweep_dir: Path, n: int) -> list:
    trials = read_sweep(sweep_dir / "trials.db").trials
    assert [t.status for t in trials] == ["completed"] * n
    for t in trials:
        p = t.params
        bonus = {"a": 0.0, "b": 0.1, "c": -0.1}[p["c"]]
        value = 0.9 - (p["x"] - 0.3) ** 2 - 0.01 * (p["y"] - 3) ** 2 + bonus
        cost = 1 + 4 * p["x"] + p["y"] / 5
        assert t.value == pytest.approx(value)  # the first objective is the trial's value
        assert t.objectives["values"] == pytest.approx({"value": value, "cost": cost})
        assert t.objectives["violated"] == ([] if cost < 4 else ["cost < 4"])
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert best["objectives"] == {"value": "maximize", "cost": "minimize"}
    assert sorted(p["number"] for p in best["pareto"]) == brute_front(trials)
    assert all(f"x={p['params']['x']!r}" in p["overrides"] for p in best["pareto"])
    header = (sweep_dir / "trials.csv").read_text().splitlines()[0].split(",")
    assert header[:6] == ["number", "status", "value", "objective.value", "cost", "feasible"]
    return trials


def test_a_two_objective_sweep_through_joblib_resumes_after_a_kill(tmp_path: Path) -> None:
    # random: which trials a forest has seen when it proposes depends on the workers' timing, so only
    # Sobol points make two sweeps' params comparable
    args = [*MULTI, "hydra.sweeper.strategy=random", "hydra.sweeper.n_trials=10",
            "hydra.sweeper.seed=5", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    alone = tmp_path / "alone"
    proc = run_app(alone, *args)
    assert "pareto front: " in proc.stdout and "maximize value, minimize cost" in proc.stdout
    reference = check_multi(alone, 10)

    sweep_dir = tmp_path / "sweep"
    killed_mid_sweep(sweep_dir, *args, "sleep=0.4", completed=5)
    assert len([t for t in rows(sweep_dir) if t["status"] == "completed"]) < 10
    run_app(sweep_dir, *args, "sleep=0.4")
    resumed = check_multi(sweep_dir, 10)
    assert [t.params for t in resumed] == [t.params for t in reference]


def test_a_missing_objective_fails_the_trial_with_one_line(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run_app(sweep_dir, "x=interval(0,1)", "by_name=true", "+hydra.sweeper.objectives={speed: maximize}",
            "hydra.sweeper.n_trials=2", "hydra.sweeper.max_failure_rate=1", check=False)
    trials = read_sweep(sweep_dir / "trials.db").trials
    assert [t.status for t in trials] == ["failed", "failed"]
    assert trials[0].error.startswith("the trial gives no objective 'speed'")
    # and a mapping without objectives is refused as before: the objective must be a float
    other = tmp_path / "other"
    run_app(other, "x=interval(0,1)", "by_name=true", "hydra.sweeper.n_trials=1", "hydra.sweeper.max_failure_rate=1",
            check=False)
    assert "not a number: return the objective as a float, or name the objectives" in \
        read_sweep(other / "trials.db").trials[0].error


def test_fastlab_train_trades_accuracy_against_its_parameter_count(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    cmd = [str(TRAIN), "-m", "hydra/sweeper=fastlab", f"hydra.sweep.dir={sweep_dir}", *TINY,
           "arch.channels=choice([4,8],[8,16],[16,32])", "hydra.sweeper.strategy=grid",
           "+hydra.sweeper.objectives={accuracy: maximize, n_params: minimize}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = read_sweep(sweep_dir / "trials.db").trials
    assert len(trials) == 3
    sizes = []
    for t in trials:
        metrics = json.loads((sweep_dir / t.job_dir / "metrics.json").read_text())
        assert t.objectives["values"] == {"accuracy": metrics["final"]["accuracy"], "n_params": metrics["n_params"]}
        sizes.append(metrics["n_params"])
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]  # wider channels, more parameters
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert 0 in [p["number"] for p in best["pareto"]]  # the smallest model is never dominated on size


def test_the_forest_proposes_along_the_front_of_several_objectives() -> None:
    """ParEGO: each batch maximises a random weighting of the normalised objectives, so the
    proposals spread along the trade-off (value best at x=0.3, cost lowest at x=0) instead of all
    at one end, and none is infeasible."""
    from fastlab.sweep.settings import SweepSettings
    from fastlab.sweep.space import parse_space
    from fastlab.sweep.strategies import Observation, propose, random_params

    space = parse_space(None, ["x=interval(0,1)", "c=a,b,c"])
    objectives = parse_objectives({"value": "maximize", "cost": "minimize"}, ["cost < 4"])
    finished = []
    for p in random_params(space, list(range(24)), seed=3):
        value = 0.9 - (p["x"] - 0.3) ** 2 + {"a": 0.0, "b": 0.1, "c": -0.1}[p["c"]]
        finished.append(Observation(p, value, objectives.judge({"value": value, "cost": 1 + 4 * p["x"]}, None)))
    def proposals(**objective_settings) -> list[dict]:
        settings = SweepSettings(strategy="forest", direction="maximize", n_initial=4, random_fraction=0.0,
                                 **objective_settings)
        return [p for first in range(24, 48, 4)  # six batches: with two objectives, six weightings
                for p in propose(space, settings, seed=1, numbers=list(range(first, first + 4)), finished=finished)]

    several = proposals(objectives={"value": "maximize", "cost": "minimize"}, constraints=["cost < 4"])
    one = proposals()
    # measured: two objectives x in 0.04..0.25 (20 of 24 with c=b); the value alone 0.31..0.38, all b
    xs = [p["x"] for p in several]
    assert sum(p["c"] == "b" for p in several) >= 18  # b is better on value and no worse on cost
    assert max(xs) <= 0.35  # beyond x=0.3 both objectives get worse: never on the front
    assert min(xs) < 0.1 and max(xs) > 0.18  # both ends of the front are proposed
    assert min(p["x"] for p in one) > 0.28  # one objective: all at its optimum


def test_the_mirror_holds_every_objective(tmp_path: Path) -> None:
    import optuna

    sweep_dir, url = tmp_path / "sweep", f"sqlite:///{tmp_path / 'optuna.db'}"
    run_app(sweep_dir, *MULTI, "hydra.sweeper.n_trials=5", "hydra.sweeper.study=multi", f"hydra.sweeper.mirror=optuna:{url}")
    study = optuna.load_study(study_name="multi", storage=url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["value", "cost"]
    mirrored = {t.user_attrs["fastlab_trial"]: t for t in study.trials}
    for t in read_sweep(sweep_dir / "trials.db").trials:
        assert mirrored[t.number].values == pytest.approx([t.objectives["values"]["value"], t.objectives["values"]["cost"]])
        assert mirrored[t.number].user_attrs.get("fastlab_violated", []) == t.objectives["violated"]


def test_a_resume_keeps_the_objectives_and_the_store_records_them(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run_app(sweep_dir, *MULTI, "hydra.sweeper.n_trials=2")
    assert read_sweep(sweep_dir / "trials.db").state["objectives"] == {"value": "maximize", "cost": "minimize"}
    other = [a for a in MULTI if not a.startswith("+hydra.sweeper.objectives")]
    proc = run_app(sweep_dir, *other, "+hydra.sweeper.objectives={value: maximize, x: minimize}",
                   "hydra.sweeper.n_trials=3", check=False)
    assert proc.returncode == 2
    assert "holds a sweep of the objectives {'value': 'maximize', 'cost': 'minimize'}" in proc.stderr.splitlines()[-1]
    assert len(read_sweep(sweep_dir / "trials.db").trials) == 2
