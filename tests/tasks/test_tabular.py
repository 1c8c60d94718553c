"""task=tabular: real trainings on scikit-learn's tables and a CSV, the procs, bad input."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge

from fastlab.config import to_run_config
from fastlab.data.place import Place
from fastlab.data.tables.bunch import TableBunch, target_kind
from fastlab.data.tables.procs import NA, TabularProcs
from fastlab.data.tables.sources import SklearnTableData
from fastlab.errors import ConfigError, DataError, FastlabError
from fastlab.models.tabular import TabularModel, emb_sz_rule
from fastlab.run.train import train
from fastlab.tasks.tabular import build_data
from tests.conftest import compose_cfg
from tests.test_cli import run_cli

QUIET = ["trainer.progress=none", "trainer.plots=false", "trainer.save_model=false"]


def cfg(*overrides: str):
    return compose_cfg(*QUIET, *overrides, small=False)


def design(loader, emb_sizes) -> tuple[np.ndarray, np.ndarray]:
    """The bunch's own preprocessing as a linear model's input: one-hot categories (the ``_na``
    flags included) next to the filled, normalised continuous columns."""
    cats, conts = loader.x_cat.cpu().numpy(), loader.x_cont.cpu().numpy()
    onehot = [np.eye(n)[cats[:, i]] for i, n in enumerate(emb_sizes)]
    return np.concatenate([*onehot, conts], axis=1), loader.y.cpu().numpy()


def fit_and_baseline(c, tmp_path):
    """Train ``c`` and rebuild its data (same split and procs) for the sklearn baselines."""
    metrics = train(c, run_dir=tmp_path)
    data = build_data(to_run_config(c), None, Place())
    return metrics, (*design(data.train, data.emb_sizes), *design(data.valid, data.emb_sizes))


# ---------------------------------------------------------------------------------- training
def test_breast_cancer_classification_matches_logistic_regression(tmp_path):
    c = compose_cfg("+experiment=tabular", "trainer.progress=none", small=False)
    metrics, (xt, yt, xv, yv) = fit_and_baseline(c, tmp_path)
    acc = metrics["final"]["accuracy"]
    majority = float(np.mean(yv == np.bincount(yt).argmax()))
    logreg = LogisticRegression(max_iter=5000).fit(xt, yt).score(xv, yv)
    # Measured on data.seed=42: majority 0.649, LogisticRegression 0.974, this model 0.974-1.0
    # over seeds 0-8 (114 validation rows: one row is 0.009). Bars: 0.25 over the majority, and
    # no worse than the linear model by more than 0.03 (three or four rows). This test runs seed
    # 0 on torch's default threads (2 on the 2-core test machine), re-measured there: 1.0.
    assert acc >= majority + 0.25
    assert acc >= logreg - 0.03, (acc, logreg)
    assert metrics["layer_groups"] == 3 and math.isnan(metrics["final"]["rmse"])  # rmse is for regression
    assert (tmp_path / "plots" / "show_results.png").stat().st_size > 10_000
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    meta = ckpt["meta"]
    assert meta["classes"] == ["benign", "malignant"] and meta["target"] == "category"
    assert meta["cat_names"] == ["size", "mean texture_na"] and meta["procs"]["vocabs"]["size"][0] == NA
    # The checkpoint alone rebuilds the model and its procs.
    model = TabularModel(meta["emb_sizes"], len(meta["cont_names"]), meta["n_out"], meta["arch_config"]["layers"])
    model.load_state_dict(ckpt["state_dict"])
    assert TabularProcs.from_state(meta["procs"]).state() == meta["procs"]


def test_diabetes_regression_matches_ridge(tmp_path):
    c = cfg("+experiment=tabular_diabetes")
    metrics, (xt, yt, xv, yv) = fit_and_baseline(c, tmp_path)
    err = metrics["objective"]
    assert metrics["objective_name"] == "rmse" and err == metrics["final"]["rmse"]
    constant = float(np.sqrt(np.mean((yv - yt.mean()) ** 2)))
    ridge = float(np.sqrt(np.mean((Ridge(alpha=1.0).fit(xt, yt).predict(xv) - yv) ** 2)))
    # Measured on data.seed=42: constant 74.8, Ridge 51.5 (diabetes is nearly linear), this
    # model 52.4 at seed 0 and 50.2-55.5 over seeds 0-8. Bars: at most 0.8 of the constant's
    # rmse (59.9), and within 10% of Ridge (56.7). This test runs seed 0 on torch's default
    # threads (2 on the 2-core test machine), re-measured there: 52.4.
    assert err <= 0.8 * constant, (err, constant)
    assert err <= 1.10 * ridge, (err, ridge)


def test_same_seed_same_history_and_another_seed_differs(tmp_path):
    def history(seed: int, name: str) -> list[dict]:
        train(cfg("+experiment=tabular", f"seed={seed}", "schedule.epochs=3"), run_dir=tmp_path / name)
        rows = list(csv.DictReader(open(tmp_path / name / "history.csv")))
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    first = history(1, "a")
    assert first == history(1, "b")
    assert first != history(2, "c")


# -------------------------------------------------------------------------------- the procs
def test_procs_are_fitted_on_training_rows_only():
    cats = {"colour": ["red", "blue", None, "red"]}
    conts = {"x": np.array([1.0, np.nan, 3.0, 10.0]), "z": np.array([0.0, 1.0, 2.0, 3.0])}
    procs = TabularProcs(["colour"], ["x", "z"]).fit(cats, conts)
    assert procs.vocabs_["colour"] == [NA, "blue", "red"]
    assert procs.all_cat_names == ["colour", "x_na"] and procs.vocabs_["x_na"] == [NA, "False", "True"]
    assert procs.medians_ == {"x": 3.0, "z": 1.5}  # median of the training values present
    filled_x = np.array([1.0, 3.0, 3.0, 10.0])
    assert procs.means_["x"] == pytest.approx(filled_x.mean()) and procs.stds_["x"] == pytest.approx(filled_x.std(ddof=1))
    # Validation rows: "green" never seen in training and a missing colour both map to #na# (0);
    # a missing x is filled with the *training* median and flagged.
    x_cat, x_cont = procs.transform({"colour": ["green", "red", None]},
                                    {"x": np.array([np.nan, 5.0, 3.0]), "z": np.array([9.0, 9.0, 9.0])})
    assert x_cat.tolist() == [[0, 2], [2, 1], [0, 1]]
    assert x_cont[0, 0].item() == pytest.approx((3.0 - procs.means_["x"]) / procs.stds_["x"])
    again = TabularProcs.from_state(procs.state()).transform({"colour": ["green"]}, {"x": np.array([np.nan]), "z": np.array([9.0])})
    assert torch.equal(again[0], x_cat[:1]) and torch.equal(again[1], x_cont[:1])


def test_built_in_table_normalises_with_training_statistics():
    data = TableBunch.from_config(SklearnTableData(dataset="breast_cancer"), "auto")
    train_x, valid_x = data.train.x_cont, data.valid.x_cont
    assert torch.allclose(train_x.mean(0), torch.zeros(train_x.shape[1]), atol=1e-5)
    assert torch.allclose(train_x.std(0), torch.ones(train_x.shape[1]), atol=1e-4)
    assert valid_x.mean(0).abs().max() > 0.05  # the valid rows were not used for the statistics
    assert data.cat_names == ["size", "mean texture_na"] and len(data.cont_names) == 29
    # rows i % 17 == 5 lost their mean texture; i % 23 == 7 their size (#na#, index 0)
    train_rows = [int(item.split("/")[1]) for item in data.train_items]
    flags = data.train.x_cat[:, 1].tolist()
    assert all((flags[k] == 2) == (i % 17 == 5) for k, i in enumerate(train_rows))
    assert all((data.train.x_cat[k, 0] == 0) == (i % 23 == 7) for k, i in enumerate(train_rows))


def test_embedding_size_rule_and_model_shapes():
    assert [emb_sz_rule(n) for n in (2, 3, 5, 10, 100, 10**4, 10**7)] == [2, 3, 4, 6, 21, 278, 600]
    model = TabularModel([3, 10], n_cont=4, n_out=2, layers=[8, 6], ps=0.1, emb_drop=0.1)
    assert [e.embedding_dim for e in model.embeds] == [3, 6]
    assert model.body[0].in_features == 3 + 6 + 4
    out = model((torch.tensor([[0, 9], [2, 1]]), torch.randn(2, 4)))
    assert out.shape == (2, 2) and len(model.layer_groups()) == 3


@pytest.mark.parametrize("values, target, kind", [
    (["a", "b", "a"], "auto", "category"),
    ([0.0, 1.0, 1.0], "auto", "category"),
    (["1", "5", "3"], "auto", "category"),
    ([float(v) for v in range(25)], "auto", "float"),  # more than 20 distinct integers
    ([0.5, 1.0, 2.0], "auto", "float"),
    ([0.0, 1.0], "float", "float"),
    ([0.5, 1.5], "category", "category"),
])
def test_target_kind_rule(values, target, kind):
    assert target_kind(values, target) == kind


# -------------------------------------------------------------------------------- a CSV file
def write_table(path, n: int = 400, label=None) -> None:
    """Mixed columns: a category that matters, a continuous column with empty cells, noise, and
    a validation flag on every fifth row. The label is a simple rule of colour and x."""
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["colour", "x", "noise", "label", "is_valid"])
        for i in range(n):
            colour = ["red", "green", "blue"][i % 3]
            x = rng.normal()
            y = label or ("high" if x + (1.5 if colour == "red" else -0.5) > 0 else "low")
            w.writerow([colour, "" if i % 11 == 3 else f"{x:.4f}", f"{rng.normal():.4f}", y, "true" if i % 5 == 0 else "false"])


def csv_cfg(tmp_path, *overrides):
    return cfg("+experiment=tabular", "data=table_csv", f"data.path={tmp_path}", "data.csv=t.csv",
               "data.y_name=label", "data.valid_col=is_valid", "schedule.epochs=10", "arch.layers=[32]", *overrides)


def test_csv_table_trains_end_to_end(tmp_path):
    write_table(tmp_path / "t.csv")
    c = csv_cfg(tmp_path, "trainer.save_model=true")
    metrics = train(c, run_dir=tmp_path / "run")
    meta = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["meta"]
    assert meta["cat_names"] == ["colour", "x_na"] and meta["cont_names"] == ["x", "noise"]
    assert meta["classes"] == ["high", "low"] and meta["procs"]["vocabs"]["colour"] == [NA, "blue", "green", "red"]
    data = build_data(to_run_config(c), None, Place())
    assert data.valid_items == [f"t.csv:{i + 2}" for i in range(400) if i % 5 == 0]  # line 1 is the header
    # The rule is learnable from colour and x; rows whose x is missing (1 in 11) are guesses.
    # Measured 0.96-0.99 over seeds 0-7 (80 validation rows; with 200 rows in all one seed fell
    # to 0.73, hence 400); bar 0.9, far above the majority class (0.5). This test runs seed 0 on
    # torch's default threads (2 on the 2-core test machine), re-measured there: 0.9875.
    assert metrics["final"]["accuracy"] >= 0.9, metrics["final"]


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("overrides, error, fragment", [
    (["data.cat_names=[grade]"], DataError, "has no column 'grade' (data.cat_names): its columns are ['mean radius',"),
    (["data.cont_names=[grade]"], DataError, "has no column 'grade' (data.cont_names)"),
    (["data.y_name=grade"], DataError, "has no column 'grade' (data.y_name)"),
    (["data.dataset=iris"], ConfigError, "data.dataset='iris' is not a built-in table: use one of"),
    (["data.dataset=diabetes"], ConfigError, "task.objective=accuracy needs a category target but 'progression'"),
    (["task.target=ordinal"], ConfigError, "task.target='ordinal' is not known"),
    (["arch.ps=1.5"], ConfigError, "must lie in [0, 1)"),
])
def test_bad_config_is_one_line(tmp_path, overrides, error, fragment):
    with pytest.raises(error) as e:
        train(cfg("+experiment=tabular", *overrides), run_dir=tmp_path)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_bad_csv_is_one_line(tmp_path):
    write_table(tmp_path / "t.csv", label="same")
    with pytest.raises(DataError, match=r"the target 'label' has one class \('same'\)"):
        train(csv_cfg(tmp_path), run_dir=tmp_path / "a")
    write_table(tmp_path / "t.csv")
    with pytest.raises(DataError, match=r"continuous column 'colour' holds 'red' at t.csv:2"):
        train(csv_cfg(tmp_path, "data.cont_names=[colour]"), run_dir=tmp_path / "b")
    with pytest.raises(FastlabError, match="has no column 'split' \\(data.valid_col\\)"):
        train(csv_cfg(tmp_path, "data.valid_col=split"), run_dir=tmp_path / "c")


def test_cli_missing_column_exits_2_with_one_line(tmp_path):
    out = run_cli(["+experiment=tabular", "data.y_name=grade", "trainer.progress=none"], cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastlab-train: error: sklearn_table breast_cancer has no column 'grade'")
