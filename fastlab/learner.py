"""The Learner: a training loop of small named methods, each wrapped with its events.

Read ``_do_one_batch`` top to bottom for one training step. Everything else (schedules,
recording, progress, stopping on NaN) is a callback reacting to the events in
``fastlab.callbacks.EVENTS``; callbacks steer the loop by raising ``Cancel*Exception``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence

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
from fastlab.schedules import group_lrs, one_cycle_lr, one_cycle_mom, sched_const

Metric = Callable[[torch.Tensor, torch.Tensor], float]


def _is_no_decay(name: str, p: nn.Parameter) -> bool:
    # Biases and norm-layer parameters (1-D) are not decayed: fast.ai's wd_bn_bias=False.
    return p.ndim <= 1 or name.endswith(".bias")


def param_groups(groups: Sequence[nn.Module], wd: float) -> list[dict]:
    """One optimiser param group per (layer group, decay or not), tagged with ``layer_group`` so
    schedulers can scale each layer group's rate. Parameters shared by two groups count once."""
    seen: set[int] = set()
    out = []
    for g, module in enumerate(groups):
        decay, no_decay = [], []
        for name, p in module.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if _is_no_decay(name, p) else decay).append(p)
        for params, group_wd in ((decay, wd), (no_decay, 0.0)):
            if params:
                out.append({"params": params, "weight_decay": group_wd, "layer_group": g})
    return out


def make_optimizer(name: str, groups: list[dict], lr: float, mom: float) -> torch.optim.Optimizer:
    """AdamW (momentum = beta1) or SGD with momentum, from torch.optim."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(mom, 0.99), eps=1e-5)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=mom)
    raise ValueError(f"unknown optimiser {name!r}: use adamw or sgd")


def set_momentum(group: dict, mom: float) -> None:
    if "betas" in group:
        group["betas"] = (mom, group["betas"][1])
    else:
        group["momentum"] = mom


class Learner:
    """Binds a model, a DataBunch, a loss and metrics, and trains with callbacks.

    Parameters
    ----------
    model : nn.Module
        Maps a batch ``(B, C, H, W)`` to predictions ``(B, c)``. If it has ``layer_groups()``,
        those groups (body stages first, head last) get their own learning-rate scale.
    data : DataBunch
        ``data.train`` and ``data.valid`` yield ``(x, y)`` batches on ``data.device``.
    loss_func : callable
        ``loss_func(pred, y) -> scalar tensor``.
    metrics : dict of name -> callable
        ``metric(preds (N, c), targets (N,)) -> float`` over the whole validation set.
    opt : {"adamw", "sgd"}
    wd : float
        Decoupled weight decay for weights (not biases or norm parameters).
    lr_ratio : float
        Discriminative rates: layer group ``g`` of ``n`` trains at ``lr / lr_ratio**(n-1-g)``.
    precision : {"32", "bf16-mixed", "16-mixed"}
    cbs : iterable of Callback
        Added to the default Recorder, ProgressCallback and TerminateOnNaN.
    """

    def __init__(self, model: nn.Module, data, loss_func: Callable, metrics: dict[str, Metric] | None = None,
                 opt: str = "adamw", wd: float = 0.01, lr_ratio: float = 1.0, precision: str = "32",
                 progress: str = "auto", cbs: Iterable[Callback] = ()):
        self.model, self.data, self.loss_func = model, data, loss_func
        self.metrics = dict(metrics or {})
        self.opt_name, self.wd, self.lr_ratio = opt, wd, lr_ratio
        self.device = data.device
        self.model.to(self.device)
        self.precision = precision
        self.opt: torch.optim.Optimizer | None = None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "16-mixed")
        self.recorder = Recorder()
        self.cbs: list[Callback] = []
        self.add_cbs([self.recorder, ProgressCallback(progress), TerminateOnNaN(), *cbs])
        self.epoch, self.n_epoch, self.train_iter, self.training = 0, 0, 0, False

    # ------------------------------------------------------------------ callbacks and events
    def add_cbs(self, cbs: Iterable[Callback]) -> None:
        for cb in cbs:
            cb.learn = self
            self.cbs.append(cb)
        self.cbs.sort(key=lambda cb: cb.order)

    def remove_cbs(self, cbs: Iterable[Callback]) -> None:
        for cb in cbs:
            self.cbs.remove(cb)

    @contextlib.contextmanager
    def added_cbs(self, cbs: Sequence[Callback]):
        self.add_cbs(cbs)
        try:
            yield
        finally:
            self.remove_cbs(cbs)

    def __call__(self, event: str) -> None:
        for cb in self.cbs:
            method = getattr(cb, event, None)
            if method is not None:
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

    def lr_scales(self) -> list[float]:
        """Each layer group's rate as a fraction of the head's (the last group's)."""
        return group_lrs(1.0, len(self.layer_groups), self.lr_ratio)

    def create_opt(self) -> None:
        self.opt = make_optimizer(self.opt_name, param_groups(self.layer_groups, self.wd), lr=1e-3, mom=0.9)

    def set_hypers(self, lr: float, mom: float | None = None) -> None:
        """Set the head's rate ``lr`` (other groups scaled by ``lr_scales``) and the momentum."""
        scales = self.lr_scales()
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

    def _do_one_batch(self) -> None:
        with self._autocast():
            self.pred = self.model(self.xb)  # (B, c)
            self("after_pred")
            self.loss = self.loss_func(self.pred, self.yb)  # scalar
        self("after_loss")
        if not self.training:
            return
        try:
            # backward has a before_ event only: EVENTS is closed, and after_backward would be
            # the same moment as before_step.
            self("before_backward")
            self.scaler.scale(self.loss).backward()
        except CancelBackwardException:
            pass
        self._with_events(self._step, "step", CancelStepException)
        self.opt.zero_grad(set_to_none=True)

    def _step(self) -> None:
        # With fp16 the scaler skips a step whose gradients hold inf/NaN; otherwise a plain step.
        self.scaler.step(self.opt)
        self.scaler.update()

    def _one_batch(self, i: int, batch) -> None:
        self.iter = i
        self.xb, self.yb = batch
        self.pred = self.loss = None  # a cancelled batch leaves no stale values behind
        self._with_events(self._do_one_batch, "batch", CancelBatchException)
        if self.training:
            self.train_iter += 1  # the step count schedulers read; advanced here and only here

    def _all_batches(self) -> None:
        self.n_iter = len(self.dl)
        for i, batch in enumerate(self.dl):
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
        for epoch in range(self.n_epoch):
            self.epoch = epoch
            self._with_events(self._do_epoch, "epoch", CancelEpochException)

    def fit(self, n_epoch: int, lr: float | None = None, cbs: Sequence[Callback] = ()) -> None:
        """Train ``n_epoch`` epochs. With ``lr`` (and no scheduler among ``cbs``) the rate is
        constant; discriminative scales apply either way."""
        if self.opt is None:
            self.create_opt()
        if lr is not None:
            self.set_hypers(lr)
        self.n_epoch, self.train_iter = n_epoch, 0
        with self.added_cbs(list(cbs)):
            self._with_events(self._do_fit, "fit", CancelFitException)

    def fit_one_cycle(self, n_epoch: int, lr_max: float, div: float = 25.0, div_final: float = 1e5,
                      pct_start: float = 0.25, moms: Sequence[float] = (0.95, 0.85, 0.95),
                      cbs: Sequence[Callback] = ()) -> None:
        """fast.ai's one-cycle policy; lr and momentum are updated every batch."""
        sched = ParamScheduler(lr=one_cycle_lr(lr_max, div, div_final, pct_start),
                               mom=one_cycle_mom(moms, pct_start))
        self.fit(n_epoch, cbs=[sched, *cbs])

    def fit_constant(self, n_epoch: int, lr: float, mom: float = 0.9,
                     cbs: Sequence[Callback] = ()) -> None:
        """A constant rate and momentum, set through the same scheduler as every other policy."""
        self.fit(n_epoch, cbs=[ParamScheduler(lr=sched_const(lr), mom=sched_const(mom)), *cbs])

    # --------------------------------------------------------------------------- inference
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


__all__ = ["EVENTS", "Learner", "make_optimizer", "param_groups"]
