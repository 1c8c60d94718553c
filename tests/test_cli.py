"""``fastlab-train`` as a user runs it: in a subprocess, from another working directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SMALL

BIN = Path(sys.executable).parent


def run_cli(args, cwd, env=None, module=False):
    cmd = [sys.executable, "-m", "fastlab.cli.train", *args] if module else [str(BIN / "fastlab-train"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def job_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("metrics.json"))


def test_cli_run_writes_its_run_dir_under_cwd(tmp_path):
    out = run_cli(SMALL, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (run_dir,) = job_dirs(tmp_path / "outputs" / "runs")
    assert f"run dir: {run_dir}" in out.stdout
    assert {"metrics.json", "history.csv", "model.pt", ".hydra"} <= {p.name for p in run_dir.iterdir()}
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"


def test_cli_folder_resnet18(tmp_path, image_dirs):
    out = run_cli(["data=folder", f"data.path={image_dirs['imagenet']}", "arch=resnet18",
                   "schedule.epochs=2", "data.size=32", "trainer.plots=false"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (run_dir,) = job_dirs(tmp_path / "outputs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2 and metrics["layer_groups"] == 3


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["data=folder", "data.path=/no/such/dir"], "data.path '/no/such/dir' is not a folder"),
        (["data.bs=0"], "data.bs must be a positive integer"),
        (["schedule.lr_max=-1"], "schedule.lr_max must be a positive finite number"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, fragment):
    out = run_cli(args, cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("fastlab-train: error:")
    assert "Traceback" not in out.stdout + out.stderr


def test_cli_misspelt_key_is_refused_by_hydra(tmp_path):
    out = run_cli(["data.bz=32"], cwd=tmp_path)
    assert out.returncode != 0 and "bz" in out.stderr
    assert not (tmp_path / "outputs" / "runs").exists() or not job_dirs(tmp_path / "outputs")


def test_multirun_survives_a_diverging_trial(tmp_path):
    out = run_cli(["-m", *SMALL, "schedule.lr_max=1e-2,1e3"], cwd=tmp_path, module=True)
    assert out.returncode == 0, out.stderr
    statuses = sorted(json.loads((d / "metrics.json").read_text())["status"] for d in job_dirs(tmp_path / "outputs" / "sweeps"))
    assert statuses == ["completed", "diverged"]


def test_regular_wheel_install_runs_from_anywhere(tmp_path):
    """Build a wheel, install it into a fresh target dir, and run it with the source tree out of
    reach: the configs must come from inside the installed package."""
    repo = Path(__file__).resolve().parents[1]
    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(wheels), str(repo)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("fastlab-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                              str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    assert (target / "fastlab" / "conf" / "train.yaml").is_file()
    probe = ("import fastlab.config as c, fastlab.cli.train as t, sys; print(c.__file__); print(c.config_dir()); "
             "sys.argv=['fastlab-train', *sys.argv[1:]]; t.main()")
    out = subprocess.run([sys.executable, "-c", probe, *SMALL], cwd=work, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(target)})
    assert out.returncode == 0, out.stderr
    module_file, conf = out.stdout.splitlines()[:2]
    assert module_file.startswith(str(target)) and conf == str(target / "fastlab" / "conf")
    assert len(job_dirs(work / "outputs" / "runs")) == 1


def test_joblib_multirun_shares_the_cores_among_its_jobs(tmp_path):
    """Two jobs side by side get half the cores each instead of all of them each."""
    out = run_cli(["-m", *SMALL, "schedule.epochs=1", "seed=0,1", "hydra/launcher=joblib",
                   "hydra.launcher.n_jobs=2"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    dirs = job_dirs(tmp_path / "outputs" / "sweeps")
    want = max(1, (os.cpu_count() or 1) // 2)
    assert len(dirs) == 2
    assert all(json.loads((d / "metrics.json").read_text())["threads"] == want for d in dirs)


def test_help_names_each_app_by_its_command():
    for app in ("fastlab-train", "fastlab-lr-find"):
        out = subprocess.run([str(BIN / app), "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[0] == f"{app} is powered by Hydra.", out.stdout[:200]


def test_print_config_shows_the_composed_config_as_a_tree(tmp_path):
    out = run_cli([f"hydra.run.dir={tmp_path}/run", *SMALL, "schedule.epochs=1", "trainer.print_config=true",
                   "data.bs=48"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "config"
    for group in ("data", "arch", "schedule", "task", "trainer", "aug", "paths"):
        assert any(line.rstrip().endswith("── " + group) for line in lines), (group, out.stdout[:3000])
    assert any("bs: 48" in line for line in lines) and any("seed: 0" in line for line in lines)
    quiet = run_cli([f"hydra.run.dir={tmp_path}/quiet", *SMALL, "schedule.epochs=1"], cwd=tmp_path)
    assert quiet.returncode == 0 and "── trainer" not in quiet.stdout
