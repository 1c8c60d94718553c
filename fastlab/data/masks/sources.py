"""Segmentation sources: images with per-pixel masks of class codes, split into train and valid.

Two sources: generated ``scenes`` (offline) and a folder in the CamVid layout::

    path/images/<stem><suffix>        the images (any format Pillow reads)
    path/labels/<mask_name>           one mask per image, e.g. <stem>_P.png: pixel value i = code i
    path/codes.txt                    one code name per line (line i names mask value i)
    path/valid.txt                    optional: image file names that validate; else valid_pct

Images are resized bilinearly (``fastlab.data.images.decode``), masks with nearest neighbour, so a mask
pixel is always one of the codes. Every problem with the files is one line naming the file.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image

from fastlab.config import DataConfig, check
from fastlab.data.generated.scenes import CODES, make_scenes
from fastlab.data.images.decode import is_image, load_images
from fastlab.data.split import seeded_split
from fastlab.errors import ConfigError, DataError
from fastlab.registry import register

MAX_CODES = 255  # masks are stored as uint8 and 255 marks void pixels


@dataclass
class MaskSource:
    """Raw material for a :class:`fastlab.data.masks.bunch.MaskBunch`: images ``(N, 3, S, S)``
    uint8, masks ``(N, S, S)`` uint8 of code indices, the code names and the void code's index."""

    train_x: torch.Tensor
    train_masks: torch.Tensor
    train_items: list[str]
    valid_x: torch.Tensor
    valid_masks: torch.Tensor
    valid_items: list[str]
    codes: list[str]
    void: int | None


def void_index(codes: list[str], void_code: str | None, where: str, error: type = ConfigError) -> int | None:
    """The index of ``void_code`` in ``codes`` (``None`` when not set); an unknown code is one line."""
    if void_code is None:
        return None
    if void_code not in codes:
        shown = ", ".join(codes[:12]) + (", ..." if len(codes) > 12 else "")
        raise error(f"data.void_code={void_code!r} is not a code of {where} ({shown}): use one of them, or null")
    return codes.index(void_code)


def _split(x: torch.Tensor, masks: torch.Tensor, items: list[str], train: list[int], valid: list[int],
           codes: list[str], void: int | None) -> MaskSource:
    return MaskSource(x[train], masks[train], [items[i] for i in train],
                      x[valid], masks[valid], [items[i] for i in valid], codes, void)


@dataclass
class ScenesData(DataConfig):
    """Generated scenes (offline) for segmentation: shapes of several kinds on textured
    backgrounds, each image with its per-pixel mask. Codes: ``background`` plus one per kind."""

    kind: ClassVar[str] = "masks"
    name: str = "scenes"
    bs: int = 16
    n_images: int = 400
    scene_seed: int = 0  # which scenes; the split still uses data.seed
    void_code: str | None = None  # a code whose pixels the loss and metrics ignore

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_images >= 2, f"data.n_images must be at least 2 (one to train, one to validate), got {self.n_images}")


@register("data", "scenes", ScenesData)
def scenes(cfg: ScenesData) -> MaskSource:
    """Generated scenes (see ``fastlab.data.generated.scenes``), split by ``data.seed``."""
    void = void_index(CODES, cfg.void_code, "the scenes")
    x, masks = make_scenes(cfg.n_images, cfg.size, cfg.scene_seed)
    train, valid = seeded_split(cfg.n_images, cfg.valid_pct, cfg.seed)
    return _split(x, masks, [f"scenes/{i}" for i in range(cfg.n_images)], train, valid, list(CODES), void)


# ----------------------------------------------------------------------------- CamVid layout


def read_codes(path: Path) -> list[str]:
    """Code names from ``codes.txt``, one per line (blank lines skipped)."""
    if not path.is_file():
        raise DataError(f"codes file '{path}' does not exist: write one code name per line (line i names mask value i)")
    codes = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if not codes:
        raise DataError(f"codes file '{path}' is empty: write one code name per line (line i names mask value i)")
    if len(codes) > MAX_CODES:
        raise DataError(f"codes file '{path}' has {len(codes)} codes, more than {MAX_CODES}: merge codes")
    return codes


def mask_path(labels: Path, mask_name: str, image: Path) -> Path:
    """``labels / mask_name`` with ``{stem}`` and ``{suffix}`` of ``image`` filled in."""
    try:
        return labels / mask_name.format(stem=image.stem, suffix=image.suffix)
    except (KeyError, IndexError, ValueError):
        raise ConfigError(f"data.mask_name={mask_name!r} is not a name pattern: use {{stem}} and {{suffix}}, "
                          "e.g. '{stem}_P.png'") from None


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:  # reads the header only
            return im.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image '{path}' ({type(e).__name__}): fix or remove the file") from None


def load_mask(path: Path, image: Path, n_codes: int, codes_file: Path, size: int) -> torch.Tensor:
    """The mask at ``path`` as ``(size, size)`` uint8, after checking it against its image and
    the codes at full resolution (so resizing can hide no bad pixel)."""
    if not path.is_file():
        raise DataError(f"mask '{path}' of image '{image}' does not exist: add it, or set data.mask_name "
                        "to the masks' name pattern")
    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read mask '{path}' ({type(e).__name__}): fix or remove the file") from None
    if im.mode not in ("L", "P", "I", "I;16", "1"):
        raise DataError(f"mask '{path}' is a {im.mode} image: a mask holds one code index per pixel "
                        "(a grayscale or palette PNG), not colours")
    if im.size != _image_size(image):
        w, h = im.size
        iw, ih = _image_size(image)
        raise DataError(f"mask '{path}' is {w}x{h} but its image '{image}' is {iw}x{ih}: "
                        "a mask must have its image's size")
    values = np.asarray(im, dtype=np.int64)
    bad = (values < 0) | (values >= n_codes)
    if bad.any():
        value = int(values[bad].max())
        raise DataError(f"mask '{path}' holds value {value} ({int((values == value).sum())} pixels) but "
                        f"'{codes_file}' has {n_codes} codes (values 0-{n_codes - 1}): add the missing codes "
                        "or fix the mask")
    small = Image.fromarray(values.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(small).copy())


def _valid_names(root: Path, cfg: CamvidData, names: list[str]) -> set[str] | None:
    """Image file names listed in ``valid_list`` (``None`` when there is no such file)."""
    if cfg.valid_list is None:
        return None
    listing = Path(cfg.valid_list).expanduser()
    listing = listing if listing.is_absolute() else root / listing
    if not listing.is_file():
        return None
    wanted = {Path(line.strip()).name for line in listing.read_text(errors="replace").splitlines() if line.strip()}
    unknown = sorted(wanted - set(names))
    if unknown:
        raise DataError(f"valid list '{listing}' names {len(unknown)} file(s) not in {cfg.images}/, e.g. "
                        f"'{unknown[0]}': list image file names, one per line")
    if len(wanted) >= len(names):
        raise DataError(f"valid list '{listing}' names every image, leaving none to train: list fewer")
    return wanted


@dataclass
class CamvidData(DataConfig):
    """Segmentation data in the CamVid layout: ``path/images/*``, ``path/labels/<mask name>``
    (one class code per pixel) and ``path/codes.txt`` (one code name per line)."""

    kind: ClassVar[str] = "masks"
    name: str = "camvid"
    bs: int = 8
    images: str = "images"
    labels: str = "labels"
    codes: str = "codes.txt"
    mask_name: str = "{stem}_P.png"  # the mask of images/<stem><suffix>; {stem} and {suffix} are filled in
    valid_list: str | None = "valid.txt"  # file names listed here validate, when the file exists; else valid_pct
    void_code: str | None = None  # a code of codes.txt whose pixels the loss and metrics ignore (CamVid: Void)


@register("data", "camvid", CamvidData)
def camvid(cfg: CamvidData) -> MaskSource:
    """Images, masks and codes in the CamVid layout (see the module docstring)."""
    if cfg.path is None:
        raise ConfigError("data.path is not set: data=camvid needs data.path=<folder with images/, labels/, codes.txt>")
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise DataError(f"data.path '{cfg.path}' is not a folder: give the folder holding images/, labels/ and codes.txt")
    images_dir, labels_dir = root / cfg.images, root / cfg.labels
    if not images_dir.is_dir():
        raise DataError(f"'{images_dir}' is not a folder: the CamVid layout keeps images in path/{cfg.images}/ "
                        "(or set data.images)")
    paths = sorted(p for p in images_dir.iterdir() if is_image(p))
    if len(paths) < 2:
        raise DataError(f"'{images_dir}' holds {len(paths)} image(s): at least 2 are needed (one to train, one to validate)")
    codes_file = root / cfg.codes
    codes = read_codes(codes_file)
    void = void_index(codes, cfg.void_code, f"'{codes_file}'", DataError)
    masks_of = [mask_path(labels_dir, cfg.mask_name, p) for p in paths]
    names = [p.name for p in paths]
    listed = _valid_names(root, cfg, names)
    if listed is not None:
        valid = [i for i, n in enumerate(names) if n in listed]
        train = [i for i, n in enumerate(names) if n not in listed]
    else:
        train, valid = seeded_split(len(paths), cfg.valid_pct, cfg.seed)

    def one(i: int) -> torch.Tensor:
        return load_mask(masks_of[i], paths[i], len(codes), codes_file, cfg.size)

    # Checked in file order, so the error names the first bad file whatever the thread timing.
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        masks = torch.stack(list(pool.map(one, range(len(paths)))))
    x = load_images(paths, cfg.size)
    items = [f"{cfg.images}/{n}" for n in names]
    return _split(x, masks, items, train, valid, codes, void)


