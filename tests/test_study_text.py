"""The text cell of the study matrix: conf/study/lr_ratio_text.yaml composes into a sweep over the
ratio and what interacts with it, and one tiny trial of it fine-tunes a real (tiny) pydocs
language model from a fresh zoo with ULMFiT's momentum and 2.6-style discriminative rates."""

from __future__ import annotations

import math

import pytest
from hydra import compose, initialize_config_dir

from fastlab.config import config_dir
from fastlab.run.train import train
from tests.conftest import compose_cfg, one_thread

SWEPT = {"schedule.lr_ratio", "schedule.lr_max", "schedule.epochs", "schedule.wd", "data.bs",
         "arch.drop_mult", "seed"}
# Shrunk for seconds: a few hundred docstrings, one epoch each (the sizes stay the study's).
TINY = ["data.max_docs=300", "data.unlabelled=false", "schedule.epochs=1"]


def test_text_study_composes():
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["+study=lr_ratio_text"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert set(sweeper.params) == SWEPT and sweeper.n_trials == 300
    assert sweeper.strategy == "random" and "log" in sweeper.params["schedule.lr_ratio"]
    assert cfg.schedule.name == "fine_tune" and list(cfg.schedule.moms) == [0.8, 0.7, 0.8]
    assert cfg.task.name == "text_classify" and cfg.arch.pretrained == "pydocs_lm_small"
    assert cfg.hydra.sweep.dir == "outputs/sweeps/lr_ratio_text"


@pytest.mark.parametrize("schedule", ["fine_tune", "gradual"])
def test_one_tiny_trial_trains_from_the_zoo_lm(tmp_path_factory, schedule):
    zoo = tmp_path_factory.getbasetemp() / "text_zoo"
    with one_thread():
        if not (zoo / "pydocs_lm_small.pt").exists():
            lm = train(compose_cfg("+experiment=pretrain_pydocs_small", *TINY,
                                   f"paths.models={zoo}", small=False), run_dir=zoo / "lm")
            assert lm["status"] == "completed" and (zoo / "pydocs_lm_small.pt").is_file()
        m = train(compose_cfg("+study=lr_ratio_text", *TINY, f"paths.models={zoo}",
                              f"schedule={schedule}", "schedule.lr_ratio=2.6",
                              "schedule.lr_max=1e-2", "schedule.freeze_epochs=1", small=False),
                  run_dir=tmp_path_factory.mktemp(schedule))
    assert m["status"] == "completed" and math.isfinite(m["objective"])
    assert 0.0 <= m["objective"] <= 1.0 and m["objective_name"] == "accuracy"
    assert m["layer_groups"] == 5  # embedding, 3 LSTMs, head
    assert m["pretrained"]["loaded"] == 13  # the language model's encoder: every body tensor
    lrs = m["group_lrs"]  # the last stage's peak rate per group, head last
    assert all(math.isclose(b / a, 2.6, rel_tol=1e-6) for a, b in zip(lrs, lrs[1:]))
