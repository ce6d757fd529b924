"""The header parser against PS3.5: element lengths of every VR, as pydicom and DCMTK read them."""

from __future__ import annotations

import io
import struct
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


def _deflated_file(*pieces: bytes) -> bytes:
    """Part 10, Deflated Explicit VR LE, its data set the ``pieces`` (long runs of zeros
    compress to almost nothing)."""
    import zlib

    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta)
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return out.getvalue() + b"".join(z.compress(p) for p in pieces) + z.flush()


_ZEROS = b"\0" * 2**24


def _ob(elem: int, length: int) -> bytes:
    return struct.pack("<HH2sHL", 0x0011, elem, b"OB", 0, length)


_BOMBS = {
    # one element declaring 2 GiB, then 1 GiB of zeros: refused without inflating it
    "one long value": [_ob(0x0010, 2**31)] + [_ZEROS] * 64,
    # 1 GiB in 16 MiB values that each fit: inflated up to the bound, then refused
    "many values": [p for i in range(64) for p in (_ob(0x1000 + i, len(_ZEROS)), _ZEROS)],
    # a stray delimiter (the fast walk hands such data sets to pydicom, which would inflate
    # the whole stream) before 1 GiB of zeros
    "a stray delimiter": [struct.pack("<HHL", 0xFFFE, 0xE00D, 0)] + [_ZEROS] * 64,
}


@pytest.mark.parametrize("bomb", list(_BOMBS))
def test_a_deflate_bomb_is_refused_within_bounded_memory(tmp_path: Path, bomb: str) -> None:
    """1 MB that inflates to 1 GiB: an error row, and the scanning process stays small."""
    import json
    import subprocess
    import sys

    from dicomflow.dicom import MAX_INFLATED

    path = tmp_path / "bomb.dcm"
    path.write_bytes(_deflated_file(*_BOMBS[bomb]))
    assert path.stat().st_size < 2**21
    script = (
        "import dicomflow as dfl, json, sys\n"
        "from dicomflow.runtime import peak_rss\n"
        "t = dfl.scan(sys.argv[1], workers=1).to_arrow()\n"
        "rss = peak_rss()\n"
        "print(json.dumps([t.column('error')[0].as_py(), rss]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    error, rss = json.loads(done.stdout)
    if bomb == "a stray delimiter":
        assert error.startswith("the inflated dataset: delimiter (FFFE,E00D) out of place"), error
        assert rss < 400 * 2**20
    else:
        assert f"inflates past {MAX_INFLATED // 2**20} MiB" in error
        assert error.endswith("refused as a decompression bomb")
        bound = 300 * 2**20 if bomb == "one long value" else MAX_INFLATED + 600 * 2**20
        assert rss < bound  # (the interpreter and its imports: about 120 MB)


def test_deflated_objects_inflate_only_up_to_their_pixel_data(corpus: Path) -> None:
    """The corpus' deflated image: the catalog row needs its header, not its inflated pixels."""
    path = corpus / "transfer-syntax" / "deflated" / "image_dfl.dcm"
    header = parse_header(path.read_bytes(), True)
    assert header.pixel is not None
    assert len(header.data) < header.pixel[2] + 300 * 1024  # stopped soon after Pixel Data
    ds = pydicom.dcmread(path)
    row = dfl.scan(str(path), workers=1).to_arrow().to_pylist()[0]
    assert row["error"] is None and row["sop_instance_uid"] == ds.SOPInstanceUID
