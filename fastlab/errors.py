"""Errors a user can cause. Each message is one line that names the thing and the fix.

``fastlab-train`` prints such an error as that one line and exits with status 2 (in a multirun it
is raised instead, so the sweeper records a failed trial and goes on).
"""


class FastlabError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


class ConfigError(FastlabError):
    """A config value that composes but cannot be used."""


class DataError(FastlabError):
    """A data source that cannot be read: a missing path, an empty class, an unreadable image."""


class RunTimeout(FastlabError):
    """A run that passed ``trainer.timeout``; its ``last.pt`` stays for ``trainer.resume``."""


class OutputError(FastlabError):
    """An output that cannot be written (disk full, file-size limit); nothing old is lost."""
