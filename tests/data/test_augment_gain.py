"""Augmentation pays where fast.ai says it does: few-shot digits from scratch score higher with
``aug=no_flip`` than without, at the same budget, seed by seed.

Measured (docs/runs.md): 10 training images a class, 16 px, 20 epochs, seeds 0/1/2: 0.900/0.911/0.890
without augmentation against 0.930/0.947/0.913 with it (+2.3 to +3.6 points each).
"""

from __future__ import annotations

import pytest

from fastlab.run.train import train
from tests.conftest import compose_cfg, one_thread

FEW_SHOT = ["data.train_per_class=10", "data.size=16", "data.bs=16", "schedule.epochs=20", "schedule.lr_max=1e-2",
            "trainer.plots=false", "trainer.save_model=false", "trainer.save_last=false", "trainer.progress=none"]


@pytest.mark.parametrize("seed", [0, 1])
def test_no_flip_augmentation_beats_none_on_few_shot_digits(tmp_path, seed):
    with one_thread():
        plain = train(compose_cfg("aug=none", f"seed={seed}", *FEW_SHOT, small=False), run_dir=tmp_path / "none")
        augmented = train(compose_cfg("aug=no_flip", f"seed={seed}", *FEW_SHOT, small=False), run_dir=tmp_path / "aug")
    gain = augmented["final"]["accuracy"] - plain["final"]["accuracy"]
    # Under the smallest gain measured here (2.3 points), and under the 1.4 points measured on another
    # machine's float kernels: the bar is 1 point over 1,697 validation images. Re-measured with
    # this test's exact configuration (one thread, as above): +1.65 points at seed 0, +3.42 at
    # seed 1 (0.65 of a point, 11 images, of room at seed 0).
    assert gain >= 0.01, (plain["final"]["accuracy"], augmented["final"]["accuracy"])
