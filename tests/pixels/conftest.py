"""Catalog rows for the pixel tests.

``dicomflow.scan`` builds the real catalog; while it is not importable (it is written in
parallel) the tests build rows with the same fixed columns and keyword columns through pydicom,
reading only the header and the position of the Pixel Data value.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pyarrow as pa
import pytest
from pydicom import dcmread
from pydicom.datadict import dictionary_VM, dictionary_VR
from pydicom.multival import MultiValue
from pydicom.tag import Tag

CORPUS = Path(os.environ.get("DICOMFLOW_CORPUS", Path(__file__).parents[3] / "shared" / "corpus"))
if not CORPUS.is_dir():
    CORPUS = Path("/work/shared/corpus")

FIXED = pa.schema(
    [
        ("uri", pa.string()),
        ("size", pa.int64()),
        ("transfer_syntax_uid", pa.string()),
        ("sop_class_uid", pa.string()),
        ("sop_instance_uid", pa.string()),
        ("study_instance_uid", pa.string()),
        ("series_instance_uid", pa.string()),
        ("pixel_offset", pa.int64()),
        ("pixel_length", pa.int64()),
        ("number_of_frames", pa.int32()),
        ("error", pa.string()),
    ]
)
KEYWORDS = (
    "Modality", "Manufacturer", "SeriesDescription", "SeriesNumber", "FrameOfReferenceUID",
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "SamplesPerPixel", "PlanarConfiguration", "PhotometricInterpretation",
    "RescaleSlope", "RescaleIntercept", "SliceThickness", "SpacingBetweenSlices", "SliceLocation",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "WindowCenter",
    "WindowWidth", "ImageType", "InstanceNumber", "AcquisitionNumber",
    "TemporalPositionIdentifier", "EchoTime", "EchoNumbers", "GantryDetectorTilt",
    "RepetitionTime", "FlipAngle", "MagneticFieldStrength", "ProtocolName", "BodyPartExamined",
    "AcquisitionTime", "PatientPosition", "ConvolutionKernel", "KVP", "StudyInstanceUID",
)  # fmt: skip
_INT_VRS = {"IS", "US", "SS", "UL", "SL", "UV", "SV"}
_FLOAT_VRS = {"DS", "FL", "FD"}
_PIXEL_TAGS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}


def _arrow_type(keyword: str) -> pa.DataType:
    vr = dictionary_VR(Tag(keyword))
    value = pa.int64() if vr in _INT_VRS else pa.float64() if vr in _FLOAT_VRS else pa.string()
    return pa.list_(value) if dictionary_VM(Tag(keyword)) != "1" else value


def _convert(value, typ: pa.DataType):
    if value is None or value == "":
        return None
    if pa.types.is_list(typ):
        items = list(value) if isinstance(value, list | tuple | MultiValue) else [value]
        return [_convert(v, typ.value_type) for v in items]
    if isinstance(value, list | tuple | MultiValue):
        value = value[0] if len(value) else None
        if value is None:
            return None
    try:
        if pa.types.is_integer(typ):
            return int(value)
        if pa.types.is_floating(typ):
            return float(value)
    except (TypeError, ValueError):
        return None
    return str(value)


def _have_scan() -> bool:
    if os.environ.get("DICOMFLOW_PIXEL_TESTS_FIXTURE"):  # force the pydicom fixture
        return False
    try:
        from dicomflow import scan  # noqa: F401
    except ImportError:
        return False
    return True


def catalog_row(path: str | Path) -> dict:
    """One catalog row for ``path``: ``dicomflow.scan`` when it exists, else the fixture."""
    if _have_scan():
        return catalog_table([path]).to_pylist()[0]
    return fixture_row(path)


def fixture_row(path: str | Path) -> dict:
    """One catalog row for ``path`` (pydicom reads the header and the Pixel Data position)."""
    path = str(path)
    row: dict = {name: None for name in FIXED.names}
    row.update({k: None for k in KEYWORDS})
    row["uri"] = path
    row["size"] = os.path.getsize(path)
    try:
        ds = dcmread(path, defer_size=256, force=True)
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    meta = getattr(ds, "file_meta", None)
    row["transfer_syntax_uid"] = str(meta.get("TransferSyntaxUID", "")) if meta else None
    row["sop_class_uid"] = str(ds.get("SOPClassUID", "")) or None
    row["sop_instance_uid"] = str(ds.get("SOPInstanceUID", "")) or None
    row["study_instance_uid"] = str(ds.get("StudyInstanceUID", "")) or None
    row["series_instance_uid"] = str(ds.get("SeriesInstanceUID", "")) or None
    for tag, keyword in _PIXEL_TAGS.items():
        if tag in ds:
            elem = ds.get_item(tag)
            offset = elem.file_tell if hasattr(elem, "file_tell") else elem.value_tell
            with open(path, "rb") as f:
                f.seek(offset - 4)
                raw_length = f.read(4)
            little = ds.original_encoding[1] if ds.original_encoding[1] is not None else True
            length = int.from_bytes(raw_length, "little" if little else "big")
            if length == 0xFFFFFFFF:
                length = row["size"] - offset
            row["pixel_offset"] = offset
            row["pixel_length"] = length
            row["pixel_keyword"] = keyword
            frames = ds.get("NumberOfFrames")
            try:
                row["number_of_frames"] = max(int(frames), 1) if frames not in (None, "") else 1
            except (TypeError, ValueError):
                row["number_of_frames"] = 1
            break
    for keyword in KEYWORDS:
        try:
            value = ds.get(keyword)
        except Exception:
            value = None
        row[keyword] = _convert(value, _arrow_type(keyword))
    return row


def catalog_table(paths) -> pa.Table:
    """The catalog of ``paths``: ``dicomflow.scan`` when it exists, else the fixture."""
    if _have_scan():
        from dicomflow import scan

        paths = [str(p) for p in paths]
        table = scan(paths).to_arrow()
        order = {p: i for i, p in enumerate(paths)}  # keep the caller's order
        index = sorted(range(table.num_rows), key=lambda i: order.get(table["uri"][i].as_py(), i))
        return table.take(index)
    return fixture_table(paths)


def fixture_table(paths) -> pa.Table:
    """The fixture catalog of ``paths`` as an Arrow table with the fixed and keyword columns."""
    rows = [fixture_row(p) for p in paths]
    fields = list(FIXED) + [pa.field(k, _arrow_type(k)) for k in KEYWORDS]
    fields.append(pa.field("pixel_keyword", pa.string()))
    schema = pa.schema(fields)
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema)


def manifest() -> list[dict]:
    """The corpus MANIFEST rows."""
    with open(CORPUS / "MANIFEST.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip("the shared corpus is not available")
    return CORPUS


@pytest.fixture(scope="session")
def catalog_of():
    """A function: paths -> catalog Arrow table."""
    return catalog_table
