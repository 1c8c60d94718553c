"""LoaderBunch: any torch DataLoaders (or sized iterables of ``(x, y)`` batches) as a Learner's data.

fastai's ``DataLoaders(train_dl, valid_dl)``: fastlab does not batch, augment or normalise here,
it only moves each batch to the device. ``DataBunch.from_loaders`` builds one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from fastlab.errors import DataError


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors (alone, or nested in tuples, lists and dicts) moved to ``device``; the rest as it is.
    A pinned tensor (``DataLoader(pin_memory=True)``) is copied without blocking."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=device.type == "cuda" and obj.is_pinned())
    if isinstance(obj, tuple | list):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


class DeviceLoader:
    """One split's batches from ``dl``, each an ``(x, y)`` pair moved to ``device``.

    ``x`` is whatever the model takes (e.g. ``(B, C, H, W)``, or a tuple of tensors) and ``y``
    what the loss takes; ``len`` is ``len(dl)``. ``generator`` is the DataLoader's own, when it was
    given one, so that checkpoints and ``lr_find`` keep its shuffling order.
    """

    def __init__(self, dl: Iterable, device: torch.device, split: str):
        if not hasattr(dl, "__len__"):
            raise DataError(f"the {split} loader has no length, which the schedule needs: use a DataLoader over a "
                            "map-style dataset (or give your iterable a __len__)")
        self.dl, self.device, self.split = dl, device, split

    @property
    def generator(self) -> torch.Generator | None:
        return getattr(self.dl, "generator", None)

    def __len__(self) -> int:
        return len(self.dl)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for batch in self.dl:
            if not isinstance(batch, tuple | list) or len(batch) != 2:
                kind = f"a {type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, tuple | list) else "")
                raise DataError(f"a {self.split} batch is {kind}, not an (x, y) pair: make the dataset return "
                                "(input, target), e.g. torch.utils.data.TensorDataset(x, y)")
            x, y = batch
            yield to_device(x, self.device), to_device(y, self.device)


def _item_names(dl: Iterable, split: str) -> list[str]:
    # A DataLoader knows its dataset's length, not what its items are called: name them by index.
    dataset = getattr(dl, "dataset", None)
    n = len(dataset) if hasattr(dataset, "__len__") else 0
    return [f"{split}/{i}" for i in range(n)]


class LoaderBunch:
    """Train and valid loaders the user built, as a ``fastlab.data.base.Bunch``.

    Parameters
    ----------
    train, valid : torch.utils.data.DataLoader, or any sized iterable of ``(x, y)`` batches
        The training loader should shuffle (``shuffle=True``); for a reproducible order give it a
        seeded ``generator``.
    c : int, optional
        Model outputs (classes, or targets for regression); ``len(classes)`` when not given.
    classes : list of str, optional
        Class names, one per output. ``None`` for regression.
    device : torch.device or str
        Where batches go (``to`` moves them elsewhere later).
    """

    def __init__(self, train: Iterable, valid: Iterable, c: int | None = None, classes: Sequence[str] | None = None,
                 device: torch.device | str = "cpu"):
        if c is None:
            if classes is None:
                raise DataError("from_loaders needs c (the number of model outputs) or classes: pass e.g. c=10")
            c = len(classes)
        if classes is not None and len(classes) != c:
            raise DataError(f"{len(classes)} classes were given for c={c} outputs: give one name per output")
        if c < 1:
            raise DataError(f"c (the number of model outputs) must be >= 1, got {c}")
        self.c, self.classes = int(c), None if classes is None else [str(name) for name in classes]
        self.train_items, self.valid_items = _item_names(train, "train"), _item_names(valid, "valid")
        self.device = torch.device(device)
        self.train = DeviceLoader(train, self.device, "train")
        self.valid = DeviceLoader(valid, self.device, "valid")

    def to(self, device: torch.device | str) -> LoaderBunch:
        self.device = torch.device(device)
        self.train.device = self.valid.device = self.device
        return self

    def meta(self) -> dict:
        """What ``model.pt`` can record: the outputs and their names (nothing is known of inputs)."""
        return {"classes": self.classes, "n_out": self.c}
