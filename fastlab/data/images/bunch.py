"""DataBunch: train and valid loaders over images (in memory, or read batch by batch from a
cache file or the files themselves: ``data.cache``), with classes and normalisation."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from fastlab.config import AugConfig, DataConfig
from fastlab.data.base import valid_batch_size
from fastlab.data.images.lazy import LazyImages
from fastlab.data.images.loader import TensorLoader
from fastlab.data.images.presize import build_source
from fastlab.data.images.sources import CsvData, Source, from_table
from fastlab.data.images.stream import loader_for
from fastlab.data.loader_bunch import LoaderBunch
from fastlab.data.place import Place, Storage
from fastlab.data.tensors import check_tensors
from fastlab.errors import ConfigError, DataError


def _label_key(label) -> tuple:
    # Sort classes numerically when they are numbers ("2" before "10"), else as text.
    s = str(label)
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


class ImageLoaders:
    """What every image bunch (labels, points, masks) shares: normalisation statistics and moving
    its two loaders to a device. Subclasses set ``train``, ``valid``, ``n_channels`` and ``device``.

    Images that are not in memory (``data.cache=disk|none``) get their statistics when they are
    first needed (``mean``, ``std``, ``to``, a pass over a loader): a pretrained body's
    statistics, set before that, spare the pass over the whole set."""

    train: TensorLoader
    valid: TensorLoader
    n_channels: int
    device: torch.device
    _pending = None  # training images whose statistics are still to be computed
    _mean = _std = None

    @property
    def mean(self) -> list[float] | None:
        self._settle_stats()
        return self._mean

    @mean.setter
    def mean(self, value: list[float] | None) -> None:
        self._mean = value

    @property
    def std(self) -> list[float] | None:
        self._settle_stats()
        return self._std

    @std.setter
    def std(self, value: list[float] | None) -> None:
        self._std = value

    def defer_stats(self, x) -> None:
        """Compute the statistics of ``x`` (``LazyImages``) when first needed."""
        self._pending = x
        for loader in (self.train, self.valid):
            loader.pending_stats = self._settle_stats

    def _settle_stats(self) -> None:
        if self._pending is not None:
            x = self._pending
            self.set_stats(*channel_stats(x))

    def set_stats(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Normalise with these per-channel statistics (e.g. a pretrained model's) from now on."""
        if len(mean) != self.n_channels or len(std) != self.n_channels:
            raise ConfigError(f"normalisation stats have {len(mean)}/{len(std)} values but the images have "
                              f"{self.n_channels} channel(s): give one value per channel")
        self._pending = None
        self._mean, self._std = [float(m) for m in mean], [float(s) for s in std]
        for loader in (self.train, self.valid):
            loader.pending_stats = None
            loader.set_stats(torch.tensor(self._mean, device=self.device), torch.tensor(self._std, device=self.device))

    def to(self, device: torch.device | str, max_resident_gb: float | None = None) -> ImageLoaders:
        """Move the data to ``device``: all of it when it takes at most ``max_resident_gb`` (or
        no limit is given), else batch by batch from pinned host memory."""
        self._settle_stats()
        self.device = torch.device(device)
        # Images that are not in memory (data.cache=disk or none) are read batch by batch anyway.
        nbytes = sum(t.numel() * t.element_size() for loader in (self.train, self.valid) for t in (loader.x, loader.y)
                     if isinstance(t, torch.Tensor))
        resident = max_resident_gb is None or nbytes <= max_resident_gb * 2**30
        self.train.to(self.device, resident)
        self.valid.to(self.device, resident)
        return self


class DataBunch(ImageLoaders):
    """Train and valid loaders plus what a model and a report need to know about the data.

    Attributes
    ----------
    train, valid : TensorLoader
    classes : list of str, or None for regression
    c : int
        Model outputs: ``len(classes)``, or the number of targets ``k`` for regression (targets
        ``(N,)`` when k is 1, ``(N, k)`` when each image has several numbers).
    points : bool
        The k targets are ``(x, y)`` pairs in [-1, 1] (see ``fastlab.data.generated.points``).
    y_range : list of two floats, or None
        The range a regression model squashes its outputs into (set by the task, recorded in
        ``meta()`` so that the model is rebuilt the same).
    n_channels : int
        Channels (``x.shape[1]``).
    size : int, or None
        Image side (``None`` for float inputs that are not ``(N, C, H, W)`` images).
    mean, std : list of float, or None
        Per-channel normalisation (of uint8 images scaled to [0, 1]); ``None`` when float inputs
        from ``from_tensors`` are taken as they are.
    train_items, valid_items : list of str
        Which images are in each split (relative paths, or ``digits/<i>``).
    """

    def __init__(self, source: Source, bs: int, targets: str = "category", seed: int = 0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 valid_bs: int | None = None):
        self.train_items, self.valid_items = source.train_items, source.valid_items
        self.points, self.y_range = source.points, None
        y_train, y_valid = self._encode(source, targets)
        self._set_loaders(source.train_x, y_train, source.valid_x, y_valid, bs, seed, mean, std, valid_bs)

    def _set_loaders(self, x_train: torch.Tensor, y_train: torch.Tensor, x_valid: torch.Tensor,
                     y_valid: torch.Tensor, bs: int, seed: int, mean: Sequence[float] | None,
                     std: Sequence[float] | None, valid_bs: int | None = None) -> None:
        # Statistics of the training images unless given; float inputs are left as they are.
        self.n_channels = x_train.shape[1]
        # The side the model sees: the validation images' (presized training images are larger).
        self.size = x_valid.shape[-1] if x_valid.ndim == 4 else None
        deferred = mean is None and isinstance(x_train, LazyImages)
        if mean is None and x_train.dtype == torch.uint8 and not deferred:
            mean, std = channel_stats(x_train)
        self.train = loader_for(x_train, y_train, bs, shuffle=True, drop_last=True,
                                generator=torch.Generator().manual_seed(seed))
        self.valid = loader_for(x_valid, y_valid, valid_batch_size(bs, math.prod(x_valid.shape[1:]), len(x_valid),
                                                                   valid_bs))
        self.device = torch.device("cpu")
        self.mean = self.std = None
        if mean is not None:
            self.set_stats(mean, std)
        elif deferred:
            self.defer_stats(x_train)

    def _encode(self, source: Source, targets: str) -> tuple[torch.Tensor, torch.Tensor]:
        if targets == "category":
            if any(isinstance(v, list | tuple) for v in source.train_labels[:1] + source.valid_labels[:1]):
                raise ConfigError("data.target_cols gives several numbers per image, which a classifier cannot "
                                  "learn: use task=regress, or data.target_cols=null and data.label_col")
            self.classes = [str(c) for c in sorted({str(v) for v in source.train_labels + source.valid_labels}, key=_label_key)]
            self.c = len(self.classes)
            index = {c: i for i, c in enumerate(self.classes)}
            return (torch.tensor([index[str(v)] for v in source.train_labels], dtype=torch.long),
                    torch.tensor([index[str(v)] for v in source.valid_labels], dtype=torch.long))
        if targets == "float":
            y_train = float_targets(source.train_labels, source.train_items)
            y_valid = float_targets(source.valid_labels, source.valid_items)
            if y_train.shape[1:] != y_valid.shape[1:]:
                raise DataError(f"training targets have shape {tuple(y_train.shape[1:])} but validation targets "
                                f"{tuple(y_valid.shape[1:])}: give every image the same number of targets")
            self.classes, self.c = None, (1 if y_train.ndim == 1 else y_train.shape[1])
            return y_train, y_valid
        raise ValueError(f"unknown target kind {targets!r}: use 'category' or 'float'")

    def meta(self) -> dict:
        """What ``model.pt`` records about the images: classes, channels, size, normalisation."""
        return {"classes": self.classes, "n_in": self.n_channels, "n_out": self.c, "size": self.size,
                "mean": self.mean, "std": self.std, "points": self.points, "y_range": self.y_range}

    def show_batch(self, path: str | Path, n: int = 16, aug: AugConfig | None = None, seed: int = 0,
                   size: int | None = None) -> Path:
        """Save the first ``n`` training images as a training batch sees them, as a PNG grid:
        through ``aug`` (an active ``AugConfig``; ``None`` or inactive: plain images) drawn from a
        generator of its own seeded with ``seed``, resized to the side ``size`` when it differs
        from the stored one (presized data). Titled with class names, or the target values;
        points data (``self.points``) shows its points as dots, moved with their images."""
        from fastlab.data.images.seen import seen_batch
        from fastlab.plots import show_images

        if self.train.x.ndim != 4:
            raise DataError(f"show_batch draws images (N, C, H, W) but the training inputs are "
                            f"{tuple(self.train.x.shape)}: it is for image data only")
        n = min(n, len(self.train.x))
        kind = "points" if self.points else "labels"
        x, y = seen_batch(self.train.x[:n], self.train.y[:n], aug, seed, kind, size=size)  # uint8 (n, C, S, S)
        if self.points:
            return show_images(x, [""] * n, Path(path), points=y)
        titles = [self.classes[int(t)] if self.classes else ", ".join(f"{v:.3g}" for v in t.view(-1).tolist())
                  for t in y]
        return show_images(x, titles, Path(path))

    # ------------------------------------------------------------------------- constructors
    @classmethod
    def from_tensors(cls, x_train: torch.Tensor, y_train: torch.Tensor, x_valid: torch.Tensor,
                     y_valid: torch.Tensor, bs: int = 64, classes: Sequence[str] | None = None,
                     mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                     seed: int = 0, valid_bs: int | None = None) -> DataBunch:
        """From tensors in memory (fastai's ``TensorDataLoaders``); they are used, never changed.

        Parameters
        ----------
        x_train, x_valid : Tensor
            uint8 images ``(N, C, H, W)`` (scaled to [0, 1] and normalised per batch, as files
            are), or float inputs ``(N, C, ...)`` taken as they are (normalised only with ``mean``
            and ``std``).
        y_train, y_valid : Tensor
            Integer class indices ``(N,)`` (classification) or float targets ``(N,)`` / ``(N, k)``
            (regression).
        bs : int
            Training batch size.
        valid_bs : int, optional
            Validation batch size; by default ``fastlab.data.base.valid_batch_size``'s (twice
            ``bs``, or more for small items).
        classes : list of str, optional
            Class names, indexed by the targets; ``"0" .. "c-1"`` when not given.
        mean, std : list of float, optional
            Per-channel statistics; by default those of the uint8 training images.
        seed : int
            Seeds the training loader's shuffling.
        """
        y_train, y_valid, names, c = check_tensors(x_train, y_train, x_valid, y_valid, bs, classes, mean, std)
        # Built field by field: __init__ takes a Source, whose labels are lists of names.
        bunch = cls.__new__(cls)
        bunch.train_items = [f"train/{i}" for i in range(len(x_train))]
        bunch.valid_items = [f"valid/{i}" for i in range(len(x_valid))]
        bunch.points, bunch.y_range, bunch.classes, bunch.c = False, None, names, c
        bunch._set_loaders(x_train, y_train, x_valid, y_valid, bs, seed, mean, std, valid_bs)
        return bunch

    @staticmethod
    def from_loaders(train: Iterable, valid: Iterable, c: int | None = None, classes: Sequence[str] | None = None,
                     device: torch.device | str = "cpu") -> LoaderBunch:
        """From torch DataLoaders (or any sized iterables of ``(x, y)`` batches), as fastai's
        ``DataLoaders(train_dl, valid_dl)``: each batch is moved to ``device`` and otherwise left
        as the loader made it. ``c`` is the number of model outputs (``len(classes)`` when not
        given). Returns a ``LoaderBunch`` (see ``fastlab.data.loader_bunch``)."""
        return LoaderBunch(train, valid, c, classes, device)

    @classmethod
    def from_config(cls, cfg: DataConfig, targets: str = "category", seed: int = 0,
                    place: Place | None = None) -> DataBunch:
        """The bunch of the data config ``cfg``, its images kept where ``place`` says (a run's:
        ``Place.of(run)``; by default the schemas' storage settings, nothing kept)."""
        return cls(build_source(cfg, place or Place()), cfg.bs, targets, seed, cfg.mean, cfg.std, cfg.valid_bs)

    @classmethod
    def from_df(cls, df, path: str | Path, fn_col: str = "fname", label_col: str = "label",
                valid_col: str | None = None, targets: str = "category", seed: int = 0,
                storage: Storage | None = None, **data_kwargs) -> DataBunch:
        """From a DataFrame (anything with ``.columns`` and ``df[col]``) of file names relative to
        ``path``; other keyword arguments are ``DataConfig`` fields (``bs``, ``size``, ...).
        ``storage``: where decoded images live (``data.cache``; default: the schemas' settings)."""
        cfg = CsvData(path=str(path), fn_col=fn_col, label_col=label_col, valid_col=valid_col, **data_kwargs)
        columns = [str(c) for c in df.columns]
        wanted = (fn_col, label_col, valid_col, *(data_kwargs.get("target_cols") or []))
        used = [c for c in dict.fromkeys(wanted) if c is not None and c in columns]
        values = {c: list(df[c]) for c in used}
        rows = [dict(zip(used, vals)) for vals in zip(*values.values())] if used else []
        root = Path(path).expanduser()
        if not root.is_dir():
            raise DataError(f"path '{path}' is not a folder: pass the folder the file names are relative to")
        return cls(from_table(cfg, root, columns, rows, "the DataFrame", storage or Storage()), cfg.bs, targets, seed,
                   cfg.mean, cfg.std)


def float_targets(labels: Sequence, items: Sequence[str]) -> torch.Tensor:
    """Regression targets: ``(N,)`` from one number per item, ``(N, k)`` from lists of k numbers."""
    several = bool(labels) and isinstance(labels[0], list | tuple)
    out = []
    for v, item in zip(labels, items):
        try:
            if several and len(v) != len(labels[0]):
                raise DataError(f"'{item}' has {len(v)} targets but '{items[0]}' has {len(labels[0])}: "
                                "give every image the same number of targets")
            out.append([float(t) for t in v] if several else float(v))
        except (TypeError, ValueError):
            raise DataError(f"label {v!r} of '{item}' is not a number: task=regress needs numeric labels") from None
    return torch.tensor(out, dtype=torch.float32).view(len(out), *((len(labels[0]),) if several else ()))


def channel_stats(x) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (unbiased) of images ``(N, C, H, W)``: uint8 scaled to [0, 1],
    float as they are. ``x`` is not changed. uint8 images, in memory or not
    (``fastlab.data.images.lazy``), are streamed in chunks of about 4 MiB and counted exactly
    (a histogram of the 256 values per channel), so the statistics never need the whole set in
    memory and are the same to the last bit however the images are stored."""
    if x.dtype != torch.uint8:
        xf = x.float().transpose(0, 1).reshape(x.shape[1], -1)  # (C, N*H*W)
        return xf.mean(dim=1).tolist(), xf.std(dim=1).clamp_min(1e-6).tolist()
    n_img, c = x.shape[0], x.shape[1]
    counts = torch.zeros(c, 256, dtype=torch.int64)  # (C, 256): how often each value occurs
    step = max(1, 2**22 // max(1, math.prod(x.shape[1:])))
    for i in range(0, n_img, step):
        chunk = x[i:i + step]  # (b, C, H, W) uint8
        for ch in range(c):
            counts[ch] += torch.bincount(chunk[:, ch].reshape(-1), minlength=256)
    values = torch.arange(256, dtype=torch.int64)
    means, stds = [], []
    for ch in range(c):
        # Exact integer sums: mean and variance in one rounding each.
        n, s1, s2 = int(counts[ch].sum()), int((counts[ch] * values).sum()), int((counts[ch] * values * values).sum())
        means.append(s1 / n / 255.0)
        var = (n * s2 - s1 * s1) / (n * (n - 1)) if n > 1 else 0.0
        stds.append(max(math.sqrt(var) / 255.0, 1e-6))
    return means, stds
