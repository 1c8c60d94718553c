"""Where texts come from: an IMDb-style folder or a CSV (the built-in corpus: ``fastlab.data.text.pydocs``).

Each reader returns a :class:`TextSource` of raw strings with labels and stable item names; the
loaders (``fastlab.data.text.bunch``) tokenise them. The validation split of sources without one
is ``seeded_split`` by ``data.seed`` alone.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from fastlab.config import DataConfig, check_positive_ints
from fastlab.data.images.sources import data_root
from fastlab.data.split import seeded_split
from fastlab.errors import DataError
from fastlab.registry import register


@dataclass
class TextData(DataConfig):
    """Keys every text source shares: tokenisation, vocabulary and sequence lengths."""

    kind: ClassVar[str] = "text"
    bs: int = 32
    bptt: int = 48  # a language model's sequence length
    max_len: int = 256  # a classifier reads at most this many tokens of each text
    min_freq: int = 2  # words seen fewer times become xxunk
    max_vocab: int = 8000

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_ints(self, "data", ("bptt", "max_len", "min_freq", "max_vocab"))


@dataclass
class TextSource:
    """Labelled texts split into train and valid, plus unlabelled ones (a language model's only)."""

    train_texts: list[str]
    train_labels: list[str]
    train_items: list[str]
    valid_texts: list[str]
    valid_labels: list[str]
    valid_items: list[str]
    unlabelled_texts: list[str] = field(default_factory=list)
    unlabelled_items: list[str] = field(default_factory=list)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DataError(f"cannot read text file '{path}' ({e.strerror}): check its permissions") from None


def _labelled_folder(folder: Path) -> tuple[list[str], list[str], list[str]]:
    """``folder/<label>/*.txt`` -> texts, labels, items (sorted, so the order is stable)."""
    if not folder.is_dir():
        raise DataError(f"text folder '{folder}' does not exist: expected <label>/<*.txt> folders inside it "
                        "(set data.train / data.valid to the split folder names)")
    texts, labels, items = [], [], []
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(label_dir.glob("*.txt"))
        if not files:
            raise DataError(f"label folder '{label_dir}' has no .txt files: add texts or remove the folder")
        for f in files:
            texts.append(_read(f))
            labels.append(label_dir.name)
            items.append(str(f.relative_to(folder.parent)))
    if not texts:
        raise DataError(f"text folder '{folder}' has no label folders: expected <label>/<*.txt> inside it")
    return texts, labels, items


@dataclass
class TextFolderData(TextData):
    """The IMDb layout: ``path/<train>/<label>/*.txt``, ``path/<valid>/<label>/*.txt`` and
    optionally unlabelled ``path/<unsup>/*.txt`` (used by the language model only)."""

    name: str = "text_folder"
    train: str = "train"
    valid: str = "test"
    unsup: str | None = "unsup"


@register("data", "text_folder", TextFolderData)
def text_folder(cfg: TextFolderData) -> TextSource:
    """IMDb layout: ``<train>/<label>/*.txt``, ``<valid>/<label>/*.txt``, optional ``<unsup>/*.txt``;
    with no ``<valid>`` folder a seeded ``valid_pct`` of train validates."""
    root = data_root(cfg)
    texts, labels, items = _labelled_folder(root / cfg.train)
    if (root / cfg.valid).is_dir():
        v_texts, v_labels, v_items = _labelled_folder(root / cfg.valid)
        src = TextSource(texts, labels, items, v_texts, v_labels, v_items)
    else:
        src = split_source(texts, labels, items, cfg)
    if cfg.unsup and (root / cfg.unsup).is_dir():
        files = sorted((root / cfg.unsup).glob("*.txt"))
        src.unlabelled_texts = [_read(f) for f in files]
        src.unlabelled_items = [str(f.relative_to(root)) for f in files]
    return src


def split_source(texts: list[str], labels: list[str], items: list[str], cfg: TextData) -> TextSource:
    train, valid = seeded_split(len(texts), cfg.valid_pct, cfg.seed)
    if not train or not valid:
        raise DataError(f"data={cfg.name} has {len(texts)} text(s): at least two are needed to train and validate")

    def pick(xs: list[str], idx: list[int]) -> list[str]:
        return [xs[i] for i in idx]

    return TextSource(pick(texts, train), pick(labels, train), pick(items, train),
                      pick(texts, valid), pick(labels, valid), pick(items, valid))


_TRUE = {"1", "true", "yes", "y", "t", "valid", "is_valid"}


@dataclass
class TextCsvData(TextData):
    """A CSV with a text column, a label column and optionally a validation flag column."""

    name: str = "text_csv"
    csv: str = "texts.csv"  # relative to ``path`` unless absolute
    text_col: str = "text"
    label_col: str = "label"
    valid_col: str | None = None


@register("data", "text_csv", TextCsvData)
def text_csv(cfg: TextCsvData) -> TextSource:
    """A CSV of ``text_col`` and ``label_col`` (and ``valid_col``, true for validation rows)."""
    root = data_root(cfg)
    path = Path(cfg.csv) if Path(cfg.csv).is_absolute() else root / cfg.csv
    if not path.is_file():
        raise DataError(f"data.csv '{path}' does not exist: set data.csv=<csv file, relative to data.path>")
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    for key in ("text_col", "label_col", "valid_col"):
        col = getattr(cfg, key)
        if col is not None and col not in columns:
            raise DataError(f"csv '{path}' has no column '{col}' (its columns: {columns}): set data.{key}=<one of them>")
    texts = [r[cfg.text_col] or "" for r in rows]
    labels = [str(r[cfg.label_col]) for r in rows]
    items = [f"{path.name}:{i + 2}" for i in range(len(rows))]  # the row's line in the file
    if cfg.valid_col is None:
        return split_source(texts, labels, items, cfg)
    flags = [str(r[cfg.valid_col]).strip().lower() in _TRUE for r in rows]

    def part(want: bool, xs: list[str]) -> list[str]:
        return [x for x, f in zip(xs, flags) if f == want]

    src = TextSource(part(False, texts), part(False, labels), part(False, items),
                     part(True, texts), part(True, labels), part(True, items))
    if not src.train_texts or not src.valid_texts:
        raise DataError(f"csv '{path}' column '{cfg.valid_col}' marks {len(src.valid_texts)} of {len(rows)} rows "
                        "as validation: mark some (true/1) but not all")
    return src
