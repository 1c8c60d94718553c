"""The Learner: a training loop of small named methods, each wrapped with its events.

Read ``_do_one_batch`` top to bottom for one training step. Everything else (schedules,
recording, progress, stopping on NaN) is a callback reacting to the events in
``fastlab.callbacks.EVENTS``; callbacks steer the loop by raising ``Cancel*Exception``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from fastlab.callbacks.core import (
    EVENTS,
    Callback,
    CancelBackwardException,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
)
from fastlab.callbacks.progress import ProgressCallback
from fastlab.callbacks.recorder import Recorder
from fastlab.callbacks.schedule import ParamScheduler
from fastlab.callbacks.terminate import TerminateOnNaN
from fastlab.errors import ConfigError, DataError
from fastlab.optimizer import (
    OPTIMIZERS,
    OptFunc,
    build_optimizer,
    builtin_opt_func,
    check_settings,
    make_optimizer,
    param_groups,
    set_momentum,
)
from fastlab.schedules import (
    Stage,
    discriminative_lrs,
    group_lrs,
    one_cycle_lr,
    one_cycle_mom,
    sched_const,
)

if TYPE_CHECKING:
    from fastlab.models.meta import ModelMeta

Metric = Callable[[torch.Tensor, torch.Tensor], float]

# Parameters of these stay trainable in frozen groups when train_bn (fast.ai's default): their
# statistics must adapt to the new data even when the weights around them do not move.
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def check_data(data) -> None:
    """What the Learner reads from its data (``fastlab.data.base.LearnerData``) must be there."""
    missing = [a for a in ("train", "valid", "device") if not hasattr(data, a)]
    if missing:
        raise DataError(f"the Learner's data ({type(data).__name__}) has no {', '.join(missing)}: pass a DataBunch, "
                        "e.g. DataBunch.from_tensors(x_train, y_train, x_valid, y_valid) or "
                        "DataBunch.from_loaders(train_dl, valid_dl, c=10)")
    for name in ("train", "valid"):
        if not hasattr(getattr(data, name), "__len__"):
            raise DataError(f"data.{name} has no length, which the schedule and progress need: pass a sized "
                            "loader (a torch DataLoader over a map-style dataset)")


class Learner:
    """Binds a model, its data, a loss and metrics, and trains with callbacks.

    Parameters
    ----------
    model : nn.Module
        Maps a batch ``x`` (e.g. images ``(B, C, H, W)``) to predictions ``(B, c)``. If it has
        ``layer_groups()``, those groups (body stages first, head last) get their own rate scale.
    data : LearnerData (see ``fastlab.data.base``)
        ``data.train`` and ``data.valid`` yield ``(x, y)`` batches on ``data.device`` and have a
        length: a ``DataBunch`` (``from_config``, ``from_tensors``, ``from_df``), a
        ``LoaderBunch`` (``DataBunch.from_loaders`` over torch DataLoaders), or your own object.
    loss_func : callable
        ``loss_func(pred, y) -> scalar tensor``.
    metrics : dict of name -> callable
        ``metric(preds (N, c), targets (N,)) -> float`` over the whole validation set.
    opt : {"adamw", "sgd"}
        The built-in optimiser (torch's AdamW or SGD), used unless ``opt_func`` is given.
    wd : float
        Weight decay (decoupled for AdamW) for weights; for biases and norm parameters too only
        with ``wd_bn_bias``.
    lr_ratio : float
        Discriminative rates: layer group ``g`` of ``n`` trains at ``lr / lr_ratio**(n-1-g)``.
    precision : {"32", "bf16-mixed", "16-mixed"}
    cbs : iterable of Callback
        Added to the default Recorder, ProgressCallback and TerminateOnNaN.
    opt_func : callable, optional
        fastai's ``opt_func``: ``opt_func(param_groups, lr=...) -> torch.optim.Optimizer``, e.g.
        ``torch.optim.RAdam`` or ``functools.partial(torch.optim.SGD, nesterov=True, momentum=0.9)``.
        Each param group carries its ``weight_decay`` and a ``layer_group`` tag to keep.
    sqr_mom, eps : float
        The built-in AdamW's beta2 and eps (fast.ai's 0.99 and 1e-5); its beta1, and SGD's
        momentum, follow the schedule's ``moms``. An ``opt_func`` brings its own.
    wd_bn_bias : bool
        Decay biases and norm-layer parameters too (fast.ai's default, and fastlab's: no).
    train_bn : bool
        Norm layers of frozen layer groups keep training (fast.ai's default).
    accumulate : int
        Gradient accumulation: the optimiser steps once every ``accumulate`` training batches,
        each batch's loss scaled by one over the batches of its group, so a group's gradient is
        its batches' mean, as one batch ``accumulate`` times larger would give. An epoch's last
        group may be shorter, and is stepped too. Schedules count optimiser steps
        (:attr:`opt_step`, :meth:`steps_per_epoch`).
    """

    def __init__(self, model: nn.Module, data, loss_func: Callable, metrics: dict[str, Metric] | None = None,
                 opt: str = "adamw", wd: float = 0.01, lr_ratio: float = 1.0, precision: str = "32",
                 progress: str = "auto", cbs: Iterable[Callback] = (), *, opt_func: OptFunc | None = None,
                 sqr_mom: float = 0.99, eps: float = 1e-5, wd_bn_bias: bool = False, train_bn: bool = True,
                 accumulate: int = 1):
        check_data(data)
        if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
            raise ConfigError(f"accumulate must be a positive integer (batches per optimiser step), got {accumulate!r}")
        check_settings(sqr_mom, eps, wd)
        if opt_func is None:
            opt_func = builtin_opt_func(opt, sqr_mom, eps)
        elif (opt, sqr_mom, eps) != ("adamw", 0.99, 1e-5):
            # Silently ignoring them would train with settings the user did not ask for.
            raise ConfigError("opt_func builds its own optimiser, so opt, sqr_mom and eps do not apply: set them "
                              "in opt_func, e.g. functools.partial(torch.optim.AdamW, betas=(0.9, 0.999), eps=1e-8)")
        elif not callable(opt_func):
            raise ConfigError(f"opt_func must be callable as opt_func(param_groups, lr=...), got {opt_func!r}: "
                              "pass e.g. torch.optim.AdamW")
        self.model, self.data, self.loss_func = model, data, loss_func
        # what a batch goes through: the model, or its torch.compile'd twin (same parameters)
        self.forward: Callable = model
        self.metrics = dict(metrics or {})
        self.opt_name, self.opt_func, self.wd, self.lr_ratio = opt, opt_func, wd, lr_ratio
        self.wd_bn_bias = wd_bn_bias
        self.accumulate = accumulate
        # whether the current training batch ends its accumulation group (the optimiser steps after it)
        self.steps_now = True
        self.lr_scales: list[float] = group_lrs(1.0, len(self.layer_groups), lr_ratio)
        self.train_bn, self.frozen = train_bn, 0
        self.stop_requested = False
        self.device = data.device
        self.model.to(self.device)
        self.precision = precision
        self.opt: torch.optim.Optimizer | None = None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "16-mixed")
        self.recorder = Recorder()
        self.cbs: list[Callback] = []
        self.add_cbs([self.recorder, ProgressCallback(progress), TerminateOnNaN(), *cbs])
        self.epoch, self.n_epoch, self.train_iter, self.training = 0, 0, 0, False
        self.epoch_offset, self.diverged = 0, False
        self.total_epochs: int | None = None  # all stages' epochs while fit_stages runs them
        self.lr_finding = False  # set while the LR finder runs (callbacks that stay in it read it)
        # Where a resumed run re-enters the loop (set by the Checkpointer when it restores).
        self.stage, self.start_epoch, self.start_batch = 0, 0, 0
        # What this Learner has done, counted as it happens (a run's processes.json entry: a resumed
        # process is proven to continue by them): the first training batch it ran (stage, epoch,
        # batch), the training batches it ran and the LR range tests (fastlab.lr_find) it ran.
        # The finder's own batches are not training batches.
        self.first_batch: dict | None = None
        self.batches_run, self.lr_finds = 0, 0
        # What model.pt records about the model (set by fastlab.run.prepare): Learner.predict reads with it.
        self.meta: ModelMeta | None = None

    # ------------------------------------------------------------------ callbacks and events
    def add_cbs(self, cbs: Iterable[Callback]) -> None:
        for cb in cbs:
            cb.learn = self
            self.cbs.append(cb)
        self._index_handlers()

    def remove_cbs(self, cbs: Iterable[Callback]) -> None:
        for cb in cbs:
            self.cbs.remove(cb)
        self._index_handlers()

    def _index_handlers(self) -> None:
        # Resolved once per change of callbacks, not per event: events fire ~10 times a batch.
        self.cbs.sort(key=lambda cb: cb.order)
        self._handlers = {e: [m for cb in self.cbs if (m := getattr(cb, e, None)) is not None] for e in EVENTS}

    @contextlib.contextmanager
    def added_cbs(self, cbs: Sequence[Callback]):
        self.add_cbs(cbs)
        try:
            yield
        finally:
            self.remove_cbs(cbs)

    def __call__(self, event: str) -> None:
        for method in self._handlers[event]:
            method()

    def _with_events(self, f: Callable[[], None], name: str, cancel: type[Exception]) -> None:
        try:
            self(f"before_{name}")
            f()
        except cancel:
            pass
        self(f"after_{name}")

    # ---------------------------------------------------------------------- layer groups, opt
    @property
    def layer_groups(self) -> list[nn.Module]:
        groups = getattr(self.model, "layer_groups", None)
        return list(groups()) if callable(groups) else [self.model]

    def group_rates(self, lr: float | slice | Sequence[float]) -> list[float]:
        """Peak rate per layer group (head last): a float spread by ``lr_ratio``, a
        ``slice(lo, hi)`` (fast.ai semantics, see ``discriminative_lrs``) or one rate per group."""
        n = len(self.layer_groups)
        if isinstance(lr, slice):
            return discriminative_lrs([lr.start, lr.stop], n)
        if isinstance(lr, Sequence):
            if len(lr) != n:
                raise ValueError(f"got {len(lr)} rates for {n} layer groups")
            return [float(x) for x in lr]
        return group_lrs(float(lr), n, self.lr_ratio)

    # ------------------------------------------------------------------------------ freezing
    def freeze_to(self, n: int) -> None:
        """Freeze the first ``n`` layer groups (``n < 0`` counts from the end, as in fastai).
        Norm layers keep training when ``train_bn``. The optimiser is rebuilt: its state (Adam's
        moments) belongs to the previous set of trainable parameters."""
        groups = self.layer_groups
        n = max(0, len(groups) + n if n < 0 else min(n, len(groups)))
        for g, module in enumerate(groups):
            for m in module.modules():
                trainable = g >= n or (self.train_bn and isinstance(m, NORM_TYPES))
                for p in m.parameters(recurse=False):
                    p.requires_grad_(trainable)
        self.frozen = n
        self.create_opt()

    def freeze(self) -> None:
        """Train the head only (and the norm layers, with ``train_bn``)."""
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        self.freeze_to(0)

    def create_opt(self) -> None:
        # The rate is a placeholder: fit and the schedulers set every group's before a step.
        self.opt = build_optimizer(self.opt_func, param_groups(self.layer_groups, self.wd, self.wd_bn_bias), lr=1e-3)

    def set_hypers(self, lr: float, mom: float | None = None) -> None:
        """Set the head's rate ``lr`` (other groups scaled by ``lr_scales``) and the momentum."""
        scales = self.lr_scales
        for group in self.opt.param_groups:
            group["lr"] = lr * scales[group["layer_group"]]
            if mom is not None:
                set_momentum(group, mom)

    # ------------------------------------------------------------------------------ the loop
    def _autocast(self):
        if self.precision == "32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16-mixed" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def steps_per_epoch(self, n_batches: int | None = None) -> int:
        """Optimiser steps in an epoch of ``n_batches`` training batches (the training loader's
        length by default): one per ``accumulate`` batches, the last group maybe shorter."""
        n = len(self.data.train) if n_batches is None else n_batches
        return math.ceil(n / self.accumulate)

    @property
    def opt_step(self) -> int:
        """The optimiser steps this fit has taken before the current batch's group: what
        schedules read as their step count. With ``accumulate=1`` it is the batches trained."""
        return self.epoch * self.steps_per_epoch() + self.iter // self.accumulate

    def _group(self) -> tuple[int, bool]:
        """(batches in the current batch's accumulation group, whether the optimiser steps after
        this batch): the group ends after ``accumulate`` batches or at the epoch's last batch."""
        first = self.iter - self.iter % self.accumulate
        size = min(self.accumulate, self.n_iter - first)
        return size, self.iter + 1 == first + size

    def _do_one_batch(self) -> None:
        with self._autocast():
            self.pred = self.forward(self.xb)  # (B, c)
            self("after_pred")
            self.loss = self.loss_func(self.pred, self.yb)  # scalar
        self("after_loss")
        if not self.training:
            return
        group, self.steps_now = self._group()
        try:
            # backward has a before_ event only: EVENTS is closed, and after_backward would be
            # the same moment as before_step.
            self("before_backward")
            # A group's gradient is the mean of its batches' (the recorded loss stays unscaled).
            loss = self.loss if group == 1 else self.loss / group
            self.scaler.scale(loss).backward()
        except CancelBackwardException:
            pass
        if not self.steps_now:  # gradients accumulate; the step events fire once per group
            return
        self._with_events(self._step, "step", CancelStepException)
        self.opt.zero_grad(set_to_none=True)

    def _step(self) -> None:
        # With fp16 the scaler skips a step whose gradients hold inf/NaN; otherwise a plain step.
        self.scaler.step(self.opt)
        self.scaler.update()

    def _one_batch(self, i: int, batch) -> None:
        self.iter = i
        if self.training and not self.lr_finding:
            if self.first_batch is None:
                self.first_batch = {"stage": self.stage, "epoch": self.epoch, "batch": i}
            self.batches_run += 1  # counted as the batch begins: a checkpoint after it holds it
        self.xb, self.yb = batch
        self.pred = self.loss = None  # a cancelled batch leaves no stale values behind
        self._with_events(self._do_one_batch, "batch", CancelBatchException)
        if self.training:
            self.train_iter += 1  # the step count schedulers read; advanced here and only here

    def _all_batches(self) -> None:
        self.n_iter = len(self.dl)
        batches = enumerate(self.dl)
        if self.training and self.start_batch:
            # A run resumed mid-epoch: the same order (the loader's generator was restored), less
            # the batches already trained on.
            batches = itertools.islice(batches, self.start_batch, None)
            self.start_batch = 0
        for i, batch in batches:
            self._one_batch(i, batch)

    def _do_epoch_train(self) -> None:
        self.model.train()
        self.training, self.dl = True, self.data.train
        self._with_events(self._all_batches, "train", CancelTrainException)

    def _do_epoch_validate(self) -> None:
        self.model.eval()
        self.training, self.dl = False, self.data.valid
        with torch.no_grad():
            self._with_events(self._all_batches, "validate", CancelValidException)

    def _do_epoch(self) -> None:
        self._do_epoch_train()
        self._do_epoch_validate()

    def _do_fit(self) -> None:
        start, self.start_epoch = self.start_epoch, 0
        for epoch in range(start, self.n_epoch):
            self.epoch = epoch
            self._with_events(self._do_epoch, "epoch", CancelEpochException)

    def fit(self, n_epoch: int, lr: float | slice | Sequence[float] | None = None,
            cbs: Sequence[Callback] = ()) -> None:
        """Train ``n_epoch`` epochs. With ``lr`` (and no scheduler among ``cbs``) the rates are
        constant; a scheduler sets the head's rate and ``lr_scales`` the others."""
        if self.opt is None:
            self.create_opt()
        if lr is not None:
            rates = self.group_rates(lr)
            self.lr_scales = [r / rates[-1] for r in rates]
            self.set_hypers(rates[-1])
        self.n_epoch, self.train_iter = n_epoch, 0
        with self.added_cbs(list(cbs)):
            self._with_events(self._do_fit, "fit", CancelFitException)

    def fit_one_cycle(self, n_epoch: int, lr_max: float | slice | Sequence[float], div: float = 25.0,
                      div_final: float = 1e5, pct_start: float = 0.25,
                      moms: Sequence[float] = (0.95, 0.85, 0.95), cbs: Sequence[Callback] = ()) -> None:
        """fast.ai's one-cycle policy for every layer group (each at its own peak rate, see
        ``group_rates``); lr and momentum are updated every batch."""
        rates = self.group_rates(lr_max)
        sched = ParamScheduler(lr=one_cycle_lr(rates[-1], div, div_final, pct_start),
                               mom=one_cycle_mom(moms, pct_start))
        self.fit(n_epoch, rates, cbs=[sched, *cbs])

    def fit_constant(self, n_epoch: int, lr: float | slice | Sequence[float], mom: float = 0.9,
                     cbs: Sequence[Callback] = ()) -> None:
        """Constant rates and momentum, set through the same scheduler as every other policy."""
        rates = self.group_rates(lr)
        self.fit(n_epoch, rates, cbs=[ParamScheduler(lr=sched_const(rates[-1]), mom=sched_const(mom)), *cbs])

    def fit_stages(self, stages: Sequence[Stage], cbs: Sequence[Callback] = (), start_stage: int = 0,
                   before_stage: Callable[[int, Stage], Stage] | None = None) -> None:
        """Run a planned schedule (``fastlab.schedules.plan_stages``): freeze, then fit, per
        stage; epochs are numbered across stages. Stops early on divergence or a stop request.
        A resumed run starts at ``start_stage`` (its Checkpointer restores the rest).
        ``before_stage(k, stage)`` runs as stage ``k`` starts and returns the stage to train
        (``fastlab.run.stage_start``: new image sides, rates decided then)."""
        self.stop_requested, self.diverged = False, False
        self.epoch_offset = sum(stage.epochs for stage in stages[:start_stage])
        self.total_epochs = sum(stage.epochs for stage in stages)
        try:
            self._fit_stages(stages, cbs, start_stage, before_stage)
        finally:
            self.total_epochs = None

    def _fit_stages(self, stages: Sequence[Stage], cbs: Sequence[Callback], start_stage: int,
                    before_stage: Callable[[int, Stage], Stage] | None) -> None:
        for k, stage in enumerate(stages):
            if k < start_stage:
                continue
            if self.diverged or self.stop_requested:
                break
            self.stage = k
            if before_stage is not None:
                stage = before_stage(k, stage)
            if stage.pending:
                raise ValueError(f"stage {k} has no rates yet (pending): give fit_stages a before_stage that decides them")
            self.freeze_to(stage.frozen)
            if stage.policy == "constant":
                self.fit_constant(stage.epochs, list(stage.lrs), mom=stage.moms[0], cbs=cbs)
            else:
                self.fit_one_cycle(stage.epochs, list(stage.lrs), div=stage.div, div_final=stage.div_final,
                                   pct_start=stage.pct_start, moms=stage.moms, cbs=cbs)
            self.epoch_offset += stage.epochs

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100,
                stop_div: bool = True):
        """fast.ai's LR range test; weights, optimiser and random state are restored afterwards.
        Returns an ``LRFindResult`` (see ``fastlab.lr_find``)."""
        from fastlab.lr_find import lr_find

        return lr_find(self, start_lr, end_lr, num_it, stop_div)

    # --------------------------------------------------------------------------- inference
    def predict(self, item, top_k: int = 3) -> dict:
        """The answer of the model's task for one input (an image path, bytes, PIL image or uint8
        ``(C, size, size)`` tensor; a text; a table row as a dict), read as training read its data
        (see ``fastlab.inference``). A Learner from ``fastlab.run.prepare`` knows its task
        (``self.meta``, what ``model.pt`` records); one built by hand over images is a classifier
        when its data has classes, else a regression."""
        from fastlab.inference import Predictor

        d = self.data
        meta = self.meta
        if meta is None:
            # Image-only: a predicted file is decoded, resized and normalised as the uint8 training
            # images were, so it needs their size and statistics.
            missing = [a for a in ("c", "n_channels", "size", "mean", "std") if getattr(d, a, None) is None]
            if missing or not hasattr(d, "classes"):
                raise DataError(f"Learner.predict preprocesses images as training did, but the data has no "
                                f"{', '.join(missing or ['classes'])}: train on a uint8 image DataBunch, or call "
                                "learn.model on a prepared batch")
            meta = {"arch": type(self.model).__name__, "arch_config": {}, "task": "classify" if d.classes else "regress",
                    "classes": d.classes, "n_in": d.n_channels, "n_out": d.c, "size": d.size, "mean": d.mean,
                    "std": d.std}
        was_training = self.model.training
        try:
            return Predictor.from_meta(self.model, meta, device=str(self.device)).predict(item, top_k)
        finally:
            self.model.train(was_training)  # predicting mid-training leaves the mode as it was

    def get_preds(self, dl=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and targets over a loader (the validation set by default).

        Returns ``preds (N, c)`` as float32 on the CPU and ``targets (N,)``.
        """
        dl = self.data.valid if dl is None else dl
        self.model.eval()
        preds, targets = [], []
        with torch.no_grad(), self._autocast():
            for xb, yb in dl:
                preds.append(self.model(xb).float().cpu())
                targets.append(yb.cpu())
        return torch.cat(preds), torch.cat(targets)

    def tta(self, dl=None, n: int = 4, beta: float | None = 0.25, aug=None, seed: int = 0,
            kind: str | None = None):
        """fast.ai's test-time augmentation over a loader (the validation set by default): the
        task's activated predictions (class probabilities, values, points) averaged over ``n``
        augmented passes and mixed with the plain pass, ``lerp(aug_mean, plain, beta)``.

        ``aug``: an ``AugConfig`` or ``BatchAugment``; ``None`` tests with the augmentation the
        Learner trains with (its ``Augment`` callback). Draws come from a generator seeded with
        ``seed``, never the training one. ``kind``: ``labels`` or ``points`` (mapped back to the
        original image before averaging), by default the augmentation's. Returns
        ``(preds (N, c), targets (N, ...))`` like :meth:`get_preds`, or ``((aug_mean, plain),
        targets)`` with ``beta=None``; see ``fastlab.tta.tta``.
        """
        from fastlab.tta import tta

        return tta(self, dl, n=n, beta=beta, aug=aug, seed=seed, kind=kind)


__all__ = ["EVENTS", "OPTIMIZERS", "Learner", "make_optimizer", "param_groups", "set_momentum"]
