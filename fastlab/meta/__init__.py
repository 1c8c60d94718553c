"""Meta-analysis of sweeps: a random forest over the trials says which hyperparameters matter
and where the focus parameter's best value lies (``fastlab-meta``, :mod:`fastlab.meta.cli`).

    from fastlab.meta import MetaAnalysis, read_trials, write_report

    table = read_trials("outputs/sweeps/lr_ratio")
    m = MetaAnalysis(focus="schedule.lr_ratio", reference=2.6).fit(table)
    write_report(m, "outputs/sweeps/lr_ratio/meta")

Names are imported on first use: scikit-learn and matplotlib cost seconds, and the command line
should answer a wrong path at once.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "MetaAnalysis": "fastlab.meta.analysis",
    "MetaError": "fastlab.meta.errors",
    "TrialsTable": "fastlab.meta.trials",
    "read_trials": "fastlab.meta.trials",
    "write_report": "fastlab.meta.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fastlab.meta' has no attribute {name!r}")
