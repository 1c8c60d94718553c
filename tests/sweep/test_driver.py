"""The sweep loop and its store, in-process with a fake launcher: recording, resume after a crash,
failures, max_failure_rate, exports. (test_sweep_hydra.py runs the same through Hydra for real.)"""

import csv
import json
import math
import sqlite3
from pathlib import Path

import pytest
import yaml

from fastlab.sweep.driver import Outcome, run_sweep
from fastlab.sweep.errors import SweepError
from fastlab.sweep.settings import SweepSettings
from fastlab.sweep.space import parse_space
from fastlab.sweep.store import TrialStore


class Crash(BaseException):
    """Stands for the driver dying mid-batch (BaseException: nothing in the loop may catch it)."""


class FakeLauncher:
    """Runs a batch of override lists like a Hydra launcher: job dirs ``sweep_dir/<num>``.

    ``objective`` maps the trial's {key: value} to a float, or raises to fail the job;
    ``crash_on_call`` makes the n-th launch die after creating its job dirs.
    """

    def __init__(self, sweep_dir: Path, objective, crash_on_call: int | None = None) -> None:
        self.sweep_dir = sweep_dir
        self.objective = objective
        self.crash_on_call = crash_on_call
        self.calls: list[tuple[list[list[str]], int]] = []

    def __call__(self, overrides: list[list[str]], initial_job_idx: int) -> list[Outcome]:
        self.calls.append((overrides, initial_job_idx))
        outcomes = []
        for i, job in enumerate(overrides):
            job_dir = self.sweep_dir / str(initial_job_idx + i)
            job_dir.mkdir(parents=True)  # fails if a job dir were ever reused
            (job_dir / "overrides.json").write_text(json.dumps(job))
            if len(self.calls) == self.crash_on_call:
                raise Crash()
            params = {
                k.lstrip("+"): json.loads(v) if v[0].isdigit() or v[0] == "-" else v
                for k, v in (o.split("=", 1) for o in job)
            }
            try:
                value = float(self.objective(params))
            except Exception as e:
                outcomes.append(
                    Outcome("failed", error=f"{type(e).__name__}: {e}", job_dir=str(job_dir))
                )
                continue
            status = "diverged" if math.isnan(value) else "completed"
            outcomes.append(
                Outcome(status, None if math.isnan(value) else value, job_dir=str(job_dir))
            )
        return outcomes


def quadratic(p: dict) -> float:
    return -((p["x"] - 0.3) ** 2)


def sweep(tmp_path: Path, launcher, overrides=("x=interval(0,1)",), echo=None, **settings):
    # The driver needs a direction (hydra_glue resolves it for Hydra apps); these objectives peak.
    settings.setdefault("direction", "maximize")
    space = parse_space(None, list(overrides))
    lines: list[str] = []
    trials = run_sweep(
        SweepSettings(**settings),
        space,
        tmp_path,
        launcher,
        job_dir_for=lambda n: str(tmp_path / str(n)),
        echo=lines.append if echo is None else echo,
    )
    return trials, "\n".join(lines).splitlines()


def test_a_sweep_records_every_trial_and_exports(tmp_path: Path) -> None:
    launcher = FakeLauncher(tmp_path, quadratic)
    trials, lines = sweep(tmp_path, launcher, strategy="random", n_trials=5, seed=0, top_k=3)
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert all(t.status == "completed" and t.finished_at for t in trials)
    assert [t.job_dir for t in trials] == ["0", "1", "2", "3", "4"]
    # the db follows the contract's schema
    db = sqlite3.connect(tmp_path / "trials.db")
    columns = [r[1] for r in db.execute("PRAGMA table_info(trials)")]
    assert columns == [
        "number",
        "status",
        "params",
        "value",
        "metrics",
        "job_dir",
        "started_at",
        "finished_at",
        "error",
        "driver",
        "heartbeat_at",
        "objectives",
        "config",
        "repeat",
    ]
    assert [r[1] for r in db.execute("PRAGMA table_info(reports)")] == ["number", "epoch", "value"]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # trials.csv: one row per trial, one column per searched key
    rows = list(csv.DictReader(open(tmp_path / "trials.csv")))
    assert [r["number"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert float(rows[2]["x"]) == trials[2].params["x"]
    # best.yaml: the best trial and the overrides that reproduce it
    best = yaml.safe_load(open(tmp_path / "best.yaml"))
    top = max(trials, key=lambda t: t.value)
    assert best["number"] == top.number and best["value"] == top.value
    assert best["overrides"] == [f"x={top.params['x']!r}"]
    assert best["trials"] == {"completed": 5, "diverged": 0, "failed": 0, "running": 0}
    # the printed table: title, header, the 3 best in order
    assert lines[0].startswith("best 3 of 5 trials (maximize")
    assert lines[1].split() == ["rank", "trial", "value", "x", "job_dir"]
    ranked = sorted(trials, key=lambda t: -t.value)[:3]
    assert [int(line.split()[1]) for line in lines[2:5]] == [t.number for t in ranked]
    assert not [
        p for p in tmp_path.iterdir() if ".tmp" in p.name
    ]  # atomic writes left no temp files


def test_batches_hold_batch_size_distinct_trials_with_increasing_job_numbers(
    tmp_path: Path,
) -> None:
    launcher = FakeLauncher(tmp_path, quadratic)
    trials, _ = sweep(tmp_path, launcher, strategy="forest", n_trials=9, batch_size=4, n_initial=2, seed=1,
                      asynchronous=False)
    assert [len(batch) for batch, _ in launcher.calls] == [4, 4, 1]
    assert [start for _, start in launcher.calls] == [0, 4, 8]
    assert len({t.params["x"] for t in trials}) == 9


def test_resume_after_a_crash_reruns_the_lost_trials_in_new_job_dirs(tmp_path: Path) -> None:
    crashing = FakeLauncher(tmp_path, quadratic, crash_on_call=3)
    with pytest.raises(Crash):
        sweep(tmp_path, crashing, strategy="random", n_trials=7, batch_size=2, seed=0, asynchronous=False)
    with TrialStore(tmp_path / "trials.db") as store:
        before = store.trials()
    assert [t.status for t in before] == ["completed"] * 4 + ["running"] * 2
    lost = {t.number: t.params for t in before if t.status == "running"}

    resumed = FakeLauncher(tmp_path, quadratic)
    trials, _ = sweep(tmp_path, resumed, strategy="random", n_trials=7, batch_size=2, seed=0,
                      asynchronous=False)
    assert [t.number for t in trials] == list(range(7))
    assert [t.status for t in trials] == ["completed"] * 7
    assert trials[:4] == before[:4]  # kept, not re-run
    assert {n: trials[n].params for n in lost} == lost  # re-run with the same params...
    assert {trials[n].job_dir for n in lost} == {"6", "7"}  # ...in new job dirs: 4 and 5 stay
    assert resumed.calls[0][1] == 6 and sum(len(b) for b, _ in resumed.calls) == 3
    # the random sequence went on where it was: trial 6 is Sobol point 6, as without the crash
    clean = tmp_path / "clean"
    clean_trials, _ = sweep(
        clean, FakeLauncher(clean, quadratic), strategy="random", n_trials=7, seed=0
    )
    assert [t.params for t in clean_trials] == [t.params for t in trials]
    # a finished sweep run again runs nothing more
    again = FakeLauncher(tmp_path, quadratic)
    sweep(tmp_path, again, strategy="random", n_trials=7, seed=0)
    assert again.calls == []


def test_more_trials_on_resume_extend_the_sweep(tmp_path: Path) -> None:
    sweep(tmp_path, FakeLauncher(tmp_path, quadratic), strategy="forest", n_trials=3, seed=2)
    trials, _ = sweep(
        tmp_path, FakeLauncher(tmp_path, quadratic), strategy="forest", n_trials=5, seed=2
    )
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert [t.job_dir for t in trials] == ["0", "1", "2", "3", "4"]


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    def objective(p: dict) -> float:
        if p["x"] == 2:
            raise RuntimeError("boom")
        return math.nan if p["x"] == 3 else p["x"]

    trials, lines = sweep(
        tmp_path, FakeLauncher(tmp_path, objective), overrides=["x=1,2,3,4"], strategy="grid"
    )
    assert [t.status for t in trials] == ["completed", "failed", "diverged", "completed"]
    assert trials[1].error == "RuntimeError: boom" and trials[1].value is None
    assert trials[2].value is None and trials[2].error is None
    assert "2 completed, 1 diverged, 1 failed" in lines[0]
    rows = list(csv.DictReader(open(tmp_path / "trials.csv")))
    assert rows[1]["error"] == "RuntimeError: boom"


def test_max_failure_rate_stops_the_sweep_with_a_message(tmp_path: Path) -> None:
    def broken(p: dict) -> float:
        raise ValueError("no such file: data.csv")

    launcher = FakeLauncher(tmp_path, broken)
    with pytest.raises(SweepError) as info:
        sweep(tmp_path, launcher, strategy="random", n_trials=20, max_failure_rate=0.1)
    message = str(info.value)
    assert "3 of 3 trials failed" in message and "max_failure_rate=0.1" in message
    assert "ValueError: no such file: data.csv" in message and "retry_failed=true" in message
    assert len(launcher.calls) == 3  # 0.1 x 20 allows 2 failures: the third stops it
    assert (tmp_path / "trials.csv").exists() and (tmp_path / "best.yaml").exists()

    # retry_failed re-runs the failed trials (same numbers, new job dirs) once the task is fixed
    trials, _ = sweep(
        tmp_path,
        FakeLauncher(tmp_path, quadratic),
        strategy="random",
        n_trials=4,
        retry_failed=True,
    )
    assert [(t.number, t.status, t.job_dir) for t in trials] == [
        (0, "completed", "3"),
        (1, "completed", "4"),
        (2, "completed", "5"),
        (3, "completed", "6"),
    ]


def test_resume_refuses_another_search_space_or_config(tmp_path: Path) -> None:
    sweep(tmp_path, FakeLauncher(tmp_path, quadratic), strategy="random", n_trials=2)
    with pytest.raises(SweepError, match=r"another search space.*use a new hydra\.sweep\.dir"):
        sweep(
            tmp_path,
            FakeLauncher(tmp_path, quadratic),
            overrides=["x=interval(0,2)"],
            strategy="random",
            n_trials=2,
        )
    with pytest.raises(SweepError, match=r"another search space"):
        sweep(
            tmp_path,
            FakeLauncher(tmp_path, quadratic),
            overrides=["x=interval(0,1)", "y=1"],
            strategy="random",
            n_trials=2,
        )
    space = parse_space(None, ["x=interval(0,1)"])
    with pytest.raises(SweepError, match=r"another config"):
        run_sweep(
            SweepSettings(direction="maximize"),
            space,
            tmp_path,
            FakeLauncher(tmp_path, quadratic),
            context="lr: 2",
            echo=str,
        )
    # a sweep that never started a trial binds nothing (a typo must not poison the sweep dir)
    fresh = tmp_path / "fresh"
    with pytest.raises(SweepError, match="cannot compose"):
        run_sweep(
            SweepSettings(direction="maximize"),
            space,
            fresh,
            FakeLauncher(fresh, quadratic),
            validate=_refuse,
            echo=str,
        )
    assert not (fresh / "trials.csv").exists()
    sweep(fresh, FakeLauncher(fresh, quadratic), overrides=["x=interval(0,2)"], n_trials=1)
    # what may change: n_trials, strategy, batch size
    trials, _ = sweep(
        tmp_path, FakeLauncher(tmp_path, quadratic), strategy="forest", n_trials=3, batch_size=2
    )
    assert len(trials) == 3


def _refuse(batch: list[list[str]]) -> None:
    raise SweepError("cannot compose")


def test_the_seed_drawn_for_an_unseeded_sweep_is_kept_for_its_resume(tmp_path: Path) -> None:
    sweep(tmp_path, FakeLauncher(tmp_path, quadratic), strategy="random", n_trials=2)
    trials, _ = sweep(tmp_path, FakeLauncher(tmp_path, quadratic), strategy="random", n_trials=4)
    clean = tmp_path / "clean"
    with TrialStore(tmp_path / "trials.db") as store:
        kept = store.get("seed")
    again, _ = sweep(
        clean, FakeLauncher(clean, quadratic), strategy="random", n_trials=4, seed=kept
    )
    assert [t.params for t in again] == [t.params for t in trials]


def test_asynchronous_launches_one_job_per_call_and_keeps_every_worker_busy(tmp_path: Path) -> None:
    import threading
    import time

    live, peak, lock = [0], [0], threading.Lock()

    def slow(p: dict) -> float:  # trial times spread 1-6x: a batch would wait for its slowest
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.01 + 0.05 * p["x"])
        with lock:
            live[0] -= 1
        return quadratic(p)

    launcher = FakeLauncher(tmp_path, slow)
    trials, _ = sweep(tmp_path, launcher, strategy="forest", n_trials=12, batch_size=3, n_initial=3, seed=1)
    assert {len(batch) for batch, _ in launcher.calls} == {1}
    assert sorted(start for _, start in launcher.calls) == list(range(12))  # job numbers unique
    assert [t.status for t in trials] == ["completed"] * 12
    assert peak[0] == 3  # never more than batch_size at once, and all three in use
    assert len({t.params["x"] for t in trials}) == 12  # running trials were pending for the forest


def test_metrics_json_is_copied_into_the_store(tmp_path: Path) -> None:
    class WritesMetrics(FakeLauncher):
        def __call__(self, overrides, initial_job_idx):
            outcomes = super().__call__(overrides, initial_job_idx)
            for i, o in enumerate(outcomes):
                status = "failed" if i == 1 else "completed"
                metrics = {"status": status, "objective": o.value, "final": {"accuracy": 0.9}}
                (self.sweep_dir / str(initial_job_idx + i) / "metrics.json").write_text(
                    json.dumps(metrics)
                )
            return outcomes

    # job 1 returns NaN but its metrics.json says failed: recorded failed, not diverged
    trials, _ = sweep(
        tmp_path,
        WritesMetrics(tmp_path, lambda p: math.nan if p["x"] == 2 else 1.0),
        overrides=["x=1,2"],
        strategy="grid",
        batch_size=2,
        max_failure_rate=1.0,
        asynchronous=False,
    )
    assert trials[0].metrics["final"] == {"accuracy": 0.9}
    assert [t.status for t in trials] == ["completed", "failed"]


def test_grid_runs_all_points_unless_n_trials_is_smaller(tmp_path: Path) -> None:
    trials, _ = sweep(
        tmp_path / "a",
        FakeLauncher(tmp_path / "a", lambda p: p["x"]),
        overrides=["x=1,2,3", "y=a,b"],
        strategy="grid",
    )
    assert [(t.params["x"], t.params["y"]) for t in trials] == [
        (1, "a"),
        (1, "b"),
        (2, "a"),
        (2, "b"),
        (3, "a"),
        (3, "b"),
    ]
    trials, _ = sweep(
        tmp_path / "b",
        FakeLauncher(tmp_path / "b", lambda p: p["x"]),
        overrides=["x=1,2,3", "y=a,b"],
        strategy="grid",
        n_trials=2,
    )
    assert len(trials) == 2


def test_minimize_ranks_the_lowest_value_first(tmp_path: Path) -> None:
    trials, lines = sweep(
        tmp_path,
        FakeLauncher(tmp_path, lambda p: p["x"]),
        overrides=["x=3,1,2"],
        strategy="grid",
        direction="minimize",
    )
    assert yaml.safe_load(open(tmp_path / "best.yaml"))["params"] == {"x": 1}
    assert lines[2].split()[:3] == ["1", "1", "1"]  # rank 1 is trial 1 with value 1


def test_a_store_opened_by_two_drivers_at_once_waits_instead_of_calling_it_damaged(tmp_path, monkeypatch):
    """Two drivers starting at the same instant: setting the SQLite file's journal mode can find
    it locked by the other without waiting (SQLite gives up at once where waiting could
    deadlock). That passes like any held lock; it was once called a damaged store."""
    from fastlab.sweep import store as store_module

    real, tries, pauses = store_module.SqliteDatabase, [], []

    def contended(path, readonly=False):
        tries.append(path)
        if len(tries) == 1:
            raise sqlite3.OperationalError("database is locked")
        return real(path, readonly)

    monkeypatch.setattr(store_module, "SqliteDatabase", contended)
    monkeypatch.setattr(store_module.time, "sleep", pauses.append)
    with TrialStore(tmp_path / "trials.db") as store:
        assert store.trials() == []
    assert len(tries) == 2 and len(pauses) == 1
