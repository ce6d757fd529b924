"""Recipes from the command line: ``dicomflow deid --recipe/--keep/--replace/...`` and
``dicomflow deid-recipe convert|check``, as a site runs them."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest

from dicomflow.anonymize import Recipe
from dicomflow.cli import main

from .test_recipe import MR
from .test_recipe_import import CTP, CTP_UNMAPPED, DEID

SITE = """\
[recipe]
name = "site-a"
allow-identifying = ["SeriesDescription"]
keep = ["SeriesDescription", "ProtocolName"]
[recipe.replace]
InstitutionName = "SITE-A"
"""


@pytest.fixture
def export(tmp_path, corpus) -> Path:
    """Three images of one GE MR series."""
    src = tmp_path / "export"
    src.mkdir()
    for number in ("00002", "00011", "00017"):
        name = MR.replace("00002", number)
        shutil.copy(corpus / name, src / Path(name).name)
    return src


def _deid(src: Path, dst: Path, secret_file: Path, *extra: str) -> int:
    args = ["deid", str(src), str(dst), "--secret-file", str(secret_file), "--workers", "1"]
    return main([*args, "-q", *extra])


def _outputs(dst: Path) -> list[pydicom.FileDataset]:
    return [pydicom.dcmread(p) for p in sorted(dst.rglob("*.dcm"))]


def test_each_action_from_the_command_line(tmp_path, export, secret_file, capsys) -> None:
    recipe = tmp_path / "site.toml"
    recipe.write_text(SITE)
    dst = tmp_path / "share"
    rc = _deid(
        export, dst, secret_file, "--recipe", str(recipe), "--allow-identifying",
        "--replace", "StationName=ST-1", "--remove", "CodeMeaning", "--empty", "Modality",
        "--pseudonymise", "StudyID", "--shift", "StudyDate",
        "--replace", '(0019,"GEMS_ACQU_01",9C)=PSD', "--keep", '(0009,"GEMS_IDEN_01",04)',
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "kept identifying attributes (recipe): (0009,\"GEMS_IDEN_01\",04) 3, ProtocolName 3, " \
        "SeriesDescription 3" in err  # fmt: skip
    originals = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, export.iterdir())}
    outputs = _outputs(dst)
    assert len(outputs) == 3
    for out in outputs:
        original = next(iter(originals.values()))
        assert out.SeriesDescription == original.SeriesDescription  # file, allowed there
        assert out.ProtocolName == original.ProtocolName  # file, allowed by the flag
        assert out.InstitutionName == "SITE-A" and out.StationName == "ST-1"
        assert "CodeMeaning" not in out.AnatomicRegionSequence[0]
        assert out.Modality == "" and out.StudyID.startswith("H")
        assert out.StudyDate != original.StudyDate and len(out.StudyDate) == 8
        assert out[0x0019109C].value == "PSD" and out[0x00091004].value == "SIGNA"
        assert "kept identifying ProtocolName" in out.DeidentificationMethod
    manifest = next((tmp_path / "share.manifests").glob("run-*.parquet"))
    rows = pq.read_table(manifest).to_pylist()
    for row in rows:
        counts = json.loads(row["counts"])
        assert counts["deid.retained.ProtocolName"] == 1
        assert counts["deid.retained.SeriesDescription"] == 1
    config = json.loads(pq.read_schema(manifest).metadata[b"dicomflow.pipeline"])
    stage = next(s for s in config["stages"] if s["type"] == "deidentify")
    assert stage["allow_identifying"] is True
    assert [layer.get("origin") for layer in stage["recipe"]["layers"]] == [
        str(recipe), "command line",
    ]  # fmt: skip
    assert set(stage["recipe_identifying"]) == {
        "SeriesDescription", "ProtocolName", '(0009,"GEMS_IDEN_01",04)',
    }  # fmt: skip


def test_keeping_identifying_attributes_is_refused_without_the_flag(
    tmp_path, export, secret_file, capsys
) -> None:
    dst = tmp_path / "share"
    assert _deid(export, dst, secret_file, "--keep", "ProtocolName", "--keep", "Modality") == 2
    err = capsys.readouterr().err
    assert "ProtocolName (profile: X/D)" in err and "--allow-identifying" in err
    assert "Modality" not in err and not dst.exists()


def test_flags_win_over_the_recipe_file(tmp_path, export, secret_file, capsys) -> None:
    recipe = tmp_path / "site.toml"
    recipe.write_text(SITE)
    dst = tmp_path / "share"
    rc = _deid(export, dst, secret_file, "--recipe", str(recipe), "--allow-identifying",
               "--remove", "ProtocolName", "--replace", "InstitutionName=SITE-B")  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    for out in _outputs(dst):
        assert "ProtocolName" not in out and out.InstitutionName == "SITE-B"


def test_dry_run_names_the_rule(tmp_path, export, secret_file, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = Path("site.toml")
    recipe.write_text(SITE)
    rc = _deid(export, tmp_path / "share", secret_file, "--recipe", str(recipe),
               "--keep", "ProtocolName", "--allow-identifying", "--dry-run")  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("(00")}
    assert "command line: keep ProtocolName (identifying; allowed" in lines["ProtocolName"]
    assert f"{recipe}: replace InstitutionName = 'SITE-A'" in lines["InstitutionName"]
    assert not (tmp_path / "share").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[recipe]\nkeep = ['SeriesDescripton']\n", "did you mean SeriesDescription"),
        ("[recipe]\nremove = ['(0008,103G)']\n", "cannot read the target"),
        ("[recipe]\ndelete = ['SeriesDescription']\n", "unknown recipe settings \\['delete'\\]"),
    ],
)
def test_invalid_recipe_files_fail_clearly(
    tmp_path, export, secret_file, capsys, text: str, message: str
) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    assert _deid(export, tmp_path / "share", secret_file, "--recipe", str(recipe)) == 2
    err = capsys.readouterr().err
    assert str(recipe) in err
    assert __import__("re").search(message, err), err


def test_bad_flags_fail_clearly(tmp_path, export, secret_file, capsys) -> None:
    assert _deid(export, tmp_path / "a", secret_file, "--replace", "StationName") == 2
    assert "expected TARGET=VALUE" in capsys.readouterr().err
    assert _deid(export, tmp_path / "b", secret_file, "--keep", "Modality",
                 "--remove", "(0008,0060)") == 2  # fmt: skip
    assert "conflicting rules for (0008,0060)" in capsys.readouterr().err
    assert _deid(export, tmp_path / "c", secret_file, "--shift", "StudyTime") == 2
    assert "times of day do not change" in capsys.readouterr().err


def test_deid_from_a_ctp_script(tmp_path, export, secret_file, capsys) -> None:
    script = tmp_path / "site.script"
    script.write_text(CTP)
    dst = tmp_path / "share"
    rc = _deid(export, dst, secret_file, "--recipe-from-ctp", str(script), "--allow-identifying")
    assert rc == 0, capsys.readouterr().err
    originals = sorted(pydicom.dcmread(p).StudyDate for p in export.iterdir())
    assert sorted(ds.StudyDate for ds in _outputs(dst)) == ["20180819"] * len(originals)
    bad = tmp_path / "bad.script"
    bad.write_text(CTP_UNMAPPED)
    assert _deid(export, tmp_path / "other", secret_file, "--recipe-from-ctp", str(bad)) == 2
    err = capsys.readouterr().err
    assert "11 rules of the CTP DicomAnonymizer script" in err and "line 5:" in err
    assert not (tmp_path / "other").exists()


def test_convert_then_edit_then_use(tmp_path, export, secret_file, capsys) -> None:
    script = tmp_path / "site.script"
    script.write_text(CTP)
    converted = tmp_path / "site.toml"
    assert main(["deid-recipe", "convert", "--from", "ctp", str(script), "-o", str(converted)]) == 0
    assert "14 rules written" in capsys.readouterr().err
    text = converted.read_text()
    assert text.startswith("# converted by dicomflow from the CTP DicomAnonymizer script")
    assert main(["deid-recipe", "check", str(converted)]) == 2
    assert "SeriesDescription (profile: X)" in capsys.readouterr().err
    assert main(["deid-recipe", "check", str(converted), "--allow-identifying"]) == 0
    shown = capsys.readouterr().out
    assert "keep SeriesDescription" in shown and "date shift: -30 to -30 days" in shown
    assert "keeps identifying: (0018,xxxx)" in shown
    # the site acknowledges what it keeps in the file itself, then runs it
    converted.write_text(text.replace("[recipe]\n", "[recipe]\nallow-identifying = true\n"))
    assert _deid(export, tmp_path / "share", secret_file, "--recipe", str(converted)) == 0
    deid = tmp_path / "deid.dicom"
    deid.write_text(DEID)
    assert main(["deid-recipe", "convert", "--from", "deid", str(deid)]) == 0
    assert 'InstitutionName = "SITE A"' in capsys.readouterr().out


def test_convert_refuses_what_does_not_map(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.script"
    bad.write_text(CTP_UNMAPPED)
    out = tmp_path / "bad.toml"
    assert main(["deid-recipe", "convert", "--from", "ctp", str(bad), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "11 rules have no dicomflow recipe form; nothing written" in err
    assert 'line 13: <r en="T" t="unspecifiedelements">' in err and not out.exists()


def test_verify_deid_reads_the_recipes_keeps_from_the_manifest(
    tmp_path, export, secret_file, capsys
) -> None:
    """A recipe keeps SeriesDescription, which names the site: with only --manifest, verify-deid
    lists it as kept; the patient's name planted in another attribute is still a leak."""
    src = tmp_path / "named"
    src.mkdir()
    for path in sorted(export.iterdir()):
        ds = pydicom.dcmread(path)
        ds.PatientName = "DOE^JOHNATHAN"
        ds.SeriesDescription = "fMRI Riverside Memorial"
        ds.save_as(src / path.name)
    dst, manifest = tmp_path / "share", tmp_path / "runs"
    assert _deid(src, dst, secret_file, "--keep", "SeriesDescription", "--allow-identifying",
                 "--manifest", str(manifest)) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["verify-deid", str(src), str(dst), "--manifest", str(manifest), "-q"]) == 0
    out = capsys.readouterr()
    assert "kept (listed, not failing): " in out.out and "SeriesDescription" in out.out
    assert "0 findings" in out.err and "LEAKS" not in out.err
    planted = sorted(dst.rglob("*.dcm"))[0]
    ds = pydicom.dcmread(planted)
    ds.ImageComments = "for DOE JOHNATHAN"
    ds.save_as(planted)
    assert main(["verify-deid", str(src), str(dst), "--manifest", str(manifest), "-q"]) == 1
    out = capsys.readouterr()
    assert "ImageComments" in out.out.split("kept (listed")[0] and "2 findings" in out.err


def test_the_recorded_recipe_is_the_users_file_when_the_flag_sets_the_shift(
    tmp_path, export, secret_file, capsys
) -> None:
    recipe = tmp_path / "site.toml"
    recipe.write_text(SITE.replace("[recipe]\n", '[recipe]\ndate-shift-days = [-30, -30]\n'
                                   'shift = ["StudyDate"]\n', 1))  # fmt: skip
    written = Recipe.load(recipe)  # the recipe as the user wrote it, read by the public API
    assert written.date_shift_days == (-30, -30)
    dst = tmp_path / "share"
    rc = _deid(export, dst, secret_file, "--recipe", str(recipe), "--allow-identifying",
               "--date-shift-days", "-2", "-2")  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    [original] = {ds.StudyDate for ds in map(pydicom.dcmread, export.iterdir())}
    expected = (date.fromisoformat(original) - timedelta(days=2)).strftime("%Y%m%d")
    for out in _outputs(dst):
        assert out.StudyDate == expected  # the flag's range wins over the file's
        assert f"recipe site-a sha256:{written.fingerprint} (4 rules)" in out.DeidentificationMethod
    manifest = next((tmp_path / "share.manifests").glob("run-*.parquet"))
    config = json.loads(pq.read_schema(manifest).metadata[b"dicomflow.pipeline"])
    stage = next(s for s in config["stages"] if s["type"] == "deidentify")
    assert Recipe.from_config(stage["recipe"]).fingerprint == written.fingerprint
    assert stage["date_shift_days"] == [-2, -2]
