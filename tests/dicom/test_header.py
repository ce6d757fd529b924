"""The header parser against PS3.5: element lengths of every VR, as pydicom and DCMTK read them."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

import dicomflow as dfl
from dicomflow.dicom import parse_header

#: PS3.5 Table 7.1-1: explicit VRs whose header has 2 reserved bytes and a 4-byte length.
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def _file(syntax: str, extra: dict[int, tuple[str, object]]) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.PatientID = "P1"
    for tag, (vr, value) in extra.items():
        ds.add_new(tag, vr, value)
    ds.SeriesDescription = "after the 64-bit values"  # (0008,103E) sorts after (0008,0xxx)
    ds.StudyID = "S9"  # (0020,0010): far after the tags above
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, "1.2.3.4"
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize("vr", ["SV", "UV"])
def test_64_bit_integers_have_a_4_byte_length(tmp_path: Path, syntax: str, vr: str) -> None:
    """SV and UV (added in 2019) are read with a 4-byte length: the values after them survive."""
    value = [-(2**40), 7] if vr == "SV" else [2**40, 7]
    data = _file(syntax, {0x00080003: (vr, value)})  # a private-free, dictionary-free tag
    header = parse_header(data, True)
    assert header.elements[0x00080003][2] == 16  # two 8-byte values
    path = tmp_path / "sv.dcm"
    path.write_bytes(data)
    cat = dfl.scan(str(path), columns=["SeriesDescription", "StudyID"], workers=1)
    row = cat.to_arrow().to_pylist()[0]
    assert row["error"] is None
    ds = pydicom.dcmread(path)
    assert row["SeriesDescription"] == ds.SeriesDescription == "after the 64-bit values"
    assert row["StudyID"] == ds.StudyID == "S9"


def test_the_parser_knows_the_length_form_of_every_vr() -> None:
    from dicomflow.dicom import ALL_VRS
    from dicomflow.dicom import LONG_VRS as PARSER_LONG

    assert {v.decode() for v in PARSER_LONG} == LONG_VRS
    assert {v.decode() for v in ALL_VRS} >= LONG_VRS


def _body(implicit: bool, **values: str) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, implicit
    write_dataset(out, ds)
    return out.getvalue()


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("n", range(4))
def test_objects_only_pydicom_reads_become_rows_with_values(
    tmp_path: Path, implicit: bool, n: int
) -> None:
    """'DICM' then a dataset with no File Meta: the fast parser refuses, pydicom reads it."""
    from dicomflow.dicom import Unsupported

    values = {
        "SOPInstanceUID": f"1.2.3.{n}",
        "Modality": ["OT", "CT", "MR", "US"][n],
        "PatientID": f"PID{n:03d}",
        "StudyID": f"S{n}",
        "SeriesNumber": str(n + 1),
    }
    data = b"\0" * 128 + b"DICM" + _body(implicit, **values)
    with pytest.raises(Unsupported):
        parse_header(data, True)
    path = tmp_path / f"odd{n}.dcm"
    path.write_bytes(data)
    columns = ["Modality", "PatientID", "StudyID", "SeriesNumber"]
    row = dfl.scan(str(path), columns=columns, workers=1).to_arrow().to_pylist()[0]
    ds = pydicom.dcmread(path, force=True)
    assert row["error"] is None, row["error"]
    assert row["sop_instance_uid"] == ds.SOPInstanceUID == values["SOPInstanceUID"]
    assert [row[c] for c in columns[:3]] == [ds.Modality, ds.PatientID, ds.StudyID]
    assert row["SeriesNumber"] == int(ds.SeriesNumber) == n + 1


def _nested(depth: int) -> bytes:
    """Explicit VR LE: ``depth`` undefined-length sequences, one item each, inside each other."""
    import struct

    open_ = struct.pack("<HH2sHL", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)  # Content Sequence
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    seq_end = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return (open_ + item) * depth + (item_end + seq_end) * depth


@pytest.mark.parametrize("depth", [60, 5000])
def test_nesting_depth_is_bounded_with_a_clear_message(tmp_path: Path, depth: int) -> None:
    from dicomflow.dicom import MAX_NESTING

    data = _file(ExplicitVRLittleEndian, {}) + _nested(depth)  # (0040,A730): after the rest
    path = tmp_path / "deep.dcm"
    path.write_bytes(data)
    row = dfl.scan(str(path), columns=["PatientID"], workers=1).to_arrow().to_pylist()[0]
    if depth <= MAX_NESTING:
        assert row["error"] is None and row["PatientID"] == "P1"
    else:
        assert row["error"] is not None and "unexpected" not in row["error"]
        assert f"nested more than {MAX_NESTING} levels deep" in row["error"]
