"""fast.ai's tabular procs, fitted on the training rows only: FillMissing, Categorify, Normalize.

Each proc is a pair of pure functions (``fit_*`` on training values, then apply to any split);
:class:`TabularProcs` runs them in fast.ai's order and keeps their state as plain data (lists,
dicts, floats), so ``model.pt`` records it and it can be re-applied to new rows with
:meth:`TabularProcs.from_state`.

- FillMissing: a continuous value that is missing becomes the column's training median; a column
  with missing values in training gets a categorical ``<col>_na`` column (``False``/``True``).
- Categorify: the training values of a categorical column, sorted, after ``#na#`` at index 0;
  a missing value, or one never seen in training, maps to 0.
- Normalize: ``(x - mean) / std`` with the training mean and std (ddof=1, as pandas and fast.ai;
  a constant column keeps std 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from fastlab.errors import DataError

NA = "#na#"


def value_key(v: str) -> tuple:
    """Sort numbers numerically ("2" before "10"), then text."""
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def category_text(v) -> str | None:
    """A raw value as a category: ``None`` stays missing; 2.0 reads "2", as it would in a CSV."""
    if v is None:
        return None
    if isinstance(v, float):
        if math.isnan(v):
            return None
        return str(int(v)) if v.is_integer() else repr(v)
    return str(v)


# --------------------------------------------------------------------------------- the procs
def fit_categorify(values: Sequence[str | None]) -> list[str]:
    """The vocabulary: ``#na#`` then the distinct training values, sorted."""
    return [NA, *sorted({v for v in values if v is not None}, key=value_key)]


def categorify(values: Sequence[str | None], vocab: Sequence[str]) -> list[int]:
    """Indices into ``vocab``; missing or unseen values are 0 (``#na#``)."""
    index = {v: i for i, v in enumerate(vocab)}
    return [index.get(v, 0) if v is not None else 0 for v in values]


def fit_fill_missing(x: np.ndarray) -> tuple[float, bool]:
    """The training median of ``x (N,)`` (NaN = missing) and whether any value was missing."""
    missing = np.isnan(x)
    return float(np.median(x[~missing])) if (~missing).any() else math.nan, bool(missing.any())


def fill_missing(x: np.ndarray, median: float) -> tuple[np.ndarray, np.ndarray]:
    """``x (N,)`` with NaNs replaced by ``median``, and the missing mask ``(N,)``."""
    missing = np.isnan(x)
    return np.where(missing, median, x), missing


def fit_normalize(x: np.ndarray) -> tuple[float, float]:
    std = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    return float(x.mean()), std if std > 1e-7 else 1.0


class TabularProcs:
    """FillMissing, then Categorify (of ``cat_names`` and the new ``_na`` columns), then
    Normalize, as fast.ai's ``TabularPandas`` applies them.

    Learned state, set by :meth:`fit` (training rows only): ``medians_``, ``na_names_`` (the
    continuous columns with missing training values), ``vocabs_``, ``means_``, ``stds_``.
    """

    def __init__(self, cat_names: Sequence[str], cont_names: Sequence[str]):
        self.cat_names, self.cont_names = list(cat_names), list(cont_names)

    @property
    def all_cat_names(self) -> list[str]:
        """The categorical inputs in model order: the table's, then one ``<col>_na`` per filled column."""
        return self.cat_names + [f"{c}_na" for c in self.na_names_]

    def fit(self, cats: dict[str, list], conts: dict[str, np.ndarray], where: str = "the table") -> TabularProcs:
        """``cats`` maps a column to its training values (``str`` or ``None``), ``conts`` to a
        float array ``(N_train,)`` with NaN for missing."""
        self.medians_, self.na_names_ = {}, []
        for c in self.cont_names:
            median, had_missing = fit_fill_missing(conts[c])
            if math.isnan(median):
                raise DataError(f"{where}: continuous column '{c}' has no value in the training rows: "
                                f"fill it in or leave it out of data.cont_names")
            self.medians_[c] = median
            if had_missing:
                if f"{c}_na" in self.cat_names:
                    raise DataError(f"{where}: column '{c}_na' clashes with the missing-value flag of '{c}': rename it")
                self.na_names_.append(c)
        filled = {c: fill_missing(conts[c], self.medians_[c]) for c in self.cont_names}
        flags = {f"{c}_na": [str(bool(m)) for m in filled[c][1]] for c in self.na_names_}
        self.vocabs_ = {c: fit_categorify({**cats, **flags}[c]) for c in self.all_cat_names}
        stats = {c: fit_normalize(filled[c][0]) for c in self.cont_names}
        for c, (mean, std) in stats.items():  # sums of values near 1e308 overflow
            if not (math.isfinite(mean) and math.isfinite(std)):
                raise DataError(f"{where}: continuous column '{c}' has values too large to normalise (mean {mean}, "
                                f"std {std}): rescale the column")
        self.means_ = {c: m for c, (m, _) in stats.items()}
        self.stds_ = {c: s for c, (_, s) in stats.items()}
        return self

    def transform(self, cats: dict[str, list], conts: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of any split -> ``cats (N, n_cat)`` long and ``conts (N, n_cont)`` float32."""
        n = len(next(iter({**cats, **conts}.values())))
        filled = {c: fill_missing(conts[c], self.medians_[c]) for c in self.cont_names}
        flags = {f"{c}_na": [str(bool(m)) for m in filled[c][1]] for c in self.na_names_}
        columns = {**cats, **flags}
        codes = [categorify(columns[c], self.vocabs_[c]) for c in self.all_cat_names]
        x_cat = torch.tensor(codes, dtype=torch.long).T if codes else torch.zeros(n, 0, dtype=torch.long)
        normed = [(filled[c][0] - self.means_[c]) / self.stds_[c] for c in self.cont_names]
        x_cont = (torch.tensor(np.stack(normed, axis=1), dtype=torch.float32) if normed
                  else torch.zeros(n, 0))
        return x_cat.contiguous(), x_cont

    def beyond_float32(self, x_cont: torch.Tensor) -> list[tuple[int, str]]:
        """``(row, column)`` of each value of :meth:`transform`'s ``x_cont`` that is not finite: a
        finite raw value so far from the training mean that, normalised, float32 cannot hold it."""
        rows, cols = torch.nonzero(~torch.isfinite(x_cont), as_tuple=True)
        return [(int(r), self.cont_names[int(c)]) for r, c in zip(rows, cols)]

    def range_message(self, col: str, value, at: str | None = None) -> str:
        """The one line naming a value :meth:`beyond_float32` found (and the row ``at``, if given)."""
        where = f" at {at}" if at else ""
        return (f"continuous column '{col}' holds {value!r}{where}, too far from the training values (mean "
                f"{self.means_[col]:.4g}, std {self.stds_[col]:.4g}) for the model's float32 inputs: fix the value")

    def state(self) -> dict:
        """Plain data for ``model.pt``."""
        return {"cat_names": self.cat_names, "cont_names": self.cont_names, "medians": self.medians_,
                "na_names": self.na_names_, "vocabs": self.vocabs_, "means": self.means_, "stds": self.stds_}

    @classmethod
    def from_state(cls, state: dict) -> TabularProcs:
        procs = cls(state["cat_names"], state["cont_names"])
        procs.medians_, procs.na_names_ = dict(state["medians"]), list(state["na_names"])
        procs.vocabs_ = {k: list(v) for k, v in state["vocabs"].items()}
        procs.means_, procs.stds_ = dict(state["means"]), dict(state["stds"])
        return procs
