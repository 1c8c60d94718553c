"""The built-in ``pydocs`` corpus: docstrings of the Python standard library, labelled by module
family, plus unlabelled standard-library English that only a language model reads.

Everything comes from modules listed here (never third-party packages), in sorted order, so the
corpus depends only on the Python version. The unlabelled part plays the role of IMDb's
``unsup/`` (ULMFiT's general-domain text): the language reference (``pydoc_data.topics``) and the
docstrings of standard-library modules outside the labelled families; no unlabelled paragraph
shares a run of ``SHINGLE`` tokens with any labelled-family docstring, so the classifier's
validation texts are never read, not even paraphrased.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import re
import warnings
from dataclasses import dataclass

from fastlab.data.split import seeded_split
from fastlab.data.text.sources import TextData, TextSource, split_source
from fastlab.data.text.tokens import tokenize
from fastlab.registry import register

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


# Standard-library modules outside the labelled families whose docstrings the language model
# reads (deprecated modules, and those that open windows or need a display, are left out).
PYDOCS_UNLABELLED: list[str] = [
    "abc", "argparse", "array", "ast", "atexit", "bdb", "bisect", "builtins", "calendar", "cmd", "code", "codeop",
    "collections", "collections.abc", "colorsys", "compileall", "contextlib", "contextvars", "copy", "copyreg",
    "cProfile", "dataclasses", "datetime", "dbm", "dis", "doctest", "enum", "functools", "gc", "getopt", "getpass",
    "graphlib", "heapq", "hmac", "importlib", "importlib.abc", "importlib.machinery", "importlib.metadata",
    "importlib.resources", "importlib.util", "inspect", "itertools", "keyword", "linecache", "logging",
    "logging.config", "logging.handlers", "mailbox", "mimetypes", "modulefinder", "operator", "optparse", "pdb",
    "pickletools", "pkgutil", "platform", "profile", "pstats", "py_compile", "pyclbr", "pydoc", "quopri", "runpy",
    "secrets", "site", "sqlite3", "symtable", "sys", "sysconfig", "tabnanny", "time", "timeit", "tokenize", "trace",
    "traceback", "tracemalloc", "types", "typing", "unittest", "unittest.case", "unittest.loader", "unittest.mock",
    "unittest.result", "unittest.runner", "unittest.suite", "uuid", "venv", "warnings", "wave", "weakref", "zipapp",
    "zipimport", "zoneinfo",
]
SHINGLE = 8  # tokens: a shared run this long means shared text, not a common phrase
_PARAGRAPHS = re.compile(r"\n\s*\n")


def _runs(toks: list[str]) -> set[tuple[str, ...]]:
    return {tuple(toks[i : i + SHINGLE]) for i in range(len(toks) - SHINGLE + 1)}


def _shingles(text: str) -> set[tuple[str, ...]]:
    return _runs(tokenize(text)[1:])  # without xxbos


def _docstrings(specs: list[str]) -> list[tuple[str, str]]:
    out = []
    for spec in specs:
        try:
            with warnings.catch_warnings():  # reading typing.io / typing.re warns of their removal
                warnings.simplefilter("ignore", DeprecationWarning)
                out += module_docstrings(spec)
        except ImportError:  # a module this Python build lacks (e.g. sqlite3 without libsqlite3)
            continue
    return out


@functools.lru_cache(maxsize=2)
def pydocs_unlabelled(min_chars: int = 40) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Texts and items of the unlabelled corpus: each ``pydoc_data.topics`` entry (a section of
    the language reference) and each docstring of ``PYDOCS_UNLABELLED`` (at least ``min_chars``,
    first occurrence only). A paragraph sharing a ``SHINGLE``-token run with any docstring of the
    labelled families' modules (all of them, before ``min_chars`` and ``per_family``) is dropped,
    so no labelled text, whatever ``data.seed`` validates, leaks into the language model."""
    labelled = _docstrings([s for specs in PYDOCS_FAMILIES.values() for s in specs])
    banned = set().union(*(_shingles(doc) for _, doc in labelled))
    seen = {doc for _, doc in labelled}

    def clean(text: str) -> str:
        kept, tail = [], []  # tail: the last tokens kept, so runs across paragraphs count too
        for par in _PARAGRAPHS.split(text):
            toks = tokenize(par)[1:]
            if toks and not _runs(tail + toks) & banned:
                kept.append(par)
                tail = (tail + toks)[-(SHINGLE - 1) :]
        return "\n\n".join(kept)

    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions package the reference text separately
        topics = {}
    texts, items = [], []
    for key in sorted(topics):
        if len(text := clean(topics[key])) >= min_chars:
            texts.append(text)
            items.append(f"pydoc_data.topics:{key}")
    for qualname, doc in _docstrings(PYDOCS_UNLABELLED):
        if len(doc) >= min_chars and doc not in seen:
            seen.add(doc)
            if len(text := clean(doc)) >= min_chars:
                texts.append(text)
                items.append(qualname)
    return tuple(texts), tuple(items)


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


@dataclass
class PyDocsData(TextData):
    """Built in, offline: docstrings of the Python standard library on this machine (real English
    text). The label of each docstring is the module family it documents, one of six: text
    (str, re, textwrap, codecs...), files (os, pathlib, shutil, io, tarfile...), network (socket,
    http, urllib, smtplib...), math (math, decimal, statistics, random...), formats (json, csv,
    pickle, xml, zlib...) and concurrency (threading, asyncio, subprocess...); the modules are
    listed in ``fastlab.data.text.pydocs.PYDOCS_FAMILIES``. About 1,570 docstrings, the largest
    family about a fifth of them.

    A language model also reads unlabelled standard-library English (``unlabelled``, like IMDb's
    ``unsup/``): the language reference in ``pydoc_data.topics`` and the docstrings of ~90
    modules outside the families (``PYDOCS_UNLABELLED``), about 190k tokens next to the
    labelled training texts' 72k. Any paragraph sharing an 8-token run with a docstring of the
    families' modules is left out, so the classifier's validation texts are never read; the
    labelled texts and the classifier's data do not change."""

    name: str = "pydocs"
    min_chars: int = 40  # shorter docstrings ("Return self.") are dropped
    per_family: int = 320  # a larger family keeps this many, chosen by a hash of the name
    max_docs: int | None = None  # a seeded subset of this many docstrings (quick runs); null = all
    unlabelled: bool = True  # the language model also reads the unlabelled corpus


@register("data", "pydocs", PyDocsData)
def pydocs(cfg: PyDocsData) -> TextSource:
    """The labelled corpus, split by ``data.seed`` (``max_docs`` keeps a seeded subset: quick
    runs), and with ``data.unlabelled`` the unlabelled corpus (a language model's only)."""
    texts, labels, items = (list(xs) for xs in pydocs_corpus(cfg.min_chars, cfg.per_family))
    if cfg.max_docs is not None and cfg.max_docs < len(texts):
        keep = sorted(seeded_split(len(texts), cfg.max_docs / len(texts), cfg.seed)[1])
        texts, labels, items = ([xs[i] for i in keep] for xs in (texts, labels, items))
    src = split_source(texts, labels, items, cfg)
    if cfg.unlabelled:
        src.unlabelled_texts, src.unlabelled_items = (list(xs) for xs in pydocs_unlabelled(cfg.min_chars))
    return src
