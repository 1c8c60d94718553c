"""TableBunch: a table's train and valid loaders, its procs and its target, by the Bunch contract.

Batches are ``((cats (B, n_cat) long, conts (B, n_cont) float32), y)`` with ``y (B,)`` long class
indices (classification) or float32 values in the target's units (regression).

The target's kind (``task.target``): ``category`` or ``float`` as asked; ``auto`` reads the
values: a target with any non-number, or whose values are all integers with at most
``MAX_AUTO_CLASSES`` distinct values (0/1 flags, 1-5 ratings), is a category; any other numeric
target is a float.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from fastlab import registry
from fastlab.data.base import valid_batch_size
from fastlab.data.tables.procs import TabularProcs, category_text, fit_normalize, value_key
from fastlab.data.tables.sources import (
    Table,
    TabularData,
    column_kinds,
    continuous_values,
    non_finite_rows,
    split_rows,
)
from fastlab.errors import ConfigError, DataError

MAX_AUTO_CLASSES = 20
FLOAT32_MAX = float(np.finfo(np.float32).max)  # a float target beyond it trains as inf


def target_kind(values: list, target: str) -> str:
    """``category`` or ``float`` for the target's (non-missing) ``values``, by the rule above."""
    if target in ("category", "float"):
        return target
    if target != "auto":
        raise ConfigError(f"task.target={target!r} is not known: use auto, category or float")
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        return "category"
    integral = all(math.isfinite(x) and x.is_integer() for x in numbers)
    return "category" if integral and len(set(numbers)) <= MAX_AUTO_CLASSES else "float"


class TableLoader:
    """Batches of in-memory table rows; ``shuffle`` draws a new order each epoch from its own
    ``generator``, so the order is reproducible from the training seed."""

    def __init__(self, x_cat: torch.Tensor, x_cont: torch.Tensor, y: torch.Tensor, bs: int,
                 shuffle: bool = False, drop_last: bool = False, generator: torch.Generator | None = None):
        self.x_cat, self.x_cont, self.y, self.bs = x_cat, x_cont, y, bs
        self.shuffle, self.generator = shuffle, generator
        # A ragged last batch (one row breaks batch norm) is dropped; never drop everything.
        self.drop_last = drop_last and len(y) > bs
        self.device = y.device

    def to(self, device: torch.device) -> TableLoader:
        self.x_cat, self.x_cont, self.y = self.x_cat.to(device), self.x_cont.to(device), self.y.to(device)
        self.device = device
        return self

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.bs if self.drop_last else -(-n // self.bs)

    def __iter__(self) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]:
        order = torch.randperm(len(self.y), generator=self.generator).to(self.device) if self.shuffle else None
        for b in range(len(self)):
            idx = slice(b * self.bs, (b + 1) * self.bs)
            if order is not None:
                idx = order[idx]
            yield (self.x_cat[idx], self.x_cont[idx]), self.y[idx]


class TableBunch:
    """Train and valid loaders over a table, with the procs fitted on the training rows.

    Attributes
    ----------
    train, valid : TableLoader
    target : {"category", "float"}
    classes : list of str, or None for regression;  c : int (``len(classes)``, or 1)
    y_name, cat_names (with the ``_na`` flags), cont_names : the columns, in model order
    procs : TabularProcs
    emb_sizes : list of int, vocabulary size (with ``#na#``) per categorical column
    y_mean, y_std : float or None, the training target's statistics (regression)
    valid_rows : dict of column -> raw values of the validation rows (for show_results)
    """

    def __init__(self, table: Table, cfg: TabularData, target: str = "auto", seed: int = 0):
        y_name, cats, conts = column_kinds(table, cfg)
        train, valid = split_rows(table, cfg)
        self.y_name, self.device = y_name, torch.device("cpu")
        self.train_items = [table.items[i] for i in train]
        self.valid_items = [table.items[i] for i in valid]
        y = self._encode_target(table, y_name, train, target)
        cat_values = {c: [category_text(v) for v in table.columns[c]] for c in cats}
        cont_values = {c: np.asarray(continuous_values(table, c, cfg.nonfinite), dtype=np.float64) for c in conts}

        def rows(idx):
            return ({c: [v[i] for i in idx] for c, v in cat_values.items()},
                    {c: v[idx] for c, v in cont_values.items()})

        self.procs = TabularProcs(cats, conts).fit(*rows(train), where=table.where)
        self.cat_names, self.cont_names = self.procs.all_cat_names, conts
        self.emb_sizes = [len(self.procs.vocabs_[c]) for c in self.cat_names]
        self.valid_rows = {c: [table.columns[c][i] for i in valid] for c in [*cats, *conts, y_name]}
        gen = torch.Generator().manual_seed(seed)
        x_cat, x_cont = self.checked(table, train, *self.procs.transform(*rows(train)))
        self.train = TableLoader(x_cat, x_cont, y[train], cfg.bs, shuffle=True, drop_last=True, generator=gen)
        x_cat, x_cont = self.checked(table, valid, *self.procs.transform(*rows(valid)))
        item = x_cat.shape[1] + x_cont.shape[1]  # numbers per row
        self.valid = TableLoader(x_cat, x_cont, y[valid], valid_batch_size(cfg.bs, item, len(valid), cfg.valid_bs))

    def checked(self, table: Table, idx: list[int], x_cat: torch.Tensor,
                x_cont: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformed rows ``idx``, refused with one line when a value does not fit float32."""
        beyond = self.procs.beyond_float32(x_cont)
        if beyond:
            r, col = beyond[0]
            i = idx[r]
            raise DataError(f"{table.where}: {self.procs.range_message(col, table.columns[col][i], table.items[i])}")
        return x_cat, x_cont

    def _encode_target(self, table: Table, y_name: str, train: list[int], target: str) -> torch.Tensor:
        raw = table.columns[y_name]
        for v, item in zip(raw, table.items):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                raise DataError(f"{table.where}: the target '{y_name}' is missing at {item}: fill it in or drop the row")
        self.target = target_kind(raw, target)
        self.y_mean = self.y_std = None
        if self.target == "category":
            labels = [category_text(v) for v in raw]
            seen = sorted({labels[i] for i in train}, key=value_key)
            if len(seen) < 2:
                raise DataError(f"{table.where}: the target '{y_name}' has one class ({seen[0]!r}) in the training "
                                f"rows: a classifier needs two or more (check data.y_name, or task.target=float)")
            # Classes from every row: a validation label never seen in training still has an output.
            self.classes = sorted(set(labels), key=value_key)
            self.c = len(self.classes)
            index = {c: i for i, c in enumerate(self.classes)}
            return torch.tensor([index[v] for v in labels], dtype=torch.long)
        self.classes, self.c = None, 1
        values = []
        for v, item in zip(raw, table.items):
            try:
                values.append(float(v))
            except ValueError:
                raise DataError(f"{table.where}: the target '{y_name}' holds {v!r} at {item}, not a number: "
                                f"use task.target=category (or auto)") from None
        bad = [(v, item) for v, x, item in zip(raw, values, table.items) if not abs(x) <= FLOAT32_MAX]
        if bad:  # (NaN fails the test too) a target cannot be missing: data.nonfinite does not apply
            raise DataError(f"{table.where}: the target '{y_name}' holds {non_finite_rows(bad)}: fix those values "
                            f"or drop those rows")
        y = np.asarray(values, dtype=np.float64)
        self.y_mean, self.y_std = fit_normalize(y[train])
        return torch.tensor(y, dtype=torch.float32)

    def to(self, device: torch.device | str, max_resident_gb: float | None = None) -> TableBunch:
        """Move the data to ``device``; tables are small enough to live there whole."""
        self.device = torch.device(device)
        self.train.to(self.device)
        self.valid.to(self.device)
        return self

    def meta(self) -> dict:
        """What ``model.pt`` records: target and classes, columns, the fitted procs (plain data)."""
        return {"classes": self.classes, "n_out": self.c, "target": self.target, "y_name": self.y_name,
                "cat_names": self.cat_names, "cont_names": self.cont_names, "emb_sizes": self.emb_sizes,
                "y_mean": self.y_mean, "y_std": self.y_std, "procs": self.procs.state()}

    @classmethod
    def from_config(cls, cfg: TabularData, target: str = "auto", seed: int = 0) -> TableBunch:
        return cls(registry.get("data", cfg.name).builder(cfg), cfg, target, seed)
