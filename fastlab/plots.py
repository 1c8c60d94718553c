"""Plots written into run dirs (matplotlib with the Agg backend; imported only when plotting)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from fastlab.rundir import atomic_path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    pyplot().close(fig)
    return path


def plot_losses(recorder, path: Path) -> Path:
    """Training loss per batch (raw and smoothed) and validation loss at the end of each epoch."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = range(1, len(recorder.losses) + 1)
    ax.plot(steps, recorder.losses, alpha=0.3, color="C0", label="train (batch)")
    ax.plot(steps, recorder.smooth_losses, color="C0", label="train (smoothed)")
    n_batches = len(recorder.losses) / max(1, len(recorder.history))
    ends = [(row["epoch"] + 1) * n_batches for row in recorder.history if "valid_loss" in row]
    ax.plot(ends, [row["valid_loss"] for row in recorder.history if "valid_loss" in row],
            "o-", color="C1", label="valid")
    ax.set(xlabel="batch", ylabel="loss", yscale="log" if min(recorder.losses, default=1) > 0 else "linear")
    ax.legend()
    return save_figure(fig, path)


def plot_lr(recorder, path: Path) -> Path:
    """The head's learning rate and the momentum at every training batch."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(recorder.lrs)
    ax1.set(xlabel="batch", ylabel="learning rate")
    ax2.plot(recorder.moms, color="C2")
    ax2.set(xlabel="batch", ylabel="momentum")
    fig.tight_layout()
    return save_figure(fig, path)


def show_images(x: torch.Tensor, titles: Sequence[str], path: Path, ncols: int = 8,
                wrong: Sequence[bool] | None = None) -> Path:
    """A grid of uint8 images ``(N, C, H, W)`` with a title each (red where ``wrong``)."""
    plt = pyplot()
    n = len(x)
    ncols = min(ncols, max(n, 1))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.5 * ncols, 1.7 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = x[i].permute(1, 2, 0).numpy()  # (H, W, C)
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
            ax.set_title(str(titles[i]), fontsize=9, color="red" if wrong is not None and wrong[i] else "black")
    return save_figure(fig, path)
