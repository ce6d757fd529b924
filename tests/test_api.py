"""The public surface: one flat namespace, pinned here so changes to it are deliberate."""

from __future__ import annotations

import dicomflow as dfl


def test_public_names() -> None:
    assert set(dfl.__all__) >= {
        "scan",
        "Catalog",
        "ScanStats",
        "DEFAULT_COLUMNS",
        "private_column",
        "DicomflowError",
        "SourceError",
        "SourceNotFoundError",
        "InvalidDicomError",
        "TruncatedError",
        "ConfigError",
    }
    for name in dfl.__all__:
        assert hasattr(dfl, name), name


def test_exception_tree() -> None:
    assert issubclass(dfl.SourceError, (dfl.DicomflowError, OSError))
    assert issubclass(dfl.SourceNotFoundError, FileNotFoundError)
    assert issubclass(dfl.InvalidDicomError, (dfl.DicomflowError, ValueError))
    assert issubclass(dfl.TruncatedError, dfl.InvalidDicomError)
    assert issubclass(dfl.ConfigError, ValueError)


def test_default_columns_are_typed_from_the_dictionary() -> None:
    schema = dfl.scan(".", columns="default").schema
    assert len(dfl.DEFAULT_COLUMNS) >= 60
    assert schema.names[:11] == [
        "uri", "size", "transfer_syntax_uid", "sop_class_uid", "sop_instance_uid",
        "study_instance_uid", "series_instance_uid", "pixel_offset", "pixel_length",
        "number_of_frames", "error",
    ]  # fmt: skip
    assert str(schema.field("PatientBirthDate").type) == "date32[day]"
    assert str(schema.field("AcquisitionDateTime").type) == "timestamp[us]"
    assert str(schema.field("StudyTime").type) == "time64[us]"
    assert str(schema.field("PixelSpacing").type) == "list<item: double>"
    assert str(schema.field("ImageType").type) == "list<item: string>"


def test_private_column_names() -> None:
    assert dfl.private_column("SIEMENS CSA HEADER", 0x0029, 0x10) == "SIEMENS CSA HEADER:0029xx10"
    cat = dfl.scan(".", columns=["SIEMENS CSA HEADER:0029xx10", "(0018,0050)"])
    assert cat.schema.names[-2:] == ["SIEMENS CSA HEADER:0029xx10", "SliceThickness"]
    try:
        dfl.scan(".", columns=["NotAKeyword"])
    except dfl.ConfigError as exc:
        assert "NotAKeyword" in str(exc)
    else:
        raise AssertionError("an unknown keyword must be refused")
