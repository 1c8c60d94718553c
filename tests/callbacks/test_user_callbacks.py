"""The callbacks users switch on from ``trainer.callbacks``: save best, early stopping, gradient
clipping, CSV and TensorBoard logging, and the factory that builds them from the config."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from fastlab.callbacks import Callback
from fastlab.callbacks.csv_logger import CSVLogger
from fastlab.callbacks.early_stopping import EarlyStopping
from fastlab.callbacks.factory import build_callbacks
from fastlab.callbacks.grad_clip import GradientClip
from fastlab.callbacks.save_best import SaveBestModel
from fastlab.callbacks.tensorboard import TensorBoardLogger
from fastlab.config import CallbacksConfig, EarlyStoppingConfig, SaveBestConfig, TrainerConfig
from fastlab.errors import ConfigError
from fastlab.run.train import train
from fastlab.schedules import Stage
from fastlab.tasks import get_task
from tests.conftest import compose_cfg
from tests.learner.test_learner import make_learner

# SGD at this rate lowers the synthetic regression's validation loss every epoch (higher rates
# overshoot), which the tests below use as a known monitor curve.
LR = 0.003


class Snapshots(Callback):
    """The model's weights at the end of every epoch."""

    order = 60

    def __init__(self):
        self.states = []

    def after_epoch(self):
        self.states.append({k: v.detach().clone() for k, v in self.learn.model.state_dict().items()})


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------- save best


def test_save_best_keeps_the_best_epochs_weights(tmp_path):
    # valid_loss falls every epoch on the synthetic regression: "min" keeps the last epoch,
    # "max" (a stand-in for a metric that peaks early) keeps the first.
    lowest = SaveBestModel(tmp_path / "min.pt", {"arch": "linear"}, "valid_loss", "min")
    highest = SaveBestModel(tmp_path / "max.pt", {"arch": "linear"}, "valid_loss", "max")
    snaps = Snapshots()
    learn = make_learner(lowest, highest, snaps)
    learn.fit(4, lr=LR)
    history = learn.recorder.history
    assert [r["valid_loss"] for r in history] == sorted((r["valid_loss"] for r in history), reverse=True)

    for cb, epoch in ((lowest, 3), (highest, 0)):
        ckpt = torch.load(cb.path, weights_only=True)  # plain data only
        assert cb.best_epoch == epoch and cb.best_value == history[epoch]["valid_loss"]
        assert ckpt["meta"] == {"arch": "linear", "epoch": epoch, "valid_loss": history[epoch]["valid_loss"]}
        assert same_weights(ckpt["state_dict"], snaps.states[epoch])
    assert not list(tmp_path.glob(".*.tmp"))


def test_save_best_ignores_a_missing_or_nan_monitor(tmp_path):
    cb = SaveBestModel(tmp_path / "best.pt", {}, "accuracy", "max")  # not recorded by this learner
    make_learner(cb).fit(2, lr=LR)
    assert cb.best_epoch is None and not (tmp_path / "best.pt").exists()
    with pytest.raises(ValueError, match="mode"):
        SaveBestModel(tmp_path / "best.pt", {}, mode="auto")


# ----------------------------------------------------------------------------- early stopping


@pytest.mark.parametrize("patience, epochs_run", [(0, 2), (1, 2), (2, 3), (3, 4)])
def test_early_stopping_waits_patience_epochs(patience, epochs_run):
    # "max" on a falling valid_loss: epoch 0 is the best, no later epoch improves.
    es = EarlyStopping("valid_loss", "max", patience=patience)
    learn = make_learner(es)
    learn.fit(10, lr=LR)
    assert len(learn.recorder.history) == epochs_run
    assert es.stopped_epoch == epochs_run - 1 and learn.stop_requested


def test_early_stopping_min_delta_and_no_stop():
    es = EarlyStopping("valid_loss", "min", patience=1, min_delta=1e9)  # no fall is big enough
    learn = make_learner(es)
    learn.fit(5, lr=LR)
    assert len(learn.recorder.history) == 2

    patient = EarlyStopping("valid_loss", "min", patience=1)  # falls every epoch: never stops
    learn = make_learner(patient)
    learn.fit(4, lr=LR)
    assert len(learn.recorder.history) == 4 and patient.stopped_epoch is None and not learn.stop_requested


def test_early_stopping_skips_later_stages():
    es = EarlyStopping("valid_loss", "max", patience=0)
    learn = make_learner(es)
    learn.fit_stages([Stage(3, (LR,)), Stage(3, (LR,))])
    assert [r["epoch"] for r in learn.recorder.history] == [0, 1]
    assert learn.stop_requested and es.stopped_epoch == 1


# --------------------------------------------------------------------------- gradient clipping


class GradNorm(Callback):
    """The gradients' global norm right before the optimiser steps (after clipping)."""

    order = 30  # after GradientClip (20)

    def __init__(self):
        self.norms = []

    def before_step(self):
        grads = [p.grad for p in self.learn.model.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_gradient_clip_bounds_the_norm(precision):
    clip, probe = GradientClip(0.01), GradNorm()
    learn = make_learner(clip, probe)
    learn.precision = precision  # the scaler stays disabled: unscale_ must be a no-op
    assert not learn.scaler.is_enabled()
    learn.fit(2, lr=LR)
    assert len(probe.norms) == 6 and max(probe.norms) <= 0.01 * (1 + 1e-4)
    assert clip.last_norm > 0.01  # it really clipped
    with pytest.raises(ValueError, match="max_norm"):
        GradientClip(0)


@pytest.mark.gpu  # fp16 with a GradScaler needs CUDA
def test_gradient_clip_unscales_fp16_gradients():
    from fastlab.learner import Learner
    from tests.learner.test_learner import Linear, SyntheticRegression, mse

    data = SyntheticRegression()
    data.device = torch.device("cuda")
    data.train.batches = [(x.cuda(), y.cuda()) for x, y in data.train.batches]
    data.valid.batches = [(x.cuda(), y.cuda()) for x, y in data.valid.batches]
    probe = GradNorm()
    learn = Learner(Linear(), data, mse, {}, opt="sgd", wd=0.0, precision="16-mixed", progress="none",
                    cbs=[GradientClip(0.01), probe])
    learn.fit(1, lr=LR)
    assert max(probe.norms) <= 0.01 * (1 + 1e-3)  # unscaled: the scale (65536) is not in the norm


# ---------------------------------------------------------------------------------- loggers


class ReadCsv(Callback):
    """history.csv as a watcher sees it at the end of each epoch."""

    order = 80

    def __init__(self, path):
        self.path, self.seen = path, []

    def after_epoch(self):
        with open(self.path) as f:
            self.seen.append(list(csv.DictReader(f)))


def test_csv_logger_rewrites_history_every_epoch(tmp_path):
    path = tmp_path / "history.csv"
    reader = ReadCsv(path)
    learn = make_learner(CSVLogger(path, []), reader)
    learn.fit(3, lr=LR)
    assert [len(rows) for rows in reader.seen] == [1, 2, 3]
    assert list(reader.seen[-1][0]) == ["epoch", "train_loss", "valid_loss", "lr", "seconds"]
    assert [float(r["valid_loss"]) for r in reader.seen[-1]] == [r["valid_loss"] for r in learn.recorder.history]


def test_tensorboard_logger_writes_epoch_and_batch_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = TensorBoardLogger(tmp_path / "tb")
    learn = make_learner(tb)
    learn.fit(2, lr=LR)
    learn.fit(1, lr=LR)  # a second fit (a later stage) continues the steps
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"epoch/train_loss", "epoch/valid_loss", "epoch/lr", "batch/smooth_loss", "batch/lr"} <= tags
    assert [e.step for e in events.Scalars("epoch/valid_loss")] == [0, 1, 2]
    assert [e.step for e in events.Scalars("batch/smooth_loss")] == list(range(9))  # 3 batches x 3 epochs
    history = learn.recorder.history  # the second fit's (a plain fit restarts the Recorder)
    assert events.Scalars("epoch/valid_loss")[-1].value == pytest.approx(history[-1]["valid_loss"])
    assert tb.writer is None  # closed after each fit


# ---------------------------------------------------------------------------------- factory


def test_factory_builds_what_the_config_asks_for(tmp_path):
    cfg = TrainerConfig(logger="tensorboard", callbacks=CallbacksConfig(
        save_best=SaveBestConfig(enabled=True, monitor="accuracy"),
        early_stopping=EarlyStoppingConfig(enabled=True, monitor="valid_loss", patience=2, min_delta=0.01),
        grad_clip=1.0))
    cbs = build_callbacks(cfg, tmp_path, get_task("classify"), {"arch": "cnn"})
    save, stop, clip, log, tb = cbs
    assert isinstance(save, SaveBestModel) and save.mode == "max" and save.path == tmp_path / "best.pt"
    assert save.meta == {"arch": "cnn"}
    assert isinstance(stop, EarlyStopping) and (stop.mode, stop.patience, stop.min_delta) == ("min", 2, 0.01)
    assert isinstance(clip, GradientClip) and clip.max_norm == 1.0
    assert isinstance(log, CSVLogger) and log.path == tmp_path / "history.csv"
    assert log.metric_names == ["accuracy", "error_rate"]
    assert isinstance(tb, TensorBoardLogger) and tb.log_dir == tmp_path / "tensorboard"

    defaults = build_callbacks(TrainerConfig(), tmp_path, get_task("classify"), {})
    assert [type(cb) for cb in defaults] == [CSVLogger]
    explicit = TrainerConfig(callbacks=CallbacksConfig(save_best=SaveBestConfig(enabled=True, monitor="mae", mode="max")))
    assert build_callbacks(explicit, tmp_path, get_task("regress"), {})[0].mode == "max"


@pytest.mark.parametrize("name, task, monitor, listed", [
    ("save_best", "classify", "acc", "'accuracy'"),
    ("early_stopping", "regress", "accuracy", "'rmse'"),
])
def test_factory_refuses_an_unknown_monitor(tmp_path, name, task, monitor, listed):
    cbs = CallbacksConfig()
    getattr(cbs, name).enabled, getattr(cbs, name).monitor = True, monitor
    with pytest.raises(ConfigError) as exc:
        build_callbacks(TrainerConfig(callbacks=cbs), tmp_path, get_task(task), {})
    message = str(exc.value)
    assert f"trainer.callbacks.{name}.monitor={monitor!r}" in message and listed in message
    assert "'valid_loss'" in message and "\n" not in message


def test_callbacks_from_the_command_line(tmp_path):
    """fine_tune (1 frozen epoch, then 3) with early stopping after epoch 1: the second stage
    stops, best.pt holds epoch 0, the logs exist."""
    metrics = train(compose_cfg(
        "schedule=fine_tune", "schedule.epochs=3", "schedule.freeze_epochs=1",
        "trainer.callbacks.save_best.enabled=true", "trainer.callbacks.save_best.mode=max",
        "trainer.callbacks.early_stopping.enabled=true", "trainer.callbacks.early_stopping.mode=max",
        "trainer.callbacks.early_stopping.patience=0", "trainer.callbacks.grad_clip=1.0",
        "trainer.logger=tensorboard"), run_dir=tmp_path)
    assert metrics["status"] == "completed" and metrics["epochs"] == 2 and metrics["stopped_early"]
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 2
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["meta"]["epoch"] == 0 and best["meta"]["arch"] == "cnn" and "config" in best["meta"]
    with open(tmp_path / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
