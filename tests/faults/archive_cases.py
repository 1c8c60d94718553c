"""Fault cases of ``data.url``: archives that are damaged (cut short, a member failing its CRC)
or crafted to write outside their folder through an earlier link. Each ends ``fastlab-train``
with exit 2 and one line naming the archive and what is wrong, nothing left where it extracts and
nothing written outside. Same form as ``cases.py``: each case asserts what it checks and returns
a ``Result``; ``BAD`` (the archives and the words their line must hold) is shared with
``tests/data/test_archive_errors.py``.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

from tests.faults.cases import Result, run, train_cmd

GOOD = {"pets/images/a.txt": bytes(range(256)) * 64, "pets/images/b.txt": b"beta" * 1000}


def tar_of(entries: list[tuple[str, bytes | str]], mode: str = "w:gz") -> bytes:
    """A tar of ``entries`` in their order: ``(name, bytes)`` is a file, ``(name, str)`` a
    symlink to that target (written before the files that go through it)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, body in entries:
            info = tarfile.TarInfo(name)
            if isinstance(body, str):
                info.type, info.linkname = tarfile.SYMTYPE, body
                tar.addfile(info)
            else:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def truncated_tgz() -> bytes:
    """A whole .tgz cut at half its length, as a copy or a proxy that stopped early leaves it."""
    data = tar_of(list(GOOD.items()))
    return data[: len(data) // 2]


def flipped_tgz() -> bytes:
    """A .tgz of its full length with one byte of a member's data changed: tar stops reading at
    its end-of-archive blocks, so only gzip's CRC-32 at the stream's end sees it."""
    tar = tar_of([("pets/a.bin", bytes(1000))], mode="w")
    damaged = bytearray(tar)
    damaged[600] ^= 0xFF  # inside a.bin's data (after its 512-byte header)
    # the damaged tar's deflate stream, ending in the whole tar's CRC-32 and length (gzip's last
    # 8 bytes): what a byte changed inside a compressed file amounts to
    return gzip.compress(bytes(damaged), mtime=0)[:-8] + gzip.compress(tar, mtime=0)[-8:]


def bad_crc_zip() -> bytes:
    """A zip whose stored member ``b.txt`` has one byte changed after its CRC was recorded."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.txt", "alpha")
        zf.writestr("b.txt", "beta" * 100)
    data = bytearray(buf.getvalue())
    data[data.index(b"betabeta") + 3] ^= 0xFF
    return bytes(data)


def link_chain_out_tgz() -> bytes:
    """``ok/d/up`` -> ``..`` (inside: ``ok``), then ``ok/d/up/esc`` -> ``../..``: read by its name
    it stays inside, through ``up`` it points outside the folder."""
    return tar_of([("ok/a.txt", b"x"), ("ok/d/up", ".."), ("ok/d/up/esc", "../..")])


def member_out_tgz() -> bytes:
    """``a`` -> ``b/..`` while ``b`` is not there yet (inside), then ``b`` -> ``.``: ``a`` now
    points to the folder's parent, and the file ``a/evil.txt`` would land outside."""
    return tar_of([("a", "b/.."), ("b", "."), ("a/evil.txt", b"written outside")])


# archive name -> (its bytes, what the one line names, damaged: its download is deleted so the
# next run fetches it anew; a refused archive is kept, as fetching it again gives the same)
BAD = {
    "truncated.tgz": (truncated_tgz, "is truncated", True),
    "flipped.tgz": (flipped_tgz, "is damaged (CRC check failed", True),
    "badcrc.zip": (bad_crc_zip, "member 'b.txt' fails its CRC check", True),
    "linkout.tgz": (link_chain_out_tgz, "member 'ok/d/up/esc' links outside the folder through an earlier link",
                    False),
    "memberout.tgz": (member_out_tgz, "member 'a/evil.txt' lands outside the folder through an earlier link",
                      False),
}


def files_under(folder: Path) -> set[str]:
    """Every path under ``folder`` but the lock files (``filelock`` leaves them, empty)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if not p.name.endswith(".lock")}


def _bad_archive(tmp: Path, case: str, name: str) -> Result:
    """``fastlab-train data.url=file://<bad archive>``: exit 2, one line, nothing extracted,
    nothing written outside, the damaged copy deleted."""
    make, words, damaged = BAD[name]
    work = tmp / f"archive-{name.replace('.', '-')}"
    work.mkdir(parents=True)
    archive = work / "src" / name
    archive.parent.mkdir()
    archive.write_bytes(make())
    before = files_under(work)
    proc = run(train_cmd(tmp / f"{work.name}-run", "data=folder", f"data.url={archive.as_uri()}"), cwd=work)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1].startswith("fastlab-train: error: ") and f"'{name}'" in lines[-1] and words in lines[-1], lines[-1]
    # nothing extracted (no temporary folder either), nothing new anywhere else under work/; the
    # damaged archive's copy deleted (it is fetched anew next time), a refused one kept
    new = files_under(work) - before
    kept = set() if damaged else {f"outputs/data/{name}"}
    assert new == {"outputs", "outputs/data", *kept}, new
    return Result(case, f"exit 2 with one line ({lines[-1][22:120]}...); "
                  "nothing extracted or written outside")


def truncated_archive(tmp: Path) -> Result:
    return _bad_archive(tmp, "truncated_archive", "truncated.tgz")


def bad_crc_archive(tmp: Path) -> Result:
    return _bad_archive(tmp, "bad_crc_archive", "badcrc.zip")


def link_out_archive(tmp: Path) -> Result:
    return _bad_archive(tmp, "link_out_archive", "linkout.tgz")


def member_out_archive(tmp: Path) -> Result:
    return _bad_archive(tmp, "member_out_archive", "memberout.tgz")


CASES = [truncated_archive, bad_crc_archive, link_out_archive, member_out_archive]
