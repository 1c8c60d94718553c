"""``plots/batch.png``: the run's first training images as its training batches see them, drawn
at the start of a run ("see what the model sees": the augmentation, the presized side, the
targets moved with their images), before any epoch is spent on data that looks wrong."""

from __future__ import annotations

from pathlib import Path

from fastlab.config import RunConfig
from fastlab.data.images.bunch import DataBunch
from fastlab.data.masks.bunch import MaskBunch
from fastlab.learner import Learner


def write_batch_plot(learn: Learner, run: RunConfig, path: Path) -> Path | None:
    """Draw ``learn.data``'s first training images through ``run.aug`` (seeded with ``run.seed``,
    at the side the model sees, ``learn.data.size``: ``data.size``, or ``schedule.sizes``' first)
    into ``path``, and return it; ``None``, drawing nothing, for
    data that is not in-memory images (text, tables, a ``LoaderBunch``, float features).

    Nothing training uses later moves: the stored tensors are read, never iterated through the
    loader (its shuffling generator stays where it was), and the augmentation draws from a
    generator of its own (not the ``Augment`` callback's, not torch's global one)."""
    data = learn.data
    if not isinstance(data, DataBunch | MaskBunch) or data.train.x.ndim != 4:
        return None
    return data.show_batch(path, aug=run.aug, seed=run.seed, size=data.size)
