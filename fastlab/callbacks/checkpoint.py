"""Checkpointer: ``last.pt`` after every epoch (and every N steps), and resuming from it.

A resumed run must end with the same weights and history as a run never stopped (on CPU, same
seed). So ``last.pt`` holds everything the rest of the run depends on: the model, the optimiser
(Adam's moments), the grad scaler, the schedule position (stage, epoch, batch and the step count
the scheduler reads), every callback's state (the Recorder's history, EarlyStopping's patience,
SaveBestModel's best value), the random states of torch, numpy and Python, the training
loader's shuffling generator as it was when the current epoch drew its order, and, when it is
written in the middle of a gradient-accumulation group, the gradients accumulated so far.

It also holds the run's record of its processes (:meth:`Checkpointer.processes`): one entry per
start of training (a process, or ``trainer.auto_bs``'s retry within one), what its Learner
counted: ``first_batch`` (the stage, epoch and batch it trained first, null when nothing was
left), ``batches`` (the training batches it ran) and ``lr_find`` (the LR range tests it ran). A
stopped process's entry is the one its last ``last.pt`` holds: the batches after that checkpoint
were trained again by the next. A run that keeps ``last.pt`` (``trainer.save_last``) writes the
record to ``processes.json`` as it ends (or fails), so a resumed run shows that it continued:
its entry starts where ``last.pt`` stood, and the entries' batches and range tests add up to an
unbroken run's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fastlab.callbacks.core import Callback
from fastlab.rng import random_states, restore_random_states
from fastlab.rundir import LAST, PROCESSES, save_checkpoint, write_json

log = logging.getLogger("fastlab")

LAST_CHECKPOINT = LAST  # (fastlab.rundir names a run dir's files)
FORMAT = 1


def _state_callbacks(learn) -> dict:
    """Callbacks that carry state across epochs, by class name (one of each per run)."""
    return {type(cb).__name__: cb for cb in learn.cbs if callable(getattr(cb, "state_dict", None))}


class Checkpointer(Callback):
    """Writes ``path`` (atomically) at the end of every epoch and, with ``every_n_steps``, after
    every that many training batches; with ``resume`` (a loaded ``last.pt``) restores the run at
    the start of the fit of the saved stage.

    ``extra`` is saved as is (the run's config, its planned stages, the LR finder's result):
    what ``fastlab.run.train`` needs to rebuild the run before the loop starts.
    """

    # Last of all at the end of an epoch: the row, the CSV, best.pt and EarlyStopping's count must
    # be part of the saved state. (When EarlyStopping ends the fit it raises first, and the run
    # finishes moments later; a kill in between replays that epoch from the previous checkpoint.)
    order = 95

    def __init__(self, path: str | Path, every_n_steps: int | None = None, extra: dict | None = None,
                 resume: dict | None = None):
        self.path, self.every_n_steps = Path(path), every_n_steps
        self.extra = dict(extra or {})
        self.resume = resume
        # the processes that trained the run before this one, as the last.pt resumed from says
        self.earlier: list[dict] = list(resume.get("processes", [])) if resume is not None else []
        self._epoch_order: torch.Tensor | None = None
        self._pending_losses: list[float] | None = None
        self.saves = 0

    # ------------------------------------------------------------------------------ saving
    def _generator(self) -> torch.Generator | None:
        return getattr(self.learn.data.train, "generator", None)

    def before_train(self) -> None:
        # The shuffling generator before this epoch draws its order: a mid-epoch resume redraws
        # the same order from it.
        gen = self._generator()
        self._epoch_order = gen.get_state() if gen is not None else None
        if self._pending_losses is not None:
            self.learn.recorder._batch_losses = [torch.tensor(x) for x in self._pending_losses]
            self._pending_losses = None

    def after_batch(self) -> None:
        learn = self.learn
        if not learn.training or not self.every_n_steps or learn.loss is None:
            return
        done = learn.iter + 1  # batches of this epoch trained, this one included
        if (learn.train_iter + 1) % self.every_n_steps == 0 and done < learn.n_iter:
            self.save(epoch=learn.epoch, batch=done, train_iter=learn.train_iter + 1, mid_epoch=True)

    def after_epoch(self) -> None:
        learn = self.learn
        epoch = learn.epoch + 1
        if epoch < learn.n_epoch:
            self.save(epoch=epoch, batch=0, train_iter=learn.train_iter)
        else:  # the next stage begins with a fresh optimiser, as it would in an unbroken run
            self.save(epoch=0, batch=0, train_iter=0, stage=learn.stage + 1)

    def save(self, epoch: int, batch: int, train_iter: int, stage: int | None = None,
             mid_epoch: bool = False) -> None:
        learn = self.learn
        gen = self._generator()
        states = random_states(None)
        states["loader"] = self._epoch_order if mid_epoch else (gen.get_state() if gen is not None else None)
        state = {
            "format": FORMAT,
            **self.extra,
            "position": {"stage": learn.stage if stage is None else stage, "epoch": epoch, "batch": batch,
                         "train_iter": train_iter, "epoch_offset": learn.epoch_offset},
            "model": {k: v.detach().cpu() for k, v in learn.model.state_dict().items()},
            "opt": learn.opt.state_dict() if learn.opt is not None else None,
            "scaler": learn.scaler.state_dict(),
            "callbacks": {name: cb.state_dict() for name, cb in _state_callbacks(learn).items()},
            "epoch_losses": learn.recorder.epoch_losses() if mid_epoch else None,
            # in the middle of an accumulation group: its gradients so far, which the resumed run
            # goes on adding to (none at a group's end: the step has used and zeroed them)
            "grads": accumulated_grads(learn) if mid_epoch and not learn.steps_now else None,
            "rng": states,
            "stop_requested": learn.stop_requested,
            "processes": self.processes(learn),
        }
        save_checkpoint(self.path, state)
        self.saves += 1

    def processes(self, learn) -> list[dict]:
        """The run's record of its processes: the earlier ones' entries, then this one's, as
        ``learn`` has counted it so far."""
        first = dict(learn.first_batch) if learn.first_batch is not None else None
        return [*self.earlier, {"first_batch": first, "batches": learn.batches_run, "lr_find": learn.lr_finds}]

    def write_processes(self, learn) -> None:
        """``processes.json`` beside ``last.pt``: the record, as the run ends (or fails)."""
        write_json(self.path.with_name(PROCESSES), {"processes": self.processes(learn)})

    # ----------------------------------------------------------------------------- resuming
    def before_fit(self) -> None:
        if self.resume is not None and self.resume["position"]["stage"] == self.learn.stage:
            self.restore()

    def restore(self) -> None:
        """Load ``resume`` into the learner: called at the start of the saved stage's fit (or
        directly, for a run killed after its last epoch)."""
        state, self.resume = self.resume, None
        learn, pos = self.learn, state["position"]
        learn.model.load_state_dict(state["model"])
        if pos["epoch"] or pos["batch"]:
            # Within a stage: the optimiser carries on. At a stage's start it is new, as freeze_to
            # made it.
            learn.opt.load_state_dict(state["opt"])
        learn.scaler.load_state_dict(state["scaler"])
        if state.get("grads"):
            params = dict(learn.model.named_parameters())
            for name, grad in state["grads"].items():
                params[name].grad = grad.to(params[name].device)
        for name, cb in _state_callbacks(learn).items():
            if name in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][name])
        # At an epoch's start the step count is epochs x batches: recomputed, so that a retry
        # with a smaller batch (trainer.auto_bs) continues the schedule at the same point.
        learn.train_iter = pos["train_iter"] if pos["batch"] else pos["epoch"] * len(learn.data.train)
        learn.start_epoch, learn.start_batch = pos["epoch"], pos["batch"]
        learn.stop_requested = state["stop_requested"]
        self._pending_losses = state["epoch_losses"]
        restore_random_states(state["rng"], self._generator())
        log.info("resumed at stage %d, epoch %d, batch %d", pos["stage"], pos["epoch"] + pos["epoch_offset"], pos["batch"])


def accumulated_grads(learn) -> dict:
    """The gradients an unfinished accumulation group has added up, by parameter name, on the CPU."""
    return {name: p.grad.detach().cpu() for name, p in learn.model.named_parameters() if p.grad is not None}


def read_last(path: Path) -> dict:
    """A ``last.pt``, refused with one line when truncated, foreign or holding code."""
    from fastlab.errors import ConfigError
    from fastlab.models.zoo import load_plain

    state = load_plain(path, ConfigError, what="the last.pt of an interrupted fastlab-train run, or "
                       "trainer.resume=null to start afresh")
    if not isinstance(state, dict) or state.get("format") != FORMAT or "position" not in state:
        raise ConfigError(f"cannot resume from '{path}': it is not a fastlab last.pt (format {FORMAT}); "
                          "use trainer.resume=null to start afresh")
    return state


def find_resume(resume, run_dir: Path) -> tuple[dict | None, Path]:
    """``trainer.resume`` -> (the ``last.pt`` to continue from, or None to start afresh; the run
    dir to write). ``true`` looks in ``run_dir`` and starts afresh when there is nothing to
    resume; a path must hold an interrupted run."""
    from fastlab.errors import ConfigError

    if resume is None or resume is False or str(resume).lower() in ("false", "null", "none", ""):
        return None, run_dir
    explicit = not (resume is True or str(resume).lower() == "true")
    target = Path(str(resume)).expanduser() if explicit else Path(run_dir)
    if target.is_file():
        target = target.parent
    last = target / LAST_CHECKPOINT
    if last.is_file():
        return read_last(last), target
    if _finished(target):
        raise ConfigError(f"trainer.resume: the run in '{target}' has finished (see its metrics.json): "
                          "nothing to resume; start a new run without trainer.resume")
    if explicit:
        raise ConfigError(f"trainer.resume='{resume}': no {LAST_CHECKPOINT} in '{target}': give the run dir of an "
                          "interrupted fastlab-train run, or trainer.resume=null to start afresh")
    return None, run_dir


def _finished(run_dir: Path) -> bool:
    from fastlab.rundir.metrics_json import read_metrics

    try:
        metrics = read_metrics(run_dir)
    except (OSError, ValueError):
        return False
    return metrics is not None and metrics.get("status") in ("completed", "diverged")


def epoch_start_state(path: Path) -> dict | None:
    """``path``'s state when it stands at the start of an epoch (a mid-epoch position cannot
    carry over to another batch size), else None."""
    if not Path(path).is_file():
        return None
    state = read_last(Path(path))
    return state if state["position"]["batch"] == 0 else None
