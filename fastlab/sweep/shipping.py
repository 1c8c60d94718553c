"""What a launcher ships to every job of a sweep: pickled once by the driver, unpickled once per
job process.

Hydra's launchers that run jobs in other processes (joblib, submitit, ray) pickle each job's
arguments: Hydra's singletons and the config loader among them, about 140 KB and 28 ms per job
between the driver's pickling and the job's unpickling (a study trial trains for about 100 ms),
the same for every job of a sweep. So their ``__reduce__`` hands the launcher's pickler bytes made once
(``blob``) with a token, and in a job process ``received`` restores them on their first arrival
and gives the same object to that process's later jobs of the sweep. A job process runs its jobs
one after another, and sharing these objects between them is what Hydra's in-process launcher
does for every job. Each sweep's objects have their own token, so a process that runs jobs of a
later sweep (whose configs may differ) never sees an earlier sweep's.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_RECEIVED: OrderedDict[str, Any] = OrderedDict()
_KEEP = 4  # per process: a sweep ships two objects; room for a second sweep's in the same process


def blob(value: Any) -> bytes | None:
    """``value`` pickled, or None when only the launcher's own pickler (cloudpickle) can ship it."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - e.g. a lambda somewhere in a user's singleton
        return None


def received(token: str, data: bytes, restore: Callable[[Any], T]) -> T:
    """``restore(pickle.loads(data))`` on the first arrival of ``token`` in this process, the same
    object on every later one."""
    if token in _RECEIVED:
        _RECEIVED.move_to_end(token)
        return _RECEIVED[token]
    value = restore(pickle.loads(data))
    _RECEIVED[token] = value
    while len(_RECEIVED) > _KEEP:
        _RECEIVED.popitem(last=False)
    return value
