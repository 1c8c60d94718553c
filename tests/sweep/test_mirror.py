"""hydra.sweeper.mirror: the study written live into an Optuna storage, for optuna-dashboard.

Through the joblib launcher with the tests' tiny app: ``optuna.load_study`` matches trials.db
(params, distributions, values, states, job dirs, a conditional key absent), a resume after SIGKILL
leaves exactly one Optuna trial per fastlab trial, two drivers on one SQLite and on one PostgreSQL
study write one Optuna study, optuna-dashboard on 127.0.0.1 serves it, and a mirror that cannot be
written warns once while the sweep completes. In process, with a trial store of the test's own:
pruned trials' reports as intermediate values, failed and diverged trials, a trial taken over
from a dead driver or retried after a failure, what a closing driver writes for a dead one, a
mirror that breaks mid-sweep, and the one-line errors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from fastlab.sweep.errors import SweepError
from fastlab.sweep.mirror import open_mirror
from fastlab.sweep.settings import SweepSettings
from fastlab.sweep.space import parse_space
from fastlab.sweep.store import TrialStore, read_sweep, study_name
from tests.sweep.test_drivers import driver, finish
from tests.sweep.test_hydra import rows, run_app

JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
STATE = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL,
         "diverged": TrialState.FAIL, "running": TrialState.RUNNING}


def by_fastlab_number(study: optuna.Study) -> dict[int, list[optuna.trial.FrozenTrial]]:
    out: dict[int, list] = {}
    for o in study.get_trials(deepcopy=False):
        out.setdefault(o.user_attrs["fastlab_trial"], []).append(o)
    return out


def check_mirror(url: str, sweep_dir: Path, n: int) -> optuna.Study:
    """The Optuna study matches trials.db: one Optuna trial per fastlab trial, the same params,
    state, value, job dir and run."""
    study = optuna.load_study(study_name=study_name(sweep_dir), storage=url)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE]
    assert study.metric_names == ["objective"]
    trials = read_sweep(sweep_dir / "trials.db").trials
    assert len(trials) == n
    mirrored = by_fastlab_number(study)
    assert sorted(mirrored) == [t.number for t in trials]
    for t in trials:
        assert len(mirrored[t.number]) == 1, mirrored[t.number]
        o = mirrored[t.number][0]
        assert o.state == STATE[t.status] == TrialState.COMPLETE
        assert o.values == [pytest.approx(t.value)]
        assert o.params == t.params  # a conditional key absent: not set on the Optuna trial
        assert ("y" in o.params) == (t.params["c"] == "b")
        assert isinstance(o.distributions["x"], FloatDistribution)
        assert o.distributions["c"] == CategoricalDistribution(["a", "b", "c"])
        if "y" in o.params:
            assert o.distributions["y"] == IntDistribution(1, 5, step=1)
        assert o.user_attrs["job_dir"] == str(sweep_dir / t.job_dir)
        assert o.user_attrs["fastlab_started"] == t.started_at and o.user_attrs["fastlab_driver"] == t.driver
    assert study.best_value == pytest.approx(max(t.value for t in trials))
    return study


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def check_dashboard(url: str, study: optuna.Study) -> None:
    """optuna-dashboard, as a user starts it, serves the study and its trials on 127.0.0.1."""
    port = free_port()
    cmd = [str(Path(sys.executable).with_name("optuna-dashboard")), url, "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                studies = get_json(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "optuna-dashboard did not start"
                time.sleep(0.2)
        (summary,) = [s for s in studies if s["study_name"] == study.study_name]
        detail = get_json(f"{base}/api/studies/{summary['study_id']}")
        served = {t["number"]: t for t in detail["trials"]}
        assert sorted(served) == [o.number for o in study.trials]
        for o in study.trials:
            t = served[o.number]
            assert t["state"] == "Complete" and t["values"] == [pytest.approx(o.value)]
            assert {p["name"] for p in t["params"]} == set(o.params)
            attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
            assert attrs["job_dir"] == o.user_attrs["job_dir"]
        assert detail["best_trials"][0]["number"] == study.best_trial.number
    finally:
        server.terminate()
        server.wait(timeout=10)


def kill_midway(proc: subprocess.Popen, sweep_dir: Path, url: str) -> None:
    """SIGKILL a driver once two of its trials completed while another runs, in its store and in
    the Optuna study at ``url`` it mirrors to (polled: the kill waits on what it needs seen)."""
    def midway() -> bool:
        with contextlib.suppress(Exception):  # trials.db (or the study) not made yet
            statuses = [t.status for t in read_sweep(sweep_dir / "trials.db").trials]
            if not (statuses.count("completed") >= 2 and "running" in statuses):
                return False
            states = [o.state for o in optuna.load_study(study_name=study_name(sweep_dir), storage=url)
                      .get_trials(deepcopy=False)]
            return states.count(TrialState.COMPLETE) >= 2 and TrialState.RUNNING in states
        return False

    deadline = time.monotonic() + 90
    while not midway():
        assert proc.poll() is None and time.monotonic() < deadline, "the driver never got midway"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)


# ------------------------------------------------------------------ through the joblib launcher
def test_a_sweep_killed_and_resumed_is_one_optuna_trial_per_trial_and_the_dashboard_serves_it(tmp_path) -> None:
    sweep_dir = tmp_path / "sweep"
    url = f"sqlite:///{tmp_path / 'optuna' / 'optuna.db'}"  # its folder made by the mirror
    extra = [*JOBLIB, "hydra.sweeper.n_trials=8", "sleep=0.5", f"hydra.sweeper.mirror='optuna:{url}'"]
    victim = driver(sweep_dir, *extra)
    try:
        kill_midway(victim, sweep_dir, url)
    finally:
        victim.wait()
    # live: what the killed driver wrote is already in the Optuna study
    live = optuna.load_study(study_name=study_name(sweep_dir), storage=url).get_trials(deepcopy=False)
    assert sum(o.state == TrialState.COMPLETE for o in live) >= 2
    assert any(o.state == TrialState.RUNNING for o in live)
    orphans = [t for t in read_sweep(sweep_dir / "trials.db").trials if t.status == "running"]
    assert orphans

    finish([driver(sweep_dir, *extra)])  # the same command again
    study = check_mirror(url, sweep_dir, 8)
    mirrored = by_fastlab_number(study)
    for t in orphans:  # the killed driver's RUNNING trial was taken over: it ran again elsewhere
        assert mirrored[t.number][0].user_attrs["job_dir"] != str(sweep_dir / t.job_dir)
    check_dashboard(url, study)


@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_two_drivers_write_one_optuna_study(tmp_path: Path, storage: str, request) -> None:
    sweep_dir = tmp_path / "sweep"
    extra = [*JOBLIB, "hydra.sweeper.n_trials=8", "sleep=0.3"]
    if storage == "postgresql":  # the fastlab study and its mirror both in PostgreSQL (psycopg 3)
        postgres = request.getfixturevalue("postgres")
        extra.append(f"hydra.sweeper.storage='{request.getfixturevalue('postgres_url')}'")
        url = postgres.fresh_database("mirror_two_drivers").replace("postgresql://", "postgresql+psycopg://")
    else:
        url = f"sqlite:///{tmp_path / 'optuna.db'}"
    extra.append(f"hydra.sweeper.mirror='optuna:{url}'")
    outs = finish([driver(sweep_dir, *extra) for _ in range(2)])
    assert not any("WARNING" in out and "mirror" in out for out in outs), outs
    trials = read_sweep(sweep_dir / "trials.db").trials
    assert len({t.driver for t in trials}) == 2  # both drivers ran trials, and both wrote them
    study = check_mirror(url, sweep_dir, 8)
    assert {o.user_attrs["fastlab_driver"] for o in study.trials} == {t.driver for t in trials}


def test_a_mirror_that_cannot_be_written_warns_once_and_the_sweep_completes(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    (tmp_path / "blocker").write_text("a file where the mirror's folder should be")
    proc = run_app(sweep_dir, *JOBLIB, "hydra.sweeper.n_trials=4", "x=interval(0,1)",
                   f"hydra.sweeper.mirror='optuna:sqlite:///{tmp_path / 'blocker' / 'optuna.db'}'")
    assert [t["status"] for t in rows(sweep_dir)] == ["completed"] * 4
    log = proc.stdout + proc.stderr
    assert log.count("hydra.sweeper.mirror: cannot write the Optuna study") == 1, log
    assert "the sweep goes on" in log and (sweep_dir / "best.yaml").is_file()


# ------------------------------------------------------------------ in process, a store of its own
SPACE = ["lr=tag(log, interval(1e-4, 1))", "n=int(interval(1, 4))", "k=range(1, 9, 2)", "shape=choice([1,2],[3])",
         "c=a,b"]


def settings(tmp_path: Path, **extra) -> SweepSettings:
    values = {"direction": "minimize", "pruner": "asha", "mirror": f"optuna:sqlite:///{tmp_path / 'optuna.db'}"}
    return SweepSettings(**(values | extra))


def params(i: int) -> dict:
    return {"lr": 10.0 ** -(i + 1), "n": i % 4 + 1, "k": 2 * i + 1, "shape": [1, 2], "c": "ab"[i % 2]}


@pytest.fixture
def store(tmp_path: Path):
    """An empty trial store in ``tmp_path/sweep``."""
    with TrialStore(tmp_path / "sweep" / "trials.db") as store:
        yield store


def load(tmp_path: Path, sweep_dir: Path) -> dict[int, list]:
    return by_fastlab_number(optuna.load_study(study_name=study_name(sweep_dir),
                                               storage=f"sqlite:///{tmp_path / 'optuna.db'}"))


def test_states_reports_and_distributions_are_mirrored(tmp_path: Path, store: TrialStore) -> None:
    sweep_dir, space = store.path.parent, parse_space(None, SPACE)
    mirror = open_mirror(settings(tmp_path), space, sweep_dir, "me")
    store.start([(i, params(i), str(i)) for i in range(4)], next_job=4, driver="me")
    mirror.sync(store)
    assert {n: o[0].state for n, o in load(tmp_path, sweep_dir).items()} == dict.fromkeys(range(4),
                                                                                        TrialState.RUNNING)
    for epoch, value in ((1, 0.9), (2, 0.7)):
        store.report(0, epoch, value)
    store.finish(0, "pruned", 0.7, None, None, None, driver="me")
    store.finish(1, "completed", 0.25, None, None, None, driver="me")
    store.finish(2, "failed", None, None, None, "Traceback ...\nRuntimeError: boom", driver="me")
    store.finish(3, "diverged", math.nan, None, None, None, driver="me")
    mirror.sync(store)
    mirror.close(store)
    mirrored = load(tmp_path, sweep_dir)
    assert all(len(o) == 1 for o in mirrored.values())
    pruned, done, failed, diverged = (mirrored[i][0] for i in range(4))
    assert pruned.state == TrialState.PRUNED and pruned.intermediate_values == {1: 0.9, 2: 0.7}
    assert done.state == TrialState.COMPLETE and done.values == [0.25]
    assert failed.state == TrialState.FAIL and failed.user_attrs["fastlab_error"] == "RuntimeError: boom"
    assert diverged.state == TrialState.FAIL and diverged.user_attrs["fastlab_status"] == "diverged"
    assert done.params == {**params(1), "shape": "[1, 2]"}  # a list choice as its JSON text
    assert done.distributions == {
        "lr": FloatDistribution(1e-4, 1, log=True), "n": IntDistribution(1, 4),
        "k": IntDistribution(1, 7, step=2), "shape": CategoricalDistribution(["[1, 2]", "[3]"]),
        "c": CategoricalDistribution(["a", "b"])}
    assert done.user_attrs["job_dir"] == str(sweep_dir / "1")


def test_a_dead_drivers_trials_are_taken_over_or_written_at_close(tmp_path: Path, store: TrialStore,
                                                                  monkeypatch) -> None:
    sweep_dir, space = store.path.parent, parse_space(None, SPACE)
    clock = iter(range(100))  # each write of the store a second later: each run its own started_at
    monkeypatch.setattr("fastlab.sweep.store.now", lambda: f"2030-01-01T00:00:{next(clock):02d}+00:00")
    dead = open_mirror(settings(tmp_path), space, sweep_dir, "dead")
    store.start([(i, params(i), str(i)) for i in range(3)], next_job=3, driver="dead")
    dead.sync(store)
    store.finish(2, "failed", None, None, None, "boom", driver="dead")
    dead.sync(store)
    store.start([(3, params(3), "3")], next_job=4, driver="dead")  # then killed, before its mirror wrote 3
    me = open_mirror(settings(tmp_path), space, sweep_dir, "me")
    store.start([(0, params(0), "4")], next_job=5, driver="me")  # trial 0 run again by this driver
    me.sync(store)
    assert [o.user_attrs["job_dir"] for o in load(tmp_path, sweep_dir)[0]] == [str(sweep_dir / "4")]
    store.finish(0, "completed", 0.5, None, None, None, driver="me")
    me.sync(store)
    # trials 1 and 3: their jobs had finished, so this driver records them for the dead one
    store.finish(1, "completed", 0.4, None, None, None)
    store.finish(3, "completed", 0.3, None, None, None)
    # a failed trial retried (retry_failed): a finished Optuna trial cannot change, so a second one
    store.start([(2, params(2), "5")], next_job=6, driver="me")
    me.sync(store)
    store.finish(2, "completed", 0.2, None, None, None, driver="me")
    me.close(store)
    trials = store.trials()
    mirrored = load(tmp_path, sweep_dir)
    assert [len(mirrored[i]) for i in range(4)] == [1, 1, 2, 1]
    for t in trials:
        (o,) = [o for o in mirrored[t.number] if o.user_attrs["fastlab_started"] == t.started_at
                and o.user_attrs["job_dir"] == str(sweep_dir / t.job_dir)]
        assert o.state == TrialState.COMPLETE and o.values == [t.value]
    assert mirrored[2][0].state == TrialState.FAIL and mirrored[2][0].user_attrs["fastlab_status"] == "failed"


def test_a_run_finished_before_a_sync_wrote_it_is_looked_up_and_written_inside_the_claim(
        tmp_path: Path, store: TrialStore, monkeypatch) -> None:
    # A closing driver writes the finished runs no driver wrote, inside the store's claim; a live
    # driver's own run that finished before its sync wrote it is written inside the claim too, or
    # the two could both find none in the study and create one each.
    sweep_dir, space = store.path.parent, parse_space(None, SPACE)
    me = open_mirror(settings(tmp_path), space, sweep_dir, "me")
    store.start([(0, params(0), "0")], next_job=1, driver="me")
    store.finish(0, "completed", 0.5, None, None, None, driver="me")  # before a sync wrote it
    claim_held, index = [], me._index

    def looked_up(running: bool):
        with contextlib.closing(sqlite3.connect(store.path, timeout=0)) as other:  # another driver's claim
            try:
                other.execute("BEGIN IMMEDIATE")
                other.rollback()
                claim_held.append(False)
            except sqlite3.OperationalError:  # database is locked: the claim is this driver's
                claim_held.append(True)
        return index(running)

    monkeypatch.setattr(me, "_index", looked_up)
    me.sync(store)
    open_mirror(settings(tmp_path), space, sweep_dir, "other").close(store)  # finds it written
    assert claim_held == [True]
    [[o]] = load(tmp_path, sweep_dir).values()
    assert o.state == TrialState.COMPLETE and o.values == [0.5]


def test_a_mirror_that_breaks_mid_sweep_warns_once(tmp_path: Path, caplog) -> None:
    sweep_dir = tmp_path / "sweep"
    with TrialStore(sweep_dir / "trials.db") as store, caplog.at_level(logging.INFO):
        mirror = open_mirror(settings(tmp_path), parse_space(None, SPACE), sweep_dir, "me")
        store.start([(0, params(0), "0")], next_job=1, driver="me")
        mirror.sync(store)
        with sqlite3.connect(tmp_path / "optuna.db") as db:  # someone breaks the mirror's database
            db.execute("DROP TABLE trial_user_attributes")
        store.start([(1, params(1), "1")], next_job=2, driver="me")
        mirror.sync(store)
        store.finish(1, "completed", 0.1, None, None, None, driver="me")
        mirror.sync(store)  # within the pause: not tried
        mirror.close(store)  # tried once more: fails quietly
        assert [t.status for t in store.trials()] == ["running", "completed"]  # the store is untouched
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "fastlab.sweep.mirror"]
    assert len(warnings) == 1 and "cannot write the Optuna study" in warnings[0].getMessage()


def test_a_study_of_another_sweep_is_left_alone(tmp_path: Path, caplog) -> None:
    sweep_dir = tmp_path / "sweep"
    with TrialStore(sweep_dir / "trials.db") as store:
        open_mirror(settings(tmp_path), parse_space(None, SPACE), sweep_dir, "me")
        other = open_mirror(settings(tmp_path), parse_space(None, ["x=interval(0,1)"]), sweep_dir, "me")
        store.start([(0, {"x": 0.5}, "0")], next_job=1, driver="me")
        other.sync(store)
    assert "holds another sweep" in caplog.text and load(tmp_path, sweep_dir) == {}


def test_bad_mirrors_are_one_line(tmp_path: Path, monkeypatch) -> None:
    space = parse_space(None, SPACE)
    for value in ("sqlite:///optuna.db", "optuna:optuna.db", f"optuna:sqlite:///{tmp_path / 'trials.db'}"):
        with pytest.raises(SweepError, match="optuna:STORAGE_URL") as e:
            open_mirror(settings(tmp_path, mirror=value), space, tmp_path, "me")
        assert "\n" not in str(e.value)
    assert "sweep's own trials.db" in str(e.value)
    monkeypatch.setitem(sys.modules, "optuna", None)  # optuna not installed
    with pytest.raises(SweepError, match=r"pip install 'fastlab\[optuna\]'"):
        open_mirror(settings(tmp_path), space, tmp_path, "me")
    assert not (tmp_path / "optuna.db").exists()

