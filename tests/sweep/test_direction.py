"""The sweep's direction: given, or fastlab-train's task's; refused for other apps and for sweeps
over the task itself; recorded in trials.db, and a resume may not change it."""

import pytest

from fastlab.sweep.direction import resolve_direction
from fastlab.sweep.driver import run_sweep
from fastlab.sweep.errors import SweepError
from fastlab.sweep.settings import SweepSettings
from fastlab.sweep.space import parse_space
from fastlab.sweep.store import TrialStore, read_sweep
from tests.sweep.test_driver import FakeLauncher

REGRESS = {"name": "regress", "objective": "rmse"}
CLASSIFY = {"name": "classify", "objective": "accuracy"}


@pytest.mark.parametrize(
    ("given", "task", "swept", "expected"),
    [
        (None, REGRESS, ["schedule.lr_max"], "minimize"),
        (None, CLASSIFY, ["schedule.lr_max"], "maximize"),
        (None, {"name": "classify", "objective": "valid_loss"}, [], "minimize"),
        ("maximize", REGRESS, [], "maximize"),  # given wins, even against the task's
        ("minimize", None, ["x"], "minimize"),  # any app, when given
        ("maximize", REGRESS, ["task.objective"], "maximize"),  # a task sweep, when given
    ],
)
def test_the_direction_is_given_or_the_tasks(given, task, swept, expected) -> None:
    assert resolve_direction(given, task, swept)[0] == expected


@pytest.mark.parametrize(
    ("task", "swept", "message"),
    [
        (None, ["x"], r"^hydra\.sweeper\.direction is not set .*set hydra\.sweeper\."
                      r"direction=maximize or hydra\.sweeper\.direction=minimize"),
        ({"name": "mine", "objective": "score"}, [], r"names no fastlab task\.objective"),
        ({"name": "classify", "objective": "nope"}, [], r"names no fastlab task\.objective"),
        (REGRESS, ["task"], r"^the sweep searches task, .*set hydra\.sweeper\.direction="),
        (CLASSIFY, ["x", "task.objective"], r"^the sweep searches task\.objective, "),
    ],
)
def test_no_direction_is_refused_with_one_line(task, swept, message) -> None:
    with pytest.raises(SweepError, match=message) as e:
        resolve_direction(None, task, swept)
    assert "\n" not in str(e.value)


def _run(path, direction: str | None, n_trials: int = 2):
    settings = SweepSettings(strategy="random", n_trials=n_trials, seed=0, direction=direction)
    return run_sweep(settings, parse_space(None, ["x=interval(0,1)"]), path,
                     FakeLauncher(path, lambda p: p["x"]), job_dir_for=lambda n: str(path / str(n)),
                     echo=lambda line: None)


def test_the_driver_records_the_direction_and_a_resume_may_not_change_it(tmp_path) -> None:
    trials = _run(tmp_path, "minimize")
    assert read_sweep(tmp_path / "trials.db").direction == "minimize"
    with pytest.raises(SweepError, match=r"holds a sweep to minimize its objective, not to "
                                         r"maximize it; rerun with hydra\.sweeper\.direction="
                                         r"minimize, or use a new hydra\.sweep\.dir"):
        _run(tmp_path, "maximize", n_trials=3)
    assert len(_run(tmp_path, "minimize", n_trials=3)) == len(trials) + 1
    with pytest.raises(SweepError, match=r"^hydra\.sweeper\.direction is not set and hydra\.sweeper\.strategy=forest "
                                         r"needs it"):
        run_sweep(SweepSettings(strategy="forest", n_trials=2, seed=0), parse_space(None, ["x=interval(0,1)"]),
                  tmp_path / "unset", FakeLauncher(tmp_path / "unset", lambda p: p["x"]), echo=lambda line: None)
    _run(tmp_path / "unranked", None)  # random search takes an app without a direction: unranked
    assert read_sweep(tmp_path / "unranked" / "trials.db").direction is None


def test_a_store_from_before_directions_were_recorded_takes_the_resumes(tmp_path) -> None:
    _run(tmp_path, "maximize")
    with TrialStore(tmp_path / "trials.db") as store:  # as an older sweeper left it
        store._write("DELETE FROM sweep WHERE key = 'direction'")
    assert read_sweep(tmp_path / "trials.db").direction is None
    _run(tmp_path, "minimize", n_trials=3)
    assert read_sweep(tmp_path / "trials.db").direction == "minimize"
