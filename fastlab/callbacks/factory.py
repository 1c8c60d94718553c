"""build_callbacks: the optional callbacks a run's ``trainer`` config asks for."""

from __future__ import annotations

from pathlib import Path

from fastlab.callbacks.core import Callback
from fastlab.callbacks.csv_logger import CSVLogger
from fastlab.callbacks.early_stopping import EarlyStopping
from fastlab.callbacks.grad_clip import GradientClip
from fastlab.callbacks.mixup import CutMix, MixUp
from fastlab.callbacks.prune import Prune
from fastlab.callbacks.save_best import SaveBestModel
from fastlab.callbacks.tensorboard import TensorBoardLogger
from fastlab.config import TrainerConfig
from fastlab.context import RunContext
from fastlab.distributed import Context
from fastlab.errors import ConfigError
from fastlab.models.meta import ModelMeta
from fastlab.rundir import BEST, HISTORY, TENSORBOARD
from fastlab.tasks import Task, supporting
from fastlab.tracking.names import require_packages


def resolve_monitor(name: str, monitor: str, mode: str, task: Task) -> str:
    """Check ``trainer.callbacks.<name>.monitor`` against what the history records and turn
    ``mode`` "auto" into "min" or "max" from the task; returns the mode."""
    valid = ["valid_loss", "train_loss", *task.metrics]
    if monitor not in valid:
        raise ConfigError(f"trainer.callbacks.{name}.monitor={monitor!r} is not recorded by task={task.name}: "
                          f"use one of {valid}")
    if mode == "auto":  # the schema allows auto, min and max only
        return "max" if task.direction(monitor) == "maximize" else "min"
    return mode


def check_mixable(name: str, alpha: float, task: Task) -> None:
    """``trainer.callbacks.<name>.alpha`` > 0 (``name``: ``mixup`` or ``cutmix``) needs a task that
    supports ``name``: one of images whose targets it can mix (class labels in the loss; masks by
    pasting, for cutmix), never token ids nor table rows."""
    if task.can(name):
        return
    fits = " or ".join(f"task={t}" for t in supporting(name)) or "no registered task"
    raise ConfigError(f"trainer.callbacks.{name}.alpha={alpha} mixes images for {fits}, not task={task.name}: "
                      f"set trainer.callbacks.{name}.alpha=0")


def build_prune(objective: str, context: RunContext, main: bool = True, ctx: Context | None = None) -> Prune | None:
    """The pruning callback of a trial of a fastlab sweep with ``hydra.sweeper.pruner`` set
    (None otherwise: ``context.pruner``). Rank 0 reports through the trial's link, which the edge
    put in ``context``; the other ranks of a data-parallel trial get one without a link, which
    stops when rank 0's does."""
    if context.pruner == "none":
        return None
    ctx = ctx or Context()
    if not main:
        return Prune(None, objective, ctx)
    if context.link is None and not ctx.distributed:  # not a trial the store knows: nothing to report to
        return None
    return Prune(context.link, objective, ctx)


def build_callbacks(trainer_cfg: TrainerConfig, run_dir: Path, task: Task, meta: ModelMeta | dict,
                    writes: bool = True, seed: int = 0, objective: str | None = None,
                    ctx: Context | None = None, context: RunContext | None = None) -> list[Callback]:
    """The callbacks ``trainer.callbacks`` and ``trainer.logger`` ask for, to pass as the
    Learner's ``cbs``. ``meta`` is ``model.pt``'s metadata, saved with the best model too.

    Writes go into ``run_dir``: ``best.pt`` (save_best), ``history.csv`` (logger csv, every
    epoch) and ``tensorboard/`` (logger tensorboard); logger mlflow copies the run to MLflow
    (``fastlab.callbacks.mlflow``), logger wandb to Weights & Biases (``fastlab.callbacks.wandb``;
    a trial of a fastlab sweep, as ``context`` says, joins its sweep's group). With
    ``writes=False`` (the other ranks of a data-parallel run) only the callbacks that steer
    training are built. A logger whose package
    is missing is a ``ConfigError`` naming the extra. ``seed`` (the run's)
    seeds mixup's and cutmix's draws. Raises ``ConfigError`` for a monitor the task does not
    record, or a mixing the task cannot take, before any training.

    ``objective`` (the run's ``task.objective``) turns on pruning in a trial of a fastlab sweep
    with ``hydra.sweeper.pruner`` set (:func:`build_prune`; ``context`` says whether the run is
    one); ``ctx`` is the run's place in a data-parallel run, whose ranks all stop when rank 0 is
    pruned.
    """
    run_dir = Path(run_dir)
    c = trainer_cfg.callbacks
    cbs: list[Callback] = []
    if c.save_best.enabled:
        mode = resolve_monitor("save_best", c.save_best.monitor, c.save_best.mode, task)
        if writes:
            cbs.append(SaveBestModel(run_dir / BEST, meta, c.save_best.monitor, mode))
    if c.early_stopping.enabled:
        es = c.early_stopping
        mode = resolve_monitor("early_stopping", es.monitor, es.mode, task)
        cbs.append(EarlyStopping(es.monitor, mode, es.patience, es.min_delta))
    if objective is not None and (prune := build_prune(objective, context or RunContext(), writes, ctx)) is not None:
        cbs.append(prune)
    if c.grad_clip is not None:
        cbs.append(GradientClip(c.grad_clip))
    # CallbacksConfig refuses both on at once
    if c.mixup.alpha:
        check_mixable("mixup", c.mixup.alpha, task)
        cbs.append(MixUp(c.mixup.alpha, seed))
    if c.cutmix.alpha:
        check_mixable("cutmix", c.cutmix.alpha, task)
        cbs.append(CutMix(c.cutmix.alpha, seed, masks=task.targets == "mask"))
    loggers = trainer_cfg.loggers
    require_packages(loggers)  # a missing package stops here, before any training
    if not writes:  # data-parallel: only rank 0 logs
        return cbs
    if "csv" in loggers:
        cbs.append(CSVLogger(run_dir / HISTORY, list(task.metrics)))
    if "tensorboard" in loggers:
        cbs.append(TensorBoardLogger(run_dir / TENSORBOARD))
    config = meta.config if isinstance(meta, ModelMeta) else meta.get("config")  # the run's resolved config
    if "mlflow" in loggers:
        # imported when asked for; mlflow itself loads only at the first fit
        from fastlab.callbacks.mlflow import MlflowLogger

        cbs.append(MlflowLogger(trainer_cfg.mlflow, run_dir, config))
    if "wandb" in loggers:
        from fastlab.callbacks.wandb import WandbLogger  # wandb itself loads only at the first fit

        cbs.append(WandbLogger(trainer_cfg.wandb, run_dir, config, (context or RunContext()).trial))
    return cbs
