"""Presizing: training images kept at data.presize and cropped, warped and resized to data.size
in one resampling (a point still lands where its coordinate says, masks still agree with their
image); validation images resized whole to data.size; the LR finder sees unaugmented batches
at data.size and draws nothing; a stopped presized run resumes to the same weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from fastlab.callbacks.augment import Augment
from fastlab.config import AugConfig, to_run_config
from fastlab.data.augment import BatchAugment, sampling_matrix, warp_points
from fastlab.data.images.bunch import DataBunch
from fastlab.data.images.presize import resize_images, resize_masks
from fastlab.data.masks.bunch import MaskBunch
from fastlab.errors import ConfigError
from fastlab.run.prepare import prepare
from fastlab.run.train import train
from tests.conftest import compose_cfg
from tests.data.test_augment import FASTAI, GEOMETRY, neutral
from tests.run.test_resume import same_run, stopped_then_resumed

BIG, SIZE = 40, 32


def centre(row: int, col: int, n: int) -> torch.Tensor:
    """Pixel ``(row, col)``'s centre of an ``n`` px image in [-1, 1] as ``(1, 2)`` ``(x, y)``."""
    return torch.tensor([[(2 * col + 1) / n - 1, (2 * row + 1) / n - 1]])


@pytest.mark.parametrize("name", ["rotate", "zoom", "crop", "all"])
def test_a_bright_spot_of_the_big_image_lands_where_its_point_says_in_the_small_one(name) -> None:
    aug = BatchAugment(AugConfig(), seed=0, kind="points", size=SIZE)
    p = neutral(**GEOMETRY[name])
    for row, col in [(17, 22), (11, 15), (21, 18)]:
        x = torch.zeros(1, 1, BIG, BIG)
        x[0, 0, row:row + 2, col:col + 2] = 1.0  # 2 px at 40 px: ~1.6 px at 32, so it survives the downscale
        pt = centre(row + 0.5, col + 0.5, BIG)
        out, moved = aug.resample(x, pt, p)
        assert out.shape == (1, 1, SIZE, SIZE)
        got = divmod(int(out[0, 0].argmax()), SIZE)
        px, py = ((moved[0] + 1) * SIZE / 2 - 0.5).tolist()
        assert abs(got[0] - py) <= 1 and abs(got[1] - px) <= 1, (name, (row, col), got, (py, px))
        # the coordinate is the same one the [-1, 1] convention gives at any side
        assert torch.allclose(moved, warp_points(pt, sampling_matrix(p, BIG, BIG)), atol=1e-6)


def test_masks_resampled_from_the_big_side_agree_with_their_painted_image() -> None:
    masks = torch.zeros(2, BIG, BIG, dtype=torch.long)
    masks[:, :, 12:26] = 1
    masks[:, 28:, :] = 2
    images = torch.nn.functional.one_hot(masks, 3).permute(0, 3, 1, 2).float()
    aug = BatchAugment(dataclasses.replace(FASTAI, max_lighting=0.0, p_affine=1.0), seed=1, kind="masks", void=255,
                       size=SIZE)
    x, y = aug(images, masks)
    assert x.shape[-2:] == y.shape[-2:] == (SIZE, SIZE)
    inside = y != 255
    assert (x.argmax(1)[inside] == y[inside]).float().mean() >= 0.99


def test_presized_data_keeps_training_images_big_and_validation_at_size() -> None:
    cfg = to_run_config(compose_cfg("data.size=16", "data.presize=20")).data
    data = DataBunch.from_config(cfg)
    plain = DataBunch.from_config(dataclasses.replace(cfg, presize=None))
    assert data.train.x.shape[-1] == 20 and data.valid.x.shape[-1] == 16 and data.size == 16
    assert data.meta()["size"] == 16  # predicting resizes a file to the side the model saw
    assert data.train_items == plain.train_items and data.valid_items == plain.valid_items  # same split
    # validation: the big image resized whole, within a grey level or so of decoding at 16 directly
    assert (data.valid.x.float() - plain.valid.x.float()).abs().mean() < 3
    masks = MaskBunch.from_config(to_run_config(compose_cfg("data=scenes", "task=segment", "arch=unet", "data.size=32",
                                                           "data.presize=40", small=False)).data)
    assert masks.train.x.shape[-1] == masks.train.y.shape[-1] == 40
    assert masks.valid.x.shape[-1] == masks.valid.y.shape[-1] == 32 and masks.size == 32


def test_resizing_keeps_dtypes_and_codes() -> None:
    x = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    assert resize_images(x, 32).dtype == torch.uint8 and resize_images(x, 32).shape == (3, 3, 32, 32)
    m = torch.randint(0, 4, (3, 40, 40), dtype=torch.uint8)
    assert set(resize_masks(m, 32).unique().tolist()) <= set(m.unique().tolist())




def test_the_lr_finder_sees_unaugmented_batches_at_size_and_draws_nothing() -> None:
    prep = prepare(to_run_config(compose_cfg("data.size=16", "data.presize=20", "aug=no_flip")))
    learn = prep.learn
    (augment,) = [cb for cb in learn.cbs if isinstance(cb, Augment)]
    assert augment.augment.size == 16
    shapes: list[tuple] = []
    hook = learn.model.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape[1:])))
    state = augment.augment.generator.get_state()
    learn.lr_find(num_it=10)
    hook.remove()
    assert shapes and set(shapes) == {(1, 16, 16)}
    assert torch.equal(augment.augment.generator.get_state(), state)
    # in training the batches come out at data.size too, augmented
    shapes.clear()
    hook = learn.model.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape[1:])))
    learn.fit_one_cycle(1, 1e-2)
    hook.remove()
    assert set(shapes) == {(1, 16, 16)} and not torch.equal(augment.augment.generator.get_state(), state)


def test_presizing_without_augmentation_resizes_only(tmp_path: Path) -> None:
    prep = prepare(to_run_config(compose_cfg("data.size=16", "data.presize=24")))
    (augment,) = [cb for cb in prep.learn.cbs if isinstance(cb, Augment)]
    x = torch.rand(2, 1, 24, 24)
    out, _ = augment.augment(x, torch.zeros(2, dtype=torch.long))
    assert out.shape == (2, 1, 16, 16)
    # a plain resize: the mean brightness is kept
    assert float(out.mean()) == pytest.approx(float(x.mean()), abs=0.02)


def test_a_stopped_presized_run_resumes_to_the_same_weights_history_and_tta(tmp_path: Path) -> None:
    overrides = ["data.presize=20", "aug=fastai", "schedule.epochs=2", "trainer.checkpoint_every_n_steps=7",
                 "trainer.tta=true", "trainer.callbacks.mixup.alpha=0.4"]
    reference = tmp_path / "reference"
    m = train(compose_cfg(*overrides), reference)
    assert m["status"] == "completed" and m["tta"]["n"] == 4
    run_dir, position = stopped_then_resumed(tmp_path, 30, *overrides)
    assert position["epoch"] == 1 and position["batch"] == 6
    same_run(reference, run_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["tta"] == m["tta"]


@pytest.mark.parametrize("overrides,fragment", [
    (["data.size=32", "data.presize=24"], "data.presize must be null or an integer side >= data.size (32)"),
    (["data=sklearn_table", "task=tabular", "arch=tabular_mlp", "data.presize=40"], "data.presize keeps images larger"),
])
def test_bad_presize_is_one_line(overrides, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as e:
        prepare(to_run_config(compose_cfg(*overrides, small=False)))
    assert "\n" not in str(e.value)
