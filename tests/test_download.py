"""Downloads and extraction against a local HTTP server; nothing here touches the network."""
from __future__ import annotations

import hashlib
import io as pyio
import re
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from irnet_moana.data import download as dl


class _Handler(BaseHTTPRequestHandler):
    """Serves server.files; honours 'Range: bytes=N-' only when server.honour_range is set."""

    def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start, status = 0, 200
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if wanted and server.honour_range:
            # misplace_range simulates a server answering a range other than the one asked.
            start, status = (0 if server.misplace_range else int(wanted.group(1))), 206
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        # cut_after simulates a connection dropped mid-transfer.
        payload = body[start:start + server.cut_after] if server.cut_after is not None else body[start:]
        self.wfile.write(payload)
        server.bytes_sent += len(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.bytes_sent = {}, [], 0
    httpd.honour_range, httpd.misplace_range, httpd.cut_after = True, False, None
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = pyio.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, pyio.BytesIO(data))
    return buffer.getvalue()


VOC_TREE = {
    "VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg": b"not really a jpeg",
    "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt": b"2007_000032\n",
}
PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes, every byte value present


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_download_verify_and_extract(server, tmp_path):
    archive = _tar_gz(VOC_TREE)
    server.files["/voc.tar.gz"] = archive
    dest = tmp_path / "downloads" / "voc.tar.gz"

    assert dl.download(server.url("/voc.tar.gz"), dest, _md5(archive), len(archive), chunk=1000,
                       progress=False) == dest
    assert dest.read_bytes() == archive
    assert not dl.part_path(dest).exists()
    assert dl.marker_path(dest).read_text() == f"{_md5(archive)} {len(archive)}\n"

    assert dl.extract(dest, tmp_path / "data", ".voc.extracted") == tmp_path / "data"
    root = tmp_path / "data" / "VOCdevkit" / "VOC2012"
    assert (root / "JPEGImages" / "2007_000032.jpg").read_bytes() == b"not really a jpeg"
    assert (root / "ImageSets" / "Segmentation" / "train.txt").read_text() == "2007_000032\n"
    assert (tmp_path / "data" / ".voc.extracted").is_file()
    # Only the archive's tree and the marker: no staging folder left behind.
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".voc.extracted", "VOCdevkit"]


def test_extract_is_skipped_once_marked(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar_gz({"top/file.txt": b"first"}))
    dl.extract(archive, tmp_path / "out", ".done")
    (tmp_path / "out" / "top" / "file.txt").write_text("edited")
    dl.extract(archive, tmp_path / "out", ".done")
    assert (tmp_path / "out" / "top" / "file.txt").read_text() == "edited"


def test_extract_merges_into_existing_folders(tmp_path):
    (tmp_path / "out" / "VOCdevkit" / "VOC2012").mkdir(parents=True)
    (tmp_path / "out" / "VOCdevkit" / "VOC2012" / "mine.txt").write_text("kept")
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar_gz(VOC_TREE))
    dl.extract(archive, tmp_path / "out", ".done")
    root = tmp_path / "out" / "VOCdevkit" / "VOC2012"
    assert (root / "mine.txt").read_text() == "kept"
    assert (root / "JPEGImages" / "2007_000032.jpg").is_file()


def test_resume_with_range_transfers_only_the_rest(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    dl.part_path(dest).write_bytes(PAYLOAD[:3000])

    dl.download(server.url("/f.bin"), dest, _md5(PAYLOAD), len(PAYLOAD), chunk=512, progress=False)

    assert server.requests == [("/f.bin", "bytes=3000-")]
    assert server.bytes_sent == len(PAYLOAD) - 3000 == 7240
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.honour_range = False
    dest = tmp_path / "f.bin"
    # Bytes that differ from the real start: appending the full body to them would corrupt the file.
    dl.part_path(dest).write_bytes(b"\xff" * 3000)

    dl.download(server.url("/f.bin"), dest, _md5(PAYLOAD), len(PAYLOAD), progress=False)

    assert server.requests == [("/f.bin", "bytes=3000-")]
    assert server.bytes_sent == len(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD


def test_server_answering_another_range_restarts_cleanly(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.misplace_range = True
    dest = tmp_path / "f.bin"
    dl.part_path(dest).write_bytes(PAYLOAD[:3000])

    dl.download(server.url("/f.bin"), dest, _md5(PAYLOAD), len(PAYLOAD), progress=False)

    # Its misplaced partial answer is dropped and the file fetched whole, without a Range header.
    assert server.requests == [("/f.bin", "bytes=3000-"), ("/f.bin", None)]
    assert dest.read_bytes() == PAYLOAD


def test_interrupted_transfer_resumes_on_rerun(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.cut_after = 4000
    dest = tmp_path / "f.bin"
    with pytest.raises(dl.DownloadError, match=r"broke off after 4000 bytes.*rerun to resume"):
        dl.download(server.url("/f.bin"), dest, _md5(PAYLOAD), len(PAYLOAD), chunk=1024, progress=False)
    assert dl.part_path(dest).read_bytes() == PAYLOAD[:4000]
    assert not dest.exists()

    server.cut_after = None
    dl.download(server.url("/f.bin"), dest, _md5(PAYLOAD), len(PAYLOAD), chunk=1024, progress=False)
    assert server.requests[-1] == ("/f.bin", "bytes=4000-")
    assert server.bytes_sent == 4000 + 6240
    assert dest.read_bytes() == PAYLOAD


def test_part_longer_than_expected_is_discarded(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    dl.part_path(dest).write_bytes(b"x" * (len(PAYLOAD) + 5))
    dl.download(server.url("/f.bin"), dest, _md5(PAYLOAD), len(PAYLOAD), progress=False)
    assert server.requests == [("/f.bin", None)]
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_without_size_is_verified_after_416(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    dl.part_path(dest).write_bytes(PAYLOAD)
    dl.download(server.url("/f.bin"), dest, _md5(PAYLOAD), None, progress=False)
    assert server.requests == [("/f.bin", f"bytes={len(PAYLOAD)}-")]
    assert server.bytes_sent == 0
    assert dest.read_bytes() == PAYLOAD


def test_wrong_md5_is_a_clear_error_and_leaves_no_dest(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    wrong = "0" * 32
    with pytest.raises(dl.ChecksumError) as info:
        dl.download(server.url("/f.bin"), dest, wrong, len(PAYLOAD), progress=False)
    message = str(info.value)
    assert str(dest) in message
    assert f"md5 {_md5(PAYLOAD)}, expected {wrong}" in message
    assert not dest.exists() and not dl.part_path(dest).exists() and not dl.marker_path(dest).exists()
    # Kept aside for inspection, under a name a rerun neither trusts nor resumes.
    assert dest.with_name("f.bin.corrupt").read_bytes() == PAYLOAD


def test_wrong_size_is_refused_before_writing(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    with pytest.raises(dl.DownloadError, match=r"offers 10240 bytes but f\.bin has 999"):
        dl.download(server.url("/f.bin"), dest, None, 999, progress=False)
    assert not dest.exists() and not dl.part_path(dest).exists()


def test_verified_file_is_not_downloaded_again(server, tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(PAYLOAD)
    # First call verifies the file already in place (e.g. copied by hand) and records it.
    assert dl.download(server.url("/f.bin"), dest, _md5(PAYLOAD), len(PAYLOAD), progress=False) == dest
    assert dl.marker_path(dest).is_file()
    # Second call trusts the marker; no request is made either time (the server holds no file at all).
    dl.download(server.url("/f.bin"), dest, _md5(PAYLOAD), len(PAYLOAD), progress=False)
    assert server.requests == []


def test_marker_is_not_trusted_for_a_replaced_file(server, tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(PAYLOAD)
    dl.download(server.url("/f.bin"), dest, _md5(PAYLOAD), None, progress=False)
    dest.write_bytes(PAYLOAD[:100])
    with pytest.raises(dl.ChecksumError, match=f"expected {_md5(PAYLOAD)}"):
        dl.download(server.url("/f.bin"), dest, _md5(PAYLOAD), None, progress=False)
    assert not dest.exists() and not dl.marker_path(dest).exists()


def test_unreachable_server_gives_offline_error(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/VOCtrainval_11-May-2012.tar"
    dest = tmp_path / "downloads" / "VOCtrainval_11-May-2012.tar"
    with pytest.raises(dl.DownloadError) as info:
        dl.download(url, dest, dl.VOC2012.md5, dl.VOC2012.size, progress=False)
    message = str(info.value)
    assert url in message
    assert "offline" in message
    assert f"place it at {dest}" in message
    assert not dest.exists()


def test_http_error_names_status_and_manual_route(server, tmp_path):
    dest = tmp_path / "missing.tgz"
    with pytest.raises(dl.DownloadError, match=r"HTTP 404.*place it at"):
        dl.download(server.url("/missing.tgz"), dest, None, None, progress=False)


def test_tar_with_parent_member_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(_tar_gz({"ok/fine.txt": b"fine", "../evil": b"escaped"}))
    out = tmp_path / "out"
    with pytest.raises(dl.ArchiveError, match="refusing to unpack"):
        dl.extract(archive, out, ".done")
    assert not (tmp_path / "evil").exists()
    assert list(out.iterdir()) == []  # no marker, no staging folder, nothing half-extracted


def test_truncated_archive_is_a_clear_error(tmp_path):
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(_tar_gz({"top/big.bin": PAYLOAD * 4})[:200])
    with pytest.raises(dl.ArchiveError, match="truncated or corrupt"):
        dl.extract(archive, tmp_path / "out", ".done")
    assert list((tmp_path / "out").iterdir()) == []


def test_fetch_downloads_extracts_and_then_skips(server, tmp_path):
    tarball = _tar_gz(VOC_TREE)
    server.files["/voc.tar.gz"] = tarball
    archive = dl.Archive(url=server.url("/voc.tar.gz"), filename="voc.tar.gz", md5=_md5(tarball),
                         size=len(tarball), root="VOCdevkit/VOC2012")
    data = tmp_path / "data"
    root = dl.fetch(archive, data, progress=False)
    assert root == data / "VOCdevkit" / "VOC2012"
    assert (data / "downloads" / "voc.tar.gz").read_bytes() == tarball
    assert (root / "JPEGImages" / "2007_000032.jpg").is_file()

    # A rerun needs neither the server nor the archive.
    (data / "downloads" / "voc.tar.gz").unlink()
    assert dl.fetch(archive, data, progress=False) == root
    assert len(server.requests) == 1


def test_fetch_refuses_archive_without_expected_root(server, tmp_path):
    tarball = _tar_gz({"something_else/x.txt": b"x"})
    server.files["/x.tgz"] = tarball
    archive = dl.Archive(url=server.url("/x.tgz"), filename="x.tgz", md5=_md5(tarball), size=None,
                         root="benchmark_RELEASE")
    with pytest.raises(dl.ArchiveError, match="did not create .*benchmark_RELEASE"):
        dl.fetch(archive, tmp_path, progress=False)


@pytest.mark.parametrize("fetcher, constant, tree, root", [
    (dl.fetch_voc12, "VOC2012", VOC_TREE, "VOCdevkit/VOC2012"),
    (dl.fetch_sbd, "SBD", {"benchmark_RELEASE/dataset/train.txt": b"2008_000002\n"}, "benchmark_RELEASE"),
    (dl.fetch_cub, "CUB", {"CUB_200_2011/images.txt": b"1 001.Black_footed_Albatross/a.jpg\n"}, "CUB_200_2011"),
])
def test_dataset_fetchers_use_their_table_entry(server, tmp_path, monkeypatch, fetcher, constant, tree, root):
    official = getattr(dl, constant)
    tarball = _tar_gz(tree)
    server.files["/a"] = tarball
    monkeypatch.setattr(dl, constant, dl.Archive(url=server.url("/a"), filename=official.filename,
                                                 md5=_md5(tarball), size=len(tarball), root=official.root))
    assert fetcher(tmp_path) == tmp_path / root
    assert (tmp_path / "downloads" / official.filename).is_file()


def test_archive_table():
    assert dl.VOC2012.size == 1999639040 and dl.VOC2012.md5 == "6cd6e144f989b92b3379bac3b3de84fd"
    assert dl.SBD.md5 == "82b4d87ceb2ed10f6038a1cba92111cb"
    assert {a.filename for a in dl.ARCHIVES.values()} == {
        "VOCtrainval_11-May-2012.tar", "benchmark.tgz", "CUB_200_2011.tgz"}
    for archive in dl.ARCHIVES.values():
        assert archive.url.split("?")[0].endswith(archive.filename)
