"""Recorder: per-batch lr, momentum and smoothed loss; per-epoch losses and metrics."""

from __future__ import annotations

import time

import torch

from fastlab.callbacks.core import Callback
from fastlab.metrics import BatchMetric


def momentum_of(group: dict) -> float:
    return group["betas"][0] if "betas" in group else group.get("momentum", 0.0)


class Recorder(Callback):
    """Keeps what a run's history, plots and metrics.json are made of.

    Per batch: ``lrs`` (the head's rate), ``moms``, ``losses`` and ``smooth_losses`` (debiased
    exponential moving average, beta 0.98). Per epoch: ``history``, a list of dicts with keys
    ``epoch, train_loss, valid_loss, <metrics...>, lr, seconds``.
    """

    order = 50
    beta = 0.98

    def __init__(self):
        self.reset()

    def before_fit(self) -> None:
        # The stages of one schedule (learn.epoch_offset > 0) add to the same record.
        if self.learn.epoch_offset == 0:
            self.reset()

    def reset(self) -> None:
        self.lrs: list[float] = []
        self.moms: list[float] = []
        self.losses: list[float] = []
        self.smooth_losses: list[float] = []
        self.history: list[dict] = []
        self.valid_loss: float | None = None
        self._avg, self._count = 0.0, 0
        self.train_seconds = 0.0

    def state_dict(self) -> dict:
        """What a resumed run needs to continue the same record (plain data)."""
        return {"lrs": list(self.lrs), "moms": list(self.moms), "losses": list(self.losses),
                "smooth_losses": list(self.smooth_losses), "history": [dict(r) for r in self.history],
                "avg": self._avg, "count": self._count, "train_seconds": self.train_seconds}

    def load_state_dict(self, state: dict) -> None:
        self.lrs, self.moms = list(state["lrs"]), list(state["moms"])
        self.losses, self.smooth_losses = list(state["losses"]), list(state["smooth_losses"])
        self.history = [dict(r) for r in state["history"]]
        self._avg, self._count, self.train_seconds = state["avg"], state["count"], state["train_seconds"]

    def epoch_losses(self) -> list[float]:
        """The training losses of the batches of this epoch so far."""
        return torch.stack(self._batch_losses).tolist() if self._batch_losses else []

    def before_epoch(self) -> None:
        self._epoch_start = time.perf_counter()
        self._row: dict = {"epoch": self.learn.epoch_offset + self.learn.epoch}

    def before_train(self) -> None:
        self._train_start = time.perf_counter()
        # Losses stay tensors until the epoch ends: no host sync in the per-batch path.
        self._batch_losses: list[torch.Tensor] = []

    def after_batch(self) -> None:
        learn = self.learn
        if learn.loss is None:  # the batch was cancelled before its loss
            return
        if learn.training:
            head = learn.opt.param_groups[-1]
            self.lrs.append(head["lr"])
            self.moms.append(momentum_of(head))
            self._batch_losses.append(learn.loss.detach().float())
        else:
            n = len(learn.yb)
            self._valid_sum += learn.loss.detach().float() * n
            self._valid_n += n
            for metric in self._batch_metrics:
                metric.accumulate(learn.pred.detach(), learn.yb)
            if self._keep_preds:
                self._preds.append(learn.pred.detach().float())
                self._targets.append(learn.yb)

    def after_train(self) -> None:
        losses = torch.stack(self._batch_losses).tolist() if self._batch_losses else []
        for loss in losses:
            self._count += 1
            self._avg = self.beta * self._avg + (1 - self.beta) * loss
            self.smooth_losses.append(self._avg / (1 - self.beta**self._count))
        self.losses.extend(losses)
        self._row["train_loss"] = sum(losses) / len(losses) if losses else float("nan")
        self.train_seconds += time.perf_counter() - self._train_start

    def before_validate(self) -> None:
        self._valid_sum, self._valid_n = torch.zeros(()), 0
        self._preds: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self.valid_loss = None
        metrics = self.learn.metrics.values()
        self._batch_metrics = [m for m in metrics if isinstance(m, BatchMetric)]
        for metric in self._batch_metrics:
            metric.reset()
        # Whole-set predictions are kept only for metrics that need them (not for per-pixel or
        # per-token outputs, which a BatchMetric sums batch by batch).
        self._keep_preds = any(not isinstance(m, BatchMetric) for m in metrics)

    def after_validate(self) -> None:
        if self._valid_n == 0:
            return
        self.valid_loss = float(self._valid_sum) / self._valid_n
        self._row["valid_loss"] = self.valid_loss
        if self._keep_preds:
            preds, targets = torch.cat(self._preds), torch.cat(self._targets)
        for name, metric in self.learn.metrics.items():
            self._row[name] = float(metric.value() if isinstance(metric, BatchMetric) else metric(preds, targets))

    def after_epoch(self) -> None:
        self._row["lr"] = self.lrs[-1] if self.lrs else float("nan")
        self._row["seconds"] = time.perf_counter() - self._epoch_start
        self.history.append(self._row)
