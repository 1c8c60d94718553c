"""Inference of ``tabular``: rows in (a CSV, a JSON object or list of objects), a prediction per row
out. The training procs saved in the meta (FillMissing, Categorify, Normalize) are re-applied by
training's own :class:`~fastlab.data.tables.procs.TabularProcs`: a missing value is filled with
the training median (and flagged), an unknown category maps to ``#na#``, as in training."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastlab.data.tables.procs import TabularProcs, category_text
from fastlab.inference.base import CPU, TaskInference, decode_probs, decode_values
from fastlab.portable.errors import InputError
from fastlab.tasks.tabular import TabularMeta

MAX_ROWS = 100_000  # rows of one CSV or request


class TabularInference(TaskInference):
    """``{"label", "top"}`` per row of a classification table, ``{"label", "value", "top": []}`` in the
    target's units per row of a regression table."""

    input_kind = "table"
    json_hint = '{"row": {"<column>": <value>, ...}} or {"rows": [...]}'
    onnx_refusal = ("its rows are read by training's procs (FillMissing, Categorify, Normalize), which the ONNX "
                    "runtime does not carry")

    def __init__(self, meta: TabularMeta, device: torch.device = CPU):
        super().__init__(meta, device)
        self.procs = TabularProcs.from_state(meta.procs)
        self.columns = [*self.procs.cat_names, *self.procs.cont_names]  # what a row must give

    # ------------------------------------------------------------------ rows
    def read(self, item: Any, where: str = "the row", **limits) -> tuple[torch.Tensor, torch.Tensor]:
        """A row ``{column: value}`` (str, number or None; other columns, the target's too, are
        ignored) -> ``(cats (n_cat,) long, conts (n_cont,) float32)``."""
        if not isinstance(item, dict):
            raise InputError(f"{where} must be an object of column: value, got a {type(item).__name__}: "
                             f"give the columns {self.columns}")
        missing = [c for c in self.columns if c not in item]
        if missing:
            raise InputError(f"{where} has no column {', '.join(map(repr, missing))}: give every input column "
                             f"{self.columns} (an empty value counts as missing)")
        cats = {c: [category_text(_blank(item[c]))] for c in self.procs.cat_names}
        conts = {c: np.array([_number(item[c], c, where)], dtype=np.float64) for c in self.procs.cont_names}
        x_cat, x_cont = self.procs.transform(cats, conts)  # (1, n_cat), (1, n_cont)
        beyond = self.procs.beyond_float32(x_cont)  # finite, yet too far out for float32 once normalised
        if beyond:
            col = beyond[0][1]
            raise InputError(f"{where}: {self.procs.range_message(col, item[col])}")
        return x_cat[0], x_cont[0]

    def collate(self, xs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([c for c, _ in xs]), torch.stack([x for _, x in xs])  # (B, n_cat), (B, n_cont)

    def forward(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``(cats (B, n_cat), conts (B, n_cont))`` -> probabilities ``(B, c)`` or values ``(B, 1)``."""
        out = model((batch[0].to(self.device), batch[1].to(self.device))).float()
        return (out.softmax(dim=1) if self.meta.classes is not None else out).cpu()

    def decode(self, row: torch.Tensor, top_k: int = 3) -> dict:
        if self.meta.classes is not None:
            return decode_probs(row, self.meta.classes, top_k)
        return decode_values(row)

    # ------------------------------------------------------------------ sources of rows
    def rows_of_csv(self, text: str, name: str) -> list[tuple[dict, dict]]:
        reader = csv.reader(io.StringIO(text))
        header = [h.strip() for h in next(reader, None) or []]
        if not header:
            raise InputError(f"'{name}' is empty: give a CSV with a header row of the columns {self.columns}")
        missing = [c for c in self.columns if c not in header]
        if missing:
            raise InputError(f"'{name}' has no column {', '.join(map(repr, missing))}: its header must name "
                             f"every input column {self.columns}")
        rows = []
        for line, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise InputError(f"'{name}' line {line} has {len(cells)} cells but the header has {len(header)}: fix that row")
            rows.append(({"file": name, "row": line}, dict(zip(header, cells))))
            if len(rows) > MAX_ROWS:
                raise InputError(f"'{name}' has more than {MAX_ROWS:,} rows: split it")
        if not rows:
            raise InputError(f"'{name}' has a header but no rows: add rows to predict")
        return rows

    def rows_of_json(self, doc: Any, name: str) -> list[tuple[dict, dict]]:
        rows = doc if isinstance(doc, list) else [doc]
        if not rows or len(rows) > MAX_ROWS:
            raise InputError(f"'{name}' holds {len(rows)} rows: give 1 to {MAX_ROWS:,}")
        return [({"file": name, "row": i}, r) for i, r in enumerate(rows)]

    def _checked(self, rows: list[tuple[dict, Any]]) -> list[tuple[dict, Any]]:
        for names, row in rows:  # every row is checked before any is predicted
            self.read(row, f"row {names['row']} of '{names['file']}'")
        return rows

    def items_from_file(self, path: str) -> list[tuple[dict, Any]]:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError(f"table file '{path}' does not exist: give a CSV (or JSON) of rows")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read table file '{path}' ({type(e).__name__}): give a UTF-8 CSV") from None
        return self._checked(self._parse(text, path, p.suffix.lower() == ".json"))

    def items_from_text(self, text: str) -> list[tuple[dict, Any]]:
        return self._checked(self._parse(text, "--text", True))

    def _parse(self, text: str, name: str, as_json: bool) -> list[tuple[dict, Any]]:
        if not as_json:
            return self.rows_of_csv(text, name)
        try:
            return self.rows_of_json(json.loads(text), name)
        except json.JSONDecodeError as e:
            raise InputError(f"'{name}' is not JSON ({e.msg}, line {e.lineno}): give an object of column: value "
                             "or a list of them") from None

    def items_from_upload(self, data: bytes, name: str, **limits) -> tuple[list, bool]:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InputError(f"'{name}' is not UTF-8 text: upload a CSV of rows") from None
        as_json = text.lstrip()[:1] in ("{", "[")
        return [x for _, x in self._read_all(self._parse(text, name, as_json))], True

    def items_from_json(self, doc: Any, **limits) -> tuple[list, bool]:
        if isinstance(doc, dict) and isinstance(doc.get("row"), dict):
            return [self.read(doc["row"])], False
        if isinstance(doc, dict) and isinstance(doc.get("rows"), list):
            return [x for _, x in self._read_all(self.rows_of_json(doc["rows"], "rows"))], True
        raise InputError(f"the JSON body must be {self.json_hint}: send the input columns {self.columns}")

    def _read_all(self, rows: list[tuple[dict, Any]]) -> list[tuple[dict, Any]]:
        return [(n, self.read(r, f"row {n['row']} of '{n['file']}'")) for n, r in rows]

    def info(self) -> dict:
        return {"input": "table", "columns": self.columns, "target": self.meta.y_name}

    # ------------------------------------------------------------------ interpretation
    def interpret(self, run, k: int, min_val: int, echo: Callable[[str], Any]) -> dict[str, Path]:
        """``top_losses.json``: the validation rows of largest loss (their raw values, actual and
        predicted target); a classification table also gets the confusion matrix."""
        from fastlab.interpret import Interpretation, classes_view, save_top_losses

        classifier = self.meta.classes is not None
        interp = Interpretation.from_loaded(run, classifier=classifier)
        raw = run.data.valid_rows
        rows = [{c: raw[c][i] for c in raw} for i in range(len(interp.targets))]
        written = {"top_losses": save_top_losses(interp, k, rows=rows)}
        if classifier:
            return {**written, **classes_view(interp, min_val, echo, "rows")}
        err = (interp.decoded - interp.targets).abs()
        echo(f"{len(interp.targets)} validation rows, rmse {float(interp.losses.mean().sqrt()):.4g} "
             f"({run.meta.y_name}), largest error {float(err.max()):.4g}")
        return written


def _blank(v: Any) -> Any:
    """An empty CSV cell (or blank string) is a missing value, as training's CSV reader reads it."""
    if isinstance(v, str):
        v = v.strip()
        return v or None
    return v


def _number(v: Any, col: str, where: str) -> float:
    v = _blank(v)
    if v is None:
        return math.nan  # filled with the training median by FillMissing
    if isinstance(v, bool):
        raise InputError(f"{where}: continuous column '{col}' holds {v!r}: give a number (or leave it empty)")
    try:
        x = float(v)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond any float
        raise InputError(f"{where}: continuous column '{col}' holds {v!r}, not a number: give a number "
                         "(or leave it empty)") from None
    if not math.isfinite(x):  # inf, nan, 1e999 (JSON's Infinity and NaN too): never a number to predict
        raise InputError(f"{where}: continuous column '{col}' holds {v!r}, not a finite number: give a finite "
                         "number (or leave it empty for a missing value)")
    return x
