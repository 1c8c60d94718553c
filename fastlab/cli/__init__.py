"""fastlab's commands, and their one error wrapper.

Each command is a module here: ``train`` (``fastlab-train``), ``lr_find`` (``fastlab-lr-find``),
``meta`` (``fastlab-meta``), ``predict``, ``export``, ``serve`` and ``interpret``. The commands are
the edge: they read the command line (and Hydra's config, through ``fastlab.cli.hydra_app`` only),
build what a run needs to know about where it runs (``fastlab.context.RunContext``) and hand it
down.

A user's mistake (``FastlabError`` and its kinds, or a ``MetaError``) is printed as one line,
``<prog>: error: <message>``, and the tool exits with status 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from fastlab.errors import FastlabError

T = TypeVar("T")


def run_cli(prog: str, fn: Callable[[], T]) -> T:
    """``fn()``; a ``FastlabError`` becomes one line on stderr and exit status 2."""
    try:
        return fn()
    except FastlabError as e:
        fail(prog, str(e))


def fail(prog: str, message: str, code: int = 2):
    """End the tool with ``<prog>: error: <message>`` on stderr."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)
