"""show_batch and plots/batch.png: the first training images as a training batch sees them
(augmented, presized, targets moved with them), drawn deterministically, without moving any of
the run's random streams."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from fastlab.config import AugConfig, to_run_config
from fastlab.data.images.bunch import DataBunch
from fastlab.data.images.seen import seen_batch, unit_images
from fastlab.data.images.sources import DigitsData, PointsData
from fastlab.data.loader_bunch import LoaderBunch
from fastlab.data.masks.bunch import MaskBunch
from fastlab.data.masks.sources import ScenesData
from fastlab.plots import point_pixels, show_images
from fastlab.run.batch_plot import write_batch_plot
from fastlab.run.prepare import prepare
from tests.conftest import compose_cfg, one_thread

FASTAI = AugConfig(name="fastai", flip=True, max_rotate=10.0, max_zoom=1.1, max_warp=0.2, max_lighting=0.2)
FLIP = AugConfig(name="flip", flip=True)  # flips only: exact pixel moves, so targets can be checked exactly


@pytest.fixture(scope="module")
def bunches() -> dict:
    return {
        "labels": DataBunch.from_config(DigitsData(size=16, bs=16)),
        "points": DataBunch.from_config(PointsData(n_images=40, size=32, bs=8), "float"),
        "masks": MaskBunch.from_config(ScenesData(n_images=20, size=24, bs=4)),
    }


def pixels(path: Path) -> np.ndarray:
    """The decoded pixels of a PNG (matplotlib may embed metadata; the pixels are what counts)."""
    with Image.open(path) as im:
        im.verify()  # a valid PNG, else this raises
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("kind", ["labels", "points", "masks"])
def test_show_batch_draws_the_augmented_batch_deterministically(kind, bunches, tmp_path) -> None:
    data = bunches[kind]
    plain = pixels(data.show_batch(tmp_path / "plain.png", n=8))
    inactive = pixels(data.show_batch(tmp_path / "inactive.png", n=8, aug=AugConfig(), seed=3))
    a = pixels(data.show_batch(tmp_path / "a.png", n=8, aug=FASTAI, seed=3))
    b = pixels(data.show_batch(tmp_path / "b.png", n=8, aug=FASTAI, seed=3))
    other = pixels(data.show_batch(tmp_path / "other.png", n=8, aug=FASTAI, seed=4))
    assert plain.ndim == 3 and plain.shape[0] > 50 and plain.shape[1] > 50
    assert np.array_equal(plain, inactive)  # an inactive AugConfig is plain images
    assert a.shape != plain.shape or not np.array_equal(a, plain)  # augmentation shows
    assert np.array_equal(a, b)  # same seed, same picture
    assert a.shape != other.shape or not np.array_equal(a, other)


def test_points_and_masks_move_with_their_images(bunches) -> None:
    for kind, data in (("points", bunches["points"]), ("masks", bunches["masks"])):
        x, y = data.train.x[:16].clone(), data.train.y[:16].clone()
        seen_x, seen_y = seen_batch(data.train.x[:16], data.train.y[:16], FLIP, seed=0, kind=kind, void=255)
        assert torch.equal(data.train.x[:16], x) and torch.equal(data.train.y[:16], y)  # read, never changed
        flipped = [not torch.equal(seen_x[i], x[i]) for i in range(len(x))]
        assert any(flipped) and not all(flipped), kind  # p = 0.5 of 16: both happen
        for i, f in enumerate(flipped):
            assert torch.equal(seen_x[i], x[i].flip(-1) if f else x[i]), (kind, i)
            if kind == "points":
                want = y[i] * torch.tensor([-1.0, 1.0]) if f else y[i]  # x mirrored, y kept
                assert torch.allclose(seen_y[i], want, atol=1e-5), (i, seen_y[i], y[i])
            else:
                assert torch.equal(seen_y[i], y[i].flip(-1) if f else y[i]), i


def test_size_resizes_presized_images_and_float_images_are_drawn(tmp_path) -> None:
    x = (torch.rand(4, 3, 32, 32) * 3 - 1)  # float images of any range (from_tensors takes them as they are)
    x01 = unit_images(x)
    assert float(x01.min()) == 0.0 and float(x01.max()) == 1.0
    seen_x, seen_y = seen_batch(x, torch.zeros(4, dtype=torch.long), None, 0, size=16)
    assert seen_x.shape == (4, 3, 16, 16) and seen_x.dtype == torch.uint8
    data = DataBunch.from_tensors(x, torch.tensor([0, 1, 0, 1]), x[:2], torch.tensor([0, 1]), bs=2)
    small = pixels(data.show_batch(tmp_path / "small.png", size=16))
    big = pixels(data.show_batch(tmp_path / "big.png"))
    assert small.shape == big.shape and not np.array_equal(small, big)  # same grid, other pixels


def test_point_pixels_land_on_the_pixel_they_name() -> None:
    h, w = 6, 8
    img = torch.zeros(h, w)
    img[2, 5] = 1.0
    pt = torch.tensor([(2 * 5 + 1) / w - 1, (2 * 2 + 1) / h - 1])  # pixel (row 2, col 5)'s centre
    col, row = point_pixels(pt, h, w).tolist()
    assert (col, row) == pytest.approx((5.0, 2.0))
    assert img[round(row), round(col)] == 1.0
    corners = point_pixels(torch.tensor([[-1.0, -1.0], [1.0, 1.0]]), h, w)
    assert torch.allclose(corners, torch.tensor([[-0.5, -0.5], [w - 0.5, h - 0.5]]))  # the edges


def test_a_drawn_dot_sits_on_its_pixel(tmp_path) -> None:
    side, row, col = 20, 5, 14
    x = torch.full((1, 3, side, side), 128, dtype=torch.uint8)  # plain grey: the dot is the only colour
    pt = torch.tensor([[(2 * col + 1) / side - 1, (2 * row + 1) / side - 1]])
    png = pixels(show_images(x, [""], tmp_path / "dot.png", points=pt)).astype(int)
    grey = (np.abs(png - 128) <= 2).all(-1)
    rows, cols = np.nonzero(grey)
    top, left = rows.min(), cols.min()
    scale = (cols.max() - left + 1) / side  # PNG pixels per image pixel
    red = (png[..., 0] > 200) & (png[..., 1] < 60) & (png[..., 2] < 60)
    ry, rx = np.nonzero(red)
    assert len(ry) > 0
    got_col, got_row = (rx.mean() - left) / scale - 0.5, (ry.mean() - top) / scale - 0.5
    assert abs(got_col - col) < 0.5 and abs(got_row - row) < 0.5, (got_col, got_row)


def test_write_batch_plot_moves_no_random_stream(tmp_path) -> None:
    with one_thread():
        run = to_run_config(compose_cfg("aug=fastai", "data.bs=32"))
        learn = prepare(run).learn
        augment = next(cb for cb in learn.cbs if type(cb).__name__ == "Augment")
        before = (torch.get_rng_state(), learn.data.train.generator.get_state(),
                  augment.augment.generator.get_state(), np.random.get_state()[1].copy(), random.getstate())
        path = write_batch_plot(learn, run, tmp_path / "plots" / "batch.png")
        after = (torch.get_rng_state(), learn.data.train.generator.get_state(),
                 augment.augment.generator.get_state(), np.random.get_state()[1].copy(), random.getstate())
    assert path == tmp_path / "plots" / "batch.png" and pixels(path).size > 0
    for was, now in zip(before[:3], after[:3]):
        assert torch.equal(was, now)
    assert np.array_equal(before[3], after[3]) and before[4] == after[4]


def test_write_batch_plot_skips_data_that_is_not_images(tmp_path) -> None:
    run = to_run_config(compose_cfg())
    loaders = LoaderBunch([(torch.zeros(2, 3), torch.zeros(2))], [(torch.zeros(2, 3), torch.zeros(2))], c=1)
    features = DataBunch.from_tensors(torch.rand(8, 3), torch.rand(8), torch.rand(4, 3), torch.rand(4), bs=4)
    for data in (loaders, features):
        assert write_batch_plot(SimpleNamespace(data=data), run, tmp_path / "batch.png") is None
    assert not (tmp_path / "batch.png").exists()
