"""The names ``trainer.logger`` takes and the extras they need (no heavy imports: config.py uses it).

``trainer.logger`` is a list of ``csv`` (``history.csv`` rewritten every epoch), ``tensorboard``
(``<run dir>/tensorboard``), ``mlflow`` and ``wandb``. The old spellings still work: the string ``none`` or
``tensorboard`` (csv then follows ``trainer.callbacks.csv_logger``, as it always did), and
``trainer.callbacks.csv_logger=false`` still turns csv off.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

from fastlab.errors import ConfigError

LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")
DEFAULT_LOGGERS = ("csv",)
# logger -> (a module that must import, the pyproject extra that installs it)
EXTRAS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}


def parse_loggers(value: Any, csv_logger: bool = True) -> tuple[str, ...]:
    """``trainer.logger`` as the tuple of logger names it asks for, in ``LOGGERS`` order.

    A list names the loggers (``[csv, mlflow]``; ``[]`` for none). A string is the old spelling:
    ``none`` or one logger name, with csv on as ``trainer.callbacks.csv_logger`` says. Either way
    ``csv_logger=False`` leaves csv out. Raises ``ConfigError`` for anything else.
    """
    if isinstance(value, str):
        if value != "none" and value not in LOGGERS:
            raise ConfigError(f"trainer.logger={value!r} is not known: use a list of {', '.join(LOGGERS)}, "
                              "e.g. trainer.logger=[csv,mlflow]")
        names = {"csv", value} - {"none"}
    elif isinstance(value, Iterable) and not isinstance(value, dict):
        names = set()
        for v in value:
            if v not in LOGGERS:
                raise ConfigError(f"trainer.logger holds {v!r}, not a logger: use a list of {', '.join(LOGGERS)}, "
                                  "e.g. trainer.logger=[csv,mlflow]")
            names.add(v)
    else:
        raise ConfigError(f"trainer.logger={value!r} is not a list of loggers: e.g. trainer.logger=[csv,mlflow]")
    if not csv_logger:
        names.discard("csv")
    return tuple(n for n in LOGGERS if n in names)


def require_packages(loggers: Iterable[str]) -> None:
    """One ``ConfigError`` naming the extra to install when a logger's package is missing."""
    for name in loggers:
        if name in EXTRAS:
            module, extra = EXTRAS[name]
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):  # a broken install, or an import blocked in sys.modules
                found = False
            if not found:
                raise ConfigError(f"trainer.logger={name} needs the {module} package, which is not installed: "
                                  f"pip install 'fastlab[{extra}]' (or leave {name} out of trainer.logger)")
