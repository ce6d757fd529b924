"""``dicomflow scan`` as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from dicomflow.cli import main


def test_scan_writes_parquet_and_reports(tmp_path: Path, corpus: Path, capsys) -> None:
    out = tmp_path / "catalog.parquet"
    code = main(["scan", str(corpus / "charsets"), str(corpus / "broken"), "-o", str(out)])
    assert code == 0
    table = pq.read_table(out)
    n = sum(1 for f in ("charsets", "broken") for p in (corpus / f).rglob("*") if p.is_file())
    assert table.num_rows == n
    err = capsys.readouterr().err
    assert f"{n:,} files" in err and "errors" in err and "files/s" in err


def test_scan_columns_and_header(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "c.parquet"
    src = str(corpus / "transfer-syntax" / "explicit-vr-le")
    assert main(["scan", src, "-o", str(out), "--columns", "PatientID,(0018,0050)", "--header",
                 "json", "--workers", "1"]) == 0  # fmt: skip
    table = pq.read_table(out)
    assert {"PatientID", "SliceThickness", "header"} <= set(table.column_names)
    assert "Modality" not in table.column_names
    assert all(h.startswith("{") for h in table["header"].to_pylist() if h)


def test_bad_arguments_exit_non_zero_with_a_message(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "dicomflow.cli", "scan"]
    missing = subprocess.run(
        [*run, str(tmp_path / "nope"), "-o", str(tmp_path / "x.parquet")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and "no such file" in missing.stderr
    assert not (tmp_path / "x.parquet").exists()
    bad_column = subprocess.run(
        [*run, str(tmp_path), "-o", str(tmp_path / "x.parquet"), "--columns", "NotAKeyword"],
        capture_output=True,
        text=True,
    )
    assert bad_column.returncode != 0 and "unknown column 'NotAKeyword'" in bad_column.stderr
    no_output = subprocess.run([*run, str(tmp_path)], capture_output=True, text=True)
    assert no_output.returncode == 2 and "-o" in no_output.stderr
