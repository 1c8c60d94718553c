"""A ``data.url`` archive holding a device file (character or block) or a FIFO among good members
is refused whole with one line naming that member, before anything is extracted: nothing of it
is left where it extracts, no temporary folder, and no special file is ever made on disk."""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path

import pytest

from fastlab.data.external import untar_data
from fastlab.errors import DataError
from tests.faults.archive_cases import GOOD, files_under
from tests.test_cli import run_cli

# (tar type, device numbers): /dev/null's (1, 3), a disk's (8, 0), and a named pipe.
SPECIAL = {"null": (tarfile.CHRTYPE, 1, 3), "disk": (tarfile.BLKTYPE, 8, 0), "pipe": (tarfile.FIFOTYPE, 0, 0)}


def tar_with(special: str) -> bytes:
    """A gzipped tar of the good members with ``data/<special>`` among them (after the first,
    so a refusal that came late would have left the first on disk)."""
    kind, major, minor = SPECIAL[special]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i, (name, body) in enumerate(GOOD.items()):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
            if i == 0:
                dev = tarfile.TarInfo(f"{Path(name).parent}/{special}")
                dev.type, dev.devmajor, dev.devminor, dev.mode = kind, major, minor, 0o666
                tar.addfile(dev)
    return buf.getvalue()


def special_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if stat.S_ISCHR(p.lstat().st_mode) or stat.S_ISBLK(p.lstat().st_mode)
            or stat.S_ISFIFO(p.lstat().st_mode)]


@pytest.mark.parametrize("special", list(SPECIAL))
def test_a_device_or_fifo_member_refuses_the_archive_with_one_line(tmp_path: Path, special: str) -> None:
    source = tmp_path / "src" / f"{special}.tar.gz"
    source.parent.mkdir()
    source.write_bytes(tar_with(special))
    member = f"{Path(next(iter(GOOD))).parent}/{special}"
    assert tarfile.open(source).getmember(member).type == SPECIAL[special][0]  # the archive holds what it says
    data_dir = tmp_path / "cache"
    with pytest.raises(DataError) as e:
        untar_data(source.as_uri(), data_dir=data_dir)
    line = str(e.value)
    assert "\n" not in line
    assert line == (f"archive '{special}.tar.gz' refused: member '{member}' is a device or special file; "
                    "fastlab extracts only members that stay inside their folder")
    # the refused download is kept (fetching it again would give the same bytes); nothing else
    assert files_under(data_dir) == {f"{special}.tar.gz"}
    assert not special_files(tmp_path)


def test_fastlab_train_ends_a_device_member_with_one_line_and_exit_2(tmp_path: Path) -> None:
    source = tmp_path / "pipe.tar.gz"
    source.write_bytes(tar_with("pipe"))
    out = run_cli(["data=folder", f"data.url={source.as_uri()}", "trainer.progress=none"], cwd=tmp_path)
    lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert lines[-1].endswith("archive 'pipe.tar.gz' refused: member 'pets/images/pipe' is a device or special "
                              "file; fastlab extracts only members that stay inside their folder"), out.stderr
    assert files_under(tmp_path / "outputs" / "data") == {"pipe.tar.gz"} and not special_files(tmp_path)
