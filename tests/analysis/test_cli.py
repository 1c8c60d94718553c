"""``fastlab-meta`` on the command line: a real multirun made by Hydra's basic sweeper, error
paths (one line, exit 2), and ``--apply`` writing a schedule preset that composes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fastlab.analysis.sources.synthetic import planted_trials, write_multirun
from fastlab.analysis.study.preset import MARKER
from fastlab.cli.meta import main
from fastlab.config import to_run_config
from tests.conftest import compose_cfg

BIN = Path(sys.executable).parent
# One torch thread per process: on a busy CPU, threads of tiny models spin against each other and
# a 0.2 s trial takes seconds.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
QUICK = ["--n-boot", "10", "--trees", "60", "--quiet"]


def fail(capsys, *argv: str) -> str:
    """Run ``fastlab-meta argv`` in-process; assert exit 2 and one line; return that line."""
    with pytest.raises(SystemExit) as e:
        main([*argv, *QUICK])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastlab-meta: error: "), err
    return err[0]


def test_real_multirun_of_the_basic_sweeper(tmp_path):
    """fastlab-train -m with Hydra's BASIC sweeper (6 tiny trainings), then fastlab-meta on it."""
    train = [str(BIN / "fastlab-train"), "-m", "schedule.lr_ratio=1,2.6,5", "seed=0,1",
             "data.size=16", "arch.channels=[16,32]", "arch.head_hidden=32", "schedule.epochs=1",
             "trainer.plots=false", "trainer.save_model=false", "trainer.progress=none",
             # few-shot digits 0-4: the same run shape, a fraction of the images
             "data.classes=[0,1,2,3,4]", "data.train_per_class=20", "hydra.sweep.dir=sweep"]
    r = subprocess.run(train, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    sweep = tmp_path / "sweep"
    assert not (sweep / "trials.db").exists()  # a plain Hydra multirun, not a fastlab sweep
    r = subprocess.run([str(BIN / "fastlab-meta"), str(sweep), "--reference", "2.6",
                        "--n-boot", "10", "--trees", "100"],
                       capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    out = sweep / "meta"
    assert f"report: {out / 'report.md'}" in r.stdout
    assert "bootstrap 10/10 done" in r.stderr  # the progress line
    s = json.loads((out / "summary.json").read_text())
    assert s["n_trials"] == 6 and s["objective"] == "accuracy" and s["direction"] == "maximize"
    assert list(s["importance"]) == ["schedule.lr_ratio"]  # seed replicates; the rest is fixed
    assert s["skipped"] == {"seed": "replicates (training randomness), not a hyperparameter"}
    assert s["recommendation"]["param"] == "schedule.lr_ratio"
    assert s["recommendation"]["level"] == 0.9 and len(s["recommendation"]["interval"]) == 2
    assert any("only 6 trials" in w for w in s["warnings"])
    for name in ("report.md", "importance.png", "observed_vs_oob.png", "pd_schedule.lr_ratio.png"):
        assert (out / name).stat().st_size > 0


def test_error_paths_are_one_line_and_exit_2(tmp_path, capsys):
    assert "does not exist" in fail(capsys, str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    assert "holds no trials" in fail(capsys, str(tmp_path / "empty"))
    few = write_multirun(planted_trials(3), tmp_path / "few")
    assert "only 3 usable trial(s)" in fail(capsys, str(few))
    assert "is a single run" in fail(capsys, str(few / "0"))
    enough = write_multirun(planted_trials(12), tmp_path / "enough")
    line = fail(capsys, str(enough), "--focus", "schedule.wd")
    assert "--focus schedule.wd is not a parameter of this sweep" in line
    assert "--level" in fail(capsys, str(enough), "--level", "90")
    (tmp_path / "bad" / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "bad" / "0" / ".hydra" / "overrides.yaml").write_text("- a=1\n")
    (tmp_path / "bad" / "0" / "metrics.json").write_text("{not json")
    assert "metrics.json is not readable JSON" in fail(capsys, str(tmp_path / "bad"))


def test_apply_writes_a_preset_that_composes(tmp_path, capsys):
    config = OmegaConf.to_container(compose_cfg(), resolve=True)  # the real composed config
    sweep = write_multirun(planted_trials(150, seed=0), tmp_path / "sweep",
                           fixed=["schedule.epochs=2"], config=config)
    conf = tmp_path / "conf"
    with pytest.raises(SystemExit) as e:
        main([str(sweep), "--out", str(tmp_path / "report"), "--apply", "lr_ratio_tuned",
              "--conf-dir", str(conf), *QUICK])
    assert e.value.code == 0
    preset = conf / "schedule" / "lr_ratio_tuned.yaml"
    assert f"wrote {preset}" in capsys.readouterr().out
    text = preset.read_text()
    assert text.startswith(MARKER) and "one_cycle_schema" in text
    rec = json.loads((tmp_path / "report" / "summary.json").read_text())["recommendation"]

    cfg = compose_cfg(f"hydra.searchpath=[file://{conf}]", "schedule=lr_ratio_tuned")
    run = to_run_config(cfg)  # the schema check fastlab-train does
    s = run.schedule
    assert s.name == "one_cycle"
    assert rec["interval"][0] <= s.lr_ratio <= rec["interval"][1]
    assert 1e-3 <= s.lr_max <= 1e-2  # the planted peak rate, from its own partial dependence
    assert s.epochs == 2  # the base config's value (composed_cfg's), an int

    # a file fastlab-meta did not write is never overwritten; its own one is
    (conf / "schedule" / "mine.yaml").write_text("name: one_cycle\n")
    assert "did not write it" in fail(capsys, str(sweep), "--apply", "mine", "--conf-dir", str(conf))
    flat = write_multirun(planted_trials(60, seed=1, optimum=None), tmp_path / "flat",
                          config=config)
    assert "no clear optimum" in fail(capsys, str(flat), "--apply", "x", "--conf-dir", str(conf))
    assert not (conf / "schedule" / "x.yaml").exists()
