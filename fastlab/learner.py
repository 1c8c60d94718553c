"""The Learner: a training loop of small named methods, each wrapped with its events.

Read ``_do_one_batch`` top to bottom for one training step. Everything else (schedules,
recording, progress, stopping on NaN) is a callback reacting to the events in
``fastlab.callbacks.EVENTS``; callbacks steer the loop by raising ``Cancel*Exception``.
"""

from __future__ import annotations

import contextlib
import itertools
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
from fastlab.schedules import (
    Stage,
    discriminative_lrs,
    group_lrs,
    one_cycle_lr,
    one_cycle_mom,
    sched_const,
)

Metric = Callable[[torch.Tensor, torch.Tensor], float]

# Parameters of these stay trainable in frozen groups when train_bn (fast.ai's default): their
# statistics must adapt to the new data even when the weights around them do not move.
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


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
        # what a batch goes through: the model, or its torch.compile'd twin (same parameters)
        self.forward: Callable = model
        self.metrics = dict(metrics or {})
        self.opt_name, self.wd, self.lr_ratio = opt, wd, lr_ratio
        self.lr_scales: list[float] = group_lrs(1.0, len(self.layer_groups), lr_ratio)
        self.train_bn, self.frozen = True, 0
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
        # Where a resumed run re-enters the loop (set by the Checkpointer when it restores).
        self.stage, self.start_epoch, self.start_batch = 0, 0, 0

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
        self.opt = make_optimizer(self.opt_name, param_groups(self.layer_groups, self.wd), lr=1e-3, mom=0.9)

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

    def _do_one_batch(self) -> None:
        with self._autocast():
            self.pred = self.forward(self.xb)  # (B, c)
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

    def fit_stages(self, stages: Sequence[Stage], cbs: Sequence[Callback] = (), start_stage: int = 0) -> None:
        """Run a planned schedule (``fastlab.schedules.plan_stages``): freeze, then fit, per
        stage; epochs are numbered across stages. Stops early on divergence or a stop request.
        A resumed run starts at ``start_stage`` (its Checkpointer restores the rest)."""
        self.stop_requested, self.diverged = False, False
        self.epoch_offset = sum(stage.epochs for stage in stages[:start_stage])
        for k, stage in enumerate(stages):
            if k < start_stage:
                continue
            if self.diverged or self.stop_requested:
                break
            self.stage = k
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
        """Label and top-k probabilities (or the value, for regression) of one image: a path,
        bytes, a PIL image or a uint8 ``(C, size, size)`` tensor, preprocessed as training was."""
        from fastlab.inference import ModelMeta, Predictor

        d = self.data
        meta = ModelMeta(arch=type(self.model).__name__, arch_config={},
                         task="classify" if d.classes else "regress", classes=d.classes,
                         n_in=d.n_channels, n_out=d.c, size=d.size, mean=d.mean, std=d.std)
        return Predictor(self.model, meta, device=str(self.device)).predict(item, top_k)

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
