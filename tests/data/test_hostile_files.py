"""Hostile and broken inputs: images truncated, empty, not images, decompression bombs or in odd
modes are decoded correctly or reported by name (``data.on_bad_file: error|skip``); a config
cannot smuggle in a ``_target_``."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastlab.data.images.decode import decode_image, read_images
from fastlab.errors import ConfigError, DataError
from fastlab.run.train import train
from tests.conftest import compose_cfg


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A valid PNG header claiming 1.6 gigapixels (Pillow's bomb limit is ~179 M) over a tiny
    compressed body: the kind of file that would exhaust memory if decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")


def test_odd_modes_decode_to_the_right_rgb() -> None:
    # 16-bit greyscale: full scale is 65535, not 255 (a plain convert would clip it all to white)
    a16 = np.array([[0, 32896, 65535, 65535]], dtype=np.uint16).repeat(4, axis=0)
    x = decode_image(png_bytes(Image.fromarray(a16)), 4, "g16.png")
    assert x.shape == (3, 4, 4) and x[0, 0, 0] == 0 and x[0, 0, -1] == 255 and 120 <= x[0, 0, 1] <= 135
    # transparency composited over white, not the colour hidden under it
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert torch.all(decode_image(png_bytes(rgba), 4, "clear.png") == 255)
    # CMYK (a JPEG), palette, greyscale with alpha: each decodes to 3 channels
    cmyk = io.BytesIO()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(cmyk, format="JPEG")  # red in CMYK
    red = decode_image(cmyk.getvalue(), 8, "cmyk.jpg")
    assert red[0].float().mean() > 200 and red[1].float().mean() < 60
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    assert decode_image(png_bytes(pal), 8, "pal.png")[2].float().mean() == 255
    assert decode_image(png_bytes(Image.new("LA", (8, 8), (100, 255))), 8, "la.png").unique().tolist() == [100]


@pytest.mark.parametrize("name,content,why", [
    ("empty.png", b"", "UnidentifiedImageError"),
    ("notes.png", b"these are not pixels\n" * 10, "UnidentifiedImageError"),
    ("cut.png", None, "truncated"),
    ("bomb.png", bomb_png(), "DecompressionBombError"),
])
def test_broken_images_are_named_in_one_line(tmp_path: Path, name, content, why) -> None:
    if content is None:  # the first half of a real PNG
        full = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
        content = full[: len(full) // 2]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=why) as e:
        decode_image(path, 16)
    assert name in str(e.value) and "data.on_bad_file=skip" in str(e.value) and "\n" not in str(e.value)


def test_skip_leaves_bad_files_out_and_reports_them(tmp_path: Path, caplog) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes(Image.new("RGB", (8, 8), (1, 2, 3))))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    loaded = read_images([good, bad, good], 8, on_bad_file="skip")
    assert loaded.kept == [0, 2] and loaded.x.shape == (2, 3, 8, 8)
    assert [Path(p).name for p, _ in loaded.bad] == ["bad.png"]
    assert "left out 1 of 3 images" in caplog.text and "bad.png" in caplog.text
    with pytest.raises(DataError, match="bad.png"):
        read_images([good, bad], 8)


def test_a_config_cannot_add_a_target(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown top-level key\(s\) \['_target_'\]"):
        train(compose_cfg("+_target_=os.system"), tmp_path)
    marker = tmp_path / "pwned"
    proc = subprocess.run([sys.executable, "-m", "fastlab.cli.train", f"hydra.run.dir={tmp_path}/run",
                           "+data._target_=os.system", f"+data._args_=[touch {marker}]"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not marker.exists()
    assert proc.stderr.strip().splitlines()[-1].startswith("fastlab-train: error: data has unknown key(s)")


def test_a_folder_with_broken_images_stops_or_skips_them(tmp_path: Path, image_dirs, caplog) -> None:
    import shutil

    root = tmp_path / "images"
    shutil.copytree(image_dirs["per_class"], root)
    (root / "one" / "zero_bytes.png").write_bytes(b"")
    (root / "two" / "bomb.png").write_bytes(bomb_png())
    (root / "zero" / "cmyk.jpg").write_bytes(b"")
    Image.new("CMYK", (16, 16), (0, 0, 0, 255)).save(root / "zero" / "cmyk.jpg")  # odd mode: loads
    proc = subprocess.run([sys.executable, "-m", "fastlab.cli.train", f"hydra.run.dir={tmp_path}/run", "data=folder",
                           f"data.path={root}", "data.size=16", "schedule.epochs=1", "trainer.progress=none"],
                          capture_output=True, text=True, timeout=120)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("fastlab-train: error: cannot read image") and "data.on_bad_file=skip" in last
    metrics = train(compose_cfg("data=folder", f"data.path={root}", "data.on_bad_file=skip", "schedule.epochs=1"),
                    tmp_path / "skip")
    assert metrics["status"] == "completed"
    assert "left out 2 of" in caplog.text and "zero_bytes.png" in caplog.text and "bomb.png" in caplog.text
    items = torch.load(tmp_path / "skip" / "model.pt", weights_only=True)["meta"]
    assert items["classes"] == ["one", "two", "zero"]
