"""The sweeper through Hydra, for real: plugin discovery (source tree and an installed wheel),
sweeps of the tests' tiny app with the basic, joblib and submitit_local launchers, SIGKILL of the
driver then resume, and the one-line errors."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "sweep_apps" / "app.py"


def run_app(sweep_dir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the tiny app as a multirun with the fastlab sweeper into ``sweep_dir``."""
    cmd = [sys.executable, str(APP), "-m", f"hydra.sweep.dir={sweep_dir}", *overrides]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run(
        cmd, cwd=sweep_dir.parent, env=env, capture_output=True, text=True, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def killed_mid_sweep(sweep_dir: Path, *overrides: str, completed: int = 2) -> None:
    """Start the tiny app's sweep into ``sweep_dir`` and SIGKILL its driver mid-trial, as a crash
    would stop it: once ``completed`` trials have finished, the moment the running trial's job
    has written its ``marker.txt`` (the app writes it just before its ``sleep``)."""
    cmd = [sys.executable, str(APP), "-m", f"hydra.sweep.dir={sweep_dir}", *overrides]
    driver = subprocess.Popen(cmd, cwd=sweep_dir.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def mid_trial() -> bool:
        if not (sweep_dir / "trials.db").exists():  # sqlite3.connect would create it
            return False
        try:
            trials = rows(sweep_dir)
        except sqlite3.OperationalError:  # the driver has not created the table yet
            return False
        running = [t for t in trials if t["status"] == "running"]
        done = sum(t["status"] == "completed" for t in trials)
        return done >= completed and any((sweep_dir / t["job_dir"] / "marker.txt").exists() for t in running)

    try:
        wait_until(mid_trial, [driver], f"{completed} finished trials and another started")
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()  # a no-op once killed; never leave a driver behind a failed wait
        driver.wait()
    assert driver.returncode == -signal.SIGKILL  # killed, not ended on its own


def rows(sweep_dir: Path) -> list[dict]:
    db = sqlite3.connect(sweep_dir / "trials.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM trials ORDER BY number")]
    finally:
        db.close()


def job_overrides(sweep_dir: Path, job_dir: str) -> list[str]:
    return yaml.safe_load(open(sweep_dir / job_dir / ".hydra" / "overrides.yaml"))


def test_plugin_is_discovered_from_the_source_tree() -> None:
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    names = [f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(Sweeper)]
    assert "hydra_plugins.fastlab_sweeper.fastlab_sweeper.FastlabSweeper" in names
    assert "fastlab.yaml" in ConfigStore.instance().list("hydra/sweeper")


def test_plugin_is_discovered_from_an_installed_wheel(tmp_path: Path) -> None:
    # Build from a copy, so the shared source tree gets no build/ or egg-info.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("fastlab", "hydra_plugins", "conf"):
        shutil.copytree(
            ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [
            *pip,
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            str(src),
            "-w",
            str(tmp_path / "dist"),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("fastlab-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )

    # The editable install puts the repo on sys.path; drop it so only the wheel can be found.
    probe = f"""
import sys
from pathlib import Path
sys.path = [p for p in sys.path if Path(p or '.').resolve() != Path({str(ROOT)!r})]
import inspect
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
found = [p for p in Plugins.instance().discover(Sweeper) if p.__name__ == 'FastlabSweeper']
print(inspect.getfile(found[0]) if found else 'not found')
"""
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().startswith(str(target)), out.stdout + out.stderr


def test_hydra_imports_the_plugin_without_the_heavy_libraries() -> None:
    probe = (
        "import sys; from hydra.core.plugins import Plugins; from hydra.plugins.sweeper import Sweeper; "
        "Plugins.instance().discover(Sweeper); "
        "print(sorted(m for m in ('numpy', 'scipy', 'sklearn', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_basic_launcher_sweep_records_failed_and_diverged_jobs_and_goes_on(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = run_app(
        sweep_dir,
        "hydra.sweeper.strategy=grid",
        "x=0.1,0.2,0.3,0.4",
        "c=b",
        "fail_x=0.2",
        "nan_x=0.3",
    )
    trials = rows(sweep_dir)
    assert [(t["number"], t["status"]) for t in trials] == [
        (0, "completed"),
        (1, "failed"),
        (2, "diverged"),
        (3, "completed"),
    ]
    assert "RuntimeError: boom at x=0.2" in trials[1]["error"]
    assert trials[0]["value"] == pytest.approx(0.9 - 0.2**2 - 0.01 * 2**2 + 0.1)
    assert json.loads(trials[3]["params"]) == {"x": 0.4}
    # every job got the fixed overrides and its own x, in its own dir
    # (in the command line's order, as Hydra's basic sweeper keeps them)
    assert job_overrides(sweep_dir, trials[3]["job_dir"]) == ["x=0.4", "c=b", "fail_x=0.2", "nan_x=0.3"]
    best = yaml.safe_load(open(sweep_dir / "best.yaml"))
    assert best["params"] == {"x": 0.4} and best["overrides"] == ["x=0.4", "c=b", "fail_x=0.2", "nan_x=0.3"]
    assert "best 2 of 4 trials (maximize; 2 completed, 1 diverged, 1 failed)" in proc.stdout
    assert (sweep_dir / "trials.csv").read_text().count("\n") == 5


@pytest.mark.parametrize("asynchronous", [True, False])
def test_joblib_launcher_runs_n_jobs_at_once(tmp_path: Path, asynchronous: bool) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = run_app(
        sweep_dir,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.strategy=forest",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_initial=2",
        "x=interval(0,1)",
        "c=a,b,c",
        "opt=glob(*)",
        f"hydra.sweeper.async={str(asynchronous).lower()}",
    )
    trials = rows(sweep_dir)
    assert [t["status"] for t in trials] == ["completed"] * 4
    assert {json.loads(t["params"])["opt"] for t in trials} <= {"adam", "sgd"}  # a config group
    assert sorted(t["job_dir"] for t in trials) == ["0", "1", "2", "3"]
    log = proc.stdout + proc.stderr
    if asynchronous:  # one job per launch call, two calls at once
        assert all(f"launching trial {n} (job {n})" in log for n in range(4))
        assert log.count("Joblib.Parallel") == 4
    else:
        assert "launching trials 0, 1 (jobs 0-1)" in log and "launching trials 2, 3 (jobs 2-3)" in log


def test_submitit_local_launcher_runs_the_sweep(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run_app(
        sweep_dir,
        "hydra/launcher=submitit_local",
        "hydra.sweeper.batch_size=2",
        "hydra.sweeper.n_trials=2",
        "x=interval(0,1)",
        "y=int(interval(1,5))",
    )
    trials = rows(sweep_dir)
    assert [t["status"] for t in trials] == ["completed"] * 2
    for t in trials:
        params = json.loads(t["params"])
        assert job_overrides(sweep_dir, t["job_dir"]) == [f"x={params['x']!r}", f"y={params['y']}"]


def test_a_sweep_killed_with_sigkill_resumes_to_exactly_n_trials(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    args = ["hydra.sweeper.n_trials=6", "sleep=0.4", "x=interval(0,1)", "c=a,b,c"]
    killed_mid_sweep(sweep_dir, *args, completed=2)

    before = rows(sweep_dir)
    running = [t for t in before if t["status"] == "running"]
    assert len(running) == 1 and len(before) < 6
    completed_before = {t["number"]: t for t in before if t["status"] == "completed"}
    markers_before = {p.parent.name: p.read_text() for p in sweep_dir.glob("*/marker.txt")}
    assert len(markers_before) >= len(completed_before)

    run_app(sweep_dir, *args)  # the same command again
    after = rows(sweep_dir)
    assert [t["number"] for t in after] == list(range(6))
    assert [t["status"] for t in after] == ["completed"] * 6
    for number, t in completed_before.items():
        assert after[number] == t  # kept as it was, not re-run
    lost = after[running[0]["number"]]
    assert lost["params"] == running[0]["params"]  # re-run with the same params...
    assert lost["job_dir"] != running[0]["job_dir"]  # ...in a new job dir
    # job dirs intact: the first run's dirs keep their files; each trial has its own dir
    for name, marker in markers_before.items():
        assert (sweep_dir / name / "marker.txt").read_text() == marker
    assert len({t["job_dir"] for t in after}) == 6
    for t in after:
        x = json.loads(t["params"])["x"]
        assert f"x={x!r}" in job_overrides(sweep_dir, t["job_dir"])


def test_too_many_failures_stop_the_sweep_with_one_line(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = run_app(sweep_dir, "hydra.sweeper.n_trials=8", "x=choice(1)", "fail_x=1", check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("sweep stopped: 3 of 3 trials failed") and "max_failure_rate" in last
    assert len(rows(sweep_dir)) == 3


def test_an_unsupported_form_fails_before_any_trial_with_one_line(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = run_app(sweep_dir, "x=shuffle(choice(1,2))", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "the command-line override 'x=shuffle(choice(1,2))': shuffle(...) is not supported; "
        "the strategy decides the order, drop shuffle"
    )
    assert not [p for p in sweep_dir.iterdir() if p.name.isdigit()] if sweep_dir.exists() else True


def test_an_app_that_gives_no_direction_stops_with_one_line(tmp_path: Path) -> None:
    # The tiny app sets hydra.sweeper.direction in its config; null is what an app without it has.
    sweep_dir = tmp_path / "sweep"
    # (grid and random run such an app's trials unranked, as Hydra's basic sweeper does; the forest
    # needs the way a value is better and says so before the first trial)
    proc = run_app(sweep_dir, "hydra.sweeper.direction=null", "hydra.sweeper.strategy=forest", "x=interval(0,1)",
                   check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "hydra.sweeper.strategy=forest needs each trial's objective, a number, and the way it is better: "
        "return the objective as a float from the task and set hydra.sweeper.direction=maximize or "
        "hydra.sweeper.direction=minimize, or sweep with hydra.sweeper.strategy=grid or random, which also "
        "take a task that returns nothing"
    )
    assert not (sweep_dir / "trials.db").exists()  # nothing ran, nothing recorded
    # given, the same app minimises: the best trial is the lowest value
    run_app(sweep_dir, "hydra.sweeper.direction=minimize", "hydra.sweeper.n_trials=3",
            "x=interval(0,1)")
    values = [t["value"] for t in rows(sweep_dir)]
    assert yaml.safe_load(open(sweep_dir / "best.yaml"))["value"] == min(values)
