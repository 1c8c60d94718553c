"""Where a run runs is handed to it (``fastlab.context.RunContext``), never read from Hydra's
global state: ``train(cfg)`` from Python, a notebook or another application's multirun (even one
swept by fastlab's sweeper) is a run alone unless its caller says otherwise; ``prepare(run)``
outside ``train`` builds its data with the run's own cache settings."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from fastlab.config import config_dir, to_run_config
from fastlab.context import Keep, RunContext, Trial
from fastlab.data.images.lazy import DiskImages
from fastlab.run.prepare import prepare
from fastlab.run.train import train
from tests.conftest import SMALL, compose_cfg, one_thread

ROOT = Path(__file__).resolve().parents[2]


def alone(run_dir: Path, metrics: dict) -> None:
    """What a run alone leaves (a sweep trial leaves neither model.pt nor an epoch-by-epoch
    validation when nothing reads it)."""
    assert metrics["status"] == "completed"
    assert (run_dir / "model.pt").is_file()
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["valid_loss"] for r in rows)


def test_train_from_python_is_a_run_alone_whatever_hydra_holds(tmp_path):
    """Inside the job of a hydra/sweeper=fastlab multirun of another application, ``train(cfg)``
    without a context is still a run alone: Hydra's global config does not steer it."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        hydra_cfg = compose("train", overrides=[*SMALL, "hydra/sweeper=fastlab", "hydra.mode=MULTIRUN",
                                                "hydra.sweeper.pruner=asha"], return_hydra_config=True)
    hydra = HydraConfig.instance()
    try:
        hydra.set_config(hydra_cfg)
        with one_thread():
            metrics = train(compose_cfg(), run_dir=tmp_path / "run")
    finally:
        hydra.cfg = None
    alone(tmp_path / "run", metrics)


def test_a_trial_context_makes_a_trial(tmp_path):
    """The same run handed a trial's context does only what the sweep needs."""
    context = RunContext(Trial(3, tmp_path, {"pruner": "none"}), keep=Keep(active=True))
    with one_thread():
        metrics = train(compose_cfg(), run_dir=tmp_path / "trial", context=context)
    assert metrics["status"] == "completed" and not (tmp_path / "trial" / "model.pt").exists()
    assert context.keep.count("image source") == 1 and context.keep.count("code") == 1


FOREIGN_APP = """
from pathlib import Path
import hydra, torch
from hydra.core.hydra_config import HydraConfig
from fastlab.config import config_dir, register_configs
from fastlab.run.train import train

torch.set_num_threads(1)
register_configs()

@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def app(cfg) -> float:
    return train(cfg, run_dir=Path(HydraConfig.get().runtime.output_dir) / "fastlab")["objective"]

app()
"""


def test_train_inside_another_applications_fastlab_swept_multirun_runs_alone(tmp_path):
    """Another application's Hydra app, swept by hydra/sweeper=fastlab, calls ``train(cfg)``:
    its jobs are that application's trials, and each fastlab run inside them is a run alone."""
    app = tmp_path / "app.py"
    app.write_text(FOREIGN_APP)
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, str(app), "-m", "hydra/sweeper=fastlab", f"hydra.sweep.dir={sweep_dir}",
                           "hydra.sweeper.strategy=grid", "hydra.sweeper.direction=maximize", "seed=0,1", *SMALL],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for job in ("0", "1"):
        run_dir = sweep_dir / job / "fastlab"
        alone(run_dir, json.loads((run_dir / "metrics.json").read_text()))


def test_prepare_outside_train_uses_the_runs_own_cache_settings(tmp_path, image_dirs):
    """``prepare(run)`` called on its own (as a script or notebook does) keeps decoded images where
    the run's ``paths.cache`` says, not in the schemas' default folder."""
    cache = tmp_path / "my_cache"
    run = to_run_config(compose_cfg("data=folder", f"data.path={image_dirs['per_class']}", "data.cache=disk",
                                    f"paths.cache={cache}"))
    prep = prepare(run)
    assert isinstance(prep.data.train.x, DiskImages)
    assert len(list(cache.glob("*.npy"))) == 1  # the run's own folder (before: outputs/cache, whatever it said)


def test_print_config_is_off_for_a_sweep_trial(tmp_path, capsys):
    context = RunContext(Trial(0, tmp_path, {"pruner": "none"}))
    with one_thread():
        train(compose_cfg("schedule.epochs=1", "trainer.print_config=true"), run_dir=tmp_path / "t", context=context)
    assert "── trainer" not in capsys.readouterr().out
    with one_thread():
        train(compose_cfg("schedule.epochs=1", "trainer.print_config=true"), run_dir=tmp_path / "r")
    assert "── trainer" in capsys.readouterr().out
