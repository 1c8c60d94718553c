"""``hydra.sweeper.conditions``: a key swept only where an expression over other swept keys holds.

The expression language is read with ``ast`` and evaluated by fastlab (never ``eval``); grid,
random and forest respect the conditions; a sweep through the joblib launcher records an absent key
as absent, passes it no override (the trial keeps its config value) and resumes after a kill to the
params an unbroken sweep has. (Several drivers on SQLite and PostgreSQL: tests/sweep/test_drivers.py
sweeps a conditional key too.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastlab.sweep.conditions import parse_conditions
from fastlab.sweep.errors import SweepError
from fastlab.sweep.settings import SweepSettings
from fastlab.sweep.space import ABSENT_UNIT, parse_space
from fastlab.sweep.strategies import Observation, grid_params, grid_size, propose, random_params
from tests.sweep.test_hydra import job_overrides, killed_mid_sweep, rows, run_app

SWEPT = ["opt", "wd", "mom", "epochs", "bs"]


@pytest.mark.parametrize("text,params,holds", [
    ("opt == 'adamw'", {"opt": "adamw"}, True),
    ("opt == 'adamw'", {"opt": "sgd"}, False),
    ("opt != 'adamw'", {"opt": "sgd"}, True),
    ("epochs > 3 and opt in ['sgd', 'adamw']", {"epochs": 4, "opt": "sgd"}, True),
    ("epochs > 3 and opt in ['sgd', 'adamw']", {"epochs": 3, "opt": "sgd"}, False),
    ("2 <= bs < 64", {"bs": 32}, True),
    ("2 <= bs < 64", {"bs": 64}, False),
    ("not (opt == 'sgd') or epochs >= -1", {"opt": "sgd", "epochs": 0}, True),
    ("opt not in ('sgd',)", {"opt": "sgd"}, False),
    ("wd == 0.1", {"opt": "sgd"}, False),  # wd absent: no comparison with it holds
    ("wd != 0.1", {"opt": "sgd"}, False),
    ("opt == true", {"opt": True}, True),
])
def test_an_expression_holds_as_written(text, params, holds) -> None:
    key = next(k for k in SWEPT if k not in text)
    (condition,) = parse_conditions({key: text}, SWEPT)
    assert condition.holds(params) is holds


@pytest.mark.parametrize("conditions,message", [
    ({"lr": "opt == 'sgd'"}, "hydra.sweeper.conditions.lr=\"opt == 'sgd'\": lr is not swept"),
    ({"mom": "optimiser == 'sgd'"}, "optimiser is not a swept key"),
    ({"mom": "mom > 0.5"}, "cannot read the key itself"),
    ({"mom": "opt =="}, "cannot parse it"),
    ({"mom": "__import__('os').system('true')"}, "is not allowed in an expression"),
    ({"mom": "opt.upper() == 'SGD'"}, "is not allowed in an expression"),
    ({"mom": "opt is 'sgd'"}, "the comparison Is is not allowed"),
    ({"mom": "(lambda: 1)() == 1"}, "is not allowed in an expression"),
    ({"mom": ""}, "give an expression in quotes"),
    ({"mom": "wd > 0", "wd": "mom > 0"}, "depend on each other in a circle (mom -> wd -> mom)"),
])
def test_a_bad_condition_is_one_line(conditions, message) -> None:
    with pytest.raises(SweepError) as e:
        parse_conditions(conditions, SWEPT)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_condition_comparing_other_types_is_one_line_when_evaluated() -> None:
    (condition,) = parse_conditions({"mom": "opt > 3"}, SWEPT)
    with pytest.raises(SweepError, match="cannot be evaluated .* compare each key with values of its own type"):
        condition.holds({"opt": "sgd"})


def space(**conditions):
    return parse_space({"opt": "choice(adamw, sgd)", "wd": "choice(0.0, 0.01, 0.1)", "mom": "interval(0.8, 0.99)",
                        "epochs": "range(2, 5)"}, [], conditions=conditions)


def test_a_conditional_key_depending_on_another_is_absent_with_it() -> None:
    s = parse_space({"opt": "choice(adamw, sgd)", "wd": "choice(0.0, 0.1)", "epochs": "range(2, 4)"}, [],
                    conditions={"epochs": "wd > 0", "wd": "opt == 'adamw'"})
    assert [c.key for c in s.conditions] == ["wd", "epochs"]  # the one read first
    assert s.active({"opt": "sgd", "wd": 0.1, "epochs": 3}) == {"opt": "sgd"}
    assert s.active({"opt": "adamw", "wd": 0.1, "epochs": 3}) == {"opt": "adamw", "wd": 0.1, "epochs": 3}


def test_grid_enumerates_only_the_valid_combinations_once() -> None:
    s = parse_space({"opt": "choice(adamw, sgd)", "wd": "choice(0.0, 0.01, 0.1)", "epochs": "range(2, 4)"}, [],
                    conditions={"wd": "opt == 'adamw'"})
    # adamw: 3 wd x 2 epochs; sgd: 2 epochs, wd absent (not 3 copies of each)
    assert grid_size(s) == 8
    points = grid_params(s, range(8))
    assert points[:2] == [{"opt": "adamw", "wd": 0.0, "epochs": 2}, {"opt": "adamw", "wd": 0.0, "epochs": 3}]
    assert points[6:] == [{"opt": "sgd", "epochs": 2}, {"opt": "sgd", "epochs": 3}]
    assert s.overrides(points[6]) == ["opt=sgd", "epochs=2"]
    assert len({s.key_of(p) for p in points}) == 8


def test_random_and_forest_proposals_respect_the_conditions() -> None:
    s = space(wd="opt == 'adamw'", mom="opt == 'sgd'")
    for p in random_params(s, range(32), seed=0):
        assert ("wd" in p) == (p["opt"] == "adamw") and ("mom" in p) == (p["opt"] == "sgd")
    # the forest learns that sgd with a high momentum is best and proposes there
    finished = []
    for p in random_params(s, range(16), seed=1):
        value = 1.0 - abs(p.get("mom", 0.0) - 0.97) if p["opt"] == "sgd" else 0.5 - p["wd"]
        finished.append(Observation(p, value))
    assert ABSENT_UNIT in s.to_unit(finished[0].params)
    settings = SweepSettings(strategy="forest", direction="maximize", n_initial=4, random_fraction=0.0)
    proposed = propose(s, settings, seed=0, numbers=list(range(16, 24)), finished=finished)
    for p in proposed:
        assert ("wd" in p) == (p["opt"] == "adamw") and ("mom" in p) == (p["opt"] == "sgd")
    assert sum(p["opt"] == "sgd" for p in proposed) >= 6
    assert all(p["mom"] > 0.9 for p in proposed if p["opt"] == "sgd")


def test_conditions_are_part_of_what_a_resume_must_match() -> None:
    assert space().fingerprint() != space(wd="opt == 'adamw'").fingerprint()
    assert "conditions" not in space().fingerprint()  # a sweep from before conditions resumes as it was


# ------------------------------------------------------------------ through the joblib launcher
COND = ["x=interval(0,1)", "c=a,b,c", "y=range(1,6)", "+hydra.sweeper.conditions.y=\"c == 'b'\"",
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_trials=8"]


def check_conditional_sweep(sweep_dir: Path) -> list[dict]:
    trials = rows(sweep_dir)
    assert [t["status"] for t in trials] == ["completed"] * 8
    assert {json.loads(t["params"])["c"] for t in trials} == {"a", "b", "c"}
    for t in trials:
        params = json.loads(t["params"])
        assert ("y" in params) == (params["c"] == "b")
        given = job_overrides(sweep_dir, t["job_dir"])
        assert any(o.startswith("y=") for o in given) == (params["c"] == "b")
        # the app's value: a trial without y ran with the config's y=1
        y = params.get("y", 1)
        bonus = {"a": 0.0, "b": 0.1, "c": -0.1}[params["c"]]
        assert t["value"] == pytest.approx(0.9 - (params["x"] - 0.3) ** 2 - 0.01 * (y - 3) ** 2 + bonus)
    csv = (sweep_dir / "trials.csv").read_text().splitlines()
    header = csv[0].split(",")
    for line in csv[1:]:
        cells = dict(zip(header, line.split(","), strict=False))
        assert (cells["y"] == "") == (cells["c"] != "b")  # recorded as absent
    return trials


def test_a_conditional_sweep_through_joblib_resumes_after_a_kill(tmp_path: Path) -> None:
    alone = tmp_path / "alone"
    run_app(alone, *COND)
    reference = check_conditional_sweep(alone)

    sweep_dir = tmp_path / "sweep"
    killed_mid_sweep(sweep_dir, *COND, "sleep=0.5", completed=2)
    assert 2 <= [t["status"] for t in rows(sweep_dir)].count("completed") < 8
    run_app(sweep_dir, *COND, "sleep=0.5")  # the same command again
    resumed = check_conditional_sweep(sweep_dir)
    assert [t["params"] for t in resumed] == [t["params"] for t in reference]
