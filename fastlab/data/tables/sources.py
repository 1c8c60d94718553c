"""Table sources: scikit-learn's built-in tables and CSV files, read column by column.

A source returns a :class:`Table`: raw values per column (``str`` or ``float``; ``None`` where a
value is missing), the target's name and, for the built-in tables, which columns are categorical.
:func:`column_kinds` then decides each column's kind and :func:`split_rows` the validation rows.

The built-in tables (``data=sklearn_table data.dataset=...``) are scikit-learn's, offline. Their
features are all measurements, so to exercise what tabular models are for, each table is changed
in a fixed, documented way (the same on every machine, independent of any seed):

- one categorical column: breast_cancer's ``mean area`` is replaced by ``size`` (bins small <400,
  medium <550, large <800, very large), wine's ``color_intensity`` by ``colour`` (pale <3.5,
  light <5.5, medium <8, deep); diabetes' ``sex`` is a genuine category (``1``/``2``, read with
  ``load_diabetes(scaled=False)``, as are all its columns: raw units);
- missing values: rows ``i % 17 == 5`` lose one continuous value (``mean texture``,
  ``magnesium``, ``bp``) and rows ``i % 23 == 7`` their categorical value, so that FillMissing
  and Categorify's ``#na#`` slot are used.

Targets: ``diagnosis`` (malignant/benign), ``cultivar`` (class_0..2), ``progression`` (a number).
"""

from __future__ import annotations

import csv
import math
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from fastlab.config import DataConfig, check, check_choice
from fastlab.data.split import seeded_split
from fastlab.errors import ConfigError, DataError
from fastlab.registry import register

NONFINITE = ("error", "missing")
SHOWN_ROWS = 3  # rows a non-finite message names before "and N more"


@dataclass
class TabularData(DataConfig):
    """Keys every table source shares. Columns not named in ``cat_names`` or ``cont_names`` are
    read as continuous when numeric and categorical otherwise (null = decide by the values).

    ``nonfinite`` says what a written non-finite number (``inf``, ``-inf``, ``nan``, or one too
    large for a float such as ``1e999``) in a continuous column is: ``error`` (the default) stops
    the run naming the column and rows; ``missing`` reads it as a missing value, as an empty
    cell is read (FillMissing). A non-finite regression target is always an error."""

    kind: ClassVar[str] = "table"
    bs: int = 64
    y_name: str | None = None  # the target column; the built-in sets know their own
    cat_names: list[str] | None = None
    cont_names: list[str] | None = None
    nonfinite: str = "error"  # error | missing: a written inf/nan in a continuous column

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("data.nonfinite", self.nonfinite, NONFINITE)


@dataclass
class Table:
    """A table in memory. ``columns`` maps a name to its ``N`` raw values (``str``, ``float`` or
    ``None`` for missing); ``items`` names each row; ``valid`` marks validation rows when the
    source says which (a ``valid_col``), else ``None``."""

    columns: dict[str, list]
    where: str  # how messages name the table, e.g. "csv 'data/adult.csv'"
    y_name: str
    cat_names: list[str] | None  # the source's own categorical columns (built-in tables)
    items: list[str]
    valid: list[bool] | None = None

    def __len__(self) -> int:
        return len(self.items)


# dataset -> (loader name, target name, column to bin, bin edges, bin names, categorical name,
#             column losing values at rows i % 17 == 5)
BUILTIN = {
    "breast_cancer": ("load_breast_cancer", "diagnosis", "mean area", [400, 550, 800],
                      ["small", "medium", "large", "very large"], "size", "mean texture"),
    "wine": ("load_wine", "cultivar", "color_intensity", [3.5, 5.5, 8.0],
             ["pale", "light", "medium", "deep"], "colour", "magnesium"),
    "diabetes": ("load_diabetes", "progression", None, None, None, "sex", "bp"),
}


@dataclass
class SklearnTableData(TabularData):
    """A scikit-learn table, built in and offline: breast_cancer, wine (classification) or
    diabetes (regression)."""

    name: str = "sklearn_table"
    dataset: str = "breast_cancer"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.dataset in BUILTIN, f"data.dataset={self.dataset!r} is not a built-in table: use one of {sorted(BUILTIN)}")


@register("data", "sklearn_table", SklearnTableData)
def sklearn_table(cfg: SklearnTableData) -> Table:
    """One of scikit-learn's tables, changed as the module docstring says."""
    import sklearn.datasets

    loader, y_name, binned, edges, names, cat_name, blanked = BUILTIN[cfg.dataset]
    kwargs = {"scaled": False} if cfg.dataset == "diabetes" else {}
    bunch = getattr(sklearn.datasets, loader)(**kwargs)
    x, n = bunch.data, len(bunch.data)
    columns: dict[str, list] = {}
    for j, feature in enumerate(str(f) for f in bunch.feature_names):
        values = [float(v) for v in x[:, j]]
        if feature == binned:
            columns[cat_name] = [names[bisect_right(edges, v)] for v in values]
        elif feature == cat_name:  # diabetes' sex: 1.0/2.0 -> "1"/"2"
            columns[cat_name] = [str(int(v)) for v in values]
        else:
            columns[feature] = values
    for i in range(n):
        if i % 17 == 5:
            columns[blanked][i] = None
        if i % 23 == 7:
            columns[cat_name][i] = None
    target_names = getattr(bunch, "target_names", None)
    columns[y_name] = ([str(target_names[int(t)]) for t in bunch.target] if target_names is not None
                       else [float(t) for t in bunch.target])
    return Table(columns, f"sklearn_table {cfg.dataset}", y_name, [cat_name],
                 [f"{cfg.dataset}/{i}" for i in range(n)])


def _flag(value: str | None, col: str, line: int, where: str) -> bool:
    v = (value or "").strip().lower()
    if v in ("1", "true", "yes", "y", "t"):
        return True
    if v in ("0", "false", "no", "n", "f", ""):
        return False
    raise DataError(f"{where} line {line}: valid_col '{col}' holds {value!r}: use true/false (or 1/0)")


@dataclass
class TableCsvData(TabularData):
    """A CSV table with the target in ``y_name``."""

    name: str = "table_csv"
    csv: str = "table.csv"  # relative to ``path`` unless absolute
    valid_col: str | None = None  # a boolean column marking validation rows; else valid_pct


@register("data", "table_csv", TableCsvData)
def table_csv(cfg: TableCsvData) -> Table:
    """A CSV with a header row; an empty cell is a missing value. Rows are items ``<file>:<line>``."""
    if cfg.path is None and not Path(cfg.csv).is_absolute():
        raise ConfigError("data=table_csv needs data.path=<folder> (or an absolute data.csv=<file>)")
    csv_path = Path(cfg.csv) if Path(cfg.csv).is_absolute() else Path(cfg.path).expanduser() / cfg.csv
    if not csv_path.is_file():
        raise DataError(f"data.csv '{csv_path}' does not exist: set data.csv=<csv file, relative to data.path>")
    where = f"csv '{csv_path}'"
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise DataError(f"{where} is empty: it needs a header row and data rows")
        header = [h.strip() for h in header]
        rows = [(i + 2, r) for i, r in enumerate(reader) if any(cell.strip() for cell in r)]
    if len(set(header)) != len(header):
        raise DataError(f"{where} repeats a column name in its header {header}: make them unique")
    for line, r in rows:
        if len(r) != len(header):
            raise DataError(f"{where} line {line} has {len(r)} cells but the header has {len(header)}: fix that row")
    if cfg.y_name is None:
        raise ConfigError(f"data=table_csv needs data.y_name=<target column>: one of {header}")
    columns = {h: [r[j].strip() or None for _, r in rows] for j, h in enumerate(header)}
    valid = None
    if cfg.valid_col is not None:
        if cfg.valid_col not in columns:
            raise DataError(f"{where} has no column '{cfg.valid_col}' (data.valid_col): its columns are {header}")
        flags = columns.pop(cfg.valid_col)
        valid = [_flag(v, cfg.valid_col, line, where) for v, (line, _) in zip(flags, rows)]
    return Table(columns, where, cfg.y_name, None, [f"{csv_path.name}:{line}" for line, _ in rows], valid)




def _is_number(v) -> bool:
    if isinstance(v, float):
        return True
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def column_kinds(table: Table, cfg: TabularData) -> tuple[str, list[str], list[str]]:
    """``(y_name, cat_names, cont_names)``: the config's names first, then the source's own
    categorical columns; any other column is continuous when all its values are numbers, else
    categorical. Every name the config gives must be a column of the table."""
    names = list(table.columns)
    y_name = cfg.y_name or table.y_name
    for key, given in (("y_name", [y_name]), ("cat_names", cfg.cat_names or []), ("cont_names", cfg.cont_names or [])):
        for col in given:
            if col not in table.columns:
                raise DataError(f"{table.where} has no column '{col}' (data.{key}): its columns are {names}")
    both = sorted(set(cfg.cat_names or []) & set(cfg.cont_names or []))
    if both:
        raise ConfigError(f"column(s) {both} are in both data.cat_names and data.cont_names: name each in one")
    if y_name in (cfg.cat_names or []) + (cfg.cont_names or []):
        raise ConfigError(f"the target '{y_name}' is also named as an input in data.cat_names/cont_names: remove it there")
    cats, conts = [], []
    source_cats = set(table.cat_names or [])
    for col in names:
        if col == y_name:
            continue
        if col in (cfg.cat_names or []):
            cats.append(col)
        elif col in (cfg.cont_names or []):
            conts.append(col)
        elif col in source_cats:
            cats.append(col)
        elif all(v is None or _is_number(v) for v in table.columns[col]):
            conts.append(col)
        else:
            cats.append(col)
    if not cats and not conts:
        raise DataError(f"{table.where} has no input column besides the target '{y_name}': add feature columns")
    return y_name, cats, conts


def continuous_values(table: Table, col: str, nonfinite: str = "error") -> list[float]:
    """The column as floats, NaN where missing; a value that is not a number is a ``DataError``,
    and so is a non-finite one (``inf``, ``nan``, ``1e999``) unless ``nonfinite="missing"``, which
    reads it as missing (``data.nonfinite``)."""
    out, bad = [], []
    for v, item in zip(table.columns[col], table.items):
        if v is None:
            out.append(math.nan)
            continue
        try:
            x = float(v)
        except ValueError:
            raise DataError(f"{table.where}: continuous column '{col}' holds {v!r} at {item}: fix the value "
                            f"or name the column in data.cat_names") from None
        if not math.isfinite(x):
            bad.append((v, item))
            x = math.nan
        out.append(x)
    if bad and nonfinite != "missing":
        raise DataError(f"{table.where}: continuous column '{col}' holds {non_finite_rows(bad)}: fix those values, "
                        f"or set data.nonfinite=missing to read them as missing values")
    return out


def non_finite_rows(bad: list[tuple]) -> str:
    """``[(value, item), ...]`` -> "6 non-finite values ('inf' at t.csv:5, 'nan' at t.csv:9, ... and 3 more)",
    the first :data:`SHOWN_ROWS` named, for one-line messages."""
    shown = ", ".join(f"{v!r} at {item}" for v, item in bad[:SHOWN_ROWS])
    more = len(bad) - SHOWN_ROWS
    return f"{len(bad)} non-finite value{'s' if len(bad) > 1 else ''} ({shown}{f' and {more} more' if more > 0 else ''})"


def split_rows(table: Table, cfg: TabularData) -> tuple[list[int], list[int]]:
    """Train and valid row indices: the source's ``valid`` flags, else a split seeded by
    ``data.seed`` alone (``data.valid_pct`` of the rows validate)."""
    if table.valid is not None:
        train = [i for i, v in enumerate(table.valid) if not v]
        valid = [i for i, v in enumerate(table.valid) if v]
    else:
        train, valid = seeded_split(len(table), cfg.valid_pct, cfg.seed)
    if len(train) < 2 or not valid:
        raise DataError(f"{table.where} gives {len(train)} training and {len(valid)} validation rows: "
                        f"both splits need rows (check data.valid_col or data.valid_pct)")
    return train, valid
