"""Test-time augmentation (``Learner.tta``, ``fastlab.tta``): the mean and lerp of its passes by
hand, beta=1 as get_preds, determinism, no trace on training, points mapped back exactly, the
metrics.json entry, and one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch

from fastlab.callbacks.augment import Augment
from fastlab.config import AugConfig, TrainerConfig, to_run_config
from fastlab.data.augment import AugParams, BatchAugment, draw_params, sampling_matrix, warp_points
from fastlab.errors import ConfigError
from fastlab.run.prepare import prepare
from fastlab.rundir.metrics_json import RunMetrics, json_safe
from fastlab.tta import augmented_preds, check_tta, mix, tta_images, tta_metrics, unwarp_points
from tests.conftest import compose_cfg, one_thread

NO_FLIP = AugConfig(name="no_flip", max_rotate=10.0, max_zoom=1.1, max_warp=0.2, max_lighting=0.2)


@pytest.fixture(scope="module")
def trained():
    """A digits classifier (16 px) trained a few seconds with aug=no_flip: its run and Learner."""
    run = to_run_config(compose_cfg("aug=no_flip", "seed=0"))
    with one_thread():
        learn = prepare(run).learn
        learn.fit_one_cycle(2, 1e-2)
    return run, learn


def by_hand(learn, n: int, beta: float, seed: int) -> torch.Tensor:
    """The TTA of the validation set written out: every batch unnormalised, augmented n times by a
    BatchAugment whose generator starts at ``seed`` (so it draws what TTA draws, batch after batch),
    renormalised, softmaxed; the passes' mean lerped with the plain batch's probabilities."""
    aug = BatchAugment(learn.cbs[0].augment.cfg, seed)
    valid = learn.data.valid
    mean, std = valid.mean, valid.std
    out = []
    learn.model.eval()
    with torch.no_grad():
        for xb, yb in valid:
            x = xb * std + mean
            passes = torch.stack([learn.model((aug(x, yb)[0] - mean) / std).softmax(1) for _ in range(n)])
            out.append(torch.lerp(passes.mean(0), learn.model(xb).softmax(1), beta))
    return torch.cat(out)


def test_tta_is_the_lerp_of_the_mean_of_its_passes(trained):
    _, learn = trained
    assert isinstance(learn.cbs[0], Augment)
    with one_thread():
        preds, targets = learn.tta(n=3, beta=0.25, seed=5)
        want = by_hand(learn, 3, 0.25, 5)
    assert preds.shape == (len(learn.data.valid.x), 10) and torch.equal(targets, learn.data.valid.y.cpu())
    assert torch.allclose(preds, want, atol=1e-6)
    assert torch.allclose(preds.sum(1), torch.ones(len(preds)))  # probabilities, averaged
    (aug_mean, plain), _ = learn.tta(n=3, beta=None, seed=5)
    assert torch.allclose(mix(aug_mean, plain, 0.25), preds, atol=1e-7)
    assert not torch.allclose(aug_mean, plain, atol=1e-3)  # the passes did change the images


def test_beta_one_is_get_preds_probabilities_and_tta_is_deterministic(trained):
    _, learn = trained
    logits, targets = learn.get_preds()
    with one_thread():
        preds, y = learn.tta(n=2, beta=1.0)
        first, second, other = learn.tta(seed=1)[0], learn.tta(seed=1)[0], learn.tta(seed=2)[0]
    assert torch.allclose(preds, logits.softmax(1), atol=1e-7) and torch.equal(y, targets)
    assert torch.equal(first, second) and not torch.equal(first, other)


def test_tta_leaves_training_augmentation_model_and_mode_alone(trained):
    _, learn = trained
    gen = learn.cbs[0].augment.generator
    state, weights = gen.get_state(), {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.model.train()
    with one_thread():
        learn.tta(n=2)
        learn.tta(n=2, aug=NO_FLIP)
    assert torch.equal(gen.get_state(), state) and learn.model.training
    assert all(torch.equal(v, weights[k]) for k, v in learn.model.state_dict().items())


def test_tta_metrics_name_the_task_metrics_with_and_without_tta(trained):
    run, learn = trained
    run.trainer.tta, run.trainer.tta_n = True, 2
    with one_thread():
        got = tta_metrics(learn, run)
    assert set(got) == {"n", "beta", "seed", "accuracy", "error_rate", "plain"} and got["n"] == 2
    assert set(got["plain"]) == {"accuracy", "error_rate"}
    # plain: the Recorder's own validation metrics (argmax of probabilities = argmax of logits)
    assert got["plain"]["accuracy"] == pytest.approx(learn.recorder.history[-1]["accuracy"], abs=1e-6)
    assert got["accuracy"] == pytest.approx(1 - got["error_rate"])
    doc = json.loads(json.dumps(json_safe(RunMetrics("accuracy", "maximize", tta=got).to_dict())))
    assert doc["tta"] == got
    assert "tta" not in RunMetrics("accuracy", "maximize").to_dict()  # written only when on


# ------------------------------------------------------------------------------ points


def moved(n: int = 3, flip_x=False, rotate=0.0, zoom=1.0) -> AugParams:
    """Hand-set draws for ``n`` images (a value, or one per image): the rest neutral."""
    p = AugParams.neutral(n)
    p.flip_x = torch.tensor(flip_x).expand(n).clone()
    p.rotate = torch.tensor(rotate, dtype=torch.float64).expand(n).clone()
    p.zoom = torch.tensor(zoom, dtype=torch.float64).expand(n).clone()
    return p


def test_unwarp_points_undoes_a_flip_and_a_rotation_exactly():
    pts = torch.tensor([[0.3, -0.2, -0.5, 0.4], [0.1, 0.6, -0.25, -0.35], [0.5, 0.5, -0.1, 0.2]])  # (3, 2k)
    p = moved(flip_x=[True, False, True], rotate=[0.0, 30.0, -20.0], zoom=[1.0, 1.0, 1.1])
    mat = sampling_matrix(p, 16, 16)  # (3, 3, 3)
    seen = warp_points(pts, mat)  # where each point is in the augmented image
    assert torch.allclose(seen[0], torch.tensor([-0.3, -0.2, 0.5, 0.4]), atol=1e-6)  # the flip mirrors x
    assert not torch.allclose(seen[1], pts[1], atol=0.05)  # the rotation moved them
    assert (unwarp_points(seen, mat) - pts).abs().max() < 1e-4


def test_points_of_an_oracle_come_back_to_the_original_point():
    """A model that predicts exactly where the true points are in each augmented image: after
    mapping each pass back, every pass, and so their mean, is the original point."""
    torch.manual_seed(0)
    x = torch.rand(3, 1, 16, 16)
    truth = torch.tensor([[0.3, -0.2], [-0.4, 0.5], [0.0, 0.25]])  # (B, 2)
    drawn = draw_params(NO_FLIP, 3, torch.Generator().manual_seed(1))
    params = [moved(flip_x=True), moved(rotate=[30.0, -15.0, 45.0]), drawn]
    aug = BatchAugment(NO_FLIP, 0, "points")
    queue = iter(params)

    def oracle(xa: torch.Tensor) -> torch.Tensor:
        return warp_points(truth, sampling_matrix(next(queue), 16, 16))

    passes = augmented_preds(oracle, x, aug, params, "points")  # (3 passes, B, 2)
    assert (passes - truth).abs().max() < 1e-4
    # tta_images: the same pass shared by every image, mapped back too
    assert (tta_images(lambda xa: truth.clone(), x, aug, n=2, beta=None)[0] - truth).abs().max() > 1e-3
    plain = tta_images(lambda xa: truth.clone(), x, BatchAugment(AugConfig(max_lighting=0.2), 0, "points"), n=2)
    assert (plain - truth).abs().max() < 1e-6  # lighting alone moves no point


# ------------------------------------------------------------------------------ refusals


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and ": " in message
    return message


@pytest.mark.parametrize("overrides, fragment", [
    (["aug=none"], "aug=none changes nothing"),
    (["+experiment=segment_scenes", "aug=no_flip"], "gives masks"),
    (["+experiment=tabular"], "gives table"),
])
def test_check_tta_refuses_what_cannot_be_tta_d(overrides, fragment):
    run = to_run_config(compose_cfg(*overrides, "trainer.tta=true", small=False))
    with pytest.raises(ConfigError) as e:
        check_tta(run)
    assert fragment in one_line(e) and "trainer.tta" in str(e.value)
    run.trainer.tta = False
    check_tta(run)  # off: nothing to check


def test_learner_tta_refusals(trained):
    _, learn = trained
    cb = learn.cbs[0]
    learn.remove_cbs([cb])
    try:
        with pytest.raises(ConfigError) as e:
            learn.tta()
        assert "no Augment callback" in one_line(e)
    finally:
        learn.add_cbs([cb])
    with pytest.raises(ConfigError) as e:
        learn.tta(kind="masks")
    assert "not masks" in one_line(e)
    with pytest.raises(ConfigError) as e:
        learn.tta(aug=AugConfig())  # aug=none (or a presizing run's resize-only callback)
    assert "aug=none changes nothing" in one_line(e)
    with pytest.raises(ConfigError) as e:
        learn.tta(n=0)
    assert "n must be a positive" in one_line(e)


@pytest.mark.parametrize("key, value, fragment", [
    ("tta_n", 0, "trainer.tta_n must be a positive integer"),
    ("tta_beta", 1.5, "trainer.tta_beta must lie in [0, 1]"),
    ("tta", "yes", "trainer.tta must be true or false"),
])
def test_trainer_tta_keys_check_themselves(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        TrainerConfig(**{key: value})
    assert TrainerConfig().tta is False and TrainerConfig().tta_n == 4 and TrainerConfig().tta_beta == 0.25
