"""Archives of ``data.url`` that are damaged (truncated, a member failing its CRC, a compressed
stream that does not decompress, no archive at all) or crafted to write outside their folder
through an earlier link: each is one ``DataError`` line naming the archive and what is wrong,
nothing is left where it extracts and nothing is written outside. A damaged download is deleted,
so the next run fetches it anew."""

from __future__ import annotations

import bz2
import io
import lzma
import resource
import zipfile
from pathlib import Path

import pytest

from fastlab.data.external import untar_data
from fastlab.errors import DataError, OutputError
from tests.faults.archive_cases import BAD, GOOD, files_under, tar_of, truncated_archive


def _zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return buf.getvalue()


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


# More damaged archives than the fault cases': streams other than gzip (a truncated bzip2 made
# tarfile.open answer with a 5-line message), a zip whose central directory was cut off, and a
# file that is no archive (a server's error page).
MORE = {
    "truncated.tar.bz2": (lambda: _cut(bz2.compress(tar_of(list(GOOD.items()), mode="w"))), "is truncated"),
    "truncated.tar.xz": (lambda: _cut(lzma.compress(tar_of(list(GOOD.items()), mode="w"))), "is truncated"),
    "damaged.tar.xz": (lambda: lzma.compress(tar_of(list(GOOD.items()), mode="w"))[:40] + bytes(500),
                       "is damaged"),
    "cut.zip": (lambda: _cut(_zip_of(GOOD)), "is truncated (a zip without its central directory)"),
    "page.tgz": (lambda: b"<html><body>502 Bad Gateway</body></html>", "is not a tar or zip archive"),
}
CASES = {**{k: v[:2] for k, v in BAD.items()}, **MORE}
DAMAGED = {k for k, v in BAD.items() if v[2]} | set(MORE)


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_archive_is_one_line_and_leaves_nothing(tmp_path: Path, name: str) -> None:
    make, words = CASES[name]
    source = tmp_path / "src" / name
    source.parent.mkdir()
    source.write_bytes(make())
    data_dir = tmp_path / "cache"
    with pytest.raises(DataError) as e:
        untar_data(source.as_uri(), data_dir=data_dir)
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"archive '{name}' ") and words in line, line
    # nothing extracted, no temporary folder; the damaged copy deleted (never the source), a
    # refused archive's copy kept; nothing written outside the cache (no evil.txt anywhere)
    assert files_under(data_dir) == (set() if name in DAMAGED else {name})
    assert files_under(tmp_path) == {"src", f"src/{name}", "cache", *(f"cache/{p}" for p in files_under(data_dir))}
    assert source.is_file()


def test_a_truncated_download_is_deleted_and_fetched_anew(server, tmp_path: Path) -> None:  # noqa: F811
    url, handler = server
    good = tar_of(list(GOOD.items()))
    handler.files["pets.tgz"] = good[: len(good) // 2]  # the server announces and sends half of it
    with pytest.raises(DataError, match=r"archive 'pets.tgz' is truncated .*: the download was deleted; run again "
                                        r"to fetch it anew") as e:
        untar_data(f"{url}/pets.tgz", data_dir=tmp_path)
    assert "\n" not in str(e.value)
    assert files_under(tmp_path) == set()
    handler.files["pets.tgz"] = good  # the server fixed: the next run fetches it again and extracts
    out = untar_data(f"{url}/pets.tgz", data_dir=tmp_path)
    assert handler.requests == [None, None]  # two whole downloads, no range on the deleted one
    assert (out / "images" / "b.txt").read_bytes() == GOOD["pets/images/b.txt"]


def test_a_good_xz_and_bz2_archive_still_extract(tmp_path: Path) -> None:
    """Reading each stream to its end (for its CRC) takes nothing from a whole archive."""
    tar = tar_of(list(GOOD.items()), mode="w")
    for name, data in {"a.tar.xz": lzma.compress(tar), "b.tar.bz2": bz2.compress(tar), "c.zip": _zip_of(GOOD)}.items():
        (tmp_path / name).write_bytes(data)
        out = untar_data((tmp_path / name).as_uri(), data_dir=tmp_path / "cache")
        assert (out / "images" / "a.txt").read_bytes() == GOOD["pets/images/a.txt"], name


def test_fastlab_train_ends_a_bad_archive_with_one_line_and_exit_2(tmp_path: Path) -> None:
    """The fault case: ``fastlab-train data.url=<truncated .tgz>`` exits 2 with one line."""
    assert truncated_archive(tmp_path).lost == "none"


def test_a_disk_that_cannot_take_the_extraction_is_one_line(tmp_path: Path) -> None:
    """A member larger than the file-size limit (EFBIG, as a full disk's ENOSPC): one
    ``OutputError`` line naming the folder, no temporary folder left, the archive kept (it is whole)."""
    archive = tmp_path / "big.tgz"
    archive.write_bytes(tar_of([("big/zeros.bin", bytes(4_000_000))]))  # a few kB compressed
    data_dir = tmp_path / "cache"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, hard))  # Python ignores SIGXFSZ: writes fail
    try:
        with pytest.raises(OutputError, match=rf"cannot extract 'big.tgz' into '{data_dir}': File too large: make room"):
            untar_data(archive.as_uri(), data_dir=data_dir)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert files_under(data_dir) == {"big.tgz"}
