"""Image folders and label CSVs as users' cameras and tools write them: photos stored sideways with
an EXIF Orientation tag come out upright; grey, RGBA, CMYK and palette files in one folder all come
out as the right RGB; CSVs with a byte-order mark, in Latin-1, with quoted fields or blank
trailing lines are read; text in the wrong encoding is one line naming the file and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from fastlab.data.images.bunch import DataBunch
from fastlab.data.images.decode import decode_image
from fastlab.data.images.sources import CsvData, FolderData
from fastlab.data.place import Place, Storage
from fastlab.errors import ConfigError, DataError

ORIENTATION = 0x0112


def upright_image() -> Image.Image:
    """8 wide, 16 tall: the top half green on the left and red on the right, the bottom half blue."""
    im = Image.new("RGB", (8, 16), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 8, 8))
    im.paste((0, 255, 0), (0, 0, 4, 8))
    return im


@pytest.mark.parametrize("orientation,stored", [
    (6, Image.Transpose.ROTATE_90),  # a phone held upright: pixels stored turned, tagged "rotate 90 CW"
    (8, Image.Transpose.ROTATE_270),
    (3, Image.Transpose.ROTATE_180),
    (2, Image.Transpose.FLIP_LEFT_RIGHT),
])
def test_a_jpeg_with_an_exif_orientation_comes_out_upright(tmp_path: Path, orientation, stored) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    path = tmp_path / "photo.jpg"
    upright_image().transpose(stored).save(path, exif=exif.tobytes(), quality=95)
    x = decode_image(path, 8).float()  # (3, 8, 8): green top left, red top right, blue below
    assert x[1, :3, :3].mean() > 200 and x[0, :3, :3].mean() < 60
    assert x[0, :3, -3:].mean() > 200 and x[1, :3, -3:].mean() < 60
    assert x[2, -3:].mean() > 200 and x[0, -3:].mean() < 60


MODES = {  # file name: (image, the RGB it must come out as)
    "grey.png": (Image.new("L", (8, 8), 128), (128, 128, 128)),
    "alpha.png": (Image.new("RGBA", (8, 8), (0, 255, 0, 0)), (255, 255, 255)),  # clear: over white
    "half.png": (Image.new("RGBA", (8, 8), (0, 0, 0, 255)), (0, 0, 0)),
    "cmyk.jpg": (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), (255, 0, 0)),
    "palette.png": (Image.new("P", (8, 8), 1), (0, 0, 255)),
    "grey_alpha.png": (Image.new("LA", (8, 8), (100, 255)), (100, 100, 100)),
    "rgb.jpg": (Image.new("RGB", (8, 8), (10, 200, 30)), (10, 200, 30)),
}


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_a_folder_of_mixed_modes_decodes_every_image_to_its_rgb(tmp_path: Path, mode) -> None:
    for split in ("train", "valid"):
        for name, (im, _) in MODES.items():
            path = tmp_path / "data" / split / Path(name).stem / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if im.mode == "P":
                im.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
            im.save(path)
    data = DataBunch.from_config(FolderData(path=str(tmp_path / "data"), size=8, bs=2, cache=mode),
                                 place=Place(Storage(cache_root=tmp_path / "cache")))
    assert data.n_channels == 3
    for i, item in enumerate(data.valid_items):
        want = torch.tensor(MODES[Path(item).name][1], dtype=torch.float32)
        got = data.valid.x[i].float().mean(dim=(1, 2))  # (3,)
        assert torch.allclose(got, want, atol=8), (item, got)


def csv_data(tmp_path: Path, content: bytes, **kwargs) -> DataBunch:
    (tmp_path / "img").mkdir(exist_ok=True)
    for i, colour in enumerate([(250, 10, 10), (10, 250, 10), (10, 10, 250), (200, 200, 10)]):
        Image.new("RGB", (8, 8), colour).save(tmp_path / "img" / f"{i}.png")
    (tmp_path / "labels.csv").write_bytes(content)
    return DataBunch.from_config(CsvData(path=str(tmp_path), size=8, bs=2, valid_col="is_valid", **kwargs))


def test_a_csv_with_a_byte_order_mark_reads_its_first_column(tmp_path: Path) -> None:
    text = "fname,label,is_valid\r\nimg/0.png,red,0\r\nimg/1.png,green,0\r\nimg/2.png,blue,1\r\nimg/3.png,red,1\r\n"
    data = csv_data(tmp_path, b"\xef\xbb\xbf" + text.encode())  # what Excel's "CSV UTF-8" writes
    assert data.train_items == ["img/0.png", "img/1.png"] and data.classes == ["blue", "green", "red"]


def test_a_latin_1_csv_reads_with_data_encoding(tmp_path: Path) -> None:
    text = "fname,label,is_valid\nimg/0.png,rouge foncé,0\nimg/1.png,vert,0\nimg/2.png,bleu,1\nimg/3.png,rouge foncé,1\n"
    data = csv_data(tmp_path, text.encode("latin-1"), encoding="latin-1")
    assert "rouge foncé" in data.classes
    # cp1252 is Windows' superset of Latin-1 (a curly quote is byte 0x92)
    data = csv_data(tmp_path, text.replace("vert", "vert\u2019s").encode("cp1252"), encoding="cp1252")
    assert "vert\u2019s" in data.classes


def test_wrong_encoding_is_one_line_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    text = "fname,label,is_valid\nimg/0.png,rouge foncé,0\nimg/1.png,vert,0\nimg/2.png,bleu,1\nimg/3.png,rouge,1\n"
    with pytest.raises(DataError) as e:
        csv_data(tmp_path, text.encode("latin-1"))
    msg = str(e.value)
    assert "\n" not in msg and "labels.csv" in msg and "is not utf-8 text" in msg and "data.encoding=latin-1" in msg
    with pytest.raises(ConfigError, match="data.encoding='klingon' is not a text encoding"):
        CsvData(path=str(tmp_path), encoding="klingon")


def test_quoted_fields_spaces_and_blank_trailing_lines_are_read(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "img" / "a, b.png")
    text = ('fname, label, is_valid\n"img/a, b.png","say ""hi""",0\nimg/1.png, "two,\nlines", 0\n'
            'img/2.png,blue,1\n"img/3.png",red,1\n\n,,\n  \n\n')
    data = csv_data(tmp_path, text.encode())
    assert data.train_items == ["img/1.png", "img/a, b.png"]
    assert set(data.classes) == {'say "hi"', "two,\nlines", "blue", "red"}
