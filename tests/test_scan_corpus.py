"""Scanning the whole public corpus: every file once, every default column equal to pydicom's."""

from __future__ import annotations

import datetime as dt
import os
import warnings
from pathlib import Path

import pyarrow as pa
import pytest
from pydicom import dcmread
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

import dicomflow as dfl
from dicomflow.dicom import resolve_columns

SPECS = resolve_columns("default")


def _corpus_files(corpus: Path) -> list[str]:
    return sorted(os.path.abspath(p) for p in corpus.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def corpus_table(corpus: Path) -> pa.Table:
    return dfl.scan(corpus, workers=1).to_arrow()


@pytest.fixture(scope="module")
def rows_by_uri(corpus_table: pa.Table) -> dict[str, dict]:
    return {row["uri"]: row for row in corpus_table.to_pylist()}


def _pydicom(path: str):
    """pydicom's reading of a file, or None where pydicom (without force) cannot read it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not readable by pydicom: not compared
            return None


# --- the test's own conversion of a pydicom value to the column's Python value ----------------


def _date(text: str):
    for fmt in ("%Y%m%d", "%Y.%m.%d"):
        try:
            return dt.datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            pass
    return None


def _time(text: str):
    """Documented rule: digits beyond microseconds are dropped; ACR-NEMA colons allowed."""
    text = text.strip().replace(":", "")
    if "." in text:
        whole, frac = text.split(".", 1)
        text = f"{whole}.{frac[:6]}"
    for fmt in ("%H%M%S.%f", "%H%M%S", "%H%M", "%H"):
        try:
            return dt.datetime.strptime(text, fmt).time()
        except ValueError:
            pass
    return None


def _datetime(text: str):
    text = text.strip()
    for sep in "+-":
        if sep in text[4:]:
            text = text[: 4 + text[4:].index(sep)]
    for fmt in (
        "%Y%m%d%H%M%S.%f",
        "%Y%m%d%H%M%S",
        "%Y%m%d%H%M",
        "%Y%m%d%H",
        "%Y%m%d",
        "%Y%m",
        "%Y",
    ):
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            pass
    return None


def _scalar(value, arrow_type: pa.DataType):
    if pa.types.is_string(arrow_type):
        return str(value)
    if pa.types.is_date32(arrow_type):
        return _date(str(value))
    if pa.types.is_time64(arrow_type):
        return _time(str(value))
    if pa.types.is_timestamp(arrow_type):
        return _datetime(str(value))
    if pa.types.is_integer(arrow_type):
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    if pa.types.is_floating(arrow_type):
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return value


def expected_value(elem, arrow_type: pa.DataType):
    value = elem.value
    is_list = pa.types.is_list(arrow_type)
    item_type = arrow_type.value_type if is_list else arrow_type
    if value is None or value == "" or (isinstance(value, (list, MultiValue)) and not value):
        return "" if pa.types.is_string(arrow_type) else None
    values = list(value) if isinstance(value, (list, MultiValue)) else [value]
    if isinstance(value, (bytes,)):
        values = [value]
    if is_list:
        return [_scalar(v, item_type) for v in values]
    if pa.types.is_string(arrow_type):
        return "\\".join(str(v) for v in values)
    if len(values) != 1:
        return None
    return _scalar(values[0], arrow_type)


def test_every_file_appears_exactly_once(corpus: Path, corpus_table: pa.Table) -> None:
    uris = corpus_table.column("uri").to_pylist()
    assert len(uris) == len(set(uris))
    want = set(_corpus_files(corpus))
    assert not want - set(uris), sorted(want - set(uris))[:5]
    assert not set(uris) - want, sorted(set(uris) - want)[:5]


def test_schema_is_the_dictionary_schema(corpus_table: pa.Table) -> None:
    assert corpus_table.schema == dfl.scan(".", columns="default").schema
    assert corpus_table.schema.field("StudyDate").type == pa.date32()
    assert corpus_table.schema.field("ImagePositionPatient").type == pa.list_(pa.float64())
    assert corpus_table.schema.field("InstanceNumber").type == pa.int64()
    assert corpus_table.schema.field("Rows").type == pa.uint16()


def test_default_columns_equal_pydicom(corpus: Path, rows_by_uri: dict[str, dict]) -> None:
    compared = 0
    mismatches = []
    for path in _corpus_files(corpus):
        ds = _pydicom(path)
        if ds is None or len(ds) == 0:
            continue
        row = rows_by_uri[path]
        compared += 1
        for spec in SPECS:
            elem = ds.get(spec.tag)
            got = row[spec.name]
            if elem is None or elem.VR == "SQ":
                want = None
            else:
                want = expected_value(elem, spec.arrow_type)
            if got != want and not (isinstance(want, float) and want != want and got != got):
                mismatches.append((Path(path).relative_to(corpus), spec.name, got, want))
    assert compared > 550, compared
    assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(map(str, mismatches[:60]))


def test_identity_columns_equal_pydicom(corpus: Path, rows_by_uri: dict[str, dict]) -> None:
    compared = 0
    for path in _corpus_files(corpus):
        ds = _pydicom(path)
        if ds is None or "SOPInstanceUID" not in ds:
            continue
        row = rows_by_uri[path]
        compared += 1
        meta = ds.file_meta
        # documented: an empty UID in the dataset falls back to the file meta, else null
        want_instance = ds.SOPInstanceUID or meta.get("MediaStorageSOPInstanceUID") or None
        want_class = ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID") or None
        assert row["sop_instance_uid"] == want_instance, path
        assert row["sop_class_uid"] == want_class, path
        assert row["study_instance_uid"] == (ds.get("StudyInstanceUID") or None), path
        assert row["series_instance_uid"] == (ds.get("SeriesInstanceUID") or None), path
        if "TransferSyntaxUID" in ds.file_meta:
            assert row["transfer_syntax_uid"] == ds.file_meta.TransferSyntaxUID, path
    assert compared > 550


def test_pixel_locator_points_at_pydicoms_pixel_bytes(corpus: Path, rows_by_uri) -> None:
    """For native Pixel Data, the bytes at (offset, length) are exactly pydicom's PixelData."""
    checked = 0
    for path in _corpus_files(corpus):
        row = rows_by_uri[path]
        if row["pixel_offset"] is None or row["error"] is not None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = dcmread(path)
                pixels = ds.PixelData
            except Exception:  # noqa: BLE001
                continue
        ts = ds.file_meta.get("TransferSyntaxUID")
        data = Path(path).read_bytes()
        start = row["pixel_offset"]
        if ts == "1.2.840.10008.1.2.1.99":  # deflated dataset
            assert row["pixel_offset"] is None  # inside the deflated stream: no file offset
            continue
        start = row["pixel_offset"]
        try:
            encapsulated = ts is not None and ts.is_encapsulated
        except ValueError:  # a private or unknown transfer syntax
            encapsulated = (
                data[row["pixel_offset"] : row["pixel_offset"] + 4] == b"\xfe\xff\x00\xe0"
            )
        if encapsulated:
            # encapsulated: the first item (Basic Offset Table) starts at the offset
            assert data[start : start + 4] == b"\xfe\xff\x00\xe0", path
            assert row["pixel_length"] == len(data) - start
        else:
            assert data[start : start + row["pixel_length"]] == pixels, path
        checked += 1
    assert checked > 400, checked


def test_broken_files_are_error_rows(corpus: Path, rows_by_uri) -> None:
    expected_errors = {
        "broken/fo-dicom_GH177_undefined_length.dcm": "pydicom",
        "broken/no_meta.dcm": "not a DICOM file",
        "broken/MR_truncated.dcm": "Pixel Data truncated",
        "broken/rtplan_truncated.dcm": "truncated",
        "README.md": "not a DICOM file",
        "MANIFEST.csv": "not a DICOM file",
    }
    for rel, fragment in expected_errors.items():
        row = rows_by_uri[os.path.abspath(corpus / rel)]
        assert row["error"] is not None and fragment in row["error"], (rel, row["error"])


def test_non_ascii_text_equals_pydicom(corpus: Path, rows_by_uri) -> None:
    """Every character set in the corpus: PatientName decoded exactly as pydicom does."""
    seen = set()
    for path in sorted((corpus / "charsets").glob("*.dcm")):
        ds = _pydicom(str(path))
        if ds is None or "PatientName" not in ds:
            continue
        row = rows_by_uri[os.path.abspath(path)]
        assert row["PatientName"] == str(ds.PatientName), path.name
        assert isinstance(ds.PatientName, PersonName)
        seen.add(tuple(ds.get("SpecificCharacterSet", "") or ()))
    assert len(seen) >= 8
