"""Image regression of points: generated data, csv pixel targets, the sigmoid range head, inference."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from fastlab.config import to_run_config
from fastlab.data import DataBunch
from fastlab.data.generated.points import make_points, scale_points
from fastlab.data.images.sources import CsvData, PointsData
from fastlab.data.place import Place
from fastlab.errors import ConfigError, DataError
from fastlab.inference import Predictor
from fastlab.models.core import SigmoidRange
from fastlab.run.train import train
from fastlab.tasks.regress import REGRESS, mae, point_error
from tests.conftest import SMALL, compose_cfg

# A points run small enough for a test: 600 images of 24 px, a three-stage CNN, 12 epochs
# (about 2 s of training on one quiet core).
POINTS = ["task=regress", "data=points", "data.n_images=600", "data.size=24", "arch.channels=[16,32,64]",
          "arch.head_hidden=64", "arch.dropout=0.2", "schedule.epochs=12", "schedule.lr_max=2e-2",
          "trainer.progress=none"]


@pytest.fixture(scope="module")
def points_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("points")
    metrics = train(compose_cfg(*POINTS, "trainer.plots=true", small=False), run_dir=run_dir)
    return run_dir, metrics


def mean_baseline() -> float:
    """point_error of predicting the training points' mean for every validation image."""
    data = DataBunch.from_config(PointsData(n_images=600, size=24), "float")
    return point_error(data.train.y.mean(0).expand_as(data.valid.y), data.valid.y)


# ------------------------------------------------------------------------- (1) real training
def test_points_training_finds_the_shape(points_run):
    run_dir, metrics = points_run
    assert metrics["status"] == "completed"
    err, baseline = metrics["final"]["point_error"], mean_baseline()
    # Bar: 0.15 in [-1, 1] units = 1.8 px of the 24 px image (1 unit = 12 px). Measured 0.087-0.094
    # over seeds 0-2; predicting the mean point scores about 0.53, so this is 3.5x better than it.
    # This test runs seed 0 (data.points_seed 0) on torch's default threads (2 on the 2-core test
    # machine), re-measured there: 0.095 against the mean point's 0.546 (bar a third: 0.182).
    assert err < 0.15, err
    assert err < baseline / 3, (err, baseline)
    rows = list(csv.DictReader(open(run_dir / "history.csv")))
    assert list(rows[0])[3:6] == ["mae", "rmse", "point_error"]
    assert (run_dir / "plots" / "show_results.png").stat().st_size > 0
    meta = torch.load(run_dir / "model.pt", weights_only=True)["meta"]
    assert meta["n_out"] == 2 and meta["points"] is True and meta["y_range"] == [-1.0, 1.0]


def test_generated_points_are_deterministic_and_in_range():
    x1, y1 = make_points(12, 16, points_seed=3)
    x2, y2 = make_points(20, 16, points_seed=3)
    assert torch.equal(x1, x2[:12]) and torch.equal(y1, y2[:12])  # image i does not depend on n_images
    assert not torch.equal(make_points(12, 16, points_seed=4)[0], x1)
    assert x1.shape == (12, 3, 16, 16) and x1.dtype == torch.uint8 and y1.shape == (12, 2)
    assert y1.abs().max() < 1  # the whole shape lies inside the image


def test_point_error_is_a_distance_and_the_mae_for_one_number():
    pred, true = torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.3, 0.4], [1.0, 1.0]])
    assert point_error(pred, true) == pytest.approx(0.25)  # (0.5 + 0) / 2
    four = torch.tensor([[0.3, 0.4, 0.0, 1.0]])
    assert point_error(four, torch.zeros(1, 4)) == pytest.approx(0.75)  # two points: (0.5 + 1) / 2
    one_pred, one_true = torch.tensor([[1.0], [2.0], [5.0]]), torch.tensor([0.0, 2.5, 5.0])
    assert point_error(one_pred, one_true) == pytest.approx(mae(one_pred, one_true))


# ----------------------------------------------------------------- (2) csv with pixel points
SIZES = [(40, 30), (30, 50)]  # (width, height): not square, so x and y scale differently


@pytest.fixture(scope="module")
def point_csv(tmp_path_factory) -> Path:
    """24 images of two sizes, a white dot on grey at (x, y) pixels; ``points.csv`` lists them."""
    root = tmp_path_factory.mktemp("point_csv")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        w, h = SIZES[i % 2]
        x, y = (0.0, 0.0) if i == 0 else (float(w), float(h)) if i == 1 else (rng.uniform(4, w - 4), rng.uniform(4, h - 4))
        img = Image.new("RGB", (w, h), (90, 90, 90))
        ImageDraw.Draw(img).ellipse([x - 3, y - 3, x + 3, y + 3], fill=(255, 255, 255))
        img.save(root / f"img_{i:02d}.png")
        rows.append({"fname": f"img_{i:02d}.png", "x": x, "y": y, "kind": "dot"})
    with open(root / "points.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["fname", "x", "y", "kind"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def csv_cfg(root: Path, **kw) -> CsvData:
    return CsvData(path=str(root), csv="points.csv", size=16, bs=8, **{"target_cols": ["x", "y"], "points": True, **kw})


def test_csv_pixel_points_are_scaled_by_the_original_size(point_csv):
    data = DataBunch.from_config(csv_cfg(point_csv), "float")
    assert data.c == 2 and data.points and data.train.y.shape == (len(data.train_items), 2)
    got = dict(zip(data.train_items + data.valid_items, torch.cat([data.train.y, data.valid.y]).tolist()))
    rows = {r["fname"]: r for r in csv.DictReader(open(point_csv / "points.csv"))}
    assert got["img_00.png"] == [-1.0, -1.0]  # pixel (0, 0): the top-left corner
    assert got["img_01.png"] == [1.0, 1.0]  # pixel (w, h): the bottom-right corner
    for name, (tx, ty) in got.items():
        w, h = SIZES[int(name[4:6]) % 2]
        x, y = float(rows[name]["x"]), float(rows[name]["y"])
        assert tx == pytest.approx(2 * x / w - 1, abs=1e-6) and ty == pytest.approx(2 * y / h - 1, abs=1e-6)
    assert scale_points([20, 15], 40, 30) == [0.0, 0.0]  # the centre
    # Without points=true the same columns are plain numbers (pixels), and there is no range.
    plain = DataBunch.from_config(csv_cfg(point_csv, points=False), "float")
    assert not plain.points and plain.valid.y.abs().max() > 1


def test_csv_points_train_through_train(point_csv, tmp_path):
    metrics = train(compose_cfg("task=regress", "data=csv", f"data.path={point_csv}", "data.csv=points.csv",
                                "data.target_cols=[x,y]", "data.points=true", "data.bs=8"), run_dir=tmp_path)
    assert metrics["status"] == "completed" and math.isfinite(metrics["final"]["point_error"])
    meta = torch.load(tmp_path / "model.pt", weights_only=True)["meta"]
    assert meta["n_out"] == 2 and meta["y_range"] == [-1.0, 1.0] and meta["config"]["data"]["target_cols"] == ["x", "y"]


# ------------------------------------------------------------------- (3) sigmoid range head
def test_sigmoid_range_keeps_outputs_in_range():
    assert SigmoidRange(0, 10)(torch.tensor([-1e4, 0.0, 1e4])).tolist() == [0.0, 5.0, 10.0]
    run = to_run_config(compose_cfg("task=regress", "data=points", "data.n_images=40", *SMALL, small=False))
    data = REGRESS.build_data(run, None, Place())
    model = REGRESS.build_model(run, data).eval()
    assert isinstance(model.head[-1], SigmoidRange) and data.y_range == [-1.0, 1.0]
    with torch.no_grad():
        model.head[-2].weight.mul_(1e4)  # the linear layer's outputs become huge: only the range holds them
        out = model(100 * torch.randn(64, 3, 16, 16))  # (64, 2), inputs far outside the training ones
    assert out.shape == (64, 2) and out.min() >= -1 and out.max() <= 1 and out.abs().max() > 0.99


def test_y_range_of_one_number_regression_and_a_bad_range():
    run = to_run_config(compose_cfg("task=regress", "task.y_range=[0,9]"))
    data = REGRESS.build_data(run, None, Place())
    head = REGRESS.build_model(run, data).head
    assert data.c == 1 and data.train.y.ndim == 1 and (head[-1].lo, head[-1].hi) == (0.0, 9.0)
    plain = to_run_config(compose_cfg("task=regress"))  # digits: no range unless asked for
    assert isinstance(REGRESS.build_model(plain, REGRESS.build_data(plain, None, Place())).head[-1], torch.nn.Linear)
    with pytest.raises(ConfigError, match=r"task.y_range=\[9.0, 0.0\] must be \[lo, hi\]"):
        REGRESS.build_data(to_run_config(compose_cfg("task=regress", "task.y_range=[9,0]")), None, Place())


def test_one_number_regression_shows_true_and_predicted_values(tmp_path):
    metrics = train(compose_cfg("task=regress", "schedule.epochs=1", "trainer.plots=true"), run_dir=tmp_path)
    assert metrics["final"]["point_error"] == pytest.approx(metrics["final"]["mae"], rel=1e-5)
    assert (tmp_path / "plots" / "show_results.png").stat().st_size > 0


# -------------------------------------------------------------------------- (4) bad input
def _rewrite(root: Path, dst: Path, edit) -> Path:
    rows = list(csv.DictReader(open(root / "points.csv")))
    edit(rows)
    with open(dst / "points.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for p in root.glob("*.png"):
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _set(row: int, key: str, value: str):
    return lambda rows: rows[row].__setitem__(key, value)


@pytest.mark.parametrize("edit, kw, error, fragment", [
    (None, {"target_cols": ["x", "z"]}, DataError, "has no target column 'z'"),
    (_set(4, "y", "abc"), {}, DataError, "row 5 ('img_04.png'): target column 'y' holds 'abc', not a finite number"),
    (_set(2, "x", "nan"), {}, DataError, "row 3 ('img_02.png'): target column 'x' holds 'nan'"),
    (None, {"target_cols": ["x", "y", "kind"]}, ConfigError, "data.points=true reads (x, y) pairs but data.target_cols"),
    (None, {"target_cols": None}, ConfigError, "data.points=true needs data.target_cols"),
    (None, {"target_cols": []}, ConfigError, "data.target_cols=[] names no column"),
])
def test_bad_targets_are_one_line_naming_the_thing(point_csv, tmp_path, edit, kw, error, fragment):
    root = _rewrite(point_csv, tmp_path, edit) if edit else point_csv
    with pytest.raises(error) as e:
        DataBunch.from_config(csv_cfg(root, **kw), "float")
    assert fragment in str(e.value) and "\n" not in str(e.value) and ": " in str(e.value)


def test_several_targets_with_a_classifier_is_refused(point_csv):
    with pytest.raises(ConfigError, match="use task=regress"):
        DataBunch.from_config(csv_cfg(point_csv), "category")


def test_cli_odd_point_columns_exit_2_with_one_line(point_csv, tmp_path):
    out = subprocess.run([str(Path(sys.executable).parent / "fastlab-train"), "task=regress", "data=csv",
                          f"data.path={point_csv}", "data.csv=points.csv", "data.target_cols=[x,y,kind]",
                          "data.points=true", "trainer.progress=none"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("fastlab-train: error: data.points=true reads (x, y) pairs")
    assert "Traceback" not in out.stdout + out.stderr


# ------------------------------------------------------------------------- (5) inference
def test_saved_points_model_predicts_a_list_of_values(points_run, tmp_path):
    from fastlab.cli.export import export

    run_dir, _ = points_run
    predictor = Predictor.load(run_dir)
    assert predictor.meta.y_range == [-1.0, 1.0] and isinstance(predictor.model.head[-1], SigmoidRange)
    x, centres = make_points(600, 24)  # the run's images (data.points_seed=0)
    valid = [int(item.split("/")[1]) for item in DataBunch.from_config(PointsData(n_images=600, size=24), "float").valid_items]
    files = []
    for i in valid[:8]:
        Image.fromarray(x[i].permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
        files.append(tmp_path / f"{i}.png")
    results = predictor.predict_many(files)
    values = torch.tensor([r["value"] for r in results])  # (8, 2)
    assert all(len(r["value"]) == 2 and r["top"] == [] and "," in r["label"] for r in results)
    assert values.abs().max() < 1
    # Bar: the run's validation point_error is about 0.09; 0.2 over 8 images leaves room for chance.
    # Measured (seed 0, the config's; data.points_seed 0; torch's default threads: 2 on the
    # 2-core test machine): 0.051 on these 8 images.
    assert point_error(values, centres[valid[:8]]) < 0.2
    bundle = export(run_dir, tmp_path / "bundle")
    again = Predictor.load(bundle).predict_many(files)
    assert [r["value"] for r in again] == [r["value"] for r in results]
    assert json.loads((bundle / "meta.json").read_text())["meta"]["y_range"] == [-1.0, 1.0]


def test_interpret_reads_a_points_run(points_run):
    from fastlab.interpret import Interpretation

    interp = Interpretation.from_run_dir(points_run[0])
    assert interp.decoded.shape == interp.targets.shape and interp.targets.shape[1] == 2
    assert len(interp._label(0, "predicted").split(", ")) == 2
