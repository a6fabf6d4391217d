"""Fetch and unpack the public dataset archives, resumably and verifiably.

A download streams into ``<file>.part`` and resumes it with an HTTP Range
request after an interruption; only a file that passed its size and md5
checks is renamed to its final name, and a ``<file>.md5ok`` marker records
that check so a rerun does not rehash gigabytes. Extraction refuses members
that would land outside the destination, unpacks into a staging folder and
moves the result into place, then writes a marker so a rerun skips it.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from tqdm import tqdm

from .. import io

log = logging.getLogger(__name__)

TIMEOUT_S = 60


@dataclass(frozen=True)
class Archive:
    """One published archive: where it lives, how to check it, what it unpacks to."""

    url: str
    filename: str
    md5: str | None
    size: int | None
    root: str  # the folder, relative to the extraction directory, that the archive creates


VOC2012 = Archive(
    url="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
    filename="VOCtrainval_11-May-2012.tar",
    md5="6cd6e144f989b92b3379bac3b3de84fd",
    size=1999639040,
    root="VOCdevkit/VOC2012",
)
# torchvision's SBDataset records only the md5; the size is the Content-Length
# the Berkeley server reports for that same file.
SBD = Archive(
    url="http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
    filename="benchmark.tgz",
    md5="82b4d87ceb2ed10f6038a1cba92111cb",
    size=1419539633,
    root="benchmark_RELEASE",
)
# The address in wsolevaluation's prepare_cub.sh (www.vision.caltech.edu) now
# redirects; the archive moved to CaltechDATA, same file and md5.
CUB = Archive(
    url="https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
    filename="CUB_200_2011.tgz",
    md5="97eceeb196236b17998738112f37df78",
    size=1150585339,
    root="CUB_200_2011",
)
ARCHIVES = {"voc12": VOC2012, "sbd": SBD, "cub": CUB}


class DownloadError(RuntimeError):
    """A file could not be fetched; the message says how to get it by hand."""


class ChecksumError(DownloadError):
    """A downloaded or existing file has the wrong size or md5."""


class ArchiveError(RuntimeError):
    """An archive is corrupt, unsafe to unpack, or lacks the folder it should create."""


def part_path(dest: Path) -> Path:
    """Where ``download`` keeps the unfinished transfer of ``dest``."""
    return dest.with_name(dest.name + ".part")


def marker_path(dest: Path) -> Path:
    """The marker recording that ``dest`` passed its md5 check."""
    return dest.with_name(dest.name + ".md5ok")


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _manual_hint(url: str, dest: Path, md5: str | None) -> str:
    check = f"checks its md5 ({md5}) and " if md5 else ""
    return (f"Download it by hand on a machine with internet access (a browser, or `wget -c '{url}'`) "
            f"and place it at {dest}; a rerun {check}uses it without downloading.")


def _mismatch(path: Path, md5: str | None, size: int | None, digest: str | None = None) -> str | None:
    """What is wrong with ``path`` against the expected size and md5, or None when it matches."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"size {actual_size} bytes, expected {size}"
    if md5 is not None:
        digest = digest or md5sum(path)
        if digest != md5.lower():
            return f"md5 {digest}, expected {md5.lower()}"
    return None


def _reject(path: Path, dest: Path, problem: str, url: str, md5: str | None) -> NoReturn:
    """Move a file that failed its checks out of the way and raise a ChecksumError about it."""
    # Kept rather than deleted so a surprising mismatch can be inspected, but
    # under a name that neither counts as done nor gets resumed.
    corrupt = dest.with_name(dest.name + ".corrupt")
    os.replace(path, corrupt)
    marker_path(dest).unlink(missing_ok=True)
    raise ChecksumError(
        f"{dest}: the file has {problem}. It was moved to {corrupt} (delete it when done looking); "
        f"a rerun downloads {url} afresh. If the mismatch repeats, the server is not serving the "
        "expected file. " + _manual_hint(url, dest, md5))


def _marker_matches(dest: Path, md5: str, size: int | None) -> bool:
    marker = marker_path(dest)
    if not marker.is_file():
        return False
    actual_size = dest.stat().st_size
    # The recorded size catches a file replaced after it was verified.
    return (marker.read_text().split() == [md5.lower(), str(actual_size)]
            and size in (None, actual_size))


def _record_verified(dest: Path, md5: str) -> None:
    io.write_text(marker_path(dest), f"{md5.lower()} {dest.stat().st_size}\n")


def _range_start(response: http.client.HTTPResponse) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _open(url: str, dest: Path, md5: str | None, offset: int) -> http.client.HTTPResponse | None:
    """Send the GET (ranged when resuming); None when the server has nothing past ``offset``."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # Nothing left to send: the .part is complete (or too long), which the checks decide.
            return None
        raise DownloadError(
            f"{url}: the server answered HTTP {exc.code} {exc.reason}. " + _manual_hint(url, dest, md5)) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot reach {url} ({reason}); this machine may be offline or the server down. "
            + _manual_hint(url, dest, md5)) from exc


def _copy_body(response: http.client.HTTPResponse, part: Path, offset: int, url: str, dest: Path,
               md5: str | None, total: int | None, chunk: int, progress: bool) -> str | None:
    """Write the response body to ``part`` after its first ``offset`` bytes; md5 of the whole when asked."""
    digest = hashlib.md5() if md5 is not None else None
    if digest is not None and offset:
        with open(part, "rb") as handle:
            for block in iter(lambda: handle.read(chunk), b""):
                digest.update(block)
    length = response.headers.get("Content-Length")
    received = 0
    with open(part, "ab" if offset else "wb") as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=dest.name, disable=not progress) as bar:
        try:
            for block in iter(lambda: response.read(chunk), b""):
                out.write(block)
                received += len(block)
                if digest is not None:
                    digest.update(block)
                bar.update(len(block))
            # http.client ends the body quietly when the connection drops early.
            if length is not None and received < int(length):
                raise http.client.IncompleteRead(b"", int(length) - received)
        except (OSError, http.client.HTTPException) as exc:
            out.flush()
            raise DownloadError(
                f"the transfer from {url} broke off after {part.stat().st_size} bytes ({exc!r}); "
                "rerun to resume from there. " + _manual_hint(url, dest, md5)) from exc
    return digest.hexdigest() if digest is not None else None


def _stream(url: str, dest: Path, md5: str | None, size: int | None, chunk: int, progress: bool) -> str | None:
    """Bring ``dest``'s .part to the whole file; its md5 when computed on the way, else None."""
    part = part_path(dest)
    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset > size:
        log.warning("%s is longer than %s should be; downloading again from the start", part, dest.name)
        offset = 0
    if size is not None and offset == size:
        return None
    response = _open(url, dest, md5, offset)
    if response is None:
        return None
    with response:
        misplaced = response.status == 206 and _range_start(response) != offset
        if not misplaced:
            if response.status != 206 and offset:
                log.info("%s ignored the resume request; downloading %s from the start", url, dest.name)
                offset = 0
            elif offset:
                log.info("resuming %s at byte %d", dest.name, offset)
            length = response.headers.get("Content-Length")
            offered = offset + int(length) if length is not None else None
            if size is not None and offered is not None and offered != size:
                raise DownloadError(
                    f"{url}: the server offers {offered} bytes but {dest.name} has {size}; it may be serving "
                    "an error page or another version of the file. " + _manual_hint(url, dest, md5))
            return _copy_body(response, part, offset, url, dest, md5, size or offered, chunk, progress)
    if not offset:
        raise DownloadError(f"{url}: the server sent part of the file to a plain request. "
                            + _manual_hint(url, dest, md5))
    # It answered a range other than the one asked, so its bytes cannot be appended: start over.
    part.unlink()
    return _stream(url, dest, md5, size, chunk, progress)


def download(url: str, dest: Path, md5: str | None, size: int | None, chunk: int = 1 << 20,
             progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, resuming a partial transfer; return ``dest``.

    An existing ``dest`` is checked (or trusted through its ``.md5ok`` marker)
    instead of downloaded again. A file failing the size or md5 check is moved
    to ``<dest>.corrupt`` and a ChecksumError names the expected and actual
    values; an unreachable server gives a DownloadError saying how to fetch
    the file by hand.
    """
    dest = Path(dest)
    if dest.is_file():
        if md5 is not None and _marker_matches(dest, md5, size):
            log.info("%s already downloaded and verified", dest)
            return dest
        problem = _mismatch(dest, md5, size)
        if problem:
            _reject(dest, dest, problem, url, md5)
        if md5 is not None:
            _record_verified(dest, md5)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = _stream(url, dest, md5, size, chunk, progress)
    part = part_path(dest)
    problem = _mismatch(part, md5, size, digest)
    if problem:
        _reject(part, dest, problem, url, md5)
    os.replace(part, dest)
    if md5 is not None:
        _record_verified(dest, md5)
    return dest


def _merge_into(source: Path, target: Path) -> None:
    """Move the contents of ``source`` into ``target``, merging folders both have."""
    for child in source.iterdir():
        destination = target / child.name
        if child.is_dir() and destination.is_dir():
            _merge_into(child, destination)
            child.rmdir()
        else:
            os.replace(child, destination)


def extract(archive: Path, dest_dir: Path, marker_name: str) -> Path:
    """Unpack a tar archive (any compression) into ``dest_dir`` once; return ``dest_dir``.

    Members with absolute paths, ``..`` components, links pointing outside or
    device files are refused (tarfile's 'data' filter) with an ArchiveError.
    The archive is unpacked into a staging folder inside ``dest_dir``, moved
    into place, and ``dest_dir/marker_name`` is written last, so an
    interrupted run is redone and a finished one is skipped.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    marker = dest_dir / marker_name
    if marker.is_file():
        return dest_dir
    if not hasattr(tarfile, "data_filter"):
        raise ArchiveError("safe extraction needs Python 3.11.4 or newer (tarfile's 'data' filter)")
    dest_dir.mkdir(parents=True, exist_ok=True)
    staging = dest_dir / f".{archive.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted run
    staging.mkdir()
    try:
        with tarfile.open(archive, errorlevel=1) as tar:
            tar.extractall(staging, filter="data")
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, tarfile.FilterError):
            raise ArchiveError(
                f"{archive}: refusing to unpack, {exc}; this is not a well-formed dataset archive. "
                "Delete it and download the official one.") from exc
        if isinstance(exc, (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)):
            raise ArchiveError(
                f"{archive}: cannot be unpacked ({exc}); it is truncated or corrupt. Delete it and "
                f"{marker_path(archive).name} next to it, then rerun to download it again.") from exc
        raise
    _merge_into(staging, dest_dir)
    staging.rmdir()
    io.write_text(marker, f"{archive.name}\n")
    return dest_dir


def fetch(archive: Archive, data_dir: Path, progress: bool = True) -> Path:
    """Download ``archive`` into data_dir/downloads, unpack it into data_dir; return its root."""
    data_dir = Path(data_dir)
    root = data_dir / archive.root
    marker = f".{archive.filename}.extracted"
    if (data_dir / marker).is_file():
        if root.is_dir():
            return root
        # Unpacked once but the result was removed since: unpack again.
        (data_dir / marker).unlink()
    path = download(archive.url, data_dir / "downloads" / archive.filename, archive.md5, archive.size,
                    progress=progress)
    extract(path, data_dir, marker)
    if not root.is_dir():
        raise ArchiveError(f"{path} was unpacked into {data_dir} but did not create {root}; "
                           "is it the right archive?")
    return root


def fetch_voc12(data_dir: Path) -> Path:
    """VOC 2012 trainval, unpacked; returns data_dir/VOCdevkit/VOC2012."""
    return fetch(VOC2012, data_dir)


def fetch_sbd(data_dir: Path) -> Path:
    """SBD (benchmark.tgz), unpacked; returns data_dir/benchmark_RELEASE."""
    return fetch(SBD, data_dir)


def fetch_cub(data_dir: Path) -> Path:
    """CUB-200-2011, unpacked; returns data_dir/CUB_200_2011."""
    return fetch(CUB, data_dir)
