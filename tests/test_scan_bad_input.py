"""Bad input never stops a scan: every file is one row, bad ones carry a clear error."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dicomflow as dfl
from dicomflow.dicom import NeedMore, parse_header


@pytest.fixture
def good_file(corpus: Path) -> Path:
    return (
        corpus
        / "transfer-syntax"
        / "explicit-vr-le"
        / sorted(os.listdir(corpus / "transfer-syntax" / "explicit-vr-le"))[0]
    )


def test_a_folder_of_bad_files(tmp_path: Path, good_file: Path) -> None:
    data = good_file.read_bytes()
    (tmp_path / "good.dcm").write_bytes(data)
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("this is not DICOM\n" * 20)
    (tmp_path / "cut-in-header.dcm").write_bytes(data[:300])
    (tmp_path / "only-preamble.dcm").write_bytes(b"\x00" * 128 + b"DICM")
    (tmp_path / "dangling.dcm").symlink_to(tmp_path / "does-not-exist.dcm")
    (tmp_path / "random.bin").write_bytes(random.Random(0).randbytes(5000))
    cat = dfl.scan(tmp_path, workers=1)
    rows = {Path(r["uri"]).name: r for r in cat.to_arrow().to_pylist()}
    assert set(rows) == {
        "good.dcm", "empty.dcm", "notes.txt", "cut-in-header.dcm", "only-preamble.dcm",
        "dangling.dcm", "random.bin",
    }  # fmt: skip
    assert rows["good.dcm"]["error"] is None
    assert "empty file" in rows["empty.dcm"]["error"]
    assert "not a DICOM file" in rows["notes.txt"]["error"]
    assert "truncated" in rows["cut-in-header.dcm"]["error"]
    assert rows["only-preamble.dcm"]["error"]
    assert "file not found" in rows["dangling.dcm"]["error"]
    assert rows["random.bin"]["error"]
    assert cat.stats.files == 7 and cat.stats.errors == 6


def test_header_longer_than_the_first_read_is_grown(good_file: Path) -> None:
    data = good_file.read_bytes()
    with pytest.raises(NeedMore) as more:
        parse_header(data[:200], complete=False)
    assert more.value.needed > 200
    full = parse_header(data, complete=True)
    small = dfl.scan(good_file, workers=1, prefix=256).to_arrow()
    large = dfl.scan(good_file, workers=1).to_arrow()
    assert small.equals(large)
    assert small["pixel_offset"][0].as_py() == full.pixel_offset


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise(data: bytes) -> None:
    for complete in (True, False):
        try:
            parse_header(data, complete=complete)
        except (dfl.InvalidDicomError, NeedMore):
            pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_real_headers_never_raise(corpus: Path, data) -> None:
    files = sorted((corpus / "transfer-syntax").rglob("*.dcm"))
    path = data.draw(st.sampled_from(files[:40]))
    raw = bytearray(path.read_bytes()[:4096])
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        parse_header(bytes(raw[:cut]), complete=True)
    except dfl.InvalidDicomError:
        pass


def test_corrupted_files_each_give_one_row(tmp_path: Path, corpus: Path) -> None:
    rng = random.Random(7)
    sources = sorted((corpus / "transfer-syntax").rglob("*.dcm"))[:30]
    for i, src in enumerate(sources):
        raw = bytearray(src.read_bytes())
        for _ in range(20):
            raw[rng.randrange(min(len(raw), 3000))] = rng.randrange(256)
        (tmp_path / f"{i:03d}.dcm").write_bytes(bytes(raw[: rng.randrange(100, len(raw) + 1)]))
    table = dfl.scan(tmp_path, workers=2, batch_size=8).to_arrow()
    assert table.num_rows == len(sources)
    assert sorted(Path(u).name for u in table["uri"].to_pylist()) == [
        f"{i:03d}.dcm" for i in range(len(sources))
    ]


def _part10(**extra: tuple[str, object]) -> bytes:
    import io as _io

    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.PatientID = "P1"
    for keyword, (vr, value) in extra.items():
        ds.add_new(keyword, vr, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = _io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _hostile_files(folder: Path) -> dict[str, str]:
    """Files that each broke a whole batch once, and the words their error row must say."""
    import struct

    frames = _part10(NumberOfFrames=("IS", "1"), PixelData=("OB", b"\0" * 16))
    charset = _part10(SpecificCharacterSet=("CS", "ISO_IR 100"), PatientName=("PN", "Né^Zoë"))
    files = {
        "frames-inf.dcm": (frames.replace(b"IS\x02\x001 ", b"IS\x06\x001e999 "), "1e999"),
        "frames-big.dcm": (frames.replace(b"IS\x02\x001 ", b"IS\x0c\x00999999999999"), "9999"),
        "charset-nul.dcm": (charset.replace(b"ISO_IR 100", b"ISO_IR\x00100"), ""),
        "implicit-be.dcm": (
            struct.pack(">HHL", 0x0008, 0x0016, 26) + b"1.2.840.10008.5.1.4.1.1.7\0"
            + struct.pack(">HHL", 0x0010, 0x0020, 2) + b"P1",
            "implicit VR big endian",
        ),
    }  # fmt: skip
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: words for name, (_, words) in files.items()}


def test_hostile_values_fail_only_their_own_row(tmp_path: Path, good_file: Path) -> None:
    """One batch: good files around each hostile one; every file one row, the good ones clean."""
    expected = _hostile_files(tmp_path)
    for i in range(3):
        (tmp_path / f"good{i}.dcm").write_bytes(good_file.read_bytes())
    table = dfl.scan(str(tmp_path), workers=1, columns="all").to_arrow()
    rows = {Path(r["uri"]).name: r for r in table.to_pylist()}
    assert set(rows) == set(expected) | {f"good{i}.dcm" for i in range(3)}
    for i in range(3):
        assert rows[f"good{i}.dcm"]["error"] is None
    for name, words in expected.items():
        error = rows[name]["error"]
        assert (error is None) == (words == ""), (name, error)  # a NUL charset is still read
        assert error is None or (words in error and "unexpected" not in error), (name, error)
    assert rows["charset-nul.dcm"]["PatientID"] == "P1"


def test_an_injected_conversion_failure_affects_only_that_row(
    tmp_path: Path, good_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A converter that raises for one object (fault injection): that row fails, no other."""
    import dicomflow.catalog._catalog as scan_module

    real = scan_module.column_array

    def poisoned(spec, headers, encodings):  # type: ignore[no-untyped-def]
        for h in headers:
            if h is not None and spec.name == "PatientID" and b"POISON" in h.data:
                raise RuntimeError("injected failure")
        return real(spec, headers, encodings)

    monkeypatch.setattr(scan_module, "column_array", poisoned)
    for i in range(4):
        (tmp_path / f"ok{i}.dcm").write_bytes(_part10(StudyID=("SH", f"S{i}")))
    (tmp_path / "poison.dcm").write_bytes(_part10(StudyID=("SH", "POISON")))
    table = dfl.scan(str(tmp_path), workers=1, columns=["PatientID", "StudyID"]).to_arrow()
    rows = {Path(r["uri"]).name: r for r in table.to_pylist()}
    assert len(rows) == 5
    bad = rows.pop("poison.dcm")
    assert bad["error"] == "cannot convert PatientID: RuntimeError: injected failure"
    assert bad["PatientID"] is None and bad["StudyID"] == "POISON"  # its other values stay
    assert all(r["error"] is None and r["PatientID"] == "P1" for r in rows.values())
    assert sorted(r["StudyID"] for r in rows.values()) == ["S0", "S1", "S2", "S3"]
