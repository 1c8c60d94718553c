"""trainer.logger: the list, the old spellings, and a missing package (one line, before training)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastlab.callbacks.csv_logger import CSVLogger
from fastlab.callbacks.factory import build_callbacks
from fastlab.callbacks.tensorboard import TensorBoardLogger
from fastlab.config import CallbacksConfig, TrainerConfig, to_run_config
from fastlab.errors import ConfigError
from fastlab.tasks import get_task
from fastlab.tracking.names import parse_loggers
from tests.conftest import compose_cfg

TRAIN = Path(sys.executable).with_name("fastlab-train")
TINY = ["data.size=16", "arch.channels=[8,16]", "arch.head_hidden=16", "schedule.epochs=1",
        "trainer.progress=none", "trainer.plots=false", "trainer.save_model=false"]


@pytest.mark.parametrize("value, csv_logger, loggers", [
    (["csv"], True, ("csv",)),
    (["mlflow", "csv", "tensorboard"], True, ("csv", "tensorboard", "mlflow")),
    ([], True, ()),
    ("none", True, ("csv",)),  # the old string: csv was trainer.callbacks.csv_logger's
    ("tensorboard", True, ("csv", "tensorboard")),
    ("tensorboard", False, ("tensorboard",)),
    (["csv", "mlflow"], False, ("mlflow",)),  # the old switch still turns csv off
])
def test_parse_loggers(value, csv_logger, loggers):
    assert parse_loggers(value, csv_logger) == loggers


@pytest.mark.parametrize("value, message", [
    ("neptune", "trainer.logger='neptune' is not known: use a list of csv, tensorboard, mlflow, wandb"),
    (["csv", "neptune"], "trainer.logger holds 'neptune', not a logger"),
    (3, "trainer.logger=3 is not a list of loggers"),
])
def test_a_bad_logger_is_one_line(value, message):
    with pytest.raises(ConfigError) as e:
        TrainerConfig(logger=value)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_command_line_spellings_compose_and_convert():
    assert to_run_config(compose_cfg()).trainer.loggers == ("csv",)
    assert to_run_config(compose_cfg("trainer.logger=[csv,mlflow]")).trainer.loggers == ("csv", "mlflow")
    assert to_run_config(compose_cfg("trainer.logger=tensorboard")).trainer.loggers == ("csv", "tensorboard")
    assert to_run_config(compose_cfg("trainer.logger=none", "trainer.callbacks.csv_logger=false")).trainer.loggers == ()
    run = to_run_config(compose_cfg("trainer.mlflow.uri=http://host:5000", "trainer.mlflow.experiment=pets"))
    assert (run.trainer.mlflow.uri, run.trainer.mlflow.experiment) == ("http://host:5000", "pets")
    with pytest.raises(ConfigError, match="trainer.mlflow.experiment=''"):
        to_run_config(compose_cfg("trainer.mlflow.experiment=''"))


def test_the_factory_builds_the_listed_loggers(tmp_path):
    cbs = build_callbacks(TrainerConfig(logger=["tensorboard"]), tmp_path, get_task("classify"), {})
    assert [type(cb) for cb in cbs] == [TensorBoardLogger]
    cbs = build_callbacks(TrainerConfig(logger=["csv", "tensorboard"], callbacks=CallbacksConfig()), tmp_path,
                          get_task("classify"), {}, writes=False)
    assert cbs == []  # the other ranks of a data-parallel run log nothing
    assert [type(cb) for cb in build_callbacks(TrainerConfig(), tmp_path, get_task("classify"), {})] == [CSVLogger]


def blocked(tmp_path: Path, module: str) -> dict:
    """An environment in which ``import module`` fails as for a package that is not installed
    (``sys.modules[module] = None``, Python's own way to block an import, set at start-up)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\nsys.modules[{module!r}] = None\n")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
                OMP_NUM_THREADS="1")


def test_a_missing_package_is_one_line_before_training(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run([str(TRAIN), f"hydra.run.dir={run_dir}", "trainer.logger=[csv,mlflow]", *TINY],
                          cwd=tmp_path, env=blocked(tmp_path, "mlflow"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert lines == ["fastlab-train: error: trainer.logger=mlflow needs the mlflow package, which is not "
                     "installed: pip install 'fastlab[mlflow]' (or leave mlflow out of trainer.logger)"]
    assert not (run_dir / "history.csv").exists()  # no epoch was trained


def test_a_sweep_with_a_missing_package_stops_before_its_first_trial(tmp_path):
    sweep_dir = tmp_path / "sweep"
    cmd = [str(TRAIN), "-m", "hydra/sweeper=fastlab", f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.n_trials=2",
           "schedule.lr_max=interval(1e-3, 1e-2)", "trainer.logger=[mlflow]", *TINY]
    proc = subprocess.run(cmd, cwd=tmp_path, env=blocked(tmp_path, "mlflow"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "pip install 'fastlab[mlflow]'" in proc.stderr
    assert not list(sweep_dir.glob("*/metrics.json"))  # no trial ran


def test_a_tensorboard_logger_that_cannot_write_is_one_warning_and_the_run_goes_on(tmp_path, caplog):
    """A log dir that cannot be made (a file in its place: as a full or read-only disk would)."""
    from fastlab.run.train import train
    from tests.conftest import one_thread

    (tmp_path / "tensorboard").write_text("not a dir")
    caplog.set_level("WARNING", logger="fastlab")
    with one_thread():
        metrics = train(compose_cfg("trainer.logger=[csv,tensorboard]"), run_dir=tmp_path)
    assert metrics["status"] == "completed"
    lines = [r.getMessage() for r in caplog.records if "trainer.logger=tensorboard" in r.getMessage()]
    assert len(lines) == 1 and "which goes on" in lines[0]
