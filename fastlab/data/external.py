"""Fetching data safely: fast.ai's ``untar_data`` with checksums, resumable downloads and
archives that cannot write outside their folder.

``untar_data(url)`` downloads over http(s) (or copies a ``file://`` path) into a cache
(``outputs/data/`` by default) through ``fastlab.fetch`` (a lock, so a sweep's parallel trials
fetch once; timeouts; a progress bar or log lines), resumes a partial download when the server
allows it, checks the SHA-256 when given, and extracts tar or zip archives into a temporary folder
that is renamed into place only when every member has been checked and written. A member that
would land outside the folder (an absolute path, ``..``, a link pointing out, a device file)
refuses the whole archive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tarfile
import urllib.parse
import uuid
import zipfile
from pathlib import Path, PurePosixPath

from fastlab.errors import DataError
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


def extract(archive: Path, dest: Path) -> Path:
    """Extract into a temporary sibling of ``dest``, then rename. An archive holding a single
    top-level folder gives that folder's contents (as fast.ai's datasets are packed)."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                check_zip(zf, archive)
                zf.extractall(tmp)
        else:
            try:
                tar = tarfile.open(archive)
            except tarfile.TarError as e:
                raise DataError(f"'{archive}' is not a tar or zip archive ({e}): check data.url") from None
            with tar:
                check_tar(tar, archive)
                # The "data" filter re-checks what check_tar did and drops unsafe permissions.
                tar.extractall(tmp, filter="data")
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
        extract(archive, dest)
        done.write_text((sha256 or sha256_of(archive)) + "\n")
    return dest
