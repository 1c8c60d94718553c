"""The one registry: every data source, architecture, schedule and task, with its schema.

Each registers itself beside its builder (timm's ``register_model`` / ``create_model``)::

    @register("data", "digits", DigitsData)
    def digits(cfg: DigitsData) -> Source: ...

Everything that asks "what exists?" reads this registry: the config schemas Hydra checks while
composing (``fastlab.config.register_configs``), the conversion of a composed config into
dataclasses, the errors that list the options, which data and architectures fit a task, and
inference rebuilding a saved model. :func:`load_builtins` imports the modules that register
fastlab's own entries; a new option is one module (its schema, builder and ``register`` call)
plus one YAML under ``conf/<group>/``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastlab.errors import ConfigError

GROUPS = ("data", "arch", "schedule", "task")

# The modules whose import registers the built-in entries (one per package: each package's
# ``__init__`` imports its own modules).
BUILTIN_MODULES = ("fastlab.data", "fastlab.models", "fastlab.schedules", "fastlab.tasks")


@dataclass(frozen=True)
class Entry:
    """One registered option.

    ``builder`` is what the option builds with: a data source function ``(cfg) -> source``, an
    architecture builder ``(cfg, n_in, n_out) -> nn.Module``, a schedule's stage planner, or a
    ``Task``. ``tags`` say what the option is for (an architecture's ``role``: ``body`` for an
    image body with fast.ai's head, ``segmenter``, ``text``, ``table``).
    """

    group: str
    name: str
    schema: type
    builder: Any
    tags: frozenset[str] = frozenset()


_ENTRIES: dict[str, dict[str, Entry]] = {g: {} for g in GROUPS}


def register(group: str, name: str, schema: type, builder: Any = None, tags: frozenset[str] | set[str] = frozenset()):
    """Register ``builder`` as option ``name`` of ``group`` with config schema ``schema``.

    Called with a builder it registers it and returns it; without one it is a decorator.
    Registering a name twice with another builder is an error (two homes for one option).
    """
    if group not in _ENTRIES:
        raise ValueError(f"unknown registry group {group!r}: use one of {GROUPS}")

    def add(obj: Any) -> Any:
        old = _ENTRIES[group].get(name)
        if old is not None and old.builder is not obj:
            raise ValueError(f"{group} option {name!r} is registered twice ({old.builder!r} and {obj!r})")
        _ENTRIES[group][name] = Entry(group, name, schema, obj, frozenset(tags))
        return obj

    return add if builder is None else add(builder)


@contextlib.contextmanager
def scope() -> Iterator[None]:
    """Registrations made inside the block are forgotten at its end (the built-in ones and those
    made before stay): a test or a notebook can try its own option out without it outliving the
    block."""
    saved = {g: dict(entries) for g, entries in _ENTRIES.items()}
    try:
        yield
    finally:
        for g, entries in saved.items():
            _ENTRIES[g].clear()
            _ENTRIES[g].update(entries)


def load_builtins() -> None:
    """Import the modules that register fastlab's own options (cheap after the first call)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def options(group: str, where: Callable[[Entry], bool] | None = None) -> dict[str, Entry]:
    """The registered options of ``group`` (those ``where`` accepts), by name."""
    load_builtins()
    return {n: e for n, e in sorted(_ENTRIES[group].items()) if where is None or where(e)}


def get(group: str, name: str) -> Entry:
    """The entry ``group=name``; an unknown name is a ``ConfigError`` listing the options."""
    entry = options(group).get(name)
    if entry is None:
        raise ConfigError(f"{group}.name={name!r} is not known: use one of {sorted(options(group))}")
    return entry
