"""Scanning from every kind of source gives the same catalog as scanning the local files."""

from __future__ import annotations

import functools
import http.server
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dicomflow as dfl

SUBSET = ["modality", "transfer-syntax", "broken", "charsets", "private"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _without_uri(table: pa.Table) -> list[dict]:
    rows = table.drop_columns(["uri", "modified"]).to_pylist()  # where and when it was stored
    return rows


@pytest.fixture(scope="module")
def subset_files(corpus: Path) -> list[Path]:
    files = []
    for folder in SUBSET:
        files += sorted(p for p in (corpus / folder).rglob("*") if p.is_file())
    return files


@pytest.fixture(scope="module")
def local_table(subset_files: list[Path]) -> pa.Table:
    return dfl.scan([str(p) for p in subset_files], workers=1).to_arrow()


@pytest.fixture(scope="module")
def s3(corpus: Path, subset_files: list[Path]):
    """A real S3 API (moto server on loopback) holding the corpus subset."""
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {
        "key": "testing",
        "secret": "testing",
        "endpoint_url": f"http://127.0.0.1:{port}",
        "skip_instance_cache": True,
    }
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("archive")
    for path in subset_files:
        fs.pipe_file(f"archive/{path.relative_to(corpus)}", path.read_bytes())
    yield fs, options
    server.stop()


def test_s3_scan_equals_local_scan(s3, corpus, subset_files, local_table) -> None:
    fs, options = s3
    table = dfl.scan("s3://archive/", storage_options=options, workers=1).to_arrow()
    assert table.num_rows == len(subset_files)
    want = {
        f"s3://archive/{p.relative_to(corpus)}": row
        for p, row in zip(subset_files, _without_uri(local_table))
    }
    got = dict(zip(table.column("uri").to_pylist(), _without_uri(table)))
    assert got.keys() == want.keys()
    for uri, row in got.items():
        assert row == want[uri], uri


def test_s3_scan_fetches_only_header_prefixes(s3, corpus, subset_files, monkeypatch) -> None:
    """Count the bytes that really cross the wire: the header plus a bounded prefix."""
    import s3fs

    fetched: dict[str, int] = {}
    original = s3fs.S3FileSystem._cat_file

    async def counting(self, path, version_id=None, start=None, end=None):
        data = await original(self, path, version_id=version_id, start=start, end=end)
        fetched[path] = fetched.get(path, 0) + len(data)
        return data

    monkeypatch.setattr(s3fs.S3FileSystem, "_cat_file", counting)
    _, options = s3
    cat = dfl.scan("s3://archive/", storage_options=options, workers=1)
    table = cat.to_arrow()
    total_size = sum(table.column("size").to_pylist())
    bound = 0
    for row in table.to_pylist():
        header_len = row["pixel_offset"] or row["size"] or 0
        bound += min(row["size"] or 0, max(64 * 1024, 2 * header_len + 8192))
    assert sum(fetched.values()) == cat.stats.bytes_read
    assert sum(fetched.values()) <= bound
    assert sum(fetched.values()) < total_size / 2, (sum(fetched.values()), total_size)
    # an object with a large Pixel Data: only a prefix of it was fetched
    big = [r for r in table.to_pylist() if r["pixel_length"] and r["pixel_length"] > 1 << 20]
    assert big
    for row in big:
        key = row["uri"].removeprefix("s3://")
        assert fetched[key] <= max(64 * 1024, row["pixel_offset"] * 2 + 8192) < row["size"]


def test_zip_scan_equals_local_scan(tmp_path, corpus, local_table, subset_files) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in subset_files:
            zf.write(p, str(p.relative_to(corpus)))
    table = dfl.scan(f"zip://**::{archive}", workers=1).to_arrow()
    assert table.num_rows == len(subset_files)
    by_name = dict(zip(table.column("uri").to_pylist(), _without_uri(table)))
    for p, row in zip(subset_files, _without_uri(local_table)):
        assert by_name[f"zip://{p.relative_to(corpus)}::{archive}"] == row


def test_memory_and_glob_sources(corpus) -> None:
    fs = fsspec.filesystem("memory")
    ct = sorted((corpus / "transfer-syntax" / "explicit-vr-le").glob("*"))
    for p in ct:
        fs.pipe_file(f"/df-test/{p.name}", p.read_bytes())
    mem = dfl.scan("memory://df-test/*", workers=1).to_arrow()
    local = dfl.scan(str(corpus / "transfer-syntax" / "explicit-vr-le" / "*"), workers=1)
    assert _without_uri(mem) == _without_uri(local.to_arrow())
    uris = mem.column("uri").to_pylist()
    assert all(u.startswith("memory://") and "/df-test/" in u for u in uris), uris[:2]
    fs.rm("/df-test", recursive=True)


def test_http_urls(corpus, tmp_path) -> None:
    folder = corpus / "transfer-syntax" / "implicit-vr-le"
    files = sorted(p for p in folder.iterdir() if p.is_file())[:5]
    for p in files:
        shutil.copy(p, tmp_path / p.name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        urls = [f"http://127.0.0.1:{port}/{p.name}" for p in files]
        remote = dfl.scan(urls, workers=1).to_arrow()
    finally:
        server.shutdown()
    local = dfl.scan([str(p) for p in files], workers=1).to_arrow()
    assert remote.column("uri").to_pylist() == urls
    assert _without_uri(remote) == _without_uri(local)


def test_missing_source_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(dfl.SourceError, match="no such file"):
        dfl.scan(tmp_path / "nope").to_arrow()
    with pytest.raises(FileNotFoundError):  # SourceError is an OSError a caller can catch
        dfl.scan(tmp_path / "nope").to_arrow()


def test_fifos_sockets_and_devices_are_error_rows_without_blocking(
    tmp_path: Path, subset_files: list[Path]
) -> None:
    """A FIFO in the tree used to hang the scan forever: now each odd file is one error row."""
    import os
    import subprocess
    import sys

    shutil.copy(subset_files[0], tmp_path / "good.dcm")
    os.mkfifo(tmp_path / "pipe")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tmp_path / "sock"))
    script = (
        "import dicomflow as dfl, sys, json\n"
        "t = dfl.scan([sys.argv[1], '/dev/zero'], workers=1).to_arrow()\n"
        "print(json.dumps({r['uri']: r['error'] for r in t.to_pylist()}))\n"
    )
    try:  # in a subprocess with a timeout: the old code blocked on the FIFO forever
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        unix.close()
    assert done.returncode == 0, done.stderr
    import json

    errors = {Path(k).name: v for k, v in json.loads(done.stdout).items()}
    assert errors == {
        "good.dcm": None,
        "pipe": "cannot read: not a regular file: a FIFO (named pipe)",
        "sock": "cannot read: not a regular file: a socket",
        "zero": "cannot read: not a regular file: a character device",
    }


def test_symlinked_folders_are_followed_and_loops_skipped_with_a_warning(
    tmp_path: Path, subset_files: list[Path]
) -> None:
    import os

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(subset_files[0], outside / "linked.dcm")
    root = tmp_path / "archive"
    (root / "sub").mkdir(parents=True)
    shutil.copy(subset_files[1], root / "sub" / "own.dcm")
    os.symlink(outside, root / "via-link")
    os.symlink(root, root / "sub" / "loop")  # back to the top: must not recurse forever
    with pytest.warns(UserWarning, match="loop: a link to .*archive, which is listed already"):
        table = dfl.scan(str(root), workers=1).to_arrow()
    names = sorted(Path(u).relative_to(root).as_posix() for u in table.column("uri").to_pylist())
    assert names == ["sub/own.dcm", "via-link/linked.dcm"]
    assert table.column("error").null_count == 2


def test_s3_incremental_update_uses_the_listing(s3, corpus, subset_files, tmp_path) -> None:
    """On S3 the size and LastModified come from the listing: unchanged objects are not read."""
    fs, options = s3
    out = tmp_path / "catalog.parquet"
    first = dfl.scan("s3://archive/", storage_options=options, workers=1).update(out)
    table = pq.read_table(out)
    assert first.files == table.num_rows == len(subset_files)
    assert table.column("modified").null_count == 0  # LastModified of every object
    again = dfl.scan("s3://archive/", storage_options=options, workers=1).update(out)
    assert (again.files, again.unchanged) == (0, len(subset_files))
    fs.pipe_file("archive/added/one.dcm", subset_files[0].read_bytes())
    grown = dfl.scan("s3://archive/", storage_options=options, workers=1).update(out)
    assert (grown.files, grown.unchanged) == (1, len(subset_files))
    fs.rm("archive/added/one.dcm")
    assert pq.read_table(out).num_rows == len(subset_files) + 1  # rows of what was seen stay
