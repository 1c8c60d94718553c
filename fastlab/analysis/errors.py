"""Errors a user of ``fastlab-meta`` can cause: one line naming the thing and the fix, exit 2."""

from __future__ import annotations

from fastlab.errors import FastlabError


class MetaError(FastlabError):
    """A sweep dir, option or preset that ``fastlab-meta`` cannot use."""
