"""``dicomflow run`` and ``dicomflow export --format dicom`` as a user runs them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dicomflow.cli import main
from dicomflow.sample import make_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    make_sample(root)
    return root


def test_export_dicom_folder_and_dicomdir(sample: Path, tmp_path: Path, capsys) -> None:
    # the sample's three broken files fail: the export says so and exits 1 (EXIT_FAILED)
    assert main(["export", str(sample), str(tmp_path / "folder"), "--format", "dicom",
                 "--workers", "1"]) == 1  # fmt: skip
    assert len(list((tmp_path / "folder").rglob("*.dcm"))) == 129
    err = capsys.readouterr().err
    assert "129 done" in err and "3 failed" in err and err.count("  failed ") == 3
    assert main(["export", str(sample), str(tmp_path / "set"), "--format", "dicom", "--dicomdir",
                 "--workers", "1"]) == 1  # fmt: skip
    dicomdir = tmp_path / "set" / "DICOMDIR"
    assert subprocess.run(["dcmdump", "-q", str(dicomdir)]).returncode == 0
    manifests = list((tmp_path / "set.manifests").glob("run-*.parquet"))
    assert len(manifests) == 1 and pq.read_table(manifests[0]).num_rows == 132


def test_run_file_dry_run_then_run(sample: Path, tmp_path: Path, capsys) -> None:
    toml = tmp_path / "ct.toml"
    toml.write_text(
        f'[source]\nscan = "{sample}"\n[[stages]]\ntype = "filter"\nexpr = "Modality = \'CT\'"\n'
        f'[[sinks]]\ntype = "folder"\nroot = "{tmp_path / "out"}"\n'
    )
    assert main(["run", str(toml), "--dry-run", "--workers", "1"]) == 0
    assert not (tmp_path / "out").exists()
    assert main(["run", str(toml), "--workers", "1"]) == 1  # the 3 broken files failed
    err = capsys.readouterr().err
    assert "73 done" in err and "56 skipped" in err and "3 failed" in err


def test_bad_pipeline_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[source]\nscan = "x"\n[[stages]]\ntype = "nonsense"\n')
    assert main(["run", str(bad)]) == 2
    assert "unknown stage type 'nonsense'" in capsys.readouterr().err
