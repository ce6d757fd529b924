"""DICOMDIR media sets: the MediaSet sink, build_dicomdir and read_mediaset, checked by DCMTK
(dcmdump, dcmgpdir) and dicom3tools (dciodvfy, dcdirdmp) on corpus series and the sample."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pydicom
import pytest

import dicomflow as dfl
from dicomflow import read_mediaset
from dicomflow.dicom import FIXED_SCHEMA, CollisionError
from dicomflow.errors import InvalidDicomError, MediaSetError, SourceNotFoundError
from dicomflow.pipeline import Instance
from dicomflow.sample import make_sample
from dicomflow.writers import FILE_ID_COMPONENT, MediaSet, build_dicomdir, write_mediaset

#: one file per kind of directory record, plus images in several transfer syntaxes
MODALITY_FILES = (
    "modality/CT/highdicom_ct_image.dcm",
    "modality/DX/highdicom_dx_image.dcm",
    "modality/MR/tcia_acrin-flt-breast_3.dcm",
    "modality/PT/tcia_acrin-flt-breast_1.dcm",
    "modality/XA/fo-dicom_HasFragmentSequence.dcm",
    "modality/XC/fo-dicom_JPEGwithIcon.dcm",
    "modality/RTIMAGE/fo-dicom_RI6XDosiGap.dcm",
    "modality/SEG/highdicom_seg_image_ct_binary.dcm",
    "modality/PMAP/parametric_map_float.dcm",
    "modality/SR/highdicom_sr_document.dcm",
    "modality/SR/test-SR.dcm",
    "modality/ECG/waveform_ecg.dcm",
    "modality/RTDOSE/rtdose.dcm",
    "modality/RTPLAN/rtplan.dcm",
    "modality/RTSTRUCT/rtstruct.dcm",
    "modality/PALETTE/hotiron.dcm",
    "charsets/chrJapMulti.dcm",
    "charsets/chrX1.dcm",
    "charsets/chrGreek.dcm",
)
VARIANTS = ("DICOMDIR-bigEnd", "DICOMDIR-implicit", "DICOMDIR-nooffset", "DICOMDIR-nopatient")

# dciodvfy warnings that come from the instances' own values, copied verbatim into the
# directory keys as PS3.3 F.5 requires, or from dciodvfy itself; anything else fails the test.
ALLOWED_DCIODVFY_WARNINGS = (
    # a Patient's Name without '^' (e.g. "Anonymous", non-Latin single-component names)
    re.compile(r"Retired Person Name form"),
    # the SR corpus file's Concept Name Code Sequence uses coding scheme "TEST"
    re.compile(r"Unrecognized defined term <TEST> .*Coding Scheme Designator"),
    # this dciodvfy (2022 snapshot) has no PALETTE record definition, so it calls the PALETTE
    # keys of PS3.3 F.5 (Content Label, Content Description) non-standard, and then the whole
    # directory a "Standard Extended SOP Class"
    re.compile(r"not present in standard DICOM IOD - \(0x0070,0x008[01]\)"),
    re.compile(r"this is a Standard Extended SOP Class"),
)


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="replace",  # names in other character sets are dumped as raw bytes
        timeout=120,
    )


def _leaves(dicomdir: Path) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """SOP Instance UID -> (record type, File ID, (Patient ID, Study UID, Series UID))."""
    ds = pydicom.dcmread(dicomdir)
    out = {}
    table = read_mediaset(dicomdir, columns=[])
    for row in table.to_pylist():
        uid = row["dir_ReferencedSOPInstanceUIDInFile"]
        ids = (row["dir_PatientID"], row["dir_StudyInstanceUID"], row["dir_SeriesInstanceUID"])
        out[uid] = (row["dir_record_type"], row["dir_referenced_file"], ids)
    assert (
        len(out)
        == table.num_rows
        == len([r for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r])
    )
    return out


@pytest.fixture(scope="module")
def sources(corpus: Path) -> list[Path]:
    ct = sorted((corpus / "series" / "dcm_qa_ct_ge").glob("*.dcm"))
    assert len(ct) == 28
    return ct + [corpus / name for name in MODALITY_FILES]


@pytest.fixture(scope="module")
def mediaset(sources: Sequence[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mediaset")
    write_mediaset(sources, root)
    return root


@pytest.fixture(scope="module")
def sample_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    info = make_sample(tmp_path_factory.mktemp("sample"))
    root = tmp_path_factory.mktemp("sample-mediaset")
    write_mediaset(info.files, root, fileset_id="SAMPLE")
    return root, list(info.files)


def _written(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "DICOMDIR")


def test_every_file_id_component_is_conformant(mediaset: Path, sources: Sequence[Path]) -> None:
    files = _written(mediaset)
    assert len(files) == len(sources)
    for path in files:
        parts = path.relative_to(mediaset).parts
        assert len(parts) <= 8
        assert all(FILE_ID_COMPONENT.match(p) for p in parts), parts
    ds = pydicom.dcmread(mediaset / "DICOMDIR")
    referenced = [r.ReferencedFileID for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r]
    assert len(referenced) == len(sources)
    for value in referenced:
        assert all(re.fullmatch(r"[A-Z0-9_]{1,8}", c) for c in value)


def test_dcmdump_parses_the_dicomdir(mediaset: Path) -> None:
    result = _run("dcmdump", mediaset / "DICOMDIR")
    assert result.returncode == 0, result.stderr
    assert "E:" not in result.stderr and "W:" not in result.stderr, result.stderr
    assert "MediaStorageDirectoryStorage" in result.stdout
    assert result.stdout.count('"Directory Record" IMAGE') >= 28


def test_offsets_point_at_the_records(mediaset: Path) -> None:
    data = (mediaset / "DICOMDIR").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    records = list(ds.DirectoryRecordSequence)
    starts = {r.seq_item_tell for r in records}
    for r in records:
        assert data[r.seq_item_tell : r.seq_item_tell + 4] == b"\xfe\xff\x00\xe0"
        for keyword in (
            "OffsetOfTheNextDirectoryRecord",
            "OffsetOfReferencedLowerLevelDirectoryEntity",
        ):
            assert r[keyword].value == 0 or r[keyword].value in starts
    first = ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity
    assert first == records[0].seq_item_tell
    # the root chain ends at the last root record
    offset, last = first, first
    by_offset = {r.seq_item_tell: r for r in records}
    while offset:
        last, offset = offset, by_offset[offset].OffsetOfTheNextDirectoryRecord
    assert last == ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity
    # dicom3tools walks the tree by those offsets and reaches every referenced file
    tree = _run("dcdirdmp", mediaset / "DICOMDIR")
    assert tree.returncode == 0, tree.stderr
    assert (tree.stdout + tree.stderr).count("->") == sum("ReferencedFileID" in r for r in records)


@pytest.mark.parametrize("which", ["corpus", "sample"])
def test_dciodvfy_reports_no_errors(which: str, mediaset: Path, sample_set: tuple) -> None:
    root = mediaset if which == "corpus" else sample_set[0]
    result = _run("dciodvfy", root / "DICOMDIR")
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert "BasicDirectory" in lines
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors, "\n".join(errors)
    warnings = [line for line in lines if line.startswith("Warning")]
    unexplained = [w for w in warnings if not any(p.search(w) for p in ALLOWED_DCIODVFY_WARNINGS)]
    assert not unexplained, "\n".join(unexplained)


def test_dcmgpdir_accepts_the_sample_strictly(sample_set: tuple, tmp_path: Path) -> None:
    """DCMTK checks every file (name, SOP Class, Type 1 keys present) without inventing any."""
    root, files = sample_set
    ids = [str(p.relative_to(root)) for p in _written(root)]
    assert len(ids) == len(files)
    result = _run(
        "dcmgpdir", "-nb", "-Nxc", "+id", root, "+D", tmp_path / "DICOMDIR", *ids, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(("E:", "F:"))]
    assert not errors, "\n".join(errors)
    # DCMTK's own DICOMDIR of the same files has the same records and grouping as ours
    assert _leaves(tmp_path / "DICOMDIR") == _leaves(root / "DICOMDIR")


def test_dcmgpdir_rebuilds_the_same_records(mediaset: Path, tmp_path: Path) -> None:
    """Some corpus files lack Type 1 keys (+I lets DCMTK invent them, as we do)."""
    ids = [str(p.relative_to(mediaset)) for p in _written(mediaset)]
    result = _run(
        "dcmgpdir", "-nb", "+I", "-Nxc", "+id", mediaset, "+D", tmp_path / "DICOMDIR", *ids
    )
    assert result.returncode == 0, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(("E:", "F:"))]
    assert not errors, "\n".join(errors)
    theirs, ours = _leaves(tmp_path / "DICOMDIR"), _leaves(mediaset / "DICOMDIR")
    assert theirs.keys() == ours.keys()
    for uid, (kind, file_id, ids_) in ours.items():
        assert theirs[uid][:2] == (kind, file_id)
        assert theirs[uid][2][1:] == ids_[1:]  # study and series; DCMTK may invent Patient IDs


def test_dcmgpdir_append_finds_every_record(sample_set: tuple, tmp_path: Path) -> None:
    """DCMTK loads our DICOMDIR and matches each file to the record that references it."""
    root, _ = sample_set
    ids = [str(p.relative_to(root)) for p in _written(root)]
    copy = tmp_path / "DICOMDIR"
    shutil.copy(root / "DICOMDIR", copy)
    result = _run("dcmgpdir", "+A", "-nb", "-Nxc", "+id", root, "+D", copy, *ids)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("directory record for this SOP instance already exists") == len(ids)
    assert not [line for line in result.stderr.splitlines() if line.startswith(("E:", "F:"))]


def test_read_back_every_instance_once(mediaset: Path, sources: Sequence[Path]) -> None:
    expected = dfl.scan([str(p) for p in sources], columns=["PatientID"]).to_arrow()
    table = read_mediaset(mediaset)
    assert table.schema.names[: len(FIXED_SCHEMA)] == FIXED_SCHEMA.names
    assert table.column("error").null_count == table.num_rows
    uids = table.column("sop_instance_uid").to_pylist()
    assert sorted(uids) == sorted(expected.column("sop_instance_uid").to_pylist())
    assert len(set(uids)) == len(uids)
    rows = table.to_pylist()
    for row in rows:
        assert row["dir_ReferencedSOPInstanceUIDInFile"] == row["sop_instance_uid"]
        assert row["dir_ReferencedSOPClassUIDInFile"] == row["sop_class_uid"]
        assert row["dir_ReferencedTransferSyntaxUIDInFile"] == row["transfer_syntax_uid"]
        if row["dir_record_type"] != "PALETTE":
            assert row["dir_StudyInstanceUID"] == row["study_instance_uid"]
            assert row["dir_SeriesInstanceUID"] == row["series_instance_uid"]
    kinds = {row["dir_record_type"] for row in rows}
    assert kinds >= {"IMAGE", "SR DOCUMENT", "WAVEFORM", "RT DOSE", "RT PLAN"}
    assert kinds >= {"RT STRUCTURE SET", "PALETTE"}
    # non-ASCII names survive the trip through the directory records and their charsets
    for row in rows:
        if row["dir_record_type"] != "PALETTE":
            assert row["dir_PatientName"] == (row["PatientName"] or None)


def test_sample_read_back(sample_set: tuple) -> None:
    root, files = sample_set
    table = read_mediaset(root / "DICOMDIR", columns=["PatientID", "Modality"])
    source = dfl.scan([str(p) for p in files], columns=["PatientID"]).to_arrow()
    assert sorted(table.column("sop_instance_uid").to_pylist()) == sorted(
        source.column("sop_instance_uid").to_pylist()
    )
    assert table.column("dir_PatientID").to_pylist() == table.column("PatientID").to_pylist()
    assert table.schema.metadata[b"dicomflow:fileset_id"] == b"SAMPLE"


def test_rerun_gives_the_same_bytes_and_appends(sources: Sequence[Path], tmp_path: Path) -> None:
    first, second = list(sources[:10]), list(sources[10:20])
    write_mediaset(first, tmp_path / "a")
    once = (tmp_path / "a" / "DICOMDIR").read_bytes()
    write_mediaset(first, tmp_path / "a")  # a rerun into the same folder
    assert (tmp_path / "a" / "DICOMDIR").read_bytes() == once
    write_mediaset(first, tmp_path / "b")  # and the same inputs elsewhere
    assert (tmp_path / "b" / "DICOMDIR").read_bytes() == once
    build_dicomdir(str(tmp_path / "a"))
    assert (tmp_path / "a" / "DICOMDIR").read_bytes() == once

    write_mediaset(second, tmp_path / "a")  # appending: earlier files stay in the directory
    table = read_mediaset(tmp_path / "a")
    assert table.num_rows == 20
    old = pydicom.dcmread(io.BytesIO(once)).file_meta.MediaStorageSOPInstanceUID
    new = pydicom.dcmread(tmp_path / "a" / "DICOMDIR").file_meta.MediaStorageSOPInstanceUID
    assert new == old  # the File-set keeps its UID as it grows
    appended = (tmp_path / "a" / "DICOMDIR").read_bytes()
    write_mediaset(second, tmp_path / "a")
    assert (tmp_path / "a" / "DICOMDIR").read_bytes() == appended
    assert not list((tmp_path / "a").glob(".*"))  # no temporary files left


def test_pipeline_with_worker_processes(sources: Sequence[Path], tmp_path: Path) -> None:
    from dicomflow.pipeline import pipeline

    root = tmp_path / "cd"
    report = pipeline(dfl.scan([str(p) for p in sources[:28]])).write(MediaSet(str(root)))
    run = report.execute(workers=2, batch_size=4)
    assert run.done == 28, run.manifest.to_pylist()
    paths = [o["path"] for row in run.manifest.column("outputs").to_pylist() for o in row]
    assert all(
        FILE_ID_COMPONENT.match(part) for p in paths for part in Path(p).relative_to(root).parts
    )
    table = read_mediaset(root)
    assert table.num_rows == 28 and table.column("error").null_count == 28
    # the run's own files (manifests) are not part of the File-set
    assert sorted(table.column("uri").to_pylist()) == sorted(paths)


def test_missing_file_is_an_error_row(mediaset: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(mediaset, root)
    gone = _written(root)[3]
    gone.unlink()
    table = read_mediaset(root)
    assert table.num_rows == len(_written(mediaset))
    rows = [r for r in table.to_pylist() if r["error"] is not None]
    assert len(rows) == 1
    assert rows[0]["error"] == f"referenced file missing: {gone}"
    assert rows[0]["uri"] == str(gone)
    assert rows[0]["sop_instance_uid"] is None
    assert rows[0]["dir_ReferencedSOPInstanceUIDInFile"]  # what is missing is still known


def test_collision_never_overwrites(corpus: Path, tmp_path: Path) -> None:
    """rtdose.dcm and rtdose_expb.dcm are one SOP Instance in two encodings."""
    dose = corpus / "modality" / "RTDOSE"
    write_mediaset([dose / "rtdose.dcm"], tmp_path)
    before = {p: p.read_bytes() for p in _written(tmp_path)}
    with pytest.raises(CollisionError):
        write_mediaset([dose / "rtdose_expb.dcm"], tmp_path)
    assert {p: p.read_bytes() for p in _written(tmp_path)} == before


def test_files_of_other_writers_are_indexed(corpus: Path, tmp_path: Path) -> None:
    """A File-set written by another tool (pydicom's TINY_ALPHA) grows and keeps its files;
    a non-DICOM file with a File ID name is left out with a warning."""
    tiny = corpus / "media" / "pydicom-dicomdirtests" / "TINY_ALPHA"
    shutil.copytree(tiny / "PT000000", tmp_path / "PT000000")
    (tmp_path / "README").write_text("a File-set descriptor, not DICOM\n")
    with pytest.warns(UserWarning, match="README is not a DICOM Part 10 file"):
        write_mediaset([corpus / "modality" / "CT" / "highdicom_ct_image.dcm"], tmp_path)
    table = read_mediaset(tmp_path, columns=[])
    assert table.num_rows == 51 and table.column("error").null_count == 51


def test_one_instance_twice_in_the_fileset_is_refused(mediaset: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(mediaset, root)
    (root / "EXTRA").mkdir()
    shutil.copy(_written(root)[0], root / "EXTRA" / "COPY")
    before = (root / "DICOMDIR").read_bytes()
    with pytest.raises(CollisionError, match="in the File-set twice"):
        build_dicomdir(str(root))
    assert (root / "DICOMDIR").read_bytes() == before


def test_instances_that_cannot_be_indexed_fail_clearly(corpus: Path, tmp_path: Path) -> None:
    sink = MediaSet(str(tmp_path))
    annotations = corpus / "modality" / "ANN" / "highdicom_sm_annotations.dcm"
    with pytest.raises(MediaSetError, match="Microscopy Bulk Simple Annotations"):
        sink.write(Instance(str(annotations)))
    no_study = corpus / "modality" / "SM" / "fo-dicom_multiframe.dcm"
    with pytest.raises(MediaSetError, match="StudyInstanceUID"):
        sink.write(Instance(str(no_study)))
    assert not _written(tmp_path)
    with pytest.raises(ValueError, match="File-set ID"):
        MediaSet(str(tmp_path), fileset_id="lower case")


def test_fsspec_memory_roundtrip(sources: Sequence[Path]) -> None:
    url = "memory://dicomflow-test-mediaset"
    write_mediaset(sources[:3], url)
    table = read_mediaset(f"{url}/DICOMDIR")
    assert table.num_rows == 3
    assert table.column("error").null_count == 3
    assert all(u.startswith("memory://") for u in table.column("uri").to_pylist())


@pytest.mark.parametrize("name", ["DICOMDIR", *VARIANTS, "DICOMDIR-reordered"])
def test_corpus_dicomdir_variants(corpus: Path, name: str) -> None:
    folder = corpus / "media" / "pydicom-dicomdirtests"
    reference = read_mediaset(folder / "DICOMDIR", columns=[])
    table = read_mediaset(folder / name, columns=[])
    assert table.num_rows == 31
    assert table.column("error").null_count == 31
    assert sorted(table.column("sop_instance_uid").to_pylist()) == sorted(
        reference.column("sop_instance_uid").to_pylist()
    )
    for row in table.to_pylist():
        assert row["dir_ReferencedSOPInstanceUIDInFile"] == row["sop_instance_uid"]
        assert row["dir_PatientID"] is not None  # parents found, even through broken offsets
        assert row["dir_record_type"] == "IMAGE"
    assert set(table.column("dir_PatientID").to_pylist()) == set(
        reference.column("dir_PatientID").to_pylist()
    )


def test_corpus_empty_and_tiny(corpus: Path) -> None:
    folder = corpus / "media" / "pydicom-dicomdirtests"
    empty = read_mediaset(folder / "DICOMDIR-empty.dcm")
    assert empty.num_rows == 0
    assert empty.schema.names[: len(FIXED_SCHEMA)] == FIXED_SCHEMA.names
    tiny = read_mediaset(folder / "TINY_ALPHA")  # a folder: its DICOMDIR
    assert tiny.num_rows == 50 and tiny.column("error").null_count == 50


def test_unreadable_dicomdirs_fail_clearly(corpus: Path, tmp_path: Path) -> None:
    folder = corpus / "media" / "pydicom-dicomdirtests"
    truncated = tmp_path / "DICOMDIR"
    truncated.write_bytes((folder / "DICOMDIR").read_bytes()[:5000])
    with pytest.raises(InvalidDicomError, match="truncated"):
        read_mediaset(truncated)
    with pytest.raises(InvalidDicomError, match="not a DICOMDIR"):
        read_mediaset(corpus / "modality" / "CT" / "highdicom_ct_image.dcm")
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM at all\n")
    with pytest.raises(InvalidDicomError):
        read_mediaset(text)
    with pytest.raises(SourceNotFoundError):
        read_mediaset(tmp_path / "nowhere" / "DICOMDIR")


def test_dir_columns_have_fixed_types(corpus: Path) -> None:
    table = read_mediaset(corpus / "media" / "pydicom-dicomdirtests" / "DICOMDIR")
    assert table.schema.field("dir_StudyDate").type == pa.date32()
    assert table.schema.field("dir_SeriesNumber").type == pa.int64()
    assert table.schema.field("dir_PatientID").type == pa.string()
