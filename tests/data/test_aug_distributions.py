"""``aug`` draws from fastai's distributions (``fastai.vision.augment``: ``flip_mat``,
``rotate_mat``, ``zoom_mat``, ``_WarpCoord``, ``_BrightnessLogit``, ``_ContrastLogit``,
``RandomResizedCropGPU`` with ``ratio=(1, 1)``), read back from what a batch gets: the sampling
matrix each image is resampled with, and the lighting its pixels show.

Each frequency is bounded binomially: ``N`` = 20,000 images each apply a transform with
probability ``p``, so the count lies in ``scipy.stats.binom.interval(1 - 1e-6, N, p)`` (about 5
standard deviations): p = 0.5 (flip): [9654, 10346]; 0.75 (p_affine, p_lighting of aug=fastai):
[14699, 15298]; 0.3: [5685, 6319]; 0.6: [11660, 12338]; fastai's dihedral, 9/16 (identity):
[10906, 11593] and 1/16 (each other element): [1086, 1421]. A transform applied always, never,
or at another rate (0.5 where 0.75 was asked: 5,000 off) falls far outside. Ranges are exact;
shapes are checked with a Kolmogorov-Smirnov test against fastai's uniform (p > 1e-4: a
triangular or normal draw of the same range fails it at this N by many orders of magnitude).
The generator is seeded, so each test's outcome is fixed.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from scipy import stats

from fastlab.config import AugConfig, to_run_config
from fastlab.data.augment import BatchAugment, draw_params, sampling_matrix
from tests.conftest import compose_cfg

N = 20_000
CONFIDENCE = 1 - 1e-6
NEUTRAL = AugConfig(name="test")  # every transform off: each test turns one on


def draws(n: int = N, seed: int = 0, **keys) -> tuple[AugConfig, torch.Tensor]:
    """The config with ``keys`` set and the sampling matrices ``(n, 3, 3)`` of ``n`` images
    (square, so fastai's aspect correction is the identity)."""
    cfg = dataclasses.replace(NEUTRAL, **keys)
    return cfg, sampling_matrix(draw_params(cfg, n, torch.Generator().manual_seed(seed)), 32, 32)


# Measured (the seeds each test passes: 0, and 1 for aug=fastai; torch.Generator draws, the same
# on any thread count), against the bounds above: flip 9868 of 20,000 (p 0.5); dihedral identity
# 11379, the other seven 1157-1269; rotation 15000 (p 0.75) and 6049 (p 0.3); zoom 14991; warp
# 15044 for x and for y (one shared mask: the same images); lighting 12024 and 12019 (p 0.6);
# aug=fastai flip 9979, the five p 0.75 transforms 14928-15036. Every count lies within 2.7
# standard deviations of n * p, 71 to 325 draws inside its interval's nearer end (2.1 to 4.6
# standard deviations of room; the least, 1157 of a dihedral element's [1086, 1421]).
# Kolmogorov-Smirnov p-values 0.38-0.99 against the bar 1e-4.
def within_binomial(count: int, n: int, p: float) -> None:
    lo, hi = stats.binom.interval(CONFIDENCE, n, p)
    assert lo <= count <= hi, f"{count} of {n} where Binomial({n}, {p}) gives [{lo:.0f}, {hi:.0f}]"


def uniform_fit(sample: torch.Tensor, lo: float, hi: float) -> None:
    p = stats.kstest(sample.double().numpy(), "uniform", args=(lo, hi - lo)).pvalue
    assert p > 1e-4, f"not uniform on [{lo}, {hi}]: Kolmogorov-Smirnov p = {p:.2g}"


def test_flip_is_left_right_with_probability_one_half() -> None:
    _, m = draws(flip=True)
    assert set(m[:, 0, 0].tolist()) == {-1.0, 1.0}  # x mirrored or not; nothing else moves
    assert torch.all(m[:, 1, 1] == 1) and torch.all(m[:, 0, 1] == 0) and torch.all(m[:, 1, 0] == 0)
    within_binomial(int((m[:, 0, 0] < 0).sum()), N, 0.5)


# fastai's dihedral_mat: element k is [[xs*m0, xs*m1], [ys*m1, ys*m0]]; Dihedral(p=0.5) draws k
# uniform in 0..7 for half the images and keeps k = 0, the identity, for the others.
FASTAI_DIHEDRAL = [((xs * m0, xs * m1), (ys * m1, ys * m0)) for xs, ys, m0, m1 in zip(
    [1, -1, 1, -1, -1, 1, 1, -1], [1, 1, -1, 1, -1, -1, 1, -1], [1, 1, 1, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 1, 1, 1])]


def test_flip_vert_draws_fastais_dihedral_identity_nine_sixteenths_each_other_one_sixteenth() -> None:
    _, m = draws(flip=True, flip_vert=True)
    elements = [((int(a[0, 0]), int(a[0, 1])), (int(a[1, 0]), int(a[1, 1]))) for a in m[:, :2, :2]]
    assert set(elements) == set(FASTAI_DIHEDRAL) and len(set(FASTAI_DIHEDRAL)) == 8
    for k, element in enumerate(FASTAI_DIHEDRAL):
        within_binomial(elements.count(element), N, 9 / 16 if k == 0 else 1 / 16)


@pytest.mark.parametrize("p_affine", [0.75, 0.3])
def test_rotation_is_uniform_within_max_rotate_with_probability_p_affine(p_affine: float) -> None:
    _, m = draws(max_rotate=10.0, p_affine=p_affine)
    degrees = torch.rad2deg(torch.atan2(m[:, 0, 1], m[:, 0, 0]))  # fastai's rotate_mat: [[c, s], [-s, c]]
    assert torch.allclose(m[:, 1, 0], -m[:, 0, 1]) and torch.allclose(m[:, 1, 1], m[:, 0, 0])  # a pure rotation
    turned = degrees.abs() > 1e-9
    within_binomial(int(turned.sum()), N, p_affine)
    assert degrees.abs().max() <= 10.0
    uniform_fit(degrees[turned], -10.0, 10.0)


def test_zoom_is_uniform_in_its_range_with_probability_p_affine_and_stays_inside() -> None:
    _, m = draws(min_zoom=1.0, max_zoom=1.5, p_affine=0.75)
    s = m[:, 0, 0]  # the side of the window read: 1 / zoom (fastai's zoom_mat)
    assert torch.equal(s, m[:, 1, 1])
    zoom = 1 / s
    zoomed = (zoom - 1).abs() > 1e-12
    within_binomial(int(zoomed.sum()), N, 0.75)
    assert zoom.min() >= 1.0 - 1e-12 and zoom.max() <= 1.5 + 1e-12
    uniform_fit(zoom[zoomed], 1.0, 1.5)
    # the window lies inside the image, its centre uniform over the room left (col_pct, row_pct)
    room = 1 - s[zoomed]
    for shift in (m[zoomed, 0, 2], m[zoomed, 1, 2]):
        assert torch.all(shift.abs() <= room + 1e-12)
        uniform_fit((shift / room + 1) / 2, 0.0, 1.0)


def test_crop_is_always_a_square_window_of_area_uniform_in_min_scale_to_one() -> None:
    _, m = draws(crop=True, min_scale=0.35)
    side = m[:, 0, 0]
    assert torch.equal(side, m[:, 1, 1]) and torch.all(m[:, 0, 1] == 0)  # square: aug_transforms' ratio=(1, 1)
    area = side ** 2
    assert area.min() >= 0.35 - 1e-12 and area.max() <= 1.0 + 1e-12
    assert int((area < 1 - 1e-12).sum()) == N  # RandomResizedCropGPU crops every image
    uniform_fit(area, 0.35, 1.0)
    room = 1 - side
    assert torch.all(m[:, 0, 2].abs() <= room + 1e-12) and torch.all(m[:, 1, 2].abs() <= room + 1e-12)


def test_warp_magnitudes_are_uniform_within_max_warp_each_with_probability_p_affine() -> None:
    cfg = dataclasses.replace(NEUTRAL, max_warp=0.2, p_affine=0.75)
    p = draw_params(cfg, N, torch.Generator().manual_seed(0))
    for mag in (p.warp_x, p.warp_y):  # fastai's _WarpCoord: x_t and y_t, each masked with p
        moved = mag != 0
        within_binomial(int(moved.sum()), N, 0.75)
        assert mag.abs().max() <= 0.2
        uniform_fit(mag[moved], -0.2, 0.2)
    m = sampling_matrix(p, 32, 32)
    assert torch.all((m[:, 2, :2].abs().sum(1) > 0) == ((p.warp_x != 0) | (p.warp_y != 0)))  # a perspective


def test_lighting_read_off_the_pixels_is_fastais_brightness_and_contrast_each_with_p_lighting() -> None:
    cfg = dataclasses.replace(NEUTRAL, max_lighting=0.2, p_lighting=0.6)
    aug = BatchAugment(cfg, seed=0)
    x = torch.tensor([0.5, 0.8]).view(1, 1, 1, 2).repeat(N, 3, 1, 1)  # (N, 3, 1, 2): two pixel values
    out, _ = aug(x, torch.zeros(N, dtype=torch.long))
    # out = sigmoid((logit(x) + logit(b)) * c): the 0.5 pixel gives logit(b) * c, the pair gives c
    lo = torch.logit(out[:, 0, 0, 0].double())
    c = (torch.logit(out[:, 0, 0, 1].double()) - lo) / math.log(0.8 / 0.2)
    b = torch.sigmoid(lo / c)
    brightened, contrasted = (b - 0.5).abs() > 1e-6, (c - 1).abs() > 1e-4
    within_binomial(int(brightened.sum()), N, 0.6)
    within_binomial(int(contrasted.sum()), N, 0.6)
    assert b.min() >= 0.4 - 1e-5 and b.max() <= 0.6 + 1e-5  # 0.5 * (1 -/+ max_lighting)
    assert c.min() >= 0.8 - 1e-5 and c.max() <= 1 / 0.8 + 1e-5  # exp(U(log(1 - ml), -log(1 - ml)))
    uniform_fit(b[brightened], 0.4, 0.6)
    uniform_fit(c[contrasted].log(), math.log(0.8), -math.log(0.8))


def test_aug_fastai_draws_every_transform_at_its_own_rate() -> None:
    """The preset: flip 0.5, rotate, zoom and warp each at p_affine 0.75, lighting at 0.75."""
    cfg = to_run_config(compose_cfg("aug=fastai")).aug
    assert (cfg.flip, cfg.flip_vert, cfg.max_rotate, cfg.min_zoom, cfg.max_zoom, cfg.max_warp, cfg.max_lighting,
            cfg.p_affine, cfg.p_lighting, cfg.crop) == (True, False, 10.0, 1.0, 1.1, 0.2, 0.2, 0.75, 0.75, False)
    p = draw_params(cfg, N, torch.Generator().manual_seed(1))
    within_binomial(int(p.flip_x.sum()), N, 0.5)
    for applied in (p.rotate != 0, p.zoom != 1, p.warp_x != 0, p.brightness != 0.5, p.contrast != 1):
        within_binomial(int(applied.sum()), N, 0.75)
    assert not p.flip_y.any() and not p.transpose.any() and torch.all(p.crop == 1)
    assert p.rotate.abs().max() <= 10 and p.zoom.min() >= 1 and p.zoom.max() <= 1.1
