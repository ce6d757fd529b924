"""Exit codes that tell the truth (README, "Exit codes"): 0 all done, 1 some input failed (or
nothing was readable), 2 usage or configuration error, 3 stopped early; every failure list ends
with "and N more, see ..." when it is cut."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dicomflow.cli import main
from dicomflow.commands.run import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, EXIT_USAGE, SHOWN


def _mixed(corpus: Path, dest: Path, broken: int) -> Path:
    """Two readable corpus images and ``broken`` unreadable ``.dcm`` files (the first ones
    truncated corpus files, the rest not DICOM at all)."""
    dest.mkdir(parents=True)
    for name in ("modality/CT/highdicom_ct_image.dcm", "modality/MR/tcia_acrin-flt-breast_3.dcm"):
        shutil.copy(corpus / name, dest / Path(name).name)
    truncated = ("fo-dicom_GH179A.dcm", "fo-dicom_GH179B.dcm", "rtplan_truncated.dcm")
    for i in range(broken):
        target = dest / f"cut{i:02d}.dcm"
        if i < len(truncated):
            shutil.copy(corpus / "broken" / truncated[i], target)
        else:
            target.write_text(f"exported report {i}\n" * 40)
    return dest


def test_deid_exits_1_when_inputs_failed(corpus: Path, tmp_path: Path, monkeypatch, capsys):
    src = _mixed(corpus, tmp_path / "src", broken=SHOWN + 3)
    monkeypatch.setenv("DFL_TEST_SECRET", "a secret of the project, 32 bytes")
    args = ["deid", str(src), str(tmp_path / "share"), "--secret-env", "DFL_TEST_SECRET",
            "--workers", "1", "-q"]  # fmt: skip
    assert main(args) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "2 done" in err and f"{SHOWN + 3} failed" in err
    assert err.count("  failed ") == SHOWN  # the first five, then where the rest are
    assert f"... and 3 more, see the manifest: {tmp_path / 'share.manifests'}" in err
    assert len(list((tmp_path / "share").rglob("*.dcm"))) == 2
    # the rerun resumes the two done and fails the same eight again: still not 0
    assert main(args) == EXIT_FAILED
    assert "2 done (2 from earlier runs)" in capsys.readouterr().err


def test_deid_of_only_readable_files_exits_0(corpus: Path, tmp_path: Path, monkeypatch):
    src = _mixed(corpus, tmp_path / "src", broken=0)
    monkeypatch.setenv("DFL_TEST_SECRET", "a secret of the project, 32 bytes")
    assert main(["deid", str(src), str(tmp_path / "share"), "--secret-env", "DFL_TEST_SECRET",
                 "--workers", "1", "-q"]) == EXIT_OK  # fmt: skip


def test_scan_max_errors_stops_and_writes_nothing(corpus: Path, tmp_path: Path, capsys):
    src = _mixed(corpus, tmp_path / "src", broken=4)
    out = tmp_path / "cat.parquet"
    args = ["scan", str(src), "-o", str(out), "--workers", "1", "-q", "--batch-size", "1"]
    assert main([*args, "--max-errors", "2"]) == EXIT_STOPPED
    assert "more than --max-errors 2; nothing written" in capsys.readouterr().err
    assert not out.exists()
    # within the limit (and with no limit) the error rows are data: the catalog is written, 0
    assert main([*args, "--max-errors", "4"]) == EXIT_OK
    assert pq.read_table(out).num_rows == 6
    capsys.readouterr()
    assert main(args) == EXIT_OK
    err = capsys.readouterr().err
    assert "4 errors" in err and err.count(f"{src / 'cut0'}") == 4


def test_scan_exits_1_when_nothing_is_readable(tmp_path: Path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("a README, no DICOM\n" * 10)
    out = tmp_path / "cat.parquet"
    assert main(["scan", str(tmp_path / "src"), "-o", str(out), "-q"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "no readable DICOM instance" in err and "notes.txt: not a DICOM file" in err
    assert pq.read_table(out).num_rows == 1  # the error row is still written


def test_scan_failure_list_is_cut_with_a_pointer(corpus: Path, tmp_path: Path, capsys):
    src = _mixed(corpus, tmp_path / "src", broken=SHOWN + 2)
    out = tmp_path / "cat.parquet"
    assert main(["scan", str(src), "-o", str(out), "-q"]) == EXIT_OK
    assert f"... and 2 more, see the error column of {out}" in capsys.readouterr().err


def test_export_exits_1_for_an_image_it_could_not_read(corpus: Path, tmp_path: Path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(corpus / "modality/CT/highdicom_ct_image.dcm", src)
    shutil.copy(corpus / "broken/MR_truncated.dcm", src)  # Pixel Data shorter than declared
    shutil.copy(corpus / "modality/SR/test-SR.dcm", src)  # no image: not a failure
    (src / "README.txt").write_text("not DICOM\n" * 20)  # not DICOM: not a failure either
    assert main(["export", str(src), str(tmp_path / "png"), "--format", "png"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "1 image row(s) not readable" in err and "MR_truncated.dcm" in err
    skipped = pq.read_table(tmp_path / "png" / "export-skipped.parquet").to_pylist()
    assert {Path(r["uri"]).name for r in skipped} == {"MR_truncated.dcm", "test-SR.dcm",
                                                      "README.txt"}  # fmt: skip
    (src / "MR_truncated.dcm").unlink()
    assert main(["export", str(src), str(tmp_path / "png2"), "--format", "png"]) == EXIT_OK


@pytest.mark.parametrize(
    "argv",
    [
        ["scan", "no-such-folder-anywhere", "-o", "x.parquet"],
        ["scan", ".", "-o", "x.parquet", "--max-errors", "-1"],
        ["deid", "a", "b", "--secret-env", "DFL_NO_SUCH_VARIABLE_SET"],
    ],
)
def test_usage_and_configuration_errors_exit_2(argv: list[str], tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == EXIT_USAGE
    assert "error:" in capsys.readouterr().err
