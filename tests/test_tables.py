"""Lake tables: scans, sinks and appends into Delta Lake and Iceberg (and Parquet part files),
on local disk and on S3 (the moto server); several processes at once, a rerun after a kill,
new columns; read back by polars and DuckDB."""

from __future__ import annotations

import collections
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pyarrow as pa
import pytest

import dicomflow as dfl

pytest.importorskip("deltalake")
pytest.importorskip("pyiceberg.catalog.sql")

import duckdb  # noqa: E402
import polars as pl  # noqa: E402
from deltalake import DeltaTable  # noqa: E402
from pyiceberg.catalog.sql import SqlCatalog  # noqa: E402

FORMATS = ["delta", "iceberg"]


def _files(corpus: Path, *folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (corpus / f).rglob("*") if p.is_file())


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomflow", *args],
        capture_output=True, text=True, timeout=600, **kwargs,
    )  # fmt: skip


def _popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dicomflow", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def _iceberg(out: Path, catalog: Path | None = None, name: str = "dicomflow.catalog"):
    """The table as pyiceberg's own SQLite catalog has it (not through dicomflow)."""
    db = catalog or out / "catalog.db"
    cat = SqlCatalog("dicomflow", uri=f"sqlite:///{db}", warehouse=f"file://{out}")
    return cat.load_table(name)


def _polars(out: Path, fmt: str, catalog: Path | None = None) -> pl.DataFrame:
    """The table read by polars: ``read_delta``, or ``scan_iceberg`` on pyiceberg's table."""
    if fmt == "delta":
        return pl.read_delta(str(out))
    with _quiet():
        return pl.scan_iceberg(_iceberg(out, catalog)).collect()


@contextlib.contextmanager
def _quiet():
    """polars' advice to install its Iceberg planner plug-in, silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _duckdb_count(out: Path, fmt: str) -> tuple[int, int]:
    """(rows, distinct URIs) by DuckDB (offline: DuckDB's own delta and iceberg extensions
    are downloads): Delta's live Parquet files, Iceberg's scan as Arrow."""
    con = duckdb.connect()
    if fmt == "delta":
        files = DeltaTable(str(out)).file_uris()
        return con.execute(
            "SELECT count(*), count(DISTINCT uri) FROM read_parquet(?, union_by_name=true)",
            [files],
        ).fetchone()
    con.register("t", _iceberg(out).scan().to_arrow())
    return con.execute("SELECT count(*), count(DISTINCT uri) FROM t").fetchone()


def _commits(out: Path, fmt: str) -> int:
    if fmt == "delta":
        return len(list((out / "_delta_log").glob("*.json")))
    return len(list(out.glob("**/metadata/*.metadata.json")))


# -- scan -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_scan_to_a_table_equals_the_parquet_catalog(corpus, tmp_path, fmt):
    """``scan --format`` writes the rows ``scan -o x.parquet`` writes; polars and DuckDB
    read them; a rerun adds nothing."""
    folders = [str(corpus / f) for f in ("modality", "broken")]
    out = tmp_path / f"catalog.{fmt}"
    done = _cli("scan", *folders, "-o", str(out), "--format", fmt, "-q", "--batch-size", "16")
    assert done.returncode == 0, done.stderr
    parquet = tmp_path / "catalog.parquet"
    assert _cli("scan", *folders, "-o", str(parquet), "-q").returncode == 0
    want = pl.read_parquet(parquet).sort("uri")
    got = _polars(out, fmt).sort("uri")
    assert got.height == want.height == len(_files(corpus, "modality", "broken"))
    assert got.columns == want.columns
    for column in ("uri", "sop_instance_uid", "error", "Modality", "PatientName", "Rows"):
        assert got[column].to_list() == want[column].to_list(), column
    times = want["StudyTime"].to_list()
    if fmt == "delta":  # Delta has no time type: HH:MM:SS.ffffff text
        assert got["StudyTime"].to_list() == [t and t.strftime("%H:%M:%S.%f") for t in times]
    else:
        assert got["StudyTime"].to_list() == times
    assert _duckdb_count(out, fmt) == (want.height, want.height)
    commits = _commits(out, fmt)
    again = _cli("scan", *folders, "-o", str(out), "--format", fmt, "-q", "--batch-size", "16")
    assert again.returncode == 0, again.stderr
    assert _polars(out, fmt).height == want.height
    assert _commits(out, fmt) == commits  # every batch was found committed: no commit at all


@pytest.mark.parametrize("fmt", FORMATS)
def test_killed_scan_then_rerun_gives_every_file_once(corpus, tmp_path, fmt):
    """SIGKILL a ``scan --format`` after a few commits; the same command again completes the
    table with no file twice."""
    folders = ("series", "modality", "transfer-syntax")
    files = _files(corpus, *folders)
    out = tmp_path / "t"
    args = ["scan", *(str(corpus / f) for f in folders), "-o", str(out), "--format", fmt,
            "--batch-size", "4", "--workers", "1", "-q"]  # fmt: skip
    proc = _popen(*args)
    try:
        deadline = time.monotonic() + 120
        while _commits(out, fmt) < 4 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert running, "the scan ended before it could be killed: " + proc.stderr.read()
    partial = _polars(out, fmt).height
    assert 0 < partial < len(files)
    rerun = _cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    table = _polars(out, fmt)
    uris = collections.Counter(table["uri"].to_list())
    assert set(uris) == {str(p) for p in files}
    assert max(uris.values()) == 1, "a file twice"
    parquet = tmp_path / "check.parquet"  # the same folders, scanned once into Parquet
    assert _cli("scan", *args[1:4], "-o", str(parquet), "-q").returncode == 0
    want = collections.Counter(pl.read_parquet(parquet)["sop_instance_uid"].to_list())
    assert collections.Counter(table["sop_instance_uid"].to_list()) == want


@pytest.mark.parametrize("fmt", FORMATS)
def test_concurrent_scans_into_one_table_lose_and_duplicate_nothing(corpus, tmp_path, fmt):
    """Three ``scan`` processes append to one table at once, many small commits each."""
    groups = [("series",), ("modality", "broken"), ("transfer-syntax", "charsets")]
    out = tmp_path / "shared"
    procs = [
        _popen(
            "scan",
            *(str(corpus / f) for f in group),
            "-o",
            str(out),
            "--format",
            fmt,
            "--batch-size",
            "8",
            "--workers",
            "1",
            "-q",
        )
        for group in groups
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    want = {str(p) for group in groups for p in _files(corpus, *group)}
    uris = _polars(out, fmt)["uri"].to_list()
    assert _duckdb_count(out, fmt) == (len(want), len(want))
    assert len(uris) == len(want) and set(uris) == want


@pytest.mark.parametrize("fmt", FORMATS)
def test_new_columns_are_added_to_the_table(corpus, tmp_path, fmt):
    """A later scan with more ``--columns`` adds them; earlier rows have them empty."""
    out = tmp_path / "t"
    first = _cli("scan", str(corpus / "modality"), "-o", str(out), "--format", fmt, "-q",
                 "--columns", "Modality,Rows")  # fmt: skip
    assert first.returncode == 0, first.stderr
    second = _cli("scan", str(corpus / "transfer-syntax"), "-o", str(out), "--format", fmt,
                  "-q", "--columns", "Modality,Rows,PixelSpacing,StudyTime")  # fmt: skip
    assert second.returncode == 0, second.stderr
    table = _polars(out, fmt)
    assert {"Modality", "Rows", "PixelSpacing", "StudyTime"} <= set(table.columns)
    modality = table.filter(pl.col("uri").str.contains("/modality/"))
    later = table.filter(pl.col("uri").str.contains("/transfer-syntax/"))
    assert modality.height == len(_files(corpus, "modality"))
    assert later.height == len(_files(corpus, "transfer-syntax"))
    assert modality["PixelSpacing"].null_count() == modality.height
    want = pl.read_parquet(_scan_parquet(corpus, tmp_path, "PixelSpacing")).sort("uri")
    assert later.sort("uri")["PixelSpacing"].to_list() == want["PixelSpacing"].to_list()


def _scan_parquet(corpus: Path, tmp_path: Path, columns: str) -> Path:
    path = tmp_path / "check.parquet"
    done = _cli("scan", str(corpus / "transfer-syntax"), "-o", str(path), "-q",
                "--columns", columns)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return path


def test_incremental_table_scan_reads_only_new_and_changed_files(corpus, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    originals = _files(corpus, "modality")[:6]
    for p in originals[:4]:
        (src / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "t.delta"
    assert _cli("scan", str(src), "-o", str(out), "--format", "delta", "-q").returncode == 0
    for p in originals[4:]:
        (src / p.name).write_bytes(p.read_bytes())
    changed = src / originals[0].name
    changed.write_bytes(originals[5].read_bytes())  # same name, other content
    done = _cli("scan", str(src), "-o", str(out), "--format", "delta", "--incremental")
    assert done.returncode == 0, done.stderr
    assert "3 files unchanged" in done.stderr and "1 changed" in done.stderr
    table = pl.read_delta(str(out))
    assert sorted(table["uri"].to_list()) == sorted(str(p) for p in src.iterdir())
    row = table.filter(pl.col("uri") == str(changed))
    assert row["size"].to_list() == [changed.stat().st_size]


def test_parquet_output_name_is_refused_for_a_table(tmp_path, corpus):
    done = _cli("scan", str(corpus / "modality"), "-o", str(tmp_path / "x.parquet"),
                "--format", "delta")  # fmt: skip
    assert done.returncode == 2 and "name a folder" in done.stderr


# -- the Python API --------------------------------------------------------------------------------


def test_a_batch_committed_is_not_appended_again(tmp_path):
    for fmt in ("delta", "iceberg", "parquet"):
        writer = dfl.TableWriter(tmp_path / fmt, fmt)
        batch = pa.table({"uri": ["a", "b"], "size": [1, 2]})
        assert writer.append(batch, "run-1/0") is True
        assert writer.append(batch, "run-1/0") is False
        assert writer.append(batch, "run-2/0") is True  # another batch id: appended
        assert writer.has_batch("run-1/0") and not writer.has_batch("run-3/0")
        assert writer.read().num_rows == 4, fmt


def test_a_column_of_another_type_is_a_table_error(tmp_path):
    writer = dfl.TableWriter(tmp_path / "d", "delta")
    writer.append(pa.table({"uri": ["a"], "n": [1]}), "one")
    with pytest.raises(dfl.TableError, match="'n'"):
        writer.append(pa.table({"uri": ["b"], "n": ["not a number"]}), "two")
    assert pl.read_delta(str(tmp_path / "d"))["uri"].to_list() == ["a"]


def test_missing_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "deltalake", None)
    with pytest.raises(dfl.ConfigError, match=r"dicomflow\[lake\]"):
        dfl.TableWriter(tmp_path / "d", "delta")


def test_unknown_format_is_a_config_error(tmp_path):
    with pytest.raises(dfl.ConfigError, match="delta, iceberg"):
        dfl.TableWriter(tmp_path / "d", "hudi")


# -- pipeline sinks --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_pipeline_sink_appends_once_across_reruns(corpus, tmp_path, fmt):
    out = tmp_path / "out"
    table = tmp_path / f"catalog.{fmt}"
    spec = tmp_path / "p.toml"
    spec.write_text(
        f'[source]\nscan = "{corpus / "transfer-syntax"}"\n\n'
        f'[[sinks]]\ntype = "folder"\nroot = "{out}"\n\n'
        f'[[sinks]]\ntype = "{fmt}"\nroot = "{table}"\n'
    )
    for _ in range(2):
        done = _cli("run", str(spec), "-q")
        assert done.returncode in (0, 1), done.stderr  # some corpus files collide: failed
    written = sorted(str(p) for p in out.rglob("*.dcm"))
    got = _polars(table, fmt)["uri"].to_list()
    assert sorted(got) == written


# -- S3 (the moto server) --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3():
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"key": "testing", "secret": "testing", "endpoint_url": f"http://127.0.0.1:{port}"}
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    fs.mkdir("lake-tables")
    yield fs, options
    server.stop()


@pytest.mark.parametrize("fmt", FORMATS)
def test_s3_table_scan_rerun_and_concurrent_writers(corpus, tmp_path, s3, fmt):
    """On S3: a scan, its rerun (nothing added), and two scans appending at once (Delta
    commits with S3 conditional puts, which the moto server honours; Iceberg through its
    SQLite catalog)."""
    fs, options = s3
    uri = f"s3://lake-tables/{fmt}"
    extra = ["--iceberg-catalog", str(tmp_path / "catalog.db")] if fmt == "iceberg" else []
    common = ["--format", fmt, "--storage-options", json.dumps(options), "-q",
              "--batch-size", "8", "--workers", "1", *extra]  # fmt: skip
    first = _cli("scan", str(corpus / "modality"), "-o", uri, *common)
    assert first.returncode == 0, first.stderr
    again = _cli("scan", str(corpus / "modality"), "-o", uri, *common)
    assert again.returncode == 0, again.stderr
    procs = [_popen("scan", str(corpus / f), "-o", uri, *common) for f in ("series", "broken")]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    want = {str(p) for p in _files(corpus, "modality", "series", "broken")}
    if fmt == "delta":
        so = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
              "AWS_ENDPOINT_URL": options["endpoint_url"], "AWS_ALLOW_HTTP": "true",
              "AWS_REGION": "us-east-1"}  # fmt: skip
        uris = pl.read_delta(uri, storage_options=so)["uri"].to_list()
    else:
        cat = SqlCatalog(
            "dicomflow", uri=f"sqlite:///{tmp_path / 'catalog.db'}", warehouse=uri,
            **{"s3.endpoint": options["endpoint_url"], "s3.access-key-id": "testing",
               "s3.secret-access-key": "testing", "s3.region": "us-east-1"},
        )  # fmt: skip
        so = {"aws_endpoint_url": options["endpoint_url"], "aws_access_key_id": "testing",
              "aws_secret_access_key": "testing", "aws_region": "us-east-1",
              "aws_allow_http": "true"}  # fmt: skip
        with _quiet():
            table = cat.load_table("dicomflow.catalog")
            uris = pl.scan_iceberg(table, storage_options=so).collect()["uri"].to_list()
    assert len(uris) == len(want) and set(uris) == want
    assert fs.ls(f"lake-tables/{fmt}")  # the data is in the bucket
