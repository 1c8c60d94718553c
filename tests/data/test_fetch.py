"""untar_data and data.url: downloads from a server on loopback (with and without range
requests), checksums, and crafted archives that try to write outside their folder."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from fastlab.data.external import untar_data
from fastlab.errors import DataError
from fastlab.run.train import train
from tests.conftest import compose_cfg


def tar_bytes(members: dict[str, bytes], links: dict[str, str] | None = None, mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


GOOD = {"pets/images/a.txt": b"alpha", "pets/images/b.txt": b"beta" * 1000}


def test_downloads_checks_and_extracts_a_single_folder_archive(server, tmp_path: Path) -> None:
    url, handler = server
    data = tar_bytes(GOOD)
    handler.files["pets.tgz"] = data
    digest = hashlib.sha256(data).hexdigest()
    out = untar_data(f"{url}/pets.tgz", sha256=digest, data_dir=tmp_path)
    assert out == tmp_path / "pets"
    assert (out / "images" / "a.txt").read_bytes() == b"alpha"
    assert (out / "images" / "b.txt").read_bytes() == b"beta" * 1000
    # cached: a second call fetches nothing
    n = len(handler.requests)
    assert untar_data(f"{url}/pets.tgz", sha256=digest, data_dir=tmp_path) == out
    assert len(handler.requests) == n
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob("*.part"))


def test_a_partial_download_is_continued_with_a_range_request(server, tmp_path: Path) -> None:
    url, handler = server
    data = tar_bytes(GOOD)
    handler.files["pets.tgz"] = data
    (tmp_path / "pets.tgz.part").write_bytes(data[:100])  # what a killed download left
    out = untar_data(f"{url}/pets.tgz", sha256=hashlib.sha256(data).hexdigest(), data_dir=tmp_path)
    assert handler.requests == ["bytes=100-"]
    assert (out / "images" / "a.txt").read_bytes() == b"alpha"


def test_a_download_cut_short_is_kept_as_a_part_file_and_continued(server, tmp_path: Path) -> None:
    url, handler = server
    data = tar_bytes(GOOD)
    handler.files["pets.tgz"], handler.cut = data, 100
    with pytest.raises(DataError, match=r"ended early \(100 of \d+ bytes\).*run again to continue") as e:
        untar_data(f"{url}/pets.tgz", data_dir=tmp_path)
    assert "\n" not in str(e.value)
    assert (tmp_path / "pets.tgz.part").stat().st_size == 100 and not (tmp_path / "pets.tgz").exists()
    out = untar_data(f"{url}/pets.tgz", sha256=hashlib.sha256(data).hexdigest(), data_dir=tmp_path)
    assert handler.requests == [None, "bytes=100-"] and (out / "images" / "a.txt").read_bytes() == b"alpha"


def test_a_bad_download_timeout_is_one_line(server, tmp_path: Path, monkeypatch) -> None:
    url, handler = server
    handler.files["pets.tgz"] = tar_bytes(GOOD)
    monkeypatch.setenv("FASTLAB_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(DataError, match=r"FASTLAB_DOWNLOAD_TIMEOUT='soon' is not a positive number of seconds"):
        untar_data(f"{url}/pets.tgz", data_dir=tmp_path)
    assert handler.requests == []


def test_a_server_without_ranges_gets_the_whole_file_again(server, tmp_path: Path) -> None:
    url, handler = server
    handler.ranges = False
    data = tar_bytes(GOOD)
    handler.files["pets.tgz"] = data
    (tmp_path / "pets.tgz.part").write_bytes(b"garbage that must not stay")
    out = untar_data(f"{url}/pets.tgz", sha256=hashlib.sha256(data).hexdigest(), data_dir=tmp_path)
    assert (tmp_path / "pets.tgz").read_bytes() == data
    assert (out / "images" / "b.txt").exists()


def test_a_wrong_checksum_deletes_the_download_and_names_it(server, tmp_path: Path) -> None:
    url, handler = server
    handler.files["pets.tgz"] = tar_bytes(GOOD)
    with pytest.raises(DataError, match=r"'pets.tgz' has SHA-256 [0-9a-f]{64}, expected 0{64}") as e:
        untar_data(f"{url}/pets.tgz", sha256="0" * 64, data_dir=tmp_path)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "pets.tgz").exists() and not (tmp_path / "pets").exists()


def test_http_errors_are_one_line(server, tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(DataError, match="HTTP 404"):
        untar_data(f"{url}/missing.tgz", data_dir=tmp_path)
    with pytest.raises(DataError, match="not http"):
        untar_data("ftp://example.org/x.tgz", data_dir=tmp_path)


@pytest.mark.parametrize("members,links,why", [
    ({"../evil.txt": b"x"}, None, "climbs out"),
    ({"/tmp/evil.txt": b"x"}, None, "absolute path"),
    ({"ok/a.txt": b"x"}, {"ok/link": "/etc"}, "links outside"),
    ({"ok/a.txt": b"x"}, {"ok/link": "../../outside"}, "links outside"),
])
def test_archives_that_escape_their_folder_are_refused_whole(tmp_path: Path, members, links, why) -> None:
    archive = tmp_path / "src" / "bad.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(tar_bytes(members, links))
    data_dir = tmp_path / "cache"
    with pytest.raises(DataError, match=f"archive 'bad.tar.gz' refused: member .* {why}"):
        untar_data(archive.as_uri(), data_dir=data_dir)
    assert not (data_dir / "bad").exists() and not list(data_dir.glob(".bad*"))
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_a_zip_climbing_out_is_refused_and_a_good_zip_extracts(tmp_path: Path) -> None:
    bad, good = tmp_path / "bad.zip", tmp_path / "good.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../evil.txt", "x")
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("a.txt", "alpha")
        zf.writestr("sub/b.txt", "beta")
    with pytest.raises(DataError, match="member '../evil.txt' climbs out"):
        untar_data(bad.as_uri(), data_dir=tmp_path / "cache")
    out = untar_data(good.as_uri(), data_dir=tmp_path / "cache")
    assert (out / "a.txt").read_text() == "alpha" and (out / "sub" / "b.txt").read_text() == "beta"


def test_data_url_trains_on_a_fetched_image_folder(server, tmp_path: Path, image_dirs, monkeypatch) -> None:
    url, handler = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(image_dirs["imagenet"], arcname="digits3")
    handler.files["digits3.tar.gz"] = buf.getvalue()
    monkeypatch.chdir(tmp_path)  # the cache is outputs/data/ under the working directory
    cfg = compose_cfg("data=folder", f"data.url={url}/digits3.tar.gz", "schedule.epochs=1")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["status"] == "completed"
    assert (tmp_path / "outputs" / "data" / "digits3" / "train").is_dir()
