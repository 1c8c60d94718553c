"""Where texts come from: an IMDb-style folder, a CSV, or the built-in ``pydocs`` corpus.

Each reader returns a :class:`TextSource` of raw strings with labels and stable item names; the
loaders (``fastlab.data.text_bunch``) tokenise them. The validation split of sources without one
is ``seeded_split`` by ``data.seed`` alone.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path

from fastlab.config import PyDocsData, TextCsvData, TextData, TextFolderData
from fastlab.data.split import seeded_split
from fastlab.errors import DataError


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


def _root(cfg: TextData) -> Path:
    if not cfg.path:
        raise DataError(f"data.path is required for data={cfg.name}: pass data.path=<folder>")
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise DataError(f"data.path '{cfg.path}' is not a folder: pass data.path=<an existing folder>")
    return root


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


def text_folder(cfg: TextFolderData) -> TextSource:
    """IMDb layout: ``<train>/<label>/*.txt``, ``<valid>/<label>/*.txt``, optional ``<unsup>/*.txt``;
    with no ``<valid>`` folder a seeded ``valid_pct`` of train validates."""
    root = _root(cfg)
    texts, labels, items = _labelled_folder(root / cfg.train)
    if (root / cfg.valid).is_dir():
        v_texts, v_labels, v_items = _labelled_folder(root / cfg.valid)
        src = TextSource(texts, labels, items, v_texts, v_labels, v_items)
    else:
        src = _split(texts, labels, items, cfg)
    if cfg.unsup and (root / cfg.unsup).is_dir():
        files = sorted((root / cfg.unsup).glob("*.txt"))
        src.unlabelled_texts = [_read(f) for f in files]
        src.unlabelled_items = [str(f.relative_to(root)) for f in files]
    return src


def _split(texts: list[str], labels: list[str], items: list[str], cfg: TextData) -> TextSource:
    train, valid = seeded_split(len(texts), cfg.valid_pct, cfg.seed)
    if not train or not valid:
        raise DataError(f"data={cfg.name} has {len(texts)} text(s): at least two are needed to train and validate")

    def pick(xs: list[str], idx: list[int]) -> list[str]:
        return [xs[i] for i in idx]

    return TextSource(pick(texts, train), pick(labels, train), pick(items, train),
                      pick(texts, valid), pick(labels, valid), pick(items, valid))


_TRUE = {"1", "true", "yes", "y", "t", "valid", "is_valid"}


def text_csv(cfg: TextCsvData) -> TextSource:
    """A CSV of ``text_col`` and ``label_col`` (and ``valid_col``, true for validation rows)."""
    root = _root(cfg)
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
        return _split(texts, labels, items, cfg)
    flags = [str(r[cfg.valid_col]).strip().lower() in _TRUE for r in rows]

    def part(want: bool, xs: list[str]) -> list[str]:
        return [x for x, f in zip(xs, flags) if f == want]

    src = TextSource(part(False, texts), part(False, labels), part(False, items),
                     part(True, texts), part(True, labels), part(True, items))
    if not src.train_texts or not src.valid_texts:
        raise DataError(f"csv '{path}' column '{cfg.valid_col}' marks {len(src.valid_texts)} of {len(rows)} rows "
                        "as validation: mark some (true/1) but not all")
    return src


# ------------------------------------------------------------------------------------- pydocs

# The standard-library modules each family documents. Only these are imported, so the corpus is
# the same whatever third-party packages are installed; "module:Class" takes one class's methods.
PYDOCS_FAMILIES: dict[str, list[str]] = {
    "text": ["builtins:str", "string", "re", "textwrap", "difflib", "unicodedata", "html", "html.parser",
             "codecs", "locale", "gettext", "shlex", "pprint", "reprlib"],
    "files": ["os", "posixpath", "shutil", "pathlib", "glob", "fnmatch", "tempfile", "stat", "filecmp",
              "fileinput", "io", "zipfile", "tarfile"],
    "network": ["socket", "ssl", "http.client", "http.server", "http.cookiejar", "urllib.request",
                "urllib.parse", "smtplib", "ftplib", "imaplib", "ipaddress", "socketserver", "email.message"],
    "math": ["math", "cmath", "decimal", "fractions", "statistics", "random", "numbers"],
    "formats": ["json", "csv", "pickle", "configparser", "xml.etree.ElementTree", "xml.dom.minidom", "plistlib",
                "base64", "binascii", "struct", "zlib", "gzip", "bz2", "lzma", "hashlib", "shelve"],
    "concurrency": ["threading", "multiprocessing.pool", "multiprocessing.managers", "concurrent.futures",
                    "asyncio.tasks", "asyncio.events", "asyncio.locks", "asyncio.queues", "asyncio.streams",
                    "queue", "sched", "subprocess", "selectors", "signal"],
}


def _owned(obj: object, module: str) -> bool:
    """Defined by ``module`` (or its C accelerator, e.g. ``_socket`` for ``socket``), not imported."""
    owner = getattr(obj, "__module__", None) or ""
    last = module.split(".")[-1]
    return owner == module or owner.startswith(module + ".") or owner.lstrip("_") == last


def module_docstrings(spec: str) -> list[tuple[str, str]]:
    """``(qualified name, docstring)`` of the public functions, classes and methods of ``spec``
    (a module name, or ``module:Class``), in sorted name order."""
    modname, _, only = spec.partition(":")
    module = importlib.import_module(modname)
    names = [only] if only else sorted(vars(module))
    out = []
    for name in names:
        obj = getattr(module, name, None)
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        if not only and not _owned(obj, modname):
            continue
        if (doc := inspect.getdoc(obj)) and not only:
            out.append((f"{modname}.{name}", doc))
        if inspect.isclass(obj):
            for attr in sorted(vars(obj)):
                value = vars(obj)[attr]
                if attr.startswith("_") or not (inspect.isroutine(value) or isinstance(value, property)):
                    continue
                if doc := inspect.getdoc(value):
                    out.append((f"{modname}.{name}.{attr}", doc))
    return out


@functools.lru_cache(maxsize=4)
def pydocs_corpus(min_chars: int = 40, per_family: int = 320) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Texts, labels (the family) and items (qualified names) of the built-in corpus.

    Docstrings shorter than ``min_chars`` ("Return self.") and repeats of an earlier docstring
    are dropped; a family with more than ``per_family`` keeps a subset chosen by a hash of the
    qualified name (stable, and balancing the classes). A module this Python lacks is skipped.
    Cached: importing the modules takes about a second.
    """
    texts, labels, items, seen = [], [], [], set()
    for family in sorted(PYDOCS_FAMILIES):
        kept = []
        for spec in PYDOCS_FAMILIES[family]:
            try:
                docs = module_docstrings(spec)
            except ImportError:
                continue
            for qualname, doc in docs:
                if len(doc) >= min_chars and doc not in seen:
                    seen.add(doc)
                    kept.append((qualname, doc))
        if len(kept) > per_family:
            chosen = set(sorted(kept, key=lambda q: hashlib.sha1(q[0].encode()).hexdigest())[:per_family])
            kept = [q for q in kept if q in chosen]
        for qualname, doc in kept:
            texts.append(doc)
            labels.append(family)
            items.append(qualname)
    return tuple(texts), tuple(labels), tuple(items)


def pydocs(cfg: PyDocsData) -> TextSource:
    """The built-in corpus, split by ``data.seed``; ``max_docs`` keeps a seeded subset (quick runs)."""
    texts, labels, items = (list(xs) for xs in pydocs_corpus(cfg.min_chars, cfg.per_family))
    if cfg.max_docs is not None and cfg.max_docs < len(texts):
        keep = sorted(seeded_split(len(texts), cfg.max_docs / len(texts), cfg.seed)[1])
        texts, labels, items = ([xs[i] for i in keep] for xs in (texts, labels, items))
    return _split(texts, labels, items, cfg)


TEXT_SOURCES = {"text_folder": text_folder, "text_csv": text_csv, "pydocs": pydocs}
