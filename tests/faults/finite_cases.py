"""Fault cases of non-finite numbers: an ``inf`` in a table CSV, and in a row sent to
``fastlab-predict`` and ``fastlab-serve``. Each ends in one line naming the column (a 400 JSON
from the server), never a "diverged" run or an answer holding NaN."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from tests.faults.cases import Result, assert_whole_files, run
from tests.tasks.test_tabular import csv_cfg, write_table

BIN = Path(sys.executable).parent
TABLE = ["+experiment=tabular", "data=table_csv", "data.csv=t.csv", "data.y_name=label", "data.valid_col=is_valid",
         "schedule.epochs=3", "arch.layers=[16]", "trainer.progress=none", "trainer.plots=false", "trainer.threads=1"]


def _said(line: str) -> str:
    """The message of a CLI's one error line, without the folder it names."""
    return re.sub(r"'/[^']*'", "'...'", line.split(": error: ", 1)[-1])[:100] + "..."


def _table(folder: Path, inf_row: int | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_table(folder / "t.csv", n=200)
    if inf_row is not None:
        lines = (folder / "t.csv").read_text().splitlines()
        cells = lines[inf_row + 1].split(",")
        cells[1] = "inf"  # column x
        lines[inf_row + 1] = ",".join(cells)
        (folder / "t.csv").write_text("\n".join(lines) + "\n")
    return folder


def inf_in_table_csv(tmp: Path) -> Result:
    folder = _table(tmp / "inf-table", inf_row=6)
    run_dir = folder / "run"
    proc = run([str(BIN / "fastlab-train"), f"hydra.run.dir={run_dir}", f"data.path={folder}", *TABLE], cwd=folder)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "continuous column 'x' holds 1 non-finite value ('inf' at t.csv:8)" in lines[0], lines[0]
    assert not (run_dir / "model.pt").exists()
    assert_whole_files(folder)
    return Result("inf_in_table_csv", f"exit 2 with one line ({_said(lines[0])}); no model.pt")


def inf_row_to_predict_and_serve(tmp: Path) -> Result:
    from starlette.testclient import TestClient

    from fastlab.inference import Predictor
    from fastlab.run.train import train
    from fastlab.serve.app import create_app

    folder = _table(tmp / "inf-predict", inf_row=None)
    run_dir = folder / "run"
    assert train(csv_cfg(folder, "trainer.save_model=true"), run_dir=run_dir)["status"] == "completed"
    rows = folder / "rows.csv"
    rows.write_text("colour,x,noise\nred,0.5,0.1\nblue,inf,0.2\n")
    proc = run([str(BIN / "fastlab-predict"), str(run_dir), str(rows)], cwd=folder)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and proc.stdout == "" and len(lines) == 1, proc.stderr[-2000:]
    assert "row 3 of" in lines[0] and "continuous column 'x' holds 'inf'" in lines[0], lines[0]
    with TestClient(create_app(Predictor.load(run_dir))) as client:
        bad = client.post("/predict", content='{"row": {"colour": "red", "x": Infinity, "noise": 0.1}}',
                          headers={"content-type": "application/json"})
        good = client.post("/predict", json={"row": {"colour": "red", "x": 0.5, "noise": 0.1}})
    assert bad.status_code == 400 and "continuous column 'x'" in json.loads(bad.text)["error"], bad.text
    assert good.status_code == 200 and good.json()["label"] in ("high", "low")
    return Result("inf_row_to_predict_and_serve", f"fastlab-predict: exit 2, one line ({_said(lines[0])}); "
                  f"fastlab-serve: {bad.status_code} {{\"error\": ...}} naming 'x', then serves the next row")


CASES = [inf_in_table_csv, inf_row_to_predict_and_serve]
