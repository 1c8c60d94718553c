"""Every data source on real image files, the seeded split, and each bad input's message."""

from __future__ import annotations

import shutil

import pytest
import torch

from fastlab.data import DataBunch, seeded_split
from fastlab.data.images.sources import CsvData, DigitsData, FolderData, NameReData, digits_arrays
from fastlab.errors import DataError


def test_digits_bunch():
    data = DataBunch.from_config(DigitsData(size=16, bs=32))
    assert data.classes == [str(i) for i in range(10)] and data.c == 10
    assert len(data.train_items) + len(data.valid_items) == 1797
    assert len(data.valid_items) == round(1797 * 0.2)
    xb, yb = next(iter(data.train))
    assert xb.shape == (32, 1, 16, 16) and xb.dtype == torch.float32 and yb.shape == (32,)
    # normalised with statistics of the training images
    all_x = torch.cat([x for x, _ in data.train])
    assert abs(all_x.mean().item()) < 0.05 and abs(all_x.std().item() - 1) < 0.05
    assert len(data.train) == len(data.train_items) // 32  # ragged last batch dropped
    assert sum(len(y) for _, y in data.valid) == len(data.valid_items)


def test_digits_read_without_sklearn_are_sklearns():
    from sklearn.datasets import load_digits

    images, target = digits_arrays()
    bunch = load_digits()
    assert images.shape == (1797, 8, 8) and (images == bunch.images).all() and (target == bunch.target).all()


def test_split_depends_on_data_seed_only():
    a = DataBunch.from_config(DigitsData(seed=42), seed=0)
    b = DataBunch.from_config(DigitsData(seed=42), seed=123)
    c = DataBunch.from_config(DigitsData(seed=7), seed=0)
    assert a.valid_items == b.valid_items
    assert a.valid_items != c.valid_items
    # the training seed changes the batch order, not the split
    assert not torch.equal(next(iter(a.train))[1], next(iter(b.train))[1])


def test_seeded_split_table():
    train, valid = seeded_split(10, 0.3, 0)
    assert len(valid) == 3 and sorted(train + valid) == list(range(10))
    assert seeded_split(10, 0.3, 0) == (train, valid)
    assert seeded_split(2, 0.01, 0)[1] != []  # at least one validation item
    assert seeded_split(1, 0.5, 0) == ([0], [])


def test_folder_imagenet_layout(image_dirs):
    data = DataBunch.from_config(FolderData(path=str(image_dirs["imagenet"]), size=16, bs=8))
    assert data.classes == ["one", "two", "zero"] and data.n_channels == 3
    assert all(i.startswith("valid/") for i in data.valid_items)
    assert len(data.valid_items) == 18 and len(data.train_items) == 72
    xb, _ = next(iter(data.train))
    assert xb.shape == (8, 3, 16, 16)


def test_folder_per_class_uses_valid_pct(image_dirs):
    data = DataBunch.from_config(FolderData(path=str(image_dirs["per_class"]), size=16, valid_pct=0.25))
    assert len(data.valid_items) == round(90 * 0.25) and data.c == 3


def test_name_re_labels_from_file_names(image_dirs):
    data = DataBunch.from_config(NameReData(path=str(image_dirs["flat"]), pattern=r"^([a-z]+)_\d+\.\w+$", size=16))
    assert data.classes == ["one", "two", "zero"]
    for item, y in zip(data.valid_items, data.valid.y.tolist()):
        assert item.startswith(data.classes[y] + "_")


def test_csv_with_valid_column_and_regression_targets(image_dirs):
    data = DataBunch.from_config(CsvData(path=str(image_dirs["flat"]), valid_col="is_valid", size=16))
    assert len(data.valid_items) == 18
    reg = DataBunch.from_config(CsvData(path=str(image_dirs["flat"]), label_col="value", size=16), targets="float")
    assert reg.classes is None and reg.c == 1 and reg.train.y.dtype == torch.float32
    assert set(reg.train.y.tolist()) == {0.0, 1.0, 2.0}


def test_from_df(image_dirs):
    import csv

    with open(image_dirs["flat"] / "labels.csv") as f:
        rows = list(csv.DictReader(f))

    class Frame:  # any object with .columns and df[col] works; pandas is not needed
        columns = ["fname", "label"]

        def __getitem__(self, col):
            return [r[col] for r in rows]

    data = DataBunch.from_df(Frame(), image_dirs["flat"], size=16, valid_pct=0.1)
    assert data.c == 3 and len(data.valid_items) == 9


def test_show_batch_writes_png(tmp_path, image_dirs):
    data = DataBunch.from_config(FolderData(path=str(image_dirs["imagenet"]), size=16))
    out = data.show_batch(tmp_path / "batch.png", n=6)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- bad input


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_path():
    with pytest.raises(DataError) as info:
        DataBunch.from_config(FolderData(path="/no/such/folder"))
    assert "/no/such/folder" in one_line(info) and "data.path" in one_line(info)
    with pytest.raises(DataError, match="data.path is required"):
        DataBunch.from_config(FolderData(path=None))


def test_empty_class_folder(tmp_path, image_dirs):
    root = tmp_path / "pets"
    shutil.copytree(image_dirs["per_class"], root)
    (root / "empty_cls").mkdir()
    with pytest.raises(DataError) as info:
        DataBunch.from_config(FolderData(path=str(root)))
    assert "empty_cls" in one_line(info) and "has no images" in one_line(info)


def test_regex_matching_no_file(image_dirs):
    with pytest.raises(DataError) as info:
        DataBunch.from_config(NameReData(path=str(image_dirs["flat"]), pattern=r"^(\d+)\.tif$"))
    assert "matches none" in one_line(info) and "data.pattern" in one_line(info)


def test_regex_without_group(image_dirs):
    with pytest.raises(DataError, match="has no group"):
        DataBunch.from_config(NameReData(path=str(image_dirs["flat"]), pattern=r".*"))


def test_csv_without_named_column(image_dirs):
    with pytest.raises(DataError) as info:
        DataBunch.from_config(CsvData(path=str(image_dirs["flat"]), label_col="breed"))
    message = one_line(info)
    assert "'breed'" in message and "data.label_col" in message and "fname" in message


def test_unreadable_image_is_named(tmp_path, image_dirs):
    root = tmp_path / "broken"
    shutil.copytree(image_dirs["per_class"], root)
    bad = root / "one" / "one_999.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(DataError) as info:
        DataBunch.from_config(FolderData(path=str(root)))
    assert str(bad) in one_line(info)


def test_non_numeric_label_for_regression(image_dirs):
    with pytest.raises(DataError, match="not a number"):
        DataBunch.from_config(CsvData(path=str(image_dirs["flat"])), targets="float")


def test_csv_naming_a_missing_image(tmp_path, image_dirs):
    root = tmp_path / "flat"
    shutil.copytree(image_dirs["flat"], root)
    text = (root / "labels.csv").read_text().replace("one_1.png", "one_1_gone.png")
    (root / "labels.csv").write_text(text)
    with pytest.raises(DataError) as info:
        DataBunch.from_config(CsvData(path=str(root)))
    assert "one_1_gone.png" in one_line(info)


def test_mean_std_of_wrong_length():
    from fastlab.errors import ConfigError

    with pytest.raises(ConfigError, match="one value per channel"):
        DataBunch.from_config(DigitsData(mean=[0.1, 0.2, 0.3], std=[1.0, 1.0, 1.0]))
