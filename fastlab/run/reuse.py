"""What a sweep worker keeps between its trials: decoded data, read checkpoints, and the code's
versions and git commit (for ``metrics.json``).

A worker process of a sweep (a joblib worker runs many trials, one after another) sees the same
``data.*`` and the same pretrained file trial after trial. Within ``using(True)`` (set by
``fastlab.train`` for trials of a fastlab sweep) ``kept(kind, key, build)`` builds once per key and
hands the same object back afterwards; outside it, it always builds, so a run alone reads its files
afresh. What is kept must not be changed by its users: image sources and checkpoints are read-only
to the runs (loaders never write into their tensors; weights are copied into the model).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

_active: ContextVar[bool] = ContextVar("fastlab_reuse", default=False)
_kept: dict[str, OrderedDict[Hashable, Any]] = {}
KEEP = 2  # per kind: a sweep over data.* settings (e.g. data.size) alternates between a few


@contextlib.contextmanager
def using(active: bool) -> Iterator[None]:
    """Keep what ``kept`` builds (``active``) for the duration of the block."""
    token = _active.set(active)
    try:
        yield
    finally:
        _active.reset(token)


def kept(kind: str, key: Hashable, build: Callable[[], T]) -> T:
    """``build()``, or what it returned before for the same ``kind`` and ``key`` when reuse is on."""
    if not _active.get():
        return build()
    store = _kept.setdefault(kind, OrderedDict())
    if key in store:
        store.move_to_end(key)
        return store[key]
    value = build()
    store[key] = value
    while len(store) > KEEP:
        store.popitem(last=False)
    return value


def reused(kind: str) -> int:
    """How many objects of ``kind`` this process keeps (for tests and logs)."""
    return len(_kept.get(kind, ()))
