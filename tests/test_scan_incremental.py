"""Incremental scans (``Catalog.update``, ``dicomflow scan --incremental``) and ``exclude``:
every file exactly once, however often and however interrupted the scan is rerun."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pydicom
import pytest

import dicomflow as dfl
from dicomflow.catalog import _parquet
from dicomflow.cli import main

SERIES = "modality"  # 17 modality folders of real files


@pytest.fixture
def archive(corpus: Path, tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    shutil.copytree(corpus / SERIES, root)
    return root


def _files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def _dataset(root: Path) -> pa.Table:
    return pads.dataset(root, partitioning="hive").to_table()


def _restamp(path: Path, patient_id: str) -> None:
    """Rewrite a file with another Patient ID (another size) and a later modification time."""
    ds = pydicom.dcmread(path)
    ds.PatientID = patient_id
    ds.save_as(path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_update_twice_gives_each_file_once(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "catalog.parquet"
    first = dfl.scan(archive, workers=1).update(out)
    assert first.files == _files(archive) and first.unchanged == 0
    second = dfl.scan(archive, workers=1).update(out)
    assert second.files == 0 and second.unchanged == _files(archive)  # nothing read again
    table = pq.read_table(out)
    uris = table.column("uri").to_pylist()
    assert len(uris) == len(set(uris)) == _files(archive)
    assert table.column("modified").null_count == 0


def test_a_grown_archive_adds_only_the_new_files(archive, corpus, tmp_path) -> None:
    out = tmp_path / "catalog.parquet"
    dfl.scan(archive, workers=1).update(out)
    before = pq.read_table(out)
    shutil.copy(corpus / "charsets/chrGreek.dcm", archive / "new.dcm")
    stats = dfl.scan(archive, workers=1).update(out)
    assert (stats.files, stats.unchanged, stats.replaced) == (1, before.num_rows, 0)
    after = pq.read_table(out)
    assert after.num_rows == before.num_rows + 1
    # the rows that were there are there unchanged
    kept = after.filter(pa.compute.not_equal(after.column("uri"), str(archive / "new.dcm")))
    assert kept.sort_by("uri").equals(before.sort_by("uri"))


def test_a_changed_file_replaces_its_row(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "catalog.parquet"
    dfl.scan(archive, workers=1).update(out)
    target = archive / "CT" / "highdicom_ct_image.dcm"
    _restamp(target, "CHANGED-ID-0001")
    stats = dfl.scan(archive, workers=1).update(out)
    assert (stats.files, stats.replaced) == (1, 1)
    table = pq.read_table(out)
    rows = [r for r in table.to_pylist() if r["uri"] == str(target)]
    assert len(rows) == 1 and rows[0]["PatientID"] == "CHANGED-ID-0001"
    assert table.num_rows == _files(archive)


def test_partitioned_dataset_twice_is_not_doubled(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "lake"
    # the finding: plain appends double the rows
    dfl.scan(archive, workers=1).to_parquet(out / "plain", partition_by=["Modality"])
    dfl.scan(archive, workers=1).to_parquet(out / "plain", partition_by=["Modality"])
    assert _dataset(out / "plain").num_rows == 2 * _files(archive)
    for _ in range(2):
        dfl.scan(archive, workers=1).update(out / "inc", partition_by=["Modality"])
    table = _dataset(out / "inc")
    assert table.num_rows == len(set(table.column("uri").to_pylist())) == _files(archive)
    # a changed file: its old row leaves its part, the new one is appended
    target = archive / "CT" / "highdicom_ct_image.dcm"
    _restamp(target, "CHANGED-ID-0002")
    assert dfl.scan(archive, workers=1).update(out / "inc", partition_by=["Modality"]).replaced
    rows = [r for r in _dataset(out / "inc").to_pylist() if r["uri"] == str(target)]
    assert len(rows) == 1 and rows[0]["PatientID"] == "CHANGED-ID-0002"
    assert rows[0]["Modality"] == "CT"


def test_killed_between_drop_and_append_the_rerun_completes(archive, tmp_path, monkeypatch):
    out = tmp_path / "lake"
    dfl.scan(archive, workers=1).update(out, partition_by=["Modality"])
    target = archive / "CT" / "highdicom_ct_image.dcm"
    _restamp(target, "CHANGED-ID-0003")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the old row left, before the append

    with monkeypatch.context() as m:
        m.setattr(_parquet, "write_dataset", killed)  # the append of the new rows
        with pytest.raises(KeyboardInterrupt):
            dfl.scan(archive, workers=1).update(out, partition_by=["Modality"])
    assert str(target) not in _dataset(out).column("uri").to_pylist()  # out, not doubled
    stats = dfl.scan(archive, workers=1).update(out, partition_by=["Modality"])
    assert stats.files == 1  # found new: read once
    uris = _dataset(out).column("uri").to_pylist()
    assert len(uris) == len(set(uris)) == _files(archive)


def test_a_catalog_without_modification_times_is_compared_by_size(archive, tmp_path):
    out = tmp_path / "catalog.parquet"
    table = dfl.scan(archive, workers=1).to_arrow()
    pq.write_table(table.drop_columns(["modified"]), out)  # as catalogs before the column
    stats = dfl.scan(archive, workers=1).update(out)
    assert stats.files == 0 and stats.unchanged == _files(archive)


def test_exclude_leaves_sidecars_out(archive: Path, tmp_path: Path) -> None:
    (archive / "README.txt").write_text("about this export\n" * 10)
    (archive / "CT" / "series.json").write_text('{"a": 1}' * 30)
    with_errors = dfl.scan(archive, workers=1).to_arrow()
    assert with_errors.column("error").null_count == with_errors.num_rows - 2
    cat = dfl.scan(archive, workers=1, exclude=["*.txt", "*.json"])
    table = cat.to_arrow()
    assert table.num_rows == _files(archive) - 2 and table.column("error").null_count == (
        table.num_rows
    )
    assert cat.stats.excluded == 2
    # a pattern on the whole path works too
    assert dfl.scan(archive, workers=1, exclude="*/CT/*").to_arrow().num_rows == (
        _files(archive) - 2  # the CT image and the JSON beside it
    )


def test_cli_incremental_exclude_and_output_checks(archive, tmp_path, capsys) -> None:
    out = tmp_path / "catalog.parquet"
    (archive / "notes.txt").write_text("not DICOM\n" * 20)
    args = ["scan", str(archive), "-o", str(out), "--incremental", "--exclude", "*.txt", "-q"]
    assert main(args) == 0
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"{_files(archive) - 1:,} files unchanged (not read)" in err
    assert "1 files excluded by --exclude" in err
    assert pq.read_table(out).num_rows == _files(archive) - 1
    assert main(["scan", str(archive), "-o", str(tmp_path / "catalog.csv")]) == 2
    assert "scan writes Parquet" in capsys.readouterr().err
    folder = tmp_path / "by-modality"
    ok = ["scan", str(archive), "-o", str(folder), "--partition-by", "Modality", "-q"]
    assert main([*ok, "--incremental"]) == 0 and main([*ok, "--incremental"]) == 0
    assert _dataset(folder).num_rows == _files(archive) - 1 + 1  # notes.txt is an error row
    bad = ["scan", str(archive), "-o", str(tmp_path / "x.parquet"), "--partition-by", "Modality"]
    assert main(bad) == 2
