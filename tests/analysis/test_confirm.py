"""The confirmation grid's arithmetic and command: cells, tuned arms, verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fastlab.analysis.sources.table import TrialsTable
from fastlab.analysis.study.confirm import grid_command, summarize_grid

RATIO, LR = "schedule.lr_ratio", "schedule.lr_max"


def grid(results: dict[tuple[float, float], list[float]], diverged=()) -> TrialsTable:
    params, values, status = [], [], []
    for (ratio, lr), vs in results.items():
        for seed, v in enumerate(vs):
            params.append({RATIO: ratio, LR: lr, "seed": seed})
            values.append(v)
            status.append("completed")
    for ratio, lr in diverged:
        params.append({RATIO: ratio, LR: lr, "seed": 0})
        values.append(np.nan)
        status.append("diverged")
    n = len(params)
    return TrialsTable(names=(RATIO, LR, "seed"), params=tuple(params),
                       values=np.asarray(values), status=tuple(status), numbers=tuple(range(n)),
                       objective="accuracy", direction="maximize", path=Path("grid"))


def test_recommendation_beats_neutral_once_the_rate_is_tuned():
    t = grid({(1.0, 1e-3): [0.80, 0.81, 0.79], (1.0, 1e-2): [0.85, 0.86, 0.84],
              (2.6, 1e-3): [0.88, 0.89, 0.87], (2.6, 1e-2): [0.90, 0.91, 0.92]})
    r = summarize_grid(t, RATIO, LR, 1.0, [1.0, 2.6])
    assert [(c["value"], c["lr_max"], c["n"]) for c in r["cells"]] == [
        (1.0, 1e-3, 3), (1.0, 1e-2, 3), (2.6, 1e-3, 3), (2.6, 1e-2, 3)]
    cell = r["cells"][1]
    assert np.isclose(cell["mean"], 0.85) and np.isclose(cell["se"], 0.01 / np.sqrt(3))
    assert r["beats"] is True and np.isclose(r["difference"], 0.06)
    assert "beats 1" in r["verdict"] and "lr 0.01" in r["verdict"]


def test_no_difference_and_a_diverged_cell():
    t = grid({(1.0, 1e-2): [0.90, 0.80, 0.85], (2.6, 1e-2): [0.86, 0.84, 0.91],
              (2.6, 1e-1): [0.5]}, diverged=[(2.6, 1e-1)])
    r = summarize_grid(t, RATIO, LR, 1.0, [1.0, 2.6])
    assert r["beats"] is None and "cannot be told from" in r["verdict"]
    top = [c for c in r["cells"] if c["lr_max"] == 1e-1][0]
    assert top["n"] == 2 and np.isclose(top["mean"], 0.5)  # diverged: the worst completed value


def test_grid_command_is_a_fastlab_grid_sweep(tmp_path):
    cmd = grid_command(tmp_path / "conf", tmp_path / "g", RATIO, [1.0, 2.6], [1e-3, 1e-2], 3,
                       ["hydra/launcher=joblib"])
    assert cmd[1:4] == ["-m", "fastlab.cli.train", "-m"]
    for part in ("hydra/sweeper=fastlab", "hydra.sweeper.strategy=grid",
                 f"{RATIO}=choice(1.0, 2.6)", f"{LR}=choice(0.001, 0.01)", "seed=range(0, 3)",
                 "hydra/launcher=joblib", f"hydra.sweep.dir={tmp_path / 'g'}"):
        assert part in cmd
