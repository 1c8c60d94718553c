"""The sweeper's user-facing error."""

from hydra.errors import CompactHydraException

from fastlab.errors import FastlabError


class SweepError(FastlabError, CompactHydraException):
    """A sweep the user set up wrongly, or one that had to stop.

    Hydra prints a ``CompactHydraException`` as its message alone (no traceback) and exits
    non-zero, so the message is one line that names the thing and the fix.
    """


class StoreError(SweepError):
    """``trials.db`` cannot be read: not a fastlab trials store, or a damaged one."""
