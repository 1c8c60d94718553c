"""What a run does differently as a trial of a fastlab sweep: only what the sweep needs.

A study's trials are small (a tenth of a second of training each) and the sweep, not the trial,
is the unit of resume and the record (``trials.db``), so for a trial the defaults drop what only
a run alone needs (``trainer.plots``, ``trainer.save_model``, ``trainer.save_last``: null = on
alone, off in a sweep) and validate only after the last epoch (``trainer.validate=auto``), unless a
callback reads every epoch's validation, or the sweep has a pruner (``hydra.sweeper.pruner``: the
trial reports its objective after every epoch). None of it changes training: a trial's final metrics are
the same run's alone (``tests/sweep/test_trial_equals_run.py``). Set any of them to keep it.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc

from fastlab.config import RunConfig
from fastlab.context import RunContext
from fastlab.errors import ConfigError


def epoch_monitors(run: RunConfig) -> list[str]:
    """The callbacks that read the validation of every epoch."""
    c = run.trainer.callbacks
    return [name for name, on in (("save_best", c.save_best.enabled), ("early_stopping", c.early_stopping.enabled))
            if on]


def trial_profile(run: RunConfig, context: RunContext) -> RunConfig:
    """``run`` with ``trainer``'s auto values settled: for a sweep trial (``context.trial``) or a
    run alone. Refuses ``trainer.validate=final`` with a callback that monitors every epoch, or in a
    sweep whose pruner judges every epoch, in one line."""
    t = run.trainer
    monitors = epoch_monitors(run)
    trial = context.trial is not None
    pruner = context.pruner
    validate = t.validate
    if validate == "auto":
        validate = "final" if trial and not monitors and pruner == "none" else "epoch"
    if validate == "final" and pruner != "none":
        raise ConfigError(f"trainer.validate=final validates after the last epoch only, but "
                          f"hydra.sweeper.pruner={pruner} judges the objective of every epoch: set "
                          f"trainer.validate=epoch (or auto), or hydra.sweeper.pruner=none")
    if validate == "final" and monitors:
        raise ConfigError(f"trainer.validate=final validates after the last epoch only, but "
                          f"trainer.callbacks.{monitors[0]} monitors every epoch: set trainer.validate=epoch "
                          f"(or auto), or disable trainer.callbacks.{monitors[0]}")
    alone = not trial
    settled = dataclasses.replace(
        t, validate=validate,
        plots=alone if t.plots is None else t.plots,
        save_model=alone if t.save_model is None else t.save_model,
        save_last=alone if t.save_last is None else t.save_last)
    return dataclasses.replace(run, trainer=settled)


_quick_exit = False


def exit_without_final_collection() -> None:
    """Let this process (a sweep's driver or worker) end without Python's final garbage
    collection: with torch loaded it walks every object for about 0.5 s, and a sweep waits for its
    workers to end. Registered once; at exit it moves every object out of the collector's reach
    (``gc.freeze``), so none is examined: the operating system frees the memory. Files, logs and
    stores are closed before (explicitly, or by logging's own exit handler, which runs after this
    one)."""
    global _quick_exit
    if not _quick_exit:
        _quick_exit = True
        atexit.register(gc.freeze)

