"""Data sources: each turns a DataConfig into images and labels, split into train and valid.

Every source lists its items in a stable (sorted) order before the seeded split, so the
validation set depends only on the files and ``data.seed``.
"""

from __future__ import annotations

import codecs
import csv
import importlib.util
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from fastlab.config import DataConfig
from fastlab.data.generated.points import image_sizes, make_points, scale_points
from fastlab.data.images.cache import image_cache
from fastlab.data.images.decode import is_image, read_images, report_bad, unreadable
from fastlab.data.images.lazy import DiskImages, FileImages, LazyImages
from fastlab.data.place import Storage
from fastlab.data.split import seeded_split
from fastlab.errors import ConfigError, DataError
from fastlab.registry import register


@dataclass
class Source:
    """Raw material for a DataBunch: ``x`` tensors are ``(N, C, size, size)`` uint8. A label is
    one value (a class, or a number), or a list of numbers when each image has several targets;
    ``points`` says those lists are ``(x, y)`` pairs in [-1, 1] (see ``fastlab.data.generated.points``)."""

    train_x: torch.Tensor
    train_labels: list
    train_items: list[str]
    valid_x: torch.Tensor
    valid_labels: list
    valid_items: list[str]
    points: bool = False


def split_per_class(labels: Sequence, per_class: int, data_seed: int) -> tuple[list[int], list[int]]:
    """Few-shot split: ``per_class`` training items per class drawn with ``data_seed``, the rest
    validate. Returns sorted train and valid indices."""
    g = torch.Generator().manual_seed(data_seed)
    train: list[int] = []
    for cls in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == cls]
        if len(idx) <= per_class:
            raise DataError(f"class {cls!r} has only {len(idx)} items, so data.train_per_class={per_class} "
                            "leaves none to validate: lower data.train_per_class")
        train.extend(idx[j] for j in torch.randperm(len(idx), generator=g)[:per_class].tolist())
    train_set = set(train)
    return sorted(train), [i for i in range(len(labels)) if i not in train_set]


def _in_memory(x: torch.Tensor, labels: list, items: list[str], cfg: DataConfig,
               per_class: int | None = None) -> Source:
    if per_class:
        train, valid = split_per_class(labels, per_class, cfg.seed)
    else:
        train, valid = seeded_split(len(items), cfg.valid_pct, cfg.seed)
    return Source(x[train], [labels[i] for i in train], [items[i] for i in train],
                  x[valid], [labels[i] for i in valid], [items[i] for i in valid])


@dataclass
class DigitsData(DataConfig):
    """scikit-learn's 1,797 8x8 handwritten digits, built in and offline."""

    name: str = "digits"
    classes: list[int] | None = None  # keep only these digits (e.g. [5,6,7,8,9]); null = all
    train_per_class: int | None = None  # few-shot: this many training images per class, the rest validate


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: ``images (1797, 8, 8)`` float64 in 0..16 and ``target (1797,)``.

    Read from the CSV that scikit-learn ships, as its ``load_digits`` reads it, without importing
    scikit-learn: that import alone took a second of every run's (and every sweep worker's)
    start-up. Where the file is not found (another layout), ``load_digits`` itself."""
    spec = importlib.util.find_spec("sklearn")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            data = np.loadtxt(path, delimiter=",")  # (1797, 65): 64 pixels, then the digit
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


@register("data", "digits", DigitsData)
def digits(cfg: DigitsData) -> Source:
    """scikit-learn's 8x8 digits (values 0..16), scaled to uint8 and resized to ``size``;
    optionally only some ``classes`` and a few-shot ``train_per_class`` split."""
    images, target = digits_arrays()
    x = torch.from_numpy(images).float().unsqueeze(1) * (255.0 / 16.0)  # (1797, 1, 8, 8)
    if cfg.size != 8:
        x = F.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8)
    labels = [int(t) for t in target]
    keep = list(range(len(labels)))
    if cfg.classes is not None:
        unknown = sorted(set(cfg.classes) - set(range(10)))
        if unknown or not cfg.classes:
            raise DataError(f"data.classes={list(cfg.classes)} must name digits 0-9: e.g. data.classes=[5,6,7,8,9]")
        wanted = set(cfg.classes)
        keep = [i for i in keep if labels[i] in wanted]
    items = [f"digits/{i}" for i in keep]
    return _in_memory(x[keep], [labels[i] for i in keep], items, cfg, cfg.train_per_class)


@dataclass
class GlyphsData(DataConfig):
    """A generated alphabet of stroke glyphs (offline): each class is a fixed random set of pen
    strokes, each sample that glyph under random affine jitter and stroke width. The model zoo's
    built-in source task for transfer to digits."""

    name: str = "glyphs"
    n_classes: int = 40
    per_class: int = 60
    strokes: int = 3  # pen strokes per glyph
    glyph_seed: int = 0  # which alphabet (shapes and jitter); the split still uses data.seed


@register("data", "glyphs", GlyphsData)
def glyphs(cfg: GlyphsData) -> Source:
    """The generated stroke alphabet (see ``fastlab.data.generated.glyphs``); labels ``g00``, ``g01``, ..."""
    from fastlab.data.generated.glyphs import make_glyphs

    if cfg.n_classes < 2 or cfg.per_class < 2 or cfg.strokes < 1:
        raise DataError("data=glyphs needs n_classes >= 2, per_class >= 2 and strokes >= 1")
    x, ids = make_glyphs(cfg.n_classes, cfg.per_class, cfg.strokes, cfg.size, cfg.glyph_seed)
    labels = [f"g{i:02d}" for i in ids]
    items = [f"glyphs/{lab}/{i}" for i, lab in enumerate(labels)]
    return _in_memory(x, labels, items, cfg)


@dataclass
class PointsData(DataConfig):
    """Generated images (offline) for image regression: one shape on a textured background; the
    target is its centre ``(x, y)`` scaled to [-1, 1] (the course's head-pose task in small)."""

    kind: ClassVar[str] = "points"
    name: str = "points"
    n_images: int = 600
    points_seed: int = 0  # which images; the split still uses data.seed


@register("data", "points", PointsData)
def points_source(cfg: PointsData) -> Source:
    """Generated images of one shape each (see ``fastlab.data.generated.points``); the label is the
    shape's centre ``[x, y]`` in [-1, 1]."""
    if cfg.n_images < 2:
        raise DataError(f"data.n_images={cfg.n_images} is too few: data=points needs at least 2 (e.g. data.n_images=600)")
    x, centres = make_points(cfg.n_images, cfg.size, cfg.points_seed)
    source = _in_memory(x, centres.tolist(), [f"points/{i}" for i in range(cfg.n_images)], cfg)
    source.points = True
    return source


def data_root(cfg: DataConfig) -> Path:
    """``data.path`` as an existing folder, or a one-line DataError saying what to pass."""
    if not cfg.path:
        raise DataError(f"data.path is required for data={cfg.name}: pass data.path=<folder>")
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise DataError(f"data.path '{cfg.path}' is not a folder: pass data.path=<an existing folder>")
    return root


def from_files(cfg: DataConfig, root: Path, paths: Sequence[Path], labels: Sequence,
               is_valid: Sequence[bool] | None, storage: Storage, points: bool = False) -> Source:
    """Split (by ``is_valid``, else seeded ``valid_pct``) and decode the images, kept where
    ``storage`` says (memory, a disk cache, or decoded at each read)."""
    order = sorted(range(len(paths)), key=lambda i: str(paths[i]))
    paths, labels = [paths[i] for i in order], [labels[i] for i in order]
    if is_valid is None:
        train, valid = seeded_split(len(paths), cfg.valid_pct, cfg.seed)
    else:
        flags = [is_valid[i] for i in order]
        train = [i for i, f in enumerate(flags) if not f]
        valid = [i for i, f in enumerate(flags) if f]
    if not train or not valid:
        raise DataError(f"data in '{root}' gives {len(train)} training and {len(valid)} validation "
                        "images: both need at least one (add images or change data.valid_pct)")

    mode = storage.mode(cfg.cache, len(paths), cfg.size)
    images = None if mode == "memory" else lazy_images(mode, paths, cfg, storage)

    def part(idx: list[int]):
        if images is None:
            loaded = read_images([paths[i] for i in idx], cfg.size, cfg.on_bad_file)
            idx = [idx[k] for k in loaded.kept]  # with on_bad_file=skip, the readable ones
            x = loaded.x
        else:
            idx = [i for i in idx if i not in images.bad]
            x = images.take(idx)
        items = [str(paths[i].relative_to(root)) if paths[i].is_relative_to(root) else str(paths[i]) for i in idx]
        return x, [labels[i] for i in idx], items

    train_part, valid_part = part(train), part(valid)
    if not train_part[2] or not valid_part[2]:
        raise DataError(f"data in '{root}' has no readable {'training' if not train_part[2] else 'validation'} "
                        "images left after data.on_bad_file=skip: fix the files")
    return Source(*train_part, *valid_part, points=points)


def lazy_images(mode: str, paths: Sequence[Path], cfg: DataConfig, store: Storage) -> LazyImages:
    """All ``paths`` as images read when indexed: rows of the cache of their decoded images
    (``disk``: built once, reused after) or the files decoded at each read (``none``). ``bad``
    holds the unreadable ones (``data.on_bad_file=skip``; with ``error`` the first stops the run)."""
    if mode == "disk":
        cache = image_cache(paths, cfg.size, cfg.on_bad_file, store.cache_root)
        images: LazyImages = DiskImages(cache)
        bad = cache.bad
    else:
        images, bad = FileImages(paths, cfg.size, workers=store.n_workers()), {}
        if cfg.on_bad_file == "skip":  # cheap: headers only (a file that fails later stops the run)
            bad = {i: why for i, why in ((i, unreadable(p)) for i, p in enumerate(paths)) if why}
    if bad and cfg.on_bad_file == "error":  # a cache built with skip, read by a run that says error
        raise DataError(bad[min(bad)])
    report_bad([(str(paths[i]), why) for i, why in sorted(bad.items())], len(paths))
    images.bad = bad
    return images


def _class_folders(folder: Path) -> list[tuple[Path, str]]:
    """(image, label) for every image in ``folder/<label>/``; an empty class is an error."""
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"'{folder}' has no class folders: expected <label>/<image files> inside it")
    out = []
    for d in classes:
        images = sorted(p for p in d.iterdir() if is_image(p))
        if not images:
            raise DataError(f"class folder '{d}' has no images: add images or remove the folder")
        out.extend((p, d.name) for p in images)
    return out


@dataclass
class FolderData(DataConfig):
    """ImageNet layout (``train/<class>/*``, ``valid/<class>/*``) or one folder per class."""

    streams: ClassVar[bool] = True
    name: str = "folder"
    train: str = "train"
    valid: str = "valid"


@register("data", "folder", FolderData)
def folder(cfg: FolderData, storage: Storage) -> Source:
    """``path/train/<class>/*`` and ``path/valid/<class>/*``; or ``path/<class>/*`` split by
    ``valid_pct`` (also used when the train folder has no valid sibling)."""
    root = data_root(cfg)
    train_dir, valid_dir = root / cfg.train, root / cfg.valid
    if train_dir.is_dir():
        pairs = [(p, lab, False) for p, lab in _class_folders(train_dir)]
        if valid_dir.is_dir():
            pairs += [(p, lab, True) for p, lab in _class_folders(valid_dir)]
            return from_files(cfg, root, [p for p, _, _ in pairs], [lab for _, lab, _ in pairs],
                              [v for _, _, v in pairs], storage)
        pairs_2 = _class_folders(train_dir)
        return from_files(cfg, root, [p for p, _ in pairs_2], [lab for _, lab in pairs_2], None, storage)
    pairs_2 = _class_folders(root)
    return from_files(cfg, root, [p for p, _ in pairs_2], [lab for _, lab in pairs_2], None, storage)


@dataclass
class NameReData(DataConfig):
    """Images in one folder, labelled by a regex over the file name (group 1 is the label)."""

    streams: ClassVar[bool] = True
    name: str = "name_re"
    pattern: str = r"^(.+)_\d+\.\w+$"


@register("data", "name_re", NameReData)
def name_re(cfg: NameReData, storage: Storage) -> Source:
    """Images in ``path`` labelled by group 1 of ``pattern`` matched against the file name."""
    root = data_root(cfg)
    try:
        regex = re.compile(cfg.pattern)
    except re.error as e:
        raise DataError(f"data.pattern {cfg.pattern!r} is not a valid regex ({e}): fix data.pattern") from None
    if regex.groups < 1:
        raise DataError(f"data.pattern {cfg.pattern!r} has no group: wrap the label in (...), e.g. '^(.+)_\\d+\\.jpg$'")
    files = sorted(p for p in root.iterdir() if is_image(p))
    if not files:
        raise DataError(f"data.path '{root}' holds no image files: point data.path at the images")
    matches = [(p, regex.match(p.name)) for p in files]
    bad = [p.name for p, m in matches if m is None]
    if len(bad) == len(files):
        raise DataError(f"data.pattern {cfg.pattern!r} matches none of the {len(files)} images in "
                        f"'{root}' (e.g. '{bad[0]}'): fix data.pattern")
    if bad:
        raise DataError(f"data.pattern {cfg.pattern!r} does not match {len(bad)} of {len(files)} "
                        f"images (e.g. '{bad[0]}'): fix data.pattern or move those files")
    return from_files(cfg, root, files, [m.group(1) for _, m in matches], None, storage)


_TRUE = {"1", "true", "yes", "y", "t", "valid"}


def check_target_cols(cfg: CsvData) -> list[str] | None:
    """``data.target_cols`` as a list, after checking it goes with ``data.points``."""
    cols = None if cfg.target_cols is None else [str(c) for c in cfg.target_cols]
    if cols is not None and not cols:
        raise ConfigError("data.target_cols=[] names no column: list the target columns, e.g. data.target_cols=[x,y], or null")
    if cfg.points and cols is None:
        raise ConfigError("data.points=true needs data.target_cols: name the pixel x,y columns, e.g. data.target_cols=[x,y]")
    if cfg.points and len(cols) % 2:
        raise ConfigError(f"data.points=true reads (x, y) pairs but data.target_cols={cols} has {len(cols)} columns: "
                          "list an x and a y column per point, e.g. data.target_cols=[x,y]")
    return cols


def _target_values(row: dict, cols: list[str], where: str) -> list[float]:
    out = []
    for col in cols:
        value = row[col]
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v):
            raise DataError(f"{where}: target column '{col}' holds {value!r}, not a finite number: "
                            "fix the value or remove the row")
        out.append(v)
    return out


def from_table(cfg: CsvData, root: Path, columns: Sequence[str], rows: Sequence[dict],
               source_name: str, storage: Storage) -> Source:
    """A table of rows (dicts) with a file-name column, a label column (or ``target_cols``: the
    several numbers of each image) and maybe a valid column. With ``points``, the target columns
    are pixel ``x, y`` pairs of the original image, scaled to [-1, 1] by its width and height."""
    target_cols = check_target_cols(cfg)
    label_col = None if target_cols is not None else cfg.label_col
    for key, col in (("fn_col", cfg.fn_col), ("label_col", label_col), ("valid_col", cfg.valid_col)):
        if col is not None and col not in columns:
            raise DataError(f"{source_name} has no column '{col}' (its columns: {list(columns)}): "
                            f"set data.{key}=<column>")
    for col in target_cols or []:
        if col not in columns:
            raise DataError(f"{source_name} has no target column '{col}' (its columns: {list(columns)}): "
                            "fix data.target_cols")
    if not rows:
        raise DataError(f"{source_name} has no rows: it must list at least two images")
    paths = [root / str(r[cfg.fn_col]) for r in rows]
    if target_cols is None:
        labels = [r[label_col] for r in rows]
    else:
        # Row 1 is the first row after the header.
        labels = [_target_values(r, target_cols, f"{source_name}, row {i + 1} ('{r[cfg.fn_col]}')")
                  for i, r in enumerate(rows)]
        if cfg.points:  # by the original size: images are resized (aspect not kept) after this
            labels = [scale_points(xy, w, h) for xy, (w, h) in zip(labels, image_sizes(paths))]
    is_valid = None
    if cfg.valid_col is not None:
        is_valid = [str(r[cfg.valid_col]).strip().lower() in _TRUE for r in rows]
    return from_files(cfg, root, paths, labels, is_valid, storage, points=cfg.points)


@dataclass
class CsvData(DataConfig):
    """A CSV of file names (relative to ``path``) and labels."""

    streams: ClassVar[bool] = True
    name: str = "csv"
    csv: str = "labels.csv"  # relative to ``path`` unless absolute
    fn_col: str = "fname"
    label_col: str = "label"
    valid_col: str | None = None  # a boolean column marking validation rows; else valid_pct
    # task=regress on several numbers per image (e.g. a point's x,y): these columns are the
    # targets, and label_col is not read
    target_cols: list[str] | None = None
    points: bool = False  # target_cols are pixel (x, y) pairs, scaled to [-1, 1] by each image's size
    # the CSV's text encoding: utf-8 (a byte-order mark is skipped), or e.g. latin-1 / cp1252 for
    # files saved by older spreadsheet tools
    encoding: str = "utf-8"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_target_cols(self)
        try:
            codecs.lookup(self.encoding)
        except (LookupError, TypeError):
            raise ConfigError(f"data.encoding={self.encoding!r} is not a text encoding: use e.g. "
                              "data.encoding=utf-8, latin-1 or cp1252") from None


@register("data", "csv", CsvData)
def csv_source(cfg: CsvData, storage: Storage) -> Source:
    root = data_root(cfg)
    csv_path = Path(cfg.csv) if Path(cfg.csv).is_absolute() else root / cfg.csv
    if not csv_path.is_file():
        raise DataError(f"data.csv '{csv_path}' does not exist: set data.csv=<csv file, relative to data.path>")
    columns, rows = read_csv_rows(csv_path, cfg.encoding)
    return from_table(cfg, root, columns, rows, f"csv '{csv_path}'", storage)


def read_csv_rows(path: Path, encoding: str = "utf-8") -> tuple[list[str], list[dict]]:
    """A label CSV as spreadsheets and scripts write it: its header (names stripped of spaces)
    and its rows as dicts. A UTF-8 byte-order mark is skipped (Excel writes one), quoted fields
    may hold commas, quotes and newlines, and blank lines (the trailing ones tools leave) are
    dropped. Text that is not in ``encoding`` is one ``DataError`` naming the file and the fix."""
    raw = path.read_bytes()
    codec = codecs.lookup(encoding).name
    try:
        text = raw.decode("utf-8-sig" if codec == "utf-8" else codec)
    except UnicodeDecodeError as e:
        raise DataError(f"csv '{path}' is not {encoding} text (byte {raw[e.start]:#04x} at offset {e.start}): "
                        "save it as UTF-8, or set data.encoding to its encoding (e.g. data.encoding=latin-1 "
                        "or cp1252)") from None
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""), skipinitialspace=True)
    try:
        columns = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = columns
        rows = [r for r in reader if any((v or "").strip() for k, v in r.items() if k is not None)]
    except csv.Error as e:
        raise DataError(f"csv '{path}' cannot be parsed ({e}, line {reader.line_num}): fix the file") from None
    return columns, rows

