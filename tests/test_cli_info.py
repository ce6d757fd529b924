"""``dicomflow info`` on what the other commands write: a catalog, a lake, a manifest."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pydicom
import pytest

from dicomflow.cli import main
from dicomflow.sample import make_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return make_sample(tmp_path_factory.mktemp("info") / "archive")


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_info_of_a_catalog(sample, tmp_path, capsys) -> None:
    out = tmp_path / "catalog.parquet"
    assert main(["scan", str(sample.root), "-o", str(out), "-q", "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["info", str(out), "--format", "json"]) == 0
    doc = _json(capsys)
    # what the sample wrote, counted from its files with pydicom
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sample.files]
    assert doc["kind"] == "catalog"
    assert doc["totals"]["files"] == len(sample.files) + len(sample.broken)
    assert doc["totals"]["errors"] == len(sample.broken)
    assert doc["totals"]["patients"] == len({h.PatientID for h in headers})
    assert doc["totals"]["series"] == len({h.SeriesInstanceUID for h in headers})
    by = {r["Modality"]: r for r in doc["by_modality"]}
    for modality in {h.Modality for h in headers}:
        mine = [h for h in headers if h.Modality == modality]
        assert by[modality]["instances"] == len(mine)
        assert by[modality]["studies"] == len({h.StudyInstanceUID for h in mine})
    assert sum(r["files"] for r in doc["errors"]) == len(sample.broken)
    assert {Path(r["example"]).parent for r in doc["errors"]} <= {p.parent for p in sample.broken}
    # the table form names the same totals; the CSV form is the by-modality table
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{len(sample.files):,} instances" in text and "errors:" in text
    assert main(["info", str(out), "--format", "csv"]) == 0
    csv = pl.read_csv(capsys.readouterr().out.encode())
    assert csv["instances"].sum() == len(sample.files)


def test_info_of_a_manifest(sample, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DFL_KEY", "a project secret of some length")
    dst = tmp_path / "share"
    code = main(["deid", str(sample.root), str(dst), "--secret-env", "DFL_KEY", "-q"])
    assert code == 1  # the sample's broken files fail
    capsys.readouterr()
    assert main(["info", f"{dst}.manifests", "--format", "json"]) == 0
    doc = _json(capsys)
    assert doc["kind"] == "manifest"
    assert doc["totals"]["inputs"] == len(sample.files) + len(sample.broken)
    assert doc["totals"]["failed"] == len(sample.broken)
    failed = [r for r in doc["outcomes"] if r["status"] == "failed"]
    assert sum(r["inputs"] for r in failed) == len(sample.broken)


def test_info_of_a_lake(corpus, tmp_path, capsys) -> None:
    from dicomflow.dicom import split_part10
    from dicomflow.network import Lake

    files = sorted((corpus / "series" / "dcm_qa_ct_ge").glob("*.dcm"))[:5]
    with Lake(tmp_path / "lake") as lake:
        for path in files:
            sop_class, sop, ts, body = split_part10(path.read_bytes())
            lake.receive(sop_class=sop_class, sop_instance=sop, transfer_syntax=ts,
                         dataset=body, calling_ae="MODALITY")  # fmt: skip
    assert main(["info", str(tmp_path / "lake"), "--format", "json"]) == 0
    doc = _json(capsys)
    assert doc["kind"] == "lake" and doc["totals"]["instances"] == len(files)
    (row,) = doc["by_source"]
    assert (row["calling_ae"], row["instances"]) == ("MODALITY", len(files))


def test_info_of_something_else_is_a_clear_error(tmp_path, capsys) -> None:
    (tmp_path / "notes.parquet").write_text("not parquet")
    assert main(["info", str(tmp_path / "notes.parquet")]) == 2
    assert "is not a Parquet file" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing")]) == 2


def test_a_reader_that_stops_early_is_no_error(sample, tmp_path) -> None:
    """`dicomflow info CATALOG | head -1`: the reader closed the pipe; it printed "error:
    [Errno 32] Broken pipe" with exit 2. Now quiet, with the shell's code for it (141)."""
    import subprocess
    import sys

    out = tmp_path / "catalog.parquet"
    assert main(["scan", str(sample.root), "-o", str(out), "-q", "--workers", "1"]) == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomflow", "info", str(out), "--format", "csv"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the child has written anything: its first write fails
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Broken pipe" not in err and "Traceback" not in err, err


def test_info_of_a_folder_that_holds_no_catalog_is_a_clear_error(tmp_path, capsys) -> None:
    """A folder of other files, or an empty one, raised pyarrow's and polars' errors."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hi")
    (tmp_path / "empty").mkdir()
    assert main(["info", str(tmp_path / "notes")]) == 2
    assert "is not a catalog folder" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "empty")]) == 2
    assert "holds no catalog, lake or manifest" in capsys.readouterr().err
