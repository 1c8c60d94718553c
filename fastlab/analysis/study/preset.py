"""``--apply NAME``: the recommendation as a schedule preset, ``conf/schedule/NAME.yaml``.

The preset composes like the built-in options: ``defaults: [/schedule_<option>_schema@_here_, _self_]`` with the
``name:`` of the schedule the sweep trained with (``one_cycle`` unless it said otherwise), so
Hydra checks it against the same schema and ``fastlab.config`` builds the same dataclass.
Values: the sweep's own schedule (its composed config), the focus parameter at its recommended
value, and every other swept ``schedule.*`` parameter that matters at the best value of its own
partial dependence (one that does not matter keeps the sweep's value). Then ``fastlab-train schedule=NAME`` trains with the finding.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from fastlab.analysis.errors import MetaError
from fastlab.analysis.forest.analysis import MetaAnalysis
from fastlab.analysis.forest.recommend import round3
from fastlab.config import schema_name
from fastlab.rundir import atomic_write_text

MARKER = "# Written by fastlab-meta"
GROUP = "schedule"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def preset_values(m: MetaAnalysis) -> tuple[dict[str, Any], list[str]]:
    """The preset's schedule node and its comment lines (what was set, and why)."""
    rec = m.recommendation_
    base = dict(((m.table_.config or {}).get(GROUP)) or {})
    base.setdefault("name", "one_cycle")
    notes = []
    for f in m.encoded_.features:
        key = f.name.removeprefix(f"{GROUP}.")
        if not f.name.startswith(f"{GROUP}.") or "." in key:
            continue
        if f.name == rec["param"]:
            integer = f.integer or (isinstance(base.get(key), int)
                                    and not isinstance(base.get(key), bool))
            base[key] = round3(rec["best"], integer)
            lo, hi = rec["interval"]
            notes.append(f"{key}: recommended {base[key]} ({rec['level']:.0%} interval "
                         f"{lo:.3g} to {hi:.3g})")
            continue
        base[key], why = m.suggest(f.name, base.get(key))
        notes.append(f"{key}: {base[key]} ({why})")
    return base, notes


def preset_path(name: str, conf_dir: str | Path) -> Path:
    """``<conf_dir>/schedule/<name>.yaml``, checked before any work: a plain name, and not a file
    fastlab-meta did not write (a built-in option is never overwritten)."""
    if not _NAME.fullmatch(name):
        raise MetaError(f"--apply {name!r} is not a plain name: use letters, digits, '-' and '_', "
                        "e.g. --apply lr_ratio_tuned")
    path = Path(conf_dir) / GROUP / f"{name}.yaml"
    if path.exists() and not path.read_text().startswith(MARKER):
        raise MetaError(f"{path} exists and fastlab-meta did not write it: choose another "
                        "--apply name")
    return path


def write_preset(m: MetaAnalysis, name: str, conf_dir: str | Path) -> Path:
    """Write ``<conf_dir>/schedule/<name>.yaml`` from a fitted analysis; returns its path.

    Raises
    ------
    MetaError
        A bad name, a focus outside ``schedule.*``, no clear optimum, or an existing file that
        fastlab-meta did not write (a built-in option is never overwritten).
    """
    path = preset_path(name, conf_dir)
    rec = m.recommendation_
    if rec is None or not rec["param"].startswith(f"{GROUP}."):
        focus = None if rec is None else rec["param"]
        raise MetaError(f"--apply writes a schedule preset, but the focus is {focus}: pass "
                        "--focus schedule.<key> (e.g. schedule.lr_ratio)")
    if not rec["clear_optimum"]:
        raise MetaError(f"no clear optimum for {rec['param']}, so no preset was written: the "
                        "report says why; run more trials or narrow the ranges")
    values, notes = preset_values(m)
    option = values["name"]
    header = [
        f"{MARKER} from {m.table_.path} ({m.n_trials_} trials, OOB R^2 = {m.oob_r2_:.2f}).",
        f"# {rec['verdict']}",
        *(f"#   {n}" for n in notes),
        f"# Use: fastlab-train {GROUP}={name}",
    ]
    body = yaml.safe_dump({"defaults": [f"/{schema_name(GROUP, option)}@_here_", "_self_"]}, sort_keys=False)
    body += "\n" + yaml.safe_dump(values, sort_keys=False, default_flow_style=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(_wrap(header)) + "\n" + body)
    return path


def _wrap(lines: list[str], width: int = 100) -> list[str]:
    """Comment lines wrapped at ``width`` (the verdict is long)."""
    import textwrap

    out = []
    for line in lines:
        out += textwrap.wrap(line, width, subsequent_indent="#   ") or ["#"]
    return out
