"""Plots written into run dirs (matplotlib with the Agg backend; imported only when plotting)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from fastlab.data.generated.points import unscale_points
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


def point_pixels(pts: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Points ``(..., 2)`` as ``(x, y)`` in fast.ai's [-1, 1] (``fastlab.data.generated.points``)
    -> ``(column, row)`` in the coordinates ``imshow`` draws an ``h`` x ``w`` image in, where
    pixel ``(r, c)``'s centre is ``(c, r)``: ``unscale_points`` gives continuous coordinates in
    which pixel ``c`` covers ``[c, c + 1)``, so its centre is half a pixel further on."""
    return unscale_points(pts, w, h) - 0.5


def show_images(x: torch.Tensor, titles: Sequence[str], path: Path, ncols: int = 8,
                wrong: Sequence[bool] | None = None, points: torch.Tensor | None = None) -> Path:
    """A grid of uint8 images ``(N, C, H, W)`` with a title each (red where ``wrong``) and, with
    ``points`` ``(N, 2k)`` (``x1, y1, x2, y2, ...`` in [-1, 1]), each image's k points as dots;
    a point outside its image is not drawn (the axes keep the image's extent)."""
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
            if points is not None:
                h, w = img.shape[:2]
                cr = point_pixels(points[i].float().view(-1, 2), h, w)  # (k, 2) as (column, row)
                # A red dot ringed in white reads on dark and light images alike.
                ax.scatter(cr[:, 0].numpy(), cr[:, 1].numpy(), s=30, c="red", edgecolors="white", linewidths=1.0)
                ax.set(xlim=(-0.5, w - 0.5), ylim=(h - 0.5, -0.5))
    return save_figure(fig, path)


def plot_masks(x: torch.Tensor, masks: Sequence[torch.Tensor], titles: Sequence[str], codes: Sequence[str],
               path: Path) -> Path:
    """Rows of images ``(N, 3, H, W)`` uint8: the image, then the image under each of ``masks``
    (each ``(N, H, W)`` code indices, void pixels left clear), with a legend of the codes shown."""
    import numpy as np
    from matplotlib.patches import Patch

    plt = pyplot()
    name = "tab10" if len(codes) <= 10 else "tab20" if len(codes) <= 20 else "gist_ncar"
    cmap = plt.get_cmap(name, len(codes))
    n, ncols = len(x), 1 + len(masks)
    fig, axes = plt.subplots(n, ncols, figsize=(2.2 * ncols, 2.2 * n), squeeze=False)
    shown: set[int] = set()
    for i in range(n):
        img = x[i].permute(1, 2, 0).numpy()  # (H, W, 3)
        for j, ax in enumerate(axes[i]):
            ax.axis("off")
            if j == 0:
                ax.imshow(img)
                ax.set_title("image" if i == 0 else "", fontsize=9)
                continue
            ax.imshow(img, alpha=0.45)  # faded, so the mask's colours read on any background
            m = masks[j - 1][i].numpy()
            void = m >= len(codes)
            shown |= {int(v) for v in np.unique(m[~void])}
            ax.imshow(np.ma.masked_array(m, void), cmap=cmap, vmin=-0.5, vmax=len(codes) - 0.5,
                      alpha=0.7, interpolation="nearest")
            ax.set_title(titles[j - 1] if i == 0 else "", fontsize=9)
    handles = [Patch(color=cmap(k), label=codes[k]) for k in sorted(shown)]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, max(1, len(handles))), fontsize=8,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save_figure(fig, Path(path))
