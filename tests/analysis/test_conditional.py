"""The conditional-optimum table against a discrete parameter (``data.bs=choice(8, 16, 32)``, an
integer range over a few values) lists the values the trials sampled and nothing between them;
an integer parameter with many values is read at whole values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastlab.analysis.forest.analysis import MetaAnalysis
from fastlab.analysis.forest.dependence import grid_for
from fastlab.analysis.forest.encode import MAX_LEVELS, describe_feature
from fastlab.analysis.report.markdown import markdown
from fastlab.analysis.sources.table import TrialsTable

RATIO = "schedule.lr_ratio"
FAST = {"n_estimators": 80, "n_boot_estimators": 30, "n_boot": 10, "grid_size": 30,
        "n_splits": 3, "n_repeats": 2, "anova": False}


def trials(other: str, values: np.ndarray, effect: np.ndarray, n: int = 150,
           seed: int = 0) -> TrialsTable:
    """A ratio with an optimum at 2.6 plus ``other`` (drawn from ``values``, typed as given),
    which shifts the response by ``effect[its index]``: the most important other parameter."""
    rng = np.random.default_rng(seed)
    ratio = 10 ** rng.uniform(0, 1, n)
    idx = rng.integers(0, len(values), n)
    y = (0.8 - 0.5 * (np.log10(ratio) - np.log10(2.6)) ** 2 + effect[idx]
         + 0.01 * rng.normal(size=n))
    params = tuple({RATIO: float(f"{r:.6g}"), other: values[i].item()} for r, i in zip(ratio, idx))
    return TrialsTable(names=(RATIO, other), params=params, values=y, status=("completed",) * n,
                       numbers=tuple(range(n)), objective="accuracy", direction="maximize",
                       log_scale=frozenset({RATIO}), scales_known=True, path=Path("discrete"))


@pytest.mark.parametrize(("other", "values"), [
    ("data.bs", np.array([8, 16, 32])),                       # choice(8, 16, 32)
    ("schedule.epochs", np.array([2, 3, 4, 5, 6])),           # int(interval(2, 6))
    ("schedule.pct_start", np.array([0.1, 0.25, 0.4])),      # choice of floats
])
def test_conditional_table_lists_only_sampled_values(other, values):
    effect = np.linspace(-0.2, 0.1, len(values))
    m = MetaAnalysis(**FAST).fit(trials(other, values, effect))
    assert m.pd2d_ is not None and m.pd2d_["b"] == other
    rows = m.conditional_rows()
    assert [r["b"] for r in rows] == values.tolist()  # every sampled value, nothing between
    assert all(type(r["b"]) is type(values.tolist()[0]) for r in rows)  # 16, not 15.999999
    # Measured (trials seed 0, random_state 0; no torch, threads do not matter;
    # /tmp/bars/scratch/stab_cond.py): best ratios 2.40 to 2.81 in every case (bars 1.5 to 4.5).
    assert all(1.5 <= r["best_a"] <= 4.5 for r in rows)
    np.testing.assert_allclose(m.pd_[other]["values"], values)  # its 1-D curve too
    s = m.summary()
    assert s["features"][other]["levels"] == values.tolist()
    assert s["conditional_optimum"]["at_best"]["b"] == values.tolist()[-1]
    md = markdown(m, s)
    table = md.split("the conditional optimum")[1].split("![")[0]
    for v in values.tolist():
        assert f"| {v:.3g} |" in table
    assert table.count("\n| ") == 2 + len(values)  # header, rule, one row per sampled value


def test_integer_parameter_with_many_values_is_read_at_whole_values():
    values = np.arange(8, 64)  # more than MAX_LEVELS distinct sizes
    assert len(values) > MAX_LEVELS
    f = describe_feature("data.size", values.tolist(), False, True)
    assert f.integer and not f.discrete
    grid = grid_for(f, f.to_x(values.tolist()), 30)
    assert np.all(f.from_x(grid) == np.round(f.from_x(grid)))
    m = MetaAnalysis(**FAST).fit(trials("data.size", values, np.linspace(-0.2, 0.1, 56)))
    assert all(isinstance(r["b"], int) and 8 <= r["b"] <= 63 for r in m.conditional_rows())


def test_a_discrete_focus_is_recommended_among_sampled_values():
    rng = np.random.default_rng(1)
    bs = rng.choice([8, 16, 32, 64], 120)
    y = -(np.log2(bs) - 4) ** 2 * 0.05 + 0.01 * rng.normal(size=120)  # best at 16
    t = TrialsTable(names=("data.bs",), params=tuple({"data.bs": int(b)} for b in bs), values=y,
                    status=("completed",) * 120, numbers=tuple(range(120)), objective="accuracy",
                    direction="maximize", path=Path("bs"))
    m = MetaAnalysis(focus="data.bs", reference=20, **FAST).fit(t)
    rec = m.recommendation_
    assert rec["best"] == 16 and set(m.pd_["data.bs"]["values"]) == {8, 16, 32, 64}
    assert 20 not in m.pd_["data.bs"]["values"]  # a reference is no grid point of a discrete one
