"""fastlab-interpret and the Interpretation API on real runs: files, consistency, error paths."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastlab.cli.interpret import main
from fastlab.config import to_run_config
from fastlab.interpret import Interpretation, InterpretError
from fastlab.models.zoo import load_plain
from fastlab.run.train import train
from fastlab.rundir import save_checkpoint
from tests.conftest import compose_cfg

FILES = ("top_losses.png", "confusion_matrix.png", "most_confused.json", "show_results.png")


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("classify")
    metrics = train(compose_cfg("schedule.epochs=2"), run_dir=run_dir)
    return run_dir, metrics


@pytest.fixture(scope="module")
def interp(classify_run):
    return Interpretation.from_run_dir(classify_run[0])


@pytest.fixture(scope="module")
def regress_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("regress")
    train(compose_cfg("task=regress", "schedule.epochs=1"), run_dir=run_dir)
    return run_dir


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastlab.cli.interpret", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_cli_writes_every_file(classify_run, interp):
    run_dir, _ = classify_run
    out = run_cli(run_dir, "--k", "4", "--min-val", "1")
    assert out.returncode == 0, out.stderr
    folder = run_dir / "interpret"
    for name in FILES:
        assert (folder / name).stat().st_size > 0, name
        assert str(folder / name) in out.stdout
    assert not list(folder.glob(".*.tmp"))  # written atomically, nothing left behind
    # what it printed and saved is the API's answer
    saved = json.loads((folder / "most_confused.json").read_text())
    expected = interp.most_confused(1)
    assert [(p["actual"], p["predicted"], p["count"]) for p in saved["pairs"]] == expected
    assert saved["n_valid"] == len(interp.targets)
    for actual, predicted, count in expected:
        assert f"  {actual} -> {predicted}: {count}" in out.stdout


def test_same_validation_set_and_losses_as_training(classify_run, interp):
    run_dir, metrics = classify_run
    run = to_run_config(compose_cfg("schedule.epochs=2"))
    from fastlab.data import DataBunch

    assert interp.data.valid_items == DataBunch.from_config(run.data).valid_items
    # the model, normalisation and validation set all match: the run's own final numbers come back
    assert interp.accuracy() == pytest.approx(metrics["final"]["accuracy"], abs=1e-6)
    assert float(interp.losses.mean()) == pytest.approx(metrics["final"]["valid_loss"], rel=1e-4)
    assert torch.allclose(interp.losses, F.cross_entropy(interp.preds, interp.targets, reduction="none"), atol=1e-6)


def test_confusion_matrix_and_most_confused_agree(interp):
    cm = interp.confusion_matrix()
    c = len(interp.classes)
    assert cm.shape == (c, c)
    assert cm.sum() == len(interp.data.valid_items) == len(interp.targets)
    assert np.trace(cm) == int((interp.decoded == interp.targets).sum())
    assert (cm.sum(axis=1) == np.bincount(interp.targets.numpy(), minlength=c)).all()  # rows are actual
    index = {name: i for i, name in enumerate(interp.classes)}
    for min_val in (1, 2):
        pairs = interp.most_confused(min_val)
        assert [n for _, _, n in pairs] == sorted((n for _, _, n in pairs), reverse=True)
        for actual, predicted, count in pairs:
            assert actual != predicted and count >= min_val
            assert cm[index[actual], index[predicted]] == count
        off_diagonal = cm[~np.eye(c, dtype=bool)]
        assert len(pairs) == int((off_diagonal >= min_val).sum())


def test_top_losses_sorted_and_described(interp):
    top = interp.top_losses(5)
    losses = [t["loss"] for t in top]
    assert len(top) == 5 and losses == sorted(losses, reverse=True)
    assert losses[0] == pytest.approx(float(interp.losses.max()))
    for t in top:
        i = t["index"]
        assert t["actual"] == interp.classes[int(interp.targets[i])]
        assert t["predicted"] == interp.classes[int(interp.preds[i].argmax())]
        assert t["probability"] == pytest.approx(float(interp.probs[i, int(interp.targets[i])]))
        assert t["item"] == interp.data.valid_items[i]
    assert len(interp.top_losses(10**6)) == len(interp.targets)


def test_regression_run_skips_the_confusion_matrix(regress_run, capsys):
    main([str(regress_run)])  # in-process: the subprocess path is covered above
    out = capsys.readouterr().out
    assert "regression run" in out and "no confusion matrix" in out
    folder = regress_run / "interpret"
    assert (folder / "show_results.png").stat().st_size > 0 and (folder / "top_losses.png").stat().st_size > 0
    assert not (folder / "confusion_matrix.png").exists()
    interp = Interpretation.from_run_dir(regress_run)
    assert interp.probs is None and interp.top_losses(3)[0]["probability"] is None
    with pytest.raises(InterpretError, match="task=regress"):
        interp.confusion_matrix()


def cli_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


def test_errors_name_the_thing_and_the_fix(tmp_path, capsys, classify_run):
    missing = tmp_path / "nope"
    line = cli_error(capsys, missing)
    assert line.startswith("fastlab-interpret: error:") and str(missing) in line and "fastlab-train" in line

    empty = tmp_path / "empty"
    empty.mkdir()
    line = cli_error(capsys, empty)
    assert "model.pt" in line and "trainer.save_model=true" in line

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.pt").write_bytes(b"not a checkpoint")
    line = cli_error(capsys, corrupt)
    assert str(corrupt / "model.pt") in line  # the wording of the fix is fastlab.inference's

    # a model.pt without the training config (train() given a RunConfig) cannot rebuild its data
    no_config = tmp_path / "no_config"
    ckpt = load_plain(classify_run[0] / "model.pt")
    ckpt["meta"]["config"] = None
    no_config.mkdir()
    save_checkpoint(no_config / "model.pt", ckpt)  # a checkpoint fastlab wrote, with its digest
    line = cli_error(capsys, no_config)
    assert "training config" in line

    line = cli_error(capsys, classify_run[0], "--k", "0")
    assert "--k" in line


def test_subprocess_error_exit_status(tmp_path):
    out = run_cli(tmp_path / "nope")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("fastlab-interpret: error:")
    assert "Traceback" not in out.stderr
