"""What every tracker copies from a finished run: ``metrics.json``'s final numbers and the run
dir's files, named once for MLflow and W&B alike."""

from __future__ import annotations

import math
from typing import Any

from fastlab.rundir import HISTORY, METRICS, MODEL, PLOTS

# The run dir's files and folders a tracker keeps as artifacts (those the run wrote)
ARTIFACT_FILES = (METRICS, HISTORY, MODEL)
ARTIFACT_DIRS = (PLOTS,)


def finite(value: Any) -> bool:
    """A real, finite number (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def final_metrics(doc: dict[str, Any]) -> dict[str, float]:
    """``metrics.json``'s final numbers by tracker metric name: ``objective``, ``epochs``,
    ``layer_groups``, ``n_params``, ``final.*``, ``best.*`` and ``seconds.*``."""
    out = {}
    for key in ("objective", "epochs", "layer_groups", "n_params"):
        if finite(doc.get(key)):
            out[key] = float(doc[key])
    for group in ("final", "best", "seconds"):
        for key, value in (doc.get(group) or {}).items():
            if finite(value):
                out[f"{group}.{key}"] = float(value)
    return out
