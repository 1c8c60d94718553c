"""The LR finder (fast.ai's learning-rate range test); ``fastlab-lr-find`` runs it on a run's
config (``fastlab.run.find``).

Train for up to ``num_it`` batches while the rate grows exponentially from ``start_lr`` to
``end_lr``; record the debiased smoothed loss (beta 0.98); stop once it exceeds 4x the best.
Everything the run touched (weights, optimiser, random states, the loader's shuffling) is restored
afterwards, so finding a rate never changes the later training of the same seed (fastai #3013).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fastlab.callbacks.core import Callback, CancelFitException, CancelValidException
from fastlab.rng import random_states, restore_random_states

log = logging.getLogger("fastlab")

SUGGESTIONS = ("valley", "steep", "minimum", "slide")


# --------------------------------------------------------------------- suggestions (pure)
def valley(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """The middle-to-late part of the longest stretch where the loss keeps falling: fast.ai's
    default, robust to noise because it needs a sustained descent (longest decreasing
    subsequence, then 1/3 + 1/6 of the way along it)."""
    n = len(losses)
    run = [1] * n  # run[i]: length of the longest decreasing subsequence ending at i
    best_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[i] > run[best_end]:
            best_end = i
    start = best_end - run[best_end]
    third = (best_end - start) / 3
    return float(lrs[max(0, start + int(third) + int(third / 2))])


def steep(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """Where the loss falls fastest per unit of log learning rate."""
    log_lrs = np.log(np.asarray(lrs, dtype=float))
    slopes = np.diff(np.asarray(losses, dtype=float)) / np.diff(log_lrs)
    return float(lrs[int(np.argmin(slopes))])


def minimum(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """A tenth of the rate at the lowest loss (the minimum itself is already too high)."""
    return float(lrs[int(np.argmin(losses))]) / 10


def rise(lrs: Sequence[float], losses: Sequence[float], num_it: int) -> float:
    """The rate where the curve starts to rise: its lowest smoothed loss, on the same trimmed
    curve as :func:`suggest` (the course's second finder reads this point, then divides by 10)."""
    lrs, losses = trimmed(lrs, losses, num_it)
    return float(lrs[int(np.argmin(losses))])


def slide(lrs: Sequence[float], losses: Sequence[float], lr_diff: int = 15, thresh: float = 0.005) -> float:
    """Walk back from the end until the loss gradient ``lr_diff`` points apart stops changing
    (by more than ``thresh``): the rate where the curve has flattened before the blow-up."""
    grad = np.gradient(np.asarray(losses, dtype=float))
    right, left = len(losses) - 1, len(losses) - 1 - lr_diff
    if left < 0:
        return minimum(lrs, losses)
    found = lrs[left]
    while left >= 0 and abs(grad[right] - grad[left]) > thresh:
        found = lrs[left]
        right, left = right - 1, left - 1
    return float(found)


def trimmed(lrs: Sequence[float], losses: Sequence[float], num_it: int) -> tuple[list[float], list[float]]:
    """The curve without its first tenth and last five points (fastai): the start is flat noise
    and the end is the blow-up. A finder that stopped very early keeps all it has."""
    lo, hi = num_it // 10, len(lrs) - 5
    if hi - lo < 5:
        lo, hi = 0, len(lrs)
    return list(lrs[lo:hi]), list(losses[lo:hi])


def suggest(lrs: Sequence[float], losses: Sequence[float], num_it: int) -> dict[str, float]:
    """All suggestions, on the :func:`trimmed` curve."""
    lrs, losses = trimmed(lrs, losses, num_it)
    if len(lrs) < 2:
        raise ValueError("the LR finder recorded fewer than 2 points: give it more iterations or data")
    return {"valley": valley(lrs, losses), "steep": steep(lrs, losses),
            "minimum": minimum(lrs, losses), "slide": slide(lrs, losses)}


# --------------------------------------------------------------------------- the sweep
class LRFinder(Callback):
    """Sets an exponentially growing rate before each optimiser step, records the smoothed loss,
    skips validation, and ends the fit at ``num_it`` steps or when the loss diverges. With
    gradient accumulation a step's point is the mean loss of its group's batches."""

    order = 10

    def __init__(self, start_lr: float, end_lr: float, num_it: int, stop_div: bool, beta: float = 0.98):
        self.start_lr, self.end_lr, self.num_it, self.stop_div, self.beta = start_lr, end_lr, num_it, stop_div, beta
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self._avg, self._best = 0.0, math.inf
        self._group: list[float] = []  # the losses of the current accumulation group's batches

    def before_batch(self) -> None:
        pos = self.learn.opt_step / max(1, self.num_it - 1)
        self.lr = self.start_lr * (self.end_lr / self.start_lr) ** pos
        self.learn.set_hypers(self.lr)

    def after_batch(self) -> None:
        self._group.append(float(self.learn.loss.detach()))
        if not self.learn.steps_now:
            return
        loss, self._group = sum(self._group) / len(self._group), []
        n = len(self.losses) + 1
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smooth = self._avg / (1 - self.beta**n)
        if not math.isfinite(smooth):
            raise CancelFitException
        self.lrs.append(self.lr)
        self.losses.append(smooth)
        self._best = min(self._best, smooth)
        if (self.stop_div and smooth > 4 * self._best) or n >= self.num_it:
            raise CancelFitException

    def before_validate(self) -> None:
        raise CancelValidException


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]  # debiased smoothed loss
    suggestions: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"suggestions": self.suggestions, "lrs": self.lrs, "losses": self.losses}


def _loader_generator(learn) -> torch.Generator | None:
    return getattr(learn.data.train, "generator", None)


def lr_find(learn, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100,
            stop_div: bool = True) -> LRFindResult:
    """Run the range test on ``learn`` and restore it bit for bit afterwards."""
    learn.lr_finds += 1  # what a run's processes.json counts: a resumed run searches nothing again
    if learn.opt is None:
        learn.create_opt()
    saved_model = copy.deepcopy(learn.model.state_dict())
    saved_opt = copy.deepcopy(learn.opt.state_dict())
    saved_scales, saved_states = list(learn.lr_scales), random_states(_loader_generator(learn))
    # Only the finder listens (no history rows, progress lines or divergence verdicts), and the
    # callbacks that batches need to have the right shape (``keep_in_lr_find``: presizing).
    saved_cbs = [cb for cb in learn.cbs if not getattr(cb, "keep_in_lr_find", False)]
    finder = LRFinder(start_lr, end_lr, num_it, stop_div)
    try:
        learn.remove_cbs(saved_cbs)
        learn.lr_finding = True
        learn.lr_scales = [1.0] * len(learn.layer_groups)  # one rate for every group (fastai)
        n_epoch = math.ceil(num_it / max(1, learn.steps_per_epoch()))
        learn.fit(n_epoch, cbs=[finder])
    finally:
        learn.lr_finding = False
        learn.add_cbs(saved_cbs)
        learn.model.load_state_dict(saved_model)
        learn.opt.load_state_dict(saved_opt)
        learn.lr_scales = saved_scales
        restore_random_states(saved_states, _loader_generator(learn))
    result = LRFindResult(finder.lrs, finder.losses)
    result.suggestions = suggest(result.lrs, result.losses, num_it)
    return result


def plot_lr_find(result: LRFindResult, path: Path, picks: dict[str, float] | None = None) -> Path:
    """Smoothed loss against the (log) learning rate, each suggestion marked, and ``picks`` (the
    rates a schedule took from the curve) as vertical lines."""
    from fastlab.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses)
    for i, (name, lr) in enumerate(result.suggestions.items()):
        y = float(np.interp(np.log(lr), np.log(result.lrs), result.losses))
        ax.plot([lr], [y], "o", color=f"C{i + 1}", label=f"{name}: {lr:.2e}")
    for i, (name, lr) in enumerate((picks or {}).items()):
        ax.axvline(lr, color="k", linestyle=("--", ":", "-.")[i % 3], label=f"{name}: {lr:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)")
    ax.legend()
    return save_figure(fig, path)
