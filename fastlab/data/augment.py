"""fast.ai's batch augmentation (``aug_transforms``), per sample, on the batch's device.

Every image of a training batch draws its own parameters. The geometric part (flip or dihedral,
rotate, zoom, perspective warp, random resized crop) is composed into ONE 3x3 sampling matrix per
image, and the batch is resampled with a single ``grid_sample``: one interpolation, however many
transforms, so no detail is lost between steps and outside pixels are reflected once.

Conventions
-----------
Coordinates are fast.ai's [-1, 1] (``fastlab.data.generated.points``): the left/top *edge* is -1,
the right/bottom edge +1, so pixel centres sit at ``(2 i + 1) / n - 1`` and grids are sampled
with ``align_corners=False``. (fastai itself samples with ``align_corners=True``; here the grid
follows the points' convention instead, so an image and its points move exactly together.)

A sampling matrix ``S`` ``(B, 3, 3)`` maps an *output* pixel's homogeneous coordinate
``[x, y, 1]`` to where it reads in the *input*, as fastai's ``affine_mat`` does. A point of the
input therefore lands at ``S^-1 [x, y, 1]`` (then divided by its third coordinate).

Why not ``F.affine_grid`` or kornia: kornia is not a dependency, and ``affine_grid`` takes a 2x3
matrix only, which cannot hold fastai's perspective warp; the grid is one batched matrix product
(:func:`sampling_grid`) and ``torch.nn.functional.grid_sample`` does the interpolation.

Parameters are drawn on the CPU from a ``torch.Generator`` and the matrices built there in float64:
the draws are the same whatever the device, and the generator's state is plain data for ``last.pt``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastlab.config import AugConfig

EPS = 1e-7  # fastai's logit clamp: lighting never sees exactly 0 or 1

# What a batch's targets are, as the augmentation moves them with the images: labels (a class or
# values per image: nothing moves), points ``(B, 2k)`` on the image, or masks ``(B, H, W)``. A task
# says which of them its targets are (``fastlab.tasks.base.Task.aug_targets``).
LABELS, POINTS, MASKS = "labels", "points", "masks"
TARGET_KINDS = (LABELS, POINTS, MASKS)


def point_targets(cfg) -> bool:
    """Whether a data source's targets are ``(x, y)`` points on its images (``data=points``, or
    ``data.points=true`` of a csv source), which move with the image: read off its schema
    (``DataConfig``) here, where the data kinds are known."""
    return type(cfg).kind == "points" or bool(getattr(cfg, "points", False))


# ------------------------------------------------------------------------- matrices (B, 3, 3)


def _mat(rows: list[list[torch.Tensor | float]], like: torch.Tensor) -> torch.Tensor:
    """A batch of 3x3 matrices ``(B, 3, 3)`` from rows of per-sample values ``(B,)`` or scalars."""
    full = [[v if torch.is_tensor(v) else torch.full_like(like, float(v)) for v in row] for row in rows]
    return torch.stack([torch.stack(row, dim=-1) for row in full], dim=-2)


def flip_mat(flip_x: torch.Tensor, flip_y: torch.Tensor, transpose: torch.Tensor) -> torch.Tensor:
    """Left-right flip, up-down flip, then transpose (fastai's dihedral group), each ``(B,)`` bool."""
    sx, sy = 1.0 - 2.0 * flip_x.double(), 1.0 - 2.0 * flip_y.double()
    t = transpose.double()
    # transpose swaps x and y: [[1-t, t], [t, 1-t]] times the signs
    return _mat([[sx * (1 - t), sy * t, 0.0], [sx * t, sy * (1 - t), 0.0], [0.0, 0.0, 1.0]], sx)


def rotate_mat(degrees: torch.Tensor) -> torch.Tensor:
    """fastai's ``rotate_mat`` for angles ``(B,)`` in degrees (positive: counter-clockwise on screen)."""
    th = degrees.double() * math.pi / 180
    c, s = th.cos(), th.sin()
    return _mat([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]], th)


def scale_mat(scale: torch.Tensor, col_pct: torch.Tensor, row_pct: torch.Tensor) -> torch.Tensor:
    """Read a window ``scale`` ``(B,)`` times the image's side whose centre sits at ``col_pct`` and
    ``row_pct`` ``(B,)`` in [0, 1] of the free room: fastai's ``zoom_mat`` (scale = 1 / zoom) and its
    ``RandomResizedCropGPU`` (scale = sqrt(area fraction)), both inside the image when scale <= 1."""
    s = scale.double()
    col_c, row_c = (1 - s) * (2 * col_pct.double() - 1), (1 - s) * (2 * row_pct.double() - 1)
    return _mat([[s, 0.0, col_c], [0.0, s, row_c], [0.0, 0.0, 1.0]], s)


def warp_mat(mag_x: torch.Tensor, mag_y: torch.Tensor) -> torch.Tensor:
    """fastai's perspective ``Warp``: the homography ``(B, 3, 3)`` that takes the corners moved by
    ``mag_x``, ``mag_y`` ``(B,)`` back to the image's corners (``find_coeffs(orig, targ)``)."""
    x, y = mag_x.double(), mag_y.double()
    one = torch.ones_like(x)
    orig = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    orig = orig.expand(len(x), 4, 2)  # (B, 4, 2)
    targ = torch.stack([torch.stack([-one - y, -one - x], -1), torch.stack([-one + y, one + x], -1),
                        torch.stack([one + y, -one + x], -1), torch.stack([one - y, one - x], -1)], dim=1)
    # Solve for h (8 values, h33 = 1) with orig_i = H(targ_i): two linear equations per corner.
    zero = torch.zeros_like(x)
    rows, rhs = [], []
    for i in range(4):
        (tx, ty), (ox, oy) = targ[:, i].unbind(-1), orig[:, i].unbind(-1)
        rows.append(torch.stack([tx, ty, one, zero, zero, zero, -ox * tx, -ox * ty], -1))
        rows.append(torch.stack([zero, zero, zero, tx, ty, one, -oy * tx, -oy * ty], -1))
        rhs += [ox, oy]
    h = torch.linalg.solve(torch.stack(rows, 1), torch.stack(rhs, 1))  # (B, 8)
    return torch.cat([h, one[:, None]], dim=1).view(-1, 3, 3)


def fix_aspect(mat: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """fastai's ``_prepare_mat``: an affine matrix built for a square, corrected so that a rotation
    of a ``h`` x ``w`` image stays a rotation in pixels."""
    mat = mat.clone()
    mat[:, 0, 1] *= h / w
    mat[:, 1, 0] *= w / h
    return mat


# ------------------------------------------------------------------------------ parameters


@dataclass
class AugParams:
    """One batch's draws, each ``(B,)`` on the CPU. Neutral values leave an image as it is."""

    flip_x: torch.Tensor  # bool
    flip_y: torch.Tensor  # bool
    transpose: torch.Tensor  # bool
    rotate: torch.Tensor  # degrees
    zoom: torch.Tensor  # >= 1 zooms in
    zoom_col: torch.Tensor  # [0, 1]: where the zoomed window sits
    zoom_row: torch.Tensor
    warp_x: torch.Tensor  # fastai's warp magnitudes
    warp_y: torch.Tensor
    crop: torch.Tensor  # side fraction of the crop window, (0, 1]
    crop_col: torch.Tensor
    crop_row: torch.Tensor
    brightness: torch.Tensor  # (0, 1), 0.5 neutral
    contrast: torch.Tensor  # > 0, 1 neutral

    @classmethod
    def neutral(cls, n: int) -> AugParams:
        no, zero, one, half = torch.zeros(n, dtype=torch.bool), torch.zeros(n), torch.ones(n), torch.full((n,), 0.5)
        return cls(no, no, no, zero, one, half, half, zero, zero, one, half, half, half, one)


# The rows of a batch's uniform draws (N_DRAWS, B): fixed, so the generator's stream does not
# depend on which transforms are on. (With aug.flip_vert, FLIP_X and FLIP_Y draw fastai's
# dihedral element and TRANSPOSE is left unused.)
(FLIP_X, FLIP_Y, TRANSPOSE, P_ROTATE, ROTATE, P_ZOOM, ZOOM, ZOOM_COL, ZOOM_ROW, P_WARP, WARP_X, WARP_Y,
 CROP, CROP_COL, CROP_ROW, P_LIGHT, BRIGHTNESS, CONTRAST) = range(18)
N_DRAWS = 18


# fastai's dihedral_mat, element k of the group: x sign, y sign, and whether x and y swap
# (fastai's [[xs*m0, xs*m1], [ys*m1, ys*m0]], with m1 = swap); k = 0 is the identity.
_DIHEDRAL_XS = torch.tensor([1, -1, 1, -1, -1, 1, 1, -1])
_DIHEDRAL_YS = torch.tensor([1, 1, -1, 1, -1, -1, 1, -1])
_DIHEDRAL_SWAP = torch.tensor([0, 0, 0, 1, 0, 1, 1, 1], dtype=torch.bool)


def dihedral_draw(u_apply: torch.Tensor, u_element: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fastai's ``Dihedral(p=0.5)`` from two uniform draws ``(n,)``: half the images take an element
    of the dihedral group uniformly (the identity among the 8), the others the identity, so an
    image stays as it is with probability 9/16. Returned as :func:`flip_mat`'s ``flip_x``,
    ``flip_y`` and ``transpose`` (its transpose comes after the flips, so a swap's signs trade places)."""
    k = torch.where(u_apply < 0.5, (u_element * 8).long().clamp_(max=7), torch.zeros_like(u_element, dtype=torch.long))
    xs, ys, swap = _DIHEDRAL_XS[k] < 0, _DIHEDRAL_YS[k] < 0, _DIHEDRAL_SWAP[k]
    return torch.where(swap, ys, xs), torch.where(swap, xs, ys), swap


def draw_params(cfg: AugConfig, n: int, gen: torch.Generator) -> AugParams:
    """Each of ``n`` images draws its own parameters, from ``gen`` (a CPU generator): fastai's
    per-item ``RandTransform`` draws, each transform applied with its own probability."""
    u = torch.rand(N_DRAWS, n, generator=gen, dtype=torch.float64)  # (N_DRAWS, n)

    def uniform(row: int, lo: float, hi: float) -> torch.Tensor:  # (n,)
        return lo + u[row] * (hi - lo)

    def applied(row: int, p: float, value: torch.Tensor, neutral: float) -> torch.Tensor:  # (n,)
        return torch.where(u[row] < p, value, torch.full_like(value, neutral))

    flip, dihedral = cfg.flip, cfg.flip and cfg.flip_vert
    affine, light = cfg.p_affine, cfg.p_lighting
    flip_x, flip_y, transpose = u[FLIP_X] < 0.5, torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    if dihedral:
        flip_x, flip_y, transpose = dihedral_draw(u[FLIP_X], u[FLIP_Y])
    # fastai's Contrast is log-uniform in [1 - max_lighting, 1 / (1 - max_lighting)]
    log_c = -math.log(1 - cfg.max_lighting)
    return AugParams(
        flip_x=flip_x & flip,
        flip_y=flip_y,
        transpose=transpose,
        rotate=applied(P_ROTATE, affine, uniform(ROTATE, -cfg.max_rotate, cfg.max_rotate), 0.0),
        zoom=applied(P_ZOOM, affine, uniform(ZOOM, cfg.min_zoom, cfg.max_zoom), 1.0),
        zoom_col=u[ZOOM_COL], zoom_row=u[ZOOM_ROW],
        warp_x=applied(P_WARP, affine, uniform(WARP_X, -cfg.max_warp, cfg.max_warp), 0.0),
        warp_y=applied(P_WARP, affine, uniform(WARP_Y, -cfg.max_warp, cfg.max_warp), 0.0),
        # a square window of area fraction in [min_scale, 1] (aug_transforms' ratio=(1, 1))
        crop=uniform(CROP, cfg.min_scale, 1.0).sqrt() if cfg.crop else torch.ones_like(u[CROP]),
        crop_col=u[CROP_COL], crop_row=u[CROP_ROW],
        # fastai's Brightness: uniform in 0.5 (1 -/+ max_lighting), 0.5 neutral
        brightness=applied(P_LIGHT, light, uniform(BRIGHTNESS, 0.5 * (1 - cfg.max_lighting),
                                                   0.5 * (1 + cfg.max_lighting)), 0.5),
        contrast=applied(P_LIGHT, light, uniform(CONTRAST, -log_c, log_c).exp(), 1.0),
    )


# ------------------------------------------------------------------------------ applying


def sampling_matrix(p: AugParams, h: int, w: int) -> torch.Tensor:
    """The one matrix ``(B, 3, 3)`` (float64, CPU) of an image's whole geometric change, in
    fastai's order: the output is cropped from (``C``) the affine image (``flip @ rotate @ zoom``,
    aspect-corrected) whose coordinates the warp ``W`` then bends: ``S = W @ A @ C``."""
    affine = flip_mat(p.flip_x, p.flip_y, p.transpose) @ rotate_mat(p.rotate) @ scale_mat(1 / p.zoom, p.zoom_col, p.zoom_row)
    crop = scale_mat(p.crop, p.crop_col, p.crop_row)
    return warp_mat(p.warp_x, p.warp_y) @ fix_aspect(affine, h, w) @ crop


def sampling_grid(mat: torch.Tensor, h: int, w: int, device: torch.device) -> torch.Tensor:
    """Where each output pixel centre reads, ``(B, h, w, 2)`` as ``(x, y)`` in [-1, 1] on ``device``:
    the pixel centres times ``mat`` ``(B, 3, 3)``, divided by the homogeneous coordinate."""
    xs = (torch.arange(w, device=device, dtype=torch.float32) * 2 + 1) / w - 1  # (w,) pixel centres
    ys = (torch.arange(h, device=device, dtype=torch.float32) * 2 + 1) / h - 1  # (h,)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).view(1, h * w, 3)  # (1, h*w, 3)
    out = base @ mat.to(device, torch.float32).transpose(1, 2)  # (B, h*w, 3)
    return (out[..., :2] / out[..., 2:]).view(-1, h, w, 2)


def warp_images(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Float images ``(B, C, H, W)`` resampled at ``grid`` ``(B, H, W, 2)``: bilinear, reflecting
    outside the image (fastai's ``PadMode.Reflection``)."""
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="reflection", align_corners=False)


def warp_masks(y: torch.Tensor, grid: torch.Tensor, void: int) -> torch.Tensor:
    """Long masks ``(B, H, W)`` resampled at ``grid``: nearest (codes never blend), and ``void``
    where a pixel reads from outside the image (a reflected mask would be a made-up label)."""
    shifted = (y.float() + 1).unsqueeze(1)  # (B, 1, H, W); 0 is left for "outside", padded as zeros
    out = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    out = out.squeeze(1).round().long() - 1  # (B, H, W)
    return torch.where(out < 0, torch.full_like(out, void), out)


def warp_points(pts: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
    """Points ``(B, 2k)`` as ``x1, y1, x2, y2, ...`` in [-1, 1] of the input -> where they land in
    the output: the inverse of the sampling map (fastai's ``TensorPoint`` ``affine_coord``)."""
    inv = torch.linalg.inv(mat).to(pts.device, torch.float32)  # (B, 3, 3)
    xy = pts.float().view(len(pts), -1, 2)  # (B, k, 2)
    hom = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1) @ inv.transpose(1, 2)  # (B, k, 3)
    return (hom[..., :2] / hom[..., 2:]).reshape(pts.shape).to(pts.dtype)


def logit(x: torch.Tensor) -> torch.Tensor:
    """``log(x / (1 - x))``, clamped to ``[EPS, 1 - EPS]`` first (one fused pass)."""
    return torch.special.logit(x, eps=EPS)


def lighting(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """fastai's ``LightingTfm``: images ``(B, C, H, W)`` in [0, 1] get brightness then contrast in
    logit space, ``sigmoid((logit(x) + logit(b)) * c)``, with ``b``, ``c`` ``(B,)``.

    Three passes over the batch (logit, one multiply-add, sigmoid in place): lighting is an
    elementwise chain over every pixel, and each extra temporary costs as much as the resampling."""
    b = logit(brightness.to(x.device, torch.float32)).view(-1, 1, 1, 1)
    c = contrast.to(x.device, torch.float32).view(-1, 1, 1, 1)
    out = logit(x)  # a new tensor: x is left as it is
    return torch.addcmul(b * c, out, c, out=out).sigmoid_()


class BatchAugment:
    """``aug_transforms`` for one run: draws from its own seeded CPU generator and changes a
    training batch's images ``(B, C, H, W)`` in [0, 1] and its targets of ``kind``: ``labels``
    (left as they are), ``points`` ``(B, 2k)`` in [-1, 1], or ``masks`` ``(B, H, W)`` (``void``
    outside the image).

    ``size``: the side of the images it hands out. ``None`` keeps the input's; a smaller side
    than the input's is presizing (``data.presize``): the crop, the warp and the resize to
    ``size`` are the same one resampling of the larger image, as fastai's batch transforms do."""

    KINDS = TARGET_KINDS

    def __init__(self, cfg: AugConfig, seed: int, kind: str = LABELS, void: int = 255, size: int | None = None):
        if kind not in self.KINDS:
            raise ValueError(f"unknown target kind {kind!r}: use one of {self.KINDS}")
        self.cfg, self.kind, self.void, self.size = cfg, kind, void, size
        self.generator = torch.Generator().manual_seed(seed)
        self.geometric = cfg.flip or cfg.max_rotate > 0 or cfg.min_zoom != 1 or cfg.max_zoom != 1 \
            or cfg.max_warp > 0 or cfg.crop

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.cfg.active:  # presizing alone: a plain resize
            return self.plain(x, y)
        x, y, _ = self.apply(x, y, draw_params(self.cfg, len(x), self.generator))
        return x, y

    def apply(self, x: torch.Tensor, y: torch.Tensor | None, p: AugParams) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The batch through the draws ``p`` (what ``__call__`` does with its own): one resampling
        to ``size``, then lighting. Also returns the sampling matrix ``(B, 3, 3)`` (float64, CPU),
        with which test-time augmentation maps predicted points back. ``y=None``: images only."""
        h, w = x.shape[-2:]
        mat = sampling_matrix(p, h, w)  # (B, 3, 3): coordinates in [-1, 1] whatever the side
        if self.geometric or self.resizes(x):
            x, y = self._resample(x, y, mat)
        if self.cfg.max_lighting > 0:
            x = lighting(x, p.brightness, p.contrast)
        return x, y, mat

    def plain(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch unaugmented, only resized to ``size`` when presized; draws nothing (the LR
        finder's batches, test-time augmentation's plain pass)."""
        return self.resample(x, y, AugParams.neutral(len(x))) if self.resizes(x) else (x, y)

    def resizes(self, x: torch.Tensor) -> bool:
        """Whether batches like ``x`` come out at another side (presizing)."""
        return self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size)

    def resample(self, x: torch.Tensor, y: torch.Tensor | None, p: AugParams) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images, and masks or points, through the geometric part of ``p``: one ``grid_sample``
        from the input's side to ``size``."""
        return self._resample(x, y, sampling_matrix(p, *x.shape[-2:]))

    def _resample(self, x: torch.Tensor, y: torch.Tensor | None, mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, w = x.shape[-2:]
        out_h, out_w = (self.size, self.size) if self.size is not None else (h, w)
        grid = sampling_grid(mat, out_h, out_w, x.device)  # (B, out_h, out_w, 2)
        x = warp_images(x, grid)
        if y is not None and self.kind == MASKS:
            y = warp_masks(y, grid, self.void)
        elif y is not None and self.kind == POINTS:
            y = warp_points(y, mat)
        return x, y

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
