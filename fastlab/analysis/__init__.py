"""Meta-analysis of sweeps: a random forest over the trials says which hyperparameters matter
and where the focus parameter's best value lies (``fastlab-meta``, :mod:`fastlab.cli.meta`).

Split by what it does: ``sources`` (reading trials from sweep dirs, multiruns, MLflow, Optuna),
``forest`` (the analysis and its verdict rule), ``report`` (report.md, summary.json, figures) and
``study`` (the 2.6 study's workflows: confirmation, stability, the matrix, presets).

    from fastlab.analysis import MetaAnalysis, read_trials, write_report

    table = read_trials("outputs/sweeps/lr_ratio")
    m = MetaAnalysis(focus="schedule.lr_ratio", reference=2.6).fit(table)
    write_report(m, "outputs/sweeps/lr_ratio/meta")

Names are imported on first use: scikit-learn and matplotlib cost seconds, and the command line
should answer a wrong path at once.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "MetaAnalysis": "fastlab.analysis.forest.analysis",
    "MetaError": "fastlab.analysis.errors",
    "TrialsTable": "fastlab.analysis.sources.table",
    "read_trials": "fastlab.analysis.sources",
    "write_report": "fastlab.analysis.report.markdown",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fastlab.analysis' has no attribute {name!r}")
