"""The fast.ai course's rules of thumb, read off a finished run: what went wrong and what to change.

Pure functions. :func:`diagnose` reads the per-epoch history (``history.csv``'s rows) and returns
plain sentences, each naming the symptom and the fix; :func:`dead_filter_fraction` measures how
many conv filters a trained model never switches on. ``fastlab.run.train`` puts the sentences into
``metrics.json["diagnostics"]``.

Epochs are named as ``history.csv`` and ``metrics.json["best"]`` number them: from 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

# Validation loss above this multiple of the first epoch's training loss is "enormous". The first
# epoch's training loss is what a barely trained model scores (about ln(c) for c classes); ending
# ten times worse than that on new data is no longer a generalisation gap but a broken model (in
# the course, lr=0.5 gives a validation loss in the hundreds of thousands). Over-fitting raises
# the validation loss too, but on digits it stays below the first epoch's training loss.
ENORMOUS_RATIO = 10.0

# Validation loss "explodes" when it rises to this multiple of its best earlier value and above
# where it was after the first epoch: a run that goes backwards overall, which is instability,
# not the slow drift of over-fitting (which stays below its first-epoch value).
EXPLODE_RATIO = 10.0

# Training loss above validation loss is the course's sign of under-fitting, but dropout (on while
# training, off while validating) keeps a healthy run's training loss above its validation loss
# too (about 2x on digits with dropout 0.5). So we also ask that training has not yet brought its
# own loss below this fraction of the first epoch's: a healthy digits run gets to under 0.1 of it,
# an under-fitting one (rate 1e-5, or dropout 0.9) stays above 0.5.
UNDERFIT_TRAIN_FRACTION = 0.25

# The objective "clearly" worsened when it gave back more than this fraction of what it had gained
# from the first epoch to its best: the epoch-to-epoch noise of a healthy run on a few hundred
# validation items is a few percent of that gain; memorising noisy labels gives back over half.
OVERFIT_GIVEBACK = 0.1
# ... and stayed worse for at least this many epochs after the best (one bad epoch is a blip).
OVERFIT_MIN_EPOCHS = 2

# A filter is dead when it is positive on at most this fraction of the inputs. A live filter that
# detects one class in ten fires on about a tenth of the inputs; dead ones, after too high a rate
# has driven their batch-norm shift far negative, fire on none (the measured split is bimodal).
DEAD_ACTIVE_MAX = 0.01
# More than this fraction of dead filters means the rate was too high: a healthy run on digits
# has none, a run at lr 0.3-1 loses a fifth to a third of them.
DEAD_FRACTION_MAX = 0.1

LR_FIX = "lower schedule.lr_max (try a tenth) or pick it with fastlab-lr-find"


def _finite(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _lr_too_high(history: Sequence[dict]) -> str | None:
    """Non-finite, enormous or exploding validation loss."""
    for row in history:
        v = row.get("valid_loss")
        if v is not None and not _finite(v):
            return f"validation loss is {v} in epoch {row['epoch']}: the learning rate is too high; {LR_FIX}"
    rows = [r for r in history if _finite(r.get("valid_loss"))]
    if not rows:
        return None
    t0 = history[0].get("train_loss")
    if _finite(t0) and t0 > 0:
        worst = max(rows, key=lambda r: r["valid_loss"])
        if worst["valid_loss"] > ENORMOUS_RATIO * t0:
            return (f"validation loss reached {worst['valid_loss']:.3g} in epoch {worst['epoch']}, over "
                    f"{ENORMOUS_RATIO:g}x the first epoch's training loss ({t0:.3g}): the learning rate is too "
                    f"high; {LR_FIX}")
    first = rows[0]["valid_loss"]
    best = rows[0]
    for row in rows[1:]:
        v = row["valid_loss"]
        if v > EXPLODE_RATIO * best["valid_loss"] and v > first:
            return (f"validation loss exploded from {best['valid_loss']:.3g} (epoch {best['epoch']}) to {v:.3g} "
                    f"(epoch {row['epoch']}): the learning rate is too high; {LR_FIX}")
        if v < best["valid_loss"]:
            best = row
    return None


def _under_fitting(history: Sequence[dict]) -> str | None:
    last = history[-1]
    t, v, t0 = last.get("train_loss"), last.get("valid_loss"), history[0].get("train_loss")
    if not (_finite(t) and _finite(v) and _finite(t0)) or t0 <= 0:
        return None
    if t > v and t > UNDERFIT_TRAIN_FRACTION * t0:
        return (f"final training loss {t:.3g} is above the validation loss {v:.3g} and still {t / t0:.0%} of the "
                f"first epoch's: the model is under-fitting; train more epochs (schedule.epochs) or raise "
                f"schedule.lr_max")
    return None


def _over_fitting(history: Sequence[dict], objective: str, maximize: bool) -> str | None:
    rows = [r for r in history if _finite(r.get(objective))]
    if len(rows) < OVERFIT_MIN_EPOCHS + 1:
        return None
    sign = -1.0 if maximize else 1.0  # compare as "lower is better"
    best = min(rows, key=lambda r: sign * r[objective])
    first, last = rows[0], rows[-1]
    gain = sign * (first[objective] - best[objective])
    loss = sign * (last[objective] - best[objective])
    after = [r for r in rows if r["epoch"] > best["epoch"]]
    if gain <= 0 or len(after) < OVERFIT_MIN_EPOCHS or loss <= OVERFIT_GIVEBACK * gain:
        return None
    return (f"{objective} was best in epoch {best['epoch']} ({best[objective]:.4g}) and worsened to "
            f"{last[objective]:.4g} by epoch {last['epoch']}: the model is over-fitting; stop there "
            f"({best['epoch'] + 1} epochs in all) or regularise more (arch.dropout, schedule.wd, more data)")


def diagnose(history: Sequence[dict], objective: str, direction: str,
             dead_fraction: float | None = None) -> list[str]:
    """The course's rules of thumb applied to a run; one sentence (symptom, then fix) per finding.

    Parameters
    ----------
    history : sequence of dict
        One row per epoch, as the Recorder keeps them: ``epoch, train_loss, valid_loss,
        <metrics...>, lr, seconds``.
    objective : str
        The metric to judge over-fitting by (e.g. ``error_rate``, ``accuracy``, ``valid_loss``).
    direction : {"minimize", "maximize", "min", "max"}
        Which way ``objective`` is better (``Task.direction(objective)``).
    dead_fraction : float, optional
        :func:`dead_filter_fraction` of the trained model.

    Returns
    -------
    list of str
        Empty for a healthy run. In order: learning rate too high (non-finite, enormous or
        exploding validation loss), too many dead filters, under-fitting, over-fitting.
    """
    if direction not in ("minimize", "maximize", "min", "max"):
        raise ValueError(f"direction={direction!r} is not known: use 'minimize' or 'maximize'")
    out: list[str] = []
    lr_msg = _lr_too_high(history) if history else None
    if lr_msg:
        out.append(lr_msg)
    if dead_fraction is not None and _finite(dead_fraction) and dead_fraction > DEAD_FRACTION_MAX:
        out.append(f"{dead_fraction:.0%} of the conv filters are dead (zero for nearly every image of a validation batch): "
                   f"the learning rate is too high; {LR_FIX}")
    if not history:
        return out
    under = _under_fitting(history)
    if under:
        out.append(under)
    # An unstable run's objective jumps about: calling that over-fitting would point to the wrong fix.
    over = None if lr_msg else _over_fitting(history, objective, direction in ("maximize", "max"))
    if over:
        out.append(over)
    return out


def _hooked_relus(model: nn.Module) -> list[nn.Module]:
    """The ReLUs that follow convs: every ``nn.ReLU`` in ``model.body`` when there is one (a
    ``BodyHead``: conv-BN-ReLU stages, or a torchvision ResNet's layers), else in the model."""
    root = getattr(model, "body", None)
    root = root if isinstance(root, nn.Module) else model
    return [m for m in root.modules() if isinstance(m, nn.ReLU)]


def dead_filter_fraction(model: nn.Module, xb: torch.Tensor) -> float:
    """Fraction of conv filters (channels after a ReLU) that are dead on the batch ``xb``.

    A channel of a ReLU output ``(B, C, H, W)`` is dead when it is zero at every position for all
    but at most ``DEAD_ACTIVE_MAX`` of the ``B`` inputs. A ReLU module called more than once per
    forward (torchvision's ``BasicBlock`` reuses its ReLU) counts each call as a layer. Only 4-D
    outputs count: the head's ReLUs act on features, not filters.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode without gradients; its training mode is restored and its hooks removed.
    xb : torch.Tensor
        A normalised batch ``(B, C, H, W)`` on the model's device.

    Returns
    -------
    float
        Dead channels over all hooked channels; 0.0 when the model has no ReLU on a feature map.
    """
    alive: list[torch.Tensor] = []  # per layer call: (C,) fraction of inputs where it fired

    def hook(module: nn.Module, inputs, out: torch.Tensor) -> None:
        if out.dim() == 4:
            # Reduced at once: an in-place op later in the forward may overwrite ``out``.
            alive.append((out > 0).flatten(2).any(dim=2).float().mean(dim=0))  # (B, C, H*W) -> (C,)

    was_training = model.training
    handles = [m.register_forward_hook(hook) for m in _hooked_relus(model)]
    try:
        model.eval()
        with torch.no_grad():
            model(xb)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not alive:
        return 0.0
    fired = torch.cat(alive)  # (total channels,)
    return float((fired <= DEAD_ACTIVE_MAX).float().mean())
