"""DataBunch: train and valid loaders over in-memory images, with classes and normalisation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from fastlab.config import CsvData, DataConfig
from fastlab.data.sources import SOURCES, Source, from_table
from fastlab.errors import ConfigError, DataError


def _label_key(label) -> tuple:
    # Sort classes numerically when they are numbers ("2" before "10"), else as text.
    s = str(label)
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


class TensorLoader:
    """Batches from uint8 images ``(N, C, H, W)`` and targets ``(N, ...)`` held in memory.

    Each batch is moved to ``device`` as uint8 (four times less to copy than float) and only then
    scaled to [0, 1] and normalised: ``x`` comes out ``(B, C, H, W)`` float32. Shuffling draws
    from its own ``generator`` so the order is reproducible from the training seed.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, bs: int, mean: torch.Tensor,
                 std: torch.Tensor, shuffle: bool = False, drop_last: bool = False,
                 generator: torch.Generator | None = None):
        self.x, self.y, self.bs = x, y, bs
        self.shuffle, self.generator = shuffle, generator
        # Dropping a ragged last batch keeps batch-norm statistics sane; never drop everything.
        self.drop_last = drop_last and len(x) > bs
        self.mean, self.std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
        self.device = x.device

    def to(self, device: torch.device, resident: bool = True) -> TensorLoader:
        """Batches on ``device``. ``resident``: the whole set lives there (no copy per batch).
        Otherwise it stays in host memory, pinned when the device is CUDA, and each uint8 batch
        is copied without blocking, so the copy overlaps the previous batch's compute."""
        self.device = device
        if resident or device.type == "cpu":
            self.x, self.y = self.x.to(device), self.y.to(device)
        else:
            self.x, self.y = self.x.cpu(), self.y.cpu()
            if device.type == "cuda":
                self.x, self.y = self.x.pin_memory(), self.y.pin_memory()
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    @property
    def resident(self) -> bool:
        return self.x.device == self.device or self.x.device.type == self.device.type == "cpu"

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.bs if self.drop_last else -(-n // self.bs)

    channels_last = False  # hand batches out in NHWC memory order (the GPU path sets it)

    def normalize(self, xb: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` -> normalised float32."""
        out = (xb.float().div_(255.0) - self.mean) / self.std
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator).to(self.x.device) if self.shuffle else None
        for b in range(len(self)):
            idx = slice(b * self.bs, (b + 1) * self.bs)
            if order is not None:
                idx = order[idx]
            xb, yb = self.x[idx], self.y[idx]
            if not self.resident:  # a gathered batch is not pinned: pin it so the copy is asynchronous
                pinned = self.device.type == "cuda"
                xb = (xb.pin_memory() if pinned else xb).to(self.device, non_blocking=pinned)
                yb = (yb.pin_memory() if pinned else yb).to(self.device, non_blocking=pinned)
            yield self.normalize(xb), yb


class ImageLoaders:
    """What every in-memory image bunch (labels, points, masks) shares: normalisation statistics
    and moving its two TensorLoaders to a device. Subclasses set ``train``, ``valid``,
    ``n_channels`` and ``device``."""

    train: TensorLoader
    valid: TensorLoader
    n_channels: int
    device: torch.device

    def set_stats(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Normalise with these per-channel statistics (e.g. a pretrained model's) from now on."""
        if len(mean) != self.n_channels or len(std) != self.n_channels:
            raise ConfigError(f"normalisation stats have {len(mean)}/{len(std)} values but the images have "
                              f"{self.n_channels} channel(s): give one value per channel")
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        for loader in (self.train, self.valid):
            loader.mean = torch.tensor(self.mean, device=self.device).view(1, -1, 1, 1)
            loader.std = torch.tensor(self.std, device=self.device).view(1, -1, 1, 1)

    def to(self, device: torch.device | str, max_resident_gb: float | None = None) -> ImageLoaders:
        """Move the data to ``device``: all of it when it takes at most ``max_resident_gb`` (or
        no limit is given), else batch by batch from pinned host memory."""
        self.device = torch.device(device)
        nbytes = sum(t.numel() * t.element_size() for loader in (self.train, self.valid) for t in (loader.x, loader.y))
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
        The k targets are ``(x, y)`` pairs in [-1, 1] (see ``fastlab.data.points``).
    y_range : list of two floats, or None
        The range a regression model squashes its outputs into (set by the task, recorded in
        ``meta()`` so that the model is rebuilt the same).
    n_channels, size : int
    mean, std : list of float
        Per-channel normalisation (of images scaled to [0, 1]).
    train_items, valid_items : list of str
        Which images are in each split (relative paths, or ``digits/<i>``).
    """

    def __init__(self, source: Source, bs: int, targets: str = "category", seed: int = 0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        self.train_items, self.valid_items = source.train_items, source.valid_items
        self.n_channels, self.size = source.train_x.shape[1], source.train_x.shape[-1]
        self.points, self.y_range = source.points, None
        y_train, y_valid = self._encode(source, targets)
        if mean is None:
            mean, std = channel_stats(source.train_x)
        m, s = torch.tensor([float(v) for v in mean]), torch.tensor([float(v) for v in std])
        self.train = TensorLoader(source.train_x, y_train, bs, m, s, shuffle=True, drop_last=True,
                                  generator=torch.Generator().manual_seed(seed))
        self.valid = TensorLoader(source.valid_x, y_valid, bs * 2, m, s)
        self.device = torch.device("cpu")
        self.set_stats(mean, std)

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

    def show_batch(self, path: str | Path, n: int = 16) -> Path:
        """Save the first ``n`` training images with their labels as a PNG grid."""
        from fastlab.plots import show_images

        n = min(n, len(self.train.x))
        x = self.train.x[:n].cpu()
        y = self.train.y[:n].cpu()
        titles = [self.classes[int(t)] if self.classes else ", ".join(f"{v:.3g}" for v in t.view(-1).tolist())
                  for t in y]
        return show_images(x, titles, Path(path))

    # ------------------------------------------------------------------------- constructors
    @classmethod
    def from_config(cls, cfg: DataConfig, targets: str = "category", seed: int = 0) -> DataBunch:
        source = SOURCES[cfg.name](cfg)
        return cls(source, cfg.bs, targets, seed, cfg.mean, cfg.std)

    @classmethod
    def from_df(cls, df, path: str | Path, fn_col: str = "fname", label_col: str = "label",
                valid_col: str | None = None, targets: str = "category", seed: int = 0,
                **data_kwargs) -> DataBunch:
        """From a DataFrame (anything with ``.columns`` and ``df[col]``) of file names relative to
        ``path``; other keyword arguments are ``DataConfig`` fields (``bs``, ``size``, ...)."""
        cfg = CsvData(path=str(path), fn_col=fn_col, label_col=label_col, valid_col=valid_col, **data_kwargs)
        columns = [str(c) for c in df.columns]
        wanted = (fn_col, label_col, valid_col, *(data_kwargs.get("target_cols") or []))
        used = [c for c in dict.fromkeys(wanted) if c is not None and c in columns]
        values = {c: list(df[c]) for c in used}
        rows = [dict(zip(used, vals)) for vals in zip(*values.values())] if used else []
        root = Path(path).expanduser()
        if not root.is_dir():
            raise DataError(f"path '{path}' is not a folder: pass the folder the file names are relative to")
        return cls(from_table(cfg, root, columns, rows, "the DataFrame"), cfg.bs, targets, seed, cfg.mean, cfg.std)


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


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images ``(N, C, H, W)`` scaled to [0, 1]."""
    xf = x.float().div_(255.0).transpose(0, 1).reshape(x.shape[1], -1)  # (C, N*H*W)
    std = xf.std(dim=1).clamp_min(1e-6)
    return xf.mean(dim=1).tolist(), std.tolist()
