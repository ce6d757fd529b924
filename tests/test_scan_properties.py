"""Property tests: generated datasets in every uncompressed transfer syntax scan back exactly."""

from __future__ import annotations

import datetime as dt
from io import BytesIO

import fsspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

import dicomflow as dfl

SYNTAXES = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
]
COLUMNS = [
    "PatientName", "PatientID", "StudyDate", "StudyTime", "Rows", "Columns", "SliceThickness",
    "ImagePositionPatient", "InstanceNumber", "ImageType", "WindowCenter", "StudyDescription",
    "AcquisitionDateTime", "PatientWeight", "ReferencedImageSequence",
    "ACME 1.0:0011xx02",
]  # fmt: skip

_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\^="),
    max_size=16,
).map(str.strip)
_latin = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\\^=\x7f"),
    min_size=1,
    max_size=12,
).map(str.strip)
_ds = st.floats(min_value=-1e5, max_value=1e5, allow_nan=False).map(lambda f: round(f, 4))
_uid = st.lists(st.integers(1, 99999), min_size=3, max_size=6).map(
    lambda parts: "1.2." + ".".join(map(str, parts))
)


@st.composite
def instances(draw):
    ds = Dataset()
    latin = draw(st.booleans())
    if latin:
        ds.SpecificCharacterSet = "ISO_IR 100"
    family = draw(_latin if latin else _text)
    ds.PatientName = f"{family}^{draw(_text)}" if family else ""
    ds.PatientID = draw(_text)
    ds.StudyDate = draw(st.dates(dt.date(1900, 1, 1), dt.date(2099, 12, 31))).strftime("%Y%m%d")
    ds.StudyTime = draw(st.times()).strftime("%H%M%S.%f")
    ds.AcquisitionDateTime = draw(st.datetimes(dt.datetime(1950, 1, 1))).strftime("%Y%m%d%H%M%S.%f")
    ds.Rows = draw(st.integers(0, 65535))
    ds.Columns = draw(st.integers(0, 65535))
    ds.SliceThickness = draw(_ds)
    ds.PatientWeight = draw(_ds)
    ds.ImagePositionPatient = draw(st.lists(_ds, min_size=3, max_size=3))
    ds.InstanceNumber = draw(st.integers(-(2**31), 2**31 - 1))
    ds.ImageType = draw(st.lists(st.sampled_from(["ORIGINAL", "DERIVED", "PRIMARY", "AXIAL"]),
                                 min_size=2, max_size=4))  # fmt: skip
    ds.WindowCenter = draw(st.lists(_ds, min_size=1, max_size=3))
    ds.StudyDescription = draw(_latin if latin else _text)
    refs = draw(st.lists(_uid, max_size=3))
    seq = Sequence()
    for uid in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        item.ReferencedSOPInstanceUID = uid
        seq.append(item)
    ds.ReferencedImageSequence = seq
    block = ds.private_block(0x0011, "ACME 1.0", create=True)
    block.add_new(
        0x02, "OB", draw(st.binary(min_size=2, max_size=8).filter(lambda b: len(b) % 2 == 0))
    )
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = draw(_uid)
    syntax = draw(st.sampled_from(SYNTAXES))
    return ds, syntax


def _write(ds: Dataset, syntax) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    out = BytesIO()
    ds.save_as(out, implicit_vr=syntax.is_implicit_VR, little_endian=syntax.is_little_endian,
               enforce_file_format=True)  # fmt: skip
    return out.getvalue()


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, MultiValue)) else [value]


def _date(text: str):
    return dt.datetime.strptime(text, "%Y%m%d").date()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
def test_generated_instances_round_trip(example) -> None:
    ds, syntax = example
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/prop/x.dcm", _write(ds, syntax))
    row = dfl.scan("memory://prop/x.dcm", columns=COLUMNS, workers=1).to_arrow().to_pylist()[0]
    assert row["error"] is None
    assert row["transfer_syntax_uid"] == syntax
    assert row["sop_instance_uid"] == ds.SOPInstanceUID
    assert row["PatientName"] == str(ds.PatientName)
    assert row["PatientID"] == ds.PatientID
    assert row["StudyDescription"] == ds.StudyDescription
    assert row["StudyDate"] == _date(ds.StudyDate)
    assert row["StudyTime"] == dt.datetime.strptime(ds.StudyTime, "%H%M%S.%f").time()
    want_dt = dt.datetime.strptime(ds.AcquisitionDateTime, "%Y%m%d%H%M%S.%f")
    assert row["AcquisitionDateTime"] == want_dt
    assert row["Rows"] == ds.Rows and row["Columns"] == ds.Columns
    assert row["SliceThickness"] == float(ds.SliceThickness)
    assert row["PatientWeight"] == float(ds.PatientWeight)
    assert row["ImagePositionPatient"] == [float(v) for v in ds.ImagePositionPatient]
    assert row["WindowCenter"] == [float(v) for v in _as_list(ds.WindowCenter)]
    assert row["InstanceNumber"] == int(ds.InstanceNumber)
    assert row["ImageType"] == _as_list(ds.ImageType)
    assert row["ACME 1.0:0011xx02"] == ds.private_block(0x0011, "ACME 1.0")[0x02].value
    import json

    items = json.loads(row["ReferencedImageSequence"])
    assert [i["00081155"]["Value"][0] for i in items] == [
        i.ReferencedSOPInstanceUID for i in ds.ReferencedImageSequence
    ]
