"""The Deidentify stage: secrets, configs, counts, File Meta, failures, lookup and crosswalk."""

from __future__ import annotations

import io
import pickle

import pydicom
import pytest

import dicomflow as dfl
from dicomflow.anonymize import (
    DeidentificationError,
    Deidentify,
    DeidOptions,
    check_apart,
    explain,
    merge_crosswalk,
    output_root_above,
    read_crosswalk,
)
from dicomflow.dicom import encode_part10
from dicomflow.errors import ConfigError
from dicomflow.pipeline import Instance, build_stage

from .conftest import OTHER_SECRET, SECRET


def _instance(path) -> Instance:
    return Instance(str(path))


def test_secret_sources_and_hidden(secret_file, monkeypatch) -> None:
    from_file = Deidentify(secret_file=secret_file)
    monkeypatch.setenv("DFL_TEST_SECRET", SECRET.decode())
    from_env = Deidentify(secret_env="DFL_TEST_SECRET")
    direct = Deidentify(secret=SECRET)
    assert from_file.fingerprint == from_env.fingerprint == direct.fingerprint
    for stage in (from_file, from_env, direct):
        text = repr(stage) + str(stage.config())
        assert SECRET.decode() not in text and "secret=<hidden>" in repr(stage)
    with pytest.raises(ConfigError, match="exactly one"):
        Deidentify()
    with pytest.raises(ConfigError, match="exactly one"):
        Deidentify(secret=SECRET, secret_env="DFL_TEST_SECRET")
    with pytest.raises(ConfigError, match="not set"):
        Deidentify(secret_env="DFL_TEST_SECRET_UNSET")
    with pytest.raises(ConfigError, match="16 bytes"):
        Deidentify(secret=b"short")


def test_config_hash_follows_the_secret_and_options(tmp_path) -> None:
    def config_hash(stage: Deidentify) -> str:
        return dfl.pipeline(str(tmp_path)).__or__(stage).config_hash()

    same = config_hash(Deidentify(secret=SECRET))
    assert same == config_hash(Deidentify(secret=SECRET))
    assert same != config_hash(Deidentify(secret=OTHER_SECRET))
    assert same != config_hash(Deidentify(secret=SECRET, options=["retain-uids"]))
    assert same != config_hash(Deidentify(secret=SECRET, date_shift_days=(-10, 10)))


def test_from_config_round_trip(secret_file) -> None:
    stage = Deidentify(secret_file=secret_file, options=["retain-safe-private", "clean-graphics"])
    config = stage.config()
    assert config["secret_file"] == str(secret_file) and "secret" not in config
    again = Deidentify.from_config(config)
    assert again.config() == config and again.options == stage.options
    assert build_stage(config).fingerprint == stage.fingerprint  # the registry's way
    with pytest.raises(ConfigError, match="must not hold the secret"):
        Deidentify.from_config({"type": "deidentify", "secret": "x" * 32})
    with pytest.raises(ConfigError, match="differs"):
        Deidentify.from_config(config | {"secret_fingerprint": "0" * 16})


def test_pickled_stage_works_the_same(sample_archive) -> None:
    stage = Deidentify(secret=SECRET, options=DeidOptions(retain_longitudinal_modified_dates=True))
    clone = pickle.loads(pickle.dumps(stage))
    path = sample_archive.files[0]
    one = encode_part10(stage(_instance(path)).dataset)
    two = encode_part10(clone(_instance(path)).dataset)
    assert one == two and SECRET not in one


def test_instance_is_deidentified_with_counts_and_meta(sample_archive) -> None:
    path = sample_archive.files[0]
    original = pydicom.dcmread(path)
    instance = Deidentify(secret=SECRET)(_instance(path))
    counts = instance.counts
    assert set(counts) == {f"deid.{c}" for c in "XZDKCU"}
    assert counts["deid.X"] > 10 and counts["deid.U"] >= 3
    data = encode_part10(instance.dataset)
    out = pydicom.dcmread(io.BytesIO(data))
    assert out.SOPInstanceUID != original.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.PatientIdentityRemoved == "YES"


def _failing_pipeline(tmp_path, stage):
    from dicomflow.sample import make_sample

    sample = make_sample(tmp_path / "in")
    burned = sample.files[0]
    ds = pydicom.dcmread(burned)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(burned)
    run = (dfl.pipeline(str(sample.files[0].parent)) | stage).write(
        dfl.writers.Part10Folder(str(tmp_path / "out"))
    )
    return run.execute(workers=1, manifest=str(tmp_path / "manifests"))


def test_failure_is_a_manifest_row_and_nothing_is_written(tmp_path) -> None:
    report = _failing_pipeline(tmp_path, Deidentify(secret=SECRET))
    failed = [r for r in report.manifest.to_pylist() if r["status"] == "failed"]
    assert len(failed) >= 1
    row = next(r for r in failed if r["source_uri"].endswith("IM00001.dcm"))
    assert row["stage"] == "deidentify" and "Burned In Annotation is YES" in row["reason"]
    assert DeidentificationError.__name__ in row["reason"] and not row["outputs"]
    assert report.done == report.manifest.num_rows - len(failed)


def test_lookup_table_overrides_the_pseudonym(tmp_path, sample_archive) -> None:
    path = sample_archive.files[0]
    original = pydicom.dcmread(path)
    table = tmp_path / "subjects.csv"
    table.write_text(f"PatientID,subject\n{original.PatientID},SUBJ-0001\n")
    stage = Deidentify(secret=SECRET, lookup=str(table))
    assert stage.config()["lookup"] == str(table) and "lookup_fingerprint" in stage.config()
    assert original.PatientID not in str(stage.config())
    out = stage(_instance(path)).dataset
    assert out.PatientID == "SUBJ-0001"


def test_crosswalk_parts_merge_apart_from_the_output(tmp_path, sample_archive) -> None:
    crosswalk = tmp_path / "private" / "crosswalk.parquet"
    stage = Deidentify(secret=SECRET, crosswalk=str(crosswalk))
    paths = sample_archive.files[:3]
    for path in paths:
        stage(_instance(path))
        stage(_instance(path))  # a rerun rewrites the same part
    assert len(list((tmp_path / "private" / "crosswalk.parquet.parts").iterdir())) == 3
    pending = read_crosswalk(crosswalk)
    assert stage.merge_crosswalk() == pending.num_rows == merge_crosswalk(crosswalk)
    table = read_crosswalk(crosswalk).to_pylist()
    original = pydicom.dcmread(paths[0])
    out = Deidentify(secret=SECRET)(_instance(paths[0])).dataset
    assert {"keyword": "PatientID", "original": original.PatientID,
            "replacement": out.PatientID} in table  # fmt: skip
    assert any(r["keyword"] == "UID" and r["original"] == original.SOPInstanceUID for r in table)
    assert not (tmp_path / "private" / "crosswalk.parquet.parts").exists()


def test_crosswalk_inside_an_output_is_refused(tmp_path, sample_archive) -> None:
    share = tmp_path / "share"
    (share / ".dicomflow" / "manifests").mkdir(parents=True)
    with pytest.raises(ConfigError, match="separate, private location"):
        check_apart(share / "x" / "cw.parquet", share)
    check_apart(tmp_path / "private" / "cw.parquet", share)
    assert output_root_above(share / "x" / "cw.parquet") == str(share)
    stage = Deidentify(secret=SECRET, crosswalk=str(share / "cw.parquet"))
    with pytest.raises(ConfigError, match="looks like a dicomflow output"):
        stage(_instance(sample_archive.files[0]))


def test_explain_matches_what_the_engine_does(sample_archive) -> None:
    ds = pydicom.dcmread(sample_archive.files[0])
    rows = {r.attribute: r for r in explain(ds)}
    assert rows["(0010,0010) PatientName"].meaning == "pseudonym"
    assert rows["(0010,4000) PatientComments"].action == "X"
    assert "Table E.1-1" in rows["(0008,0018) SOPInstanceUID"].reason
    assert rows["(0008,0018) SOPInstanceUID"].action == "U"
    assert any(r.attribute.startswith("(0011,") and r.action == "X" for r in rows.values())
    out, _ = Deidentify(secret=SECRET).engine.deidentify(ds)
    for attribute, row in rows.items():
        if ">" in attribute or "private" in attribute:
            continue
        tag = int(attribute[1:5] + attribute[6:10], 16)
        assert (tag in out) == (row.action != "X"), attribute
