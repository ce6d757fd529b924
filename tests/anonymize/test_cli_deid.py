"""``dicomflow deid`` and ``dicomflow verify-deid`` as a user runs them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

import dicomflow as dfl
from dicomflow.anonymize import Deidentify, read_crosswalk
from dicomflow.cli import main

from .conftest import SECRET


def _copy_two_series(sample, dest: Path) -> Path:
    """Two series of two patients (one Latin-1 name), to keep the runs short."""
    for folder in ("PAT001/STU002/SER001", "PAT002/STU001/SER001"):
        shutil.copytree(sample.root / folder, dest / folder)
    return dest


def reinsert_name(instance: dfl.Instance) -> dfl.Instance:
    """A careless map stage: puts the original Patient's Name back after de-identification."""
    instance.dataset.PatientName = pydicom.dcmread(instance.uri).PatientName
    return instance


def test_deid_then_verify(tmp_path, sample_archive, secret_file, capsys) -> None:
    src = _copy_two_series(sample_archive, tmp_path / "export")
    dst, crosswalk = tmp_path / "share", tmp_path / "private" / "crosswalk.parquet"
    args = [
        "deid",
        str(src),
        str(dst),
        "--secret-file",
        str(secret_file),
        "--workers",
        "1",
        "--option",
        "retain-patient-characteristics",
        "--crosswalk",
        str(crosswalk),
        "-q",
    ]
    rc = main(args)  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "0 failed" in err and "actions (all instances):" in err and "crosswalk:" in err
    assert (tmp_path / "share.manifests").is_dir() and not (dst / ".dicomflow").exists()
    pairs = read_crosswalk(crosswalk).to_pylist()
    assert {r["keyword"] for r in pairs} >= {"PatientID", "PatientName", "UID"}
    assert main(["verify-deid", str(src), str(dst)]) == 0
    assert "no identifying value found" in capsys.readouterr().err
    # a rerun resumes: nothing is done twice
    assert main(args) == 0
    assert "36 done (36 from earlier runs)" in capsys.readouterr().err
    # without the manifest, the secret pairs outputs with originals by their keyed UIDs
    shutil.rmtree(tmp_path / "share.manifests")
    assert main(["verify-deid", str(src), str(dst), "--secret-file", str(secret_file)]) == 0
    assert "paired by keyed UID" in capsys.readouterr().err


def test_leaky_pipeline_is_caught(tmp_path, sample_archive, capsys) -> None:
    src = _copy_two_series(sample_archive, tmp_path / "export")
    job = (dfl.pipeline(str(src)) | Deidentify(secret=SECRET) | dfl.map(reinsert_name)).write(
        dfl.writers.Part10Folder(str(tmp_path / "share"))
    )
    assert job.execute(workers=1, manifest=str(tmp_path / "share.manifests")).failed == 0
    assert main(["verify-deid", str(src), str(tmp_path / "share")]) == 1
    out = capsys.readouterr()
    assert "PatientName" in out.out and "LEAKS" in out.err


def test_manifest_inside_the_share_is_reported(tmp_path, sample_archive, capsys) -> None:
    src = _copy_two_series(sample_archive, tmp_path / "export")
    job = (dfl.pipeline(str(src)) | Deidentify(secret=SECRET)).write(
        dfl.writers.Part10Folder(str(tmp_path / "share"))
    )
    job.execute(workers=1)  # the default manifest folder is beside the share: nothing leaks
    assert (tmp_path / "share.manifests").is_dir()
    assert main(["verify-deid", str(src), str(tmp_path / "share")]) == 0
    capsys.readouterr()
    inside = tmp_path / "share2"
    job = (dfl.pipeline(str(src)) | Deidentify(secret=SECRET)).write(
        dfl.writers.Part10Folder(str(inside))
    )
    job.execute(workers=1, manifest=inside / ".dicomflow" / "manifests")  # put in the share
    assert main(["verify-deid", str(src), str(inside)]) == 1
    assert "original file paths and SOP Instance UIDs" in capsys.readouterr().out


def test_crosswalk_inside_the_output_is_refused(tmp_path, sample_archive, secret_file, capsys):
    src = _copy_two_series(sample_archive, tmp_path / "export")
    dst = tmp_path / "share"
    rc = main(["deid", str(src), str(dst), "--secret-file", str(secret_file),
               "--crosswalk", str(dst / "crosswalk.parquet"), "-q"])  # fmt: skip
    assert rc == 2 and "private location" in capsys.readouterr().err
    assert not dst.exists()


def test_dry_run_lists_actions_and_writes_nothing(tmp_path, sample_archive, secret_file, capsys):
    src = _copy_two_series(sample_archive, tmp_path / "export")
    rc = main(["deid", str(src), str(tmp_path / "share"), "--secret-file", str(secret_file),
               "--dry-run", "--workers", "1", "-q"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and not (tmp_path / "share").exists()
    assert "attribute" in out and "reason" in out
    assert "(0010,0010) PatientName" in out and "pseudonym" in out
    assert "(0010,4000) PatientComments" in out and "X remove" in out


@pytest.mark.parametrize("mediaset", [False, True], ids=["folder", "mediaset"])
def test_outputs_carry_no_original_path_component(tmp_path, sample_archive, secret_file, mediaset):
    src = _copy_two_series(sample_archive, tmp_path / "export")
    dst = tmp_path / "share"
    extra = ["--mediaset"] if mediaset else []
    args = ["deid", str(src), str(dst), "--secret-file", str(secret_file), "--workers", "1"]
    assert main([*args, *extra, "-q"]) == 0
    names = [p.relative_to(dst).as_posix() for p in dst.rglob("*")]
    assert names and ("DICOMDIR" in names) == mediaset
    planted = [v for v in sample_archive.planted.values() if len(v) >= 4]
    for name in names:
        assert not any(value.casefold() in name.casefold() for value in planted), name
        assert "PAT001" not in name and "DF00" not in name
    assert main(["verify-deid", str(src), str(dst)]) == 0


@pytest.mark.parametrize("where", ["same", "inside", "holds"])
def test_deid_refuses_an_output_that_overlaps_the_source(
    tmp_path, sample_archive, secret_file, capsys, where
) -> None:
    """`deid SRC SRC` wrote into the source; `deid SRC SRC/share` de-identified its outputs."""
    src = _copy_two_series(sample_archive, tmp_path / "export")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    dst = {"same": src, "inside": src / "share", "holds": tmp_path}[where]
    verb = {"same": "is", "inside": "is inside", "holds": "holds"}[where]
    code = main(["deid", str(src), str(dst), "--secret-file", str(secret_file), "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"output {dst} {verb} the source {src}" in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
