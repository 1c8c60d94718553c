"""Fetching data safely: fast.ai's ``untar_data`` with checksums, resumable downloads and
archives that cannot write outside their folder.

``untar_data(url)`` downloads over http(s) (or copies a ``file://`` path) into a cache
(``outputs/data/`` by default) through ``fastlab.fetch`` (a lock, so a sweep's parallel trials
fetch once; timeouts; a progress bar or log lines), resumes a partial download when the server
allows it, checks the SHA-256 when given, and extracts tar or zip archives into a temporary folder
that is renamed into place only when every member has been checked and written. A member that
would land outside the folder (an absolute path, ``..``, a link pointing out, a device file)
refuses the whole archive, as does one that gets there through an earlier link (tar's ``data``
filter, which sees the links already written). A damaged archive (truncated, a member failing its
CRC, a compressed stream that does not decompress) is one ``DataError`` line and its download is
deleted, so the next run fetches it anew; nothing extracted from a bad archive stays on disk.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import logging
import lzma
import os
import shutil
import tarfile
import urllib.parse
import urllib.request
import uuid
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from fastlab.errors import DataError, OutputError
from fastlab.fetch import FetchError, download, locked, sha256_of

log = logging.getLogger("fastlab")

DATA_DIR = Path("outputs/data")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")


def archive_stem(name: str) -> str:
    """``pets.tar.gz`` -> ``pets``: the folder an archive extracts to."""
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


class DamagedArchive(DataError):
    """An archive whose bytes are not what was packed (truncated, a failed CRC, a compressed
    stream that does not decompress, or no archive at all, as a server's error page): fetching it
    again may help, unlike a refused one."""


# The compressed streams ``tarfile.open(archive)`` reads, by their first bytes.
STREAMS = {b"\x1f\x8b": ("gzip", gzip.open), b"BZh": ("bzip2", bz2.open), b"\xfd7zXZ\x00": ("xz", lzma.open)}
# What reading a damaged archive raises: the decompressors' own errors, tarfile's and zipfile's,
# and OSError (gzip's BadGzipFile and bz2's invalid stream are OSErrors without an errno).
READ_ERRORS = (EOFError, OSError, tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError,
               RuntimeError, NotImplementedError)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _bad_member(name: str, why: str, archive: Path) -> DataError:
    return DataError(f"archive '{archive.name}' refused: member '{name}' {why}; fastlab extracts only "
                     "members that stay inside their folder")


def _check_name(name: str, archive: Path) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise _bad_member(name, "has an absolute path", archive)
    if ".." in p.parts:
        raise _bad_member(name, "climbs out with '..'", archive)


def check_tar(tar: tarfile.TarFile, archive: Path) -> None:
    """Every member a plain file or folder inside the archive's folder, or a link that stays
    inside it; anything else refuses the archive with one line naming the member."""
    for m in tar.getmembers():
        _check_name(m.name, archive)
        if m.issym() or m.islnk():
            base = PurePosixPath(m.name).parent if m.issym() else PurePosixPath()
            target = os.path.normpath(str(base / m.linkname))
            if m.linkname.startswith("/") or target == ".." or target.startswith("../"):
                raise _bad_member(m.name, f"links outside the folder (to '{m.linkname}')", archive)
        elif not (m.isfile() or m.isdir()):
            raise _bad_member(m.name, "is a device or special file", archive)


def check_zip(zf: zipfile.ZipFile, archive: Path) -> None:
    for info in zf.infolist():
        _check_name(info.filename, archive)


def drain(stream) -> None:
    """Read a compressed stream to its end: gzip's CRC-32 and length, and xz's check, are checked
    only there, and tar stops reading at its end-of-archive blocks before it."""
    while stream.read(1 << 20):
        pass


def archive_error(e: BaseException, archive: Path, dest: Path) -> DataError:
    """What reading or extracting ``archive`` raised, as one line naming the archive and what is
    wrong: a member refused by tar's data filter (a link or a path out through an earlier link),
    a truncated or damaged archive (``DamagedArchive``), or a disk that cannot take it."""
    if isinstance(e, tarfile.FilterError):
        m = e.tarinfo
        if isinstance(e, tarfile.LinkOutsideDestinationError):
            why = f"links outside the folder through an earlier link (to '{m.linkname}')"
        elif isinstance(e, tarfile.OutsideDestinationError):
            why = "lands outside the folder through an earlier link"
        else:
            why = f"is refused by tar's data filter ({type(e).__name__})"
        return _bad_member(m.name, why, archive)
    msg = _one_line(e)
    if isinstance(e, OSError) and e.errno is not None:  # the disk (full, read-only), not the archive
        return OutputError(f"cannot extract '{archive.name}' into '{dest.parent}': {e.strerror}: make room "
                           "there (or fix its permissions) and run again")
    if isinstance(e, EOFError) or "unexpected end" in msg or "Truncated" in msg:
        why = f"is truncated ({msg})"
    elif isinstance(e, zipfile.BadZipFile) and "CRC" in msg:
        why = f"is damaged: {msg.replace('Bad CRC-32 for file', 'member')} fails its CRC check"
    elif isinstance(e, (RuntimeError, NotImplementedError)):  # zipfile: a password, a compression it lacks
        return DataError(f"archive '{archive.name}' cannot be extracted: {msg}: repack it without a password, "
                         "with stored or deflate members")
    else:
        why = f"is damaged ({msg})"
    return DamagedArchive(f"archive '{archive.name}' {why}")


def _not_a_tar(archive: Path, dest: Path) -> DataError:
    """Why ``tarfile.open`` found no archive: a zip or compressed stream cut short or damaged, or
    a file that is no archive at all."""
    with open(archive, "rb") as f:
        head = f.read(6)
    if head.startswith(b"PK\x03\x04"):  # a zip whose central directory (at its end) is missing
        return DamagedArchive(f"archive '{archive.name}' is truncated (a zip without its central directory)")
    for magic, (kind, opener) in STREAMS.items():
        if head.startswith(magic):
            try:
                with opener(archive) as stream:
                    drain(stream)
            except READ_ERRORS as e:
                return archive_error(e, archive, dest)
            return DamagedArchive(f"archive '{archive.name}' is a {kind} stream that holds no tar archive")
    return DamagedArchive(f"archive '{archive.name}' is not a tar or zip archive")


def extract(archive: Path, dest: Path) -> Path:
    """Extract into a temporary sibling of ``dest``, then rename. An archive holding a single
    top-level folder gives that folder's contents (as fast.ai's datasets are packed). Any error
    removes the temporary folder and is one line (``archive_error``)."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    check_zip(zf, archive)
                    zf.extractall(tmp)  # checks each member's CRC as it is read
            else:
                try:
                    tar = tarfile.open(archive)
                except tarfile.ReadError:
                    raise _not_a_tar(archive, dest) from None
                with tar:
                    check_tar(tar, archive)
                    # The "data" filter re-checks what check_tar did against the links already
                    # written (a link out through an earlier link) and drops unsafe permissions.
                    tar.extractall(tmp, filter="data")
                    # the decompressing stream tarfile.open chose (TarFile's fileobj), read past
                    # the end-of-archive blocks to its own check; a plain tar has none
                    drain(getattr(tar, "fileobj", None) or io.BytesIO())
        except READ_ERRORS as e:
            raise archive_error(e, archive, dest) from None
        entries = [p for p in tmp.iterdir()]
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(root, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def untar_data(url: str, dest: str | Path | None = None, sha256: str | None = None,
               data_dir: str | Path = DATA_DIR, force: bool = False) -> Path:
    """Download ``url`` into ``data_dir`` (once), check it, extract it; returns the folder.

    Parameters
    ----------
    url : str
        ``http://``, ``https://`` or ``file://`` URL of a tar (optionally gz/bz2/xz) or zip file.
    dest : path, optional
        Where to extract; default ``data_dir/<archive name without suffix>``.
    sha256 : str, optional
        Expected SHA-256 of the archive; a mismatch deletes the download and raises.
    force : bool
        Download and extract again even when cached.
    """
    name = PurePosixPath(urllib.parse.urlparse(url).path).name
    if urllib.parse.urlparse(url).scheme not in ("http", "https", "file"):
        raise DataError(f"data.url '{url}' is not http(s) or file://: give a URL fastlab can fetch")
    if not name:
        raise DataError(f"data.url '{url}' names no file: give the URL of a .tar.gz, .tgz or .zip")
    data_dir = Path(data_dir)
    archive = data_dir / name
    dest = Path(dest) if dest is not None else data_dir / archive_stem(name)
    done = dest.with_name(f".{dest.name}.complete")  # written last: the extraction is whole
    with locked(dest):  # a sweep's parallel trials: one fetches and extracts, the others find it done
        if not force and dest.is_dir() and done.is_file() and (sha256 is None or done.read_text().strip() == sha256):
            return dest
        if force:
            archive.unlink(missing_ok=True)
        try:
            download(url, archive, resume=True)
        except FetchError as e:
            again = "; run again to continue the partial download" if archive.with_name(name + ".part").exists() else ""
            raise DataError(f"cannot download data.url '{url}': {e.why}: check data.url and the network{again}") from None
        if sha256 is not None:
            got = sha256_of(archive)
            if got != sha256.lower():
                with contextlib.suppress(FileNotFoundError):
                    archive.unlink()
                raise DataError(f"'{name}' has SHA-256 {got}, expected {sha256}: the download is corrupt or the "
                                "file changed; it was deleted, run again to fetch it anew (or fix data.sha256)")
        log.info("extracting %s to %s", archive, dest)
        done.unlink(missing_ok=True)
        try:
            extract(archive, dest)
        except DamagedArchive as e:
            raise _delete_damaged(e, archive, url) from None
        done.write_text((sha256 or sha256_of(archive)) + "\n")
    return dest


def _delete_damaged(e: DamagedArchive, archive: Path, url: str) -> DamagedArchive:
    """Delete the damaged download (never the file a ``file://`` URL names) so that the next run
    fetches it anew; the error says so."""
    parsed = urllib.parse.urlparse(url)
    src = Path(urllib.request.url2pathname(parsed.path)) if parsed.scheme == "file" else None
    if src is not None and src.resolve() == archive.resolve():
        return DamagedArchive(f"{e}: replace the file (data.url)")
    with contextlib.suppress(FileNotFoundError):
        archive.unlink()
    if src is not None:
        return DamagedArchive(f"{e}: its copy was deleted; replace the file '{src}' (data.url) and run again")
    return DamagedArchive(f"{e}: the download was deleted; run again to fetch it anew (if it fails again, the "
                          "file at data.url is damaged)")
