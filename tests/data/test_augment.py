"""fast.ai's batch augmentation: each transform's geometry on images whose answer is known,
masks and points moving with their image, per-sample draws, validation untouched, determinism,
resume equality, and bad values refused with one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from fastlab.callbacks.augment import Augment, augment_callback
from fastlab.callbacks.core import Callback
from fastlab.config import AugConfig, to_run_config
from fastlab.data.augment import (
    AugParams,
    BatchAugment,
    draw_params,
    lighting,
    sampling_grid,
    sampling_matrix,
    warp_images,
    warp_masks,
    warp_points,
)
from fastlab.errors import ConfigError
from fastlab.run.train import train
from tests.conftest import compose_cfg, one_thread
from tests.run.test_resume import same_run, stopped_then_resumed

FASTAI = AugConfig(name="fastai", flip=True, max_rotate=10.0, max_zoom=1.1, max_warp=0.2, max_lighting=0.2)
SIZE = 32


def neutral(**changes) -> AugParams:
    p = AugParams.neutral(1)
    for k, v in changes.items():
        setattr(p, k, torch.tensor([v], dtype=torch.bool if isinstance(v, bool) else torch.float64))
    return p


def pixel_to_point(row: int, col: int, n: int = SIZE) -> torch.Tensor:
    """A pixel's centre in [-1, 1] as ``(1, 2)`` ``(x, y)``."""
    return torch.tensor([[(2 * col + 1) / n - 1, (2 * row + 1) / n - 1]])


# ------------------------------------------------------------------------------- geometry

GEOMETRY = {
    "rotate": dict(rotate=25.0),
    "zoom": dict(zoom=1.4, zoom_col=0.2, zoom_row=0.7),
    "flip": dict(flip_x=True),
    "dihedral": dict(flip_y=True, transpose=True),
    "warp": dict(warp_x=0.2, warp_y=-0.15),
    "crop": dict(crop=0.7, crop_col=0.3, crop_row=0.6),
    "all": dict(flip_x=True, rotate=-10.0, zoom=1.1, zoom_col=0.6, zoom_row=0.4, warp_x=-0.2, warp_y=0.1,
                crop=0.8, crop_col=0.5, crop_row=0.5),
}


@pytest.mark.parametrize("name", list(GEOMETRY))
def test_a_bright_pixel_lands_where_its_point_says(name) -> None:
    p = neutral(**GEOMETRY[name])
    mat = sampling_matrix(p, SIZE, SIZE)
    for row, col in [(13, 18), (9, 12), (17, 14)]:
        x = torch.zeros(1, 1, SIZE, SIZE)
        x[0, 0, row, col] = 1.0
        out = warp_images(x, sampling_grid(mat, SIZE, SIZE, x.device))[0, 0]  # (H, W)
        got = divmod(int(out.argmax()), SIZE)
        px, py = ((warp_points(pixel_to_point(row, col), mat)[0] + 1) * SIZE / 2 - 0.5).tolist()
        assert out.max() > 0.2, (name, row, col)
        assert abs(got[0] - py) <= 1 and abs(got[1] - px) <= 1, (name, (row, col), got, (py, px))


def test_flip_and_rotate_move_points_the_expected_way() -> None:
    # a point right of centre: flipped it is left of centre; rotated by 90 degrees it is above or below
    pt = torch.tensor([[0.5, 0.0]])
    flipped = warp_points(pt, sampling_matrix(neutral(flip_x=True), SIZE, SIZE))
    assert torch.allclose(flipped, torch.tensor([[-0.5, 0.0]]), atol=1e-6)
    turned = warp_points(pt, sampling_matrix(neutral(rotate=90.0), SIZE, SIZE))
    assert torch.allclose(turned.abs(), torch.tensor([[0.0, 0.5]]), atol=1e-6)


def test_an_image_painted_from_its_mask_stays_in_agreement() -> None:
    n, void = 64, 255
    masks = torch.zeros(4, n, n, dtype=torch.long)
    masks[:, :, 20:40] = 1
    masks[:, 10:30, 45:60] = 2
    masks[:, 45:, :] = 3
    # painted one channel per code, so a pixel blended across a boundary still names the code it mostly is
    images = torch.nn.functional.one_hot(masks, 4).permute(0, 3, 1, 2).float()  # (B, 4, H, W)
    cfg = dataclasses.replace(FASTAI, max_lighting=0.0, max_rotate=30.0, p_affine=1.0)
    mat = sampling_matrix(draw_params(cfg, 4, torch.Generator().manual_seed(3)), n, n)
    grid = sampling_grid(mat, n, n, images.device)
    x, y = warp_images(images, grid), warp_masks(masks, grid, void)
    painted = x.argmax(1)  # (B, H, W): the code each pixel shows most
    inside = y != void
    assert (~inside).any()  # rotated: corners read from outside, and are void
    agreement = (painted[inside] == y[inside]).float().mean()
    assert agreement >= 0.99, agreement


def test_lighting_is_neutral_at_neutral_values_and_keeps_range() -> None:
    x = torch.rand(2, 3, 8, 8)
    same = lighting(x, torch.full((2,), 0.5), torch.ones(2))
    assert torch.allclose(same, x.clamp(1e-7, 1 - 1e-7), atol=1e-5)
    lit = lighting(x, torch.tensor([0.6, 0.4]), torch.tensor([1.2, 0.8]))
    assert lit.min() >= 0 and lit.max() <= 1
    assert lit[0].mean() > x[0].mean() and lit[1].mean() < x[1].mean()


# ------------------------------------------------------------------------------ the draws


def test_each_image_of_a_batch_draws_its_own_parameters() -> None:
    p = draw_params(dataclasses.replace(FASTAI, p_affine=1.0, p_lighting=1.0), 2, torch.Generator().manual_seed(0))
    for field in ("rotate", "zoom", "warp_x", "brightness", "contrast"):
        values = getattr(p, field)
        assert values[0] != values[1], field
    x = torch.rand(1, 3, SIZE, SIZE).expand(2, 3, SIZE, SIZE).contiguous()
    out, _ = BatchAugment(FASTAI, seed=1)(x, torch.zeros(2))
    assert not torch.equal(out[0], out[1])


def test_same_seed_same_batches_and_the_state_round_trips() -> None:
    x, y = torch.rand(4, 3, SIZE, SIZE), torch.rand(4, 4) * 2 - 1
    a, b = BatchAugment(FASTAI, seed=5, kind="points"), BatchAugment(FASTAI, seed=5, kind="points")
    for _ in range(2):
        (xa, ya), (xb, yb) = a(x, y), b(x, y)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    state = a.state_dict()
    first = a(x, y)
    a.load_state_dict(state)
    again = a(x, y)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(BatchAugment(FASTAI, seed=6)(x, y)[0], first[0])


def test_neutral_config_changes_nothing_but_float_rounding() -> None:
    assert not AugConfig().active and FASTAI.active
    x = torch.rand(2, 3, SIZE, SIZE)
    out, _ = BatchAugment(dataclasses.replace(FASTAI, flip=False, max_rotate=0.0, max_zoom=1.0, max_warp=0.0,
                                              max_lighting=0.0), seed=0)(x, torch.zeros(2))
    assert torch.equal(out, x)
    identity = sampling_matrix(AugParams.neutral(2), SIZE, SIZE)
    assert torch.allclose(warp_images(x, sampling_grid(identity, SIZE, SIZE, x.device)), x, atol=1e-5)


# ------------------------------------------------------------------------------ in a run


class Capture(Callback):
    """Every batch's ``xb`` as the model sees it (after Augment, order -10)."""

    order = 10

    def __init__(self):
        self.train, self.valid = [], []

    def before_batch(self):
        (self.train if self.learn.training else self.valid).append(self.learn.xb.clone())


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> dict:
    out = {}
    with one_thread():
        for key, aug in (("none", "none"), ("fastai", "fastai"), ("again", "fastai")):
            cap = Capture()
            run_dir = tmp_path_factory.mktemp(key)
            train(compose_cfg(f"aug={aug}", "schedule.epochs=1"), run_dir, cbs=[cap])
            out[key] = (cap, run_dir)
    return out


def test_training_batches_change_and_validation_batches_do_not(captured) -> None:
    (plain, _), (aug, _) = captured["none"], captured["fastai"]
    assert len(plain.valid) == len(aug.valid) > 0
    assert all(torch.equal(a, b) for a, b in zip(plain.valid, aug.valid))
    assert not any(torch.equal(a, b) for a, b in zip(plain.train, aug.train))


def test_same_seed_same_augmented_run(captured) -> None:
    (a, dir_a), (b, dir_b) = captured["fastai"], captured["again"]
    assert all(torch.equal(x, y) for x, y in zip(a.train, b.train))
    same_run(dir_a, dir_b)


def test_a_stopped_augmented_run_resumes_to_the_same_weights_and_history(tmp_path: Path) -> None:
    overrides = ["aug=fastai", "schedule.epochs=2", "trainer.checkpoint_every_n_steps=7"]
    with one_thread():
        train(compose_cfg(*overrides), tmp_path / "reference")
        run_dir, position = stopped_then_resumed(tmp_path, 30, *overrides)  # mid-epoch 1
    assert position["epoch"] == 1 and position["batch"] > 0
    same_run(tmp_path / "reference", run_dir)


# --------------------------------------------------------------------------------- config


@pytest.mark.parametrize("option", ["none", "fastai", "no_flip"])
def test_every_aug_option_composes(option) -> None:
    run = to_run_config(compose_cfg(f"aug={option}", small=False))
    assert isinstance(run.aug, AugConfig) and run.aug.name == option
    assert run.aug.active == (option != "none")
    assert run.aug.flip == (option == "fastai")


def test_a_config_saved_without_aug_means_none() -> None:
    saved = to_run_config(compose_cfg()).to_dict()
    del saved["aug"]
    assert to_run_config(saved).aug == AugConfig()


@pytest.mark.parametrize("override, fragment", [
    ("aug.max_warp=1.5", "aug.max_warp"),
    ("aug.max_lighting=-0.1", "aug.max_lighting"),
    ("aug.p_affine=2", "aug.p_affine"),
    ("aug.min_zoom=1.2", "aug.min_zoom"),
    ("aug.max_rotate=-5", "aug.max_rotate"),
    ("aug.min_scale=0", "aug.min_scale"),
    ("aug.flip_vert=true", "aug.flip_vert"),
])
def test_bad_values_give_one_line_naming_the_key(override, fragment) -> None:
    cfg = compose_cfg("aug=no_flip", override)
    with pytest.raises(ConfigError) as err:
        to_run_config(cfg)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_targets_kind_follows_the_data_and_text_is_refused() -> None:
    def kind(*overrides):
        return augment_callback(to_run_config(compose_cfg("aug=fastai", *overrides, small=False))).augment.kind

    assert kind() == "labels"
    assert kind("data=points", "task=regress") == "points"
    assert kind("data=scenes", "task=segment", "arch=unet") == "masks"
    with pytest.raises(ConfigError, match="aug=fastai transforms images but data=pydocs"):
        augment_callback(to_run_config(compose_cfg("aug=fastai", "data=pydocs", "task=language_model",
                                                   "arch=awd_lstm", small=False)))
    assert isinstance(augment_callback(to_run_config(compose_cfg("aug=fastai"))), Augment)
