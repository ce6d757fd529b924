"""A lake's records kept in a Delta Lake or Iceberg table as well: every record part is one
commit; a killed pull, rerun, leaves every instance once in the table; a lake whose table
missed records (a crash between a part and its commit) catches up on closing."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

pytest.importorskip("deltalake")
pytest.importorskip("pyiceberg.catalog.sql")

import polars as pl  # noqa: E402
from pyiceberg.catalog.sql import SqlCatalog  # noqa: E402

import dicomflow as dfl  # noqa: E402
from dicomflow.network import Lake, read_records  # noqa: E402

from .conftest import lake_files  # noqa: E402


def _table(path: Path, fmt: str) -> pl.DataFrame:
    """The table as polars reads it (Iceberg through pyiceberg's own SQLite catalog)."""
    if fmt == "delta":
        return pl.read_delta(str(path))
    cat = SqlCatalog("dicomflow", uri=f"sqlite:///{path}/catalog.db", warehouse=f"file://{path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # polars' advice to install its Iceberg plug-in
        return pl.scan_iceberg(cat.load_table("dicomflow.lake")).collect()


def _lake_layout(corpus: Path, root: Path, count: int) -> None:
    """Corpus files placed as a lake holds them, ``<study>/<series>/<sop>.dcm``, unrecorded."""
    from pydicom import dcmread

    placed = 0
    for path in sorted((corpus / "series").rglob("*.dcm")):
        ds = dcmread(path, stop_before_pixels=True)
        target = root / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
        placed += 1
        if placed == count:
            return


@pytest.mark.parametrize("fmt", ["delta", "iceberg"])
def test_a_table_that_missed_records_catches_up_on_close(corpus, tmp_path, fmt):
    root = tmp_path / "lake"
    _lake_layout(corpus, root, 30)
    with Lake(root):  # records written, no table: as if the process died before its commit
        pass
    records = read_records(str(root))
    assert records.num_rows == 30
    uri = root / "_lake" / f"table.{fmt}"
    with Lake(root, table=dfl.TableWriter(uri, fmt, table="dicomflow.lake")):
        pass
    table = _table(uri, fmt)
    assert sorted(table["sop_instance_uid"].to_list()) == sorted(
        records.column("sop_instance_uid").to_pylist()
    )
    assert "Modality" in table.columns and "sha256" in table.columns  # catalog and records
    with Lake(root, table=dfl.TableWriter(uri, fmt, table="dicomflow.lake")):
        pass
    assert _table(uri, fmt).height == 30  # nothing twice


def _wait_for_files(lake: Path, count: int, proc, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = len(lake_files(lake)) if lake.exists() else 0
        if n >= count or proc.poll() is not None:
            return n
        time.sleep(0.01)
    raise TimeoutError(f"fewer than {count} files in {lake}")


@pytest.mark.parametrize("fmt", ["delta", "iceberg"])
def test_killed_pull_with_a_table_then_rerun(orthanc_synth, synth_archive, tmp_path, fmt):
    """SIGKILL ``pull --table-format`` midway; the same command again leaves every instance
    exactly once in the table, as in the records."""
    lake = tmp_path / "lake"
    cmd = [sys.executable, "-m", "dicomflow.cli", "pull", "--pacs", str(orthanc_synth.peer),
           "--ae", "TABLES", "--query", "PatientID=*", "--lake", str(lake), "--concurrency", "1",
           "--method", "get", "--table-format", fmt, "-q"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        landed = _wait_for_files(lake, 120, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    expected = len(list(synth_archive.rglob("*.dcm")))
    assert landed < expected, "the pull ended before it could be killed"
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    table = _table(lake / "_lake" / f"table.{fmt}", fmt)
    counts = collections.Counter(table["sop_instance_uid"].to_list())
    assert len(counts) == expected and max(counts.values()) == 1
    records = read_records(str(lake))
    assert set(counts) == set(records.column("sop_instance_uid").to_pylist())
    by_uid = dict(zip(table["sop_instance_uid"], table["sha256"], strict=True))
    assert by_uid == dict(
        zip(*(records.column(c).to_pylist() for c in ("sop_instance_uid", "sha256")), strict=True)
    )
