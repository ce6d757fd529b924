"""The public surface: one flat namespace, pinned here so changes to it are deliberate."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pyarrow as pa
import pytest

import dicomflow as dfl
import dicomflow.errors

#: Every name ``import dicomflow`` offers. A change here is a change of the public API.
PUBLIC = {
    "DEFAULT_COLUMNS", "__version__",
    # reading
    "scan", "Catalog", "ScanStats", "Reader", "read_mediaset", "private_column",
    # lake tables
    "TableWriter", "read_table",
    # pipelines
    "pipeline", "Pipeline", "RunReport", "Instance", "Output", "Stage", "Sink", "Skip",
    "filter", "map", "Filter", "Map", "Transcode", "Deidentify", "DeidOptions", "Recipe",
    "writers",
    # pixels
    "frames", "locate_frames", "volumes", "Volume", "Volumes", "PixelOptions", "pixels",
    # derived objects
    "derived", "read_seg", "read_rtstruct", "read_measurements", "LabelVolume", "write_seg",
    "write_measurement_report",
    # network
    "network",
    # errors
    "DicomflowError", "SourceError", "SourceNotFoundError", "InvalidDicomError",
    "TruncatedError", "ConfigError", "CollisionError", "DiskFullError", "FileMetaError",
    "PixelDataError", "PixelSizeError", "FrameDecodeError", "EncodeError", "GeometryError",
    "TranscodeError", "DerivedObjectError",
    "DeidentificationError", "MediaSetError", "NetworkError", "AssociationRejectedError",
    "AssociationAbortedError", "NetworkTimeoutError", "DimseStatusError",
    "MoveDestinationError", "SubOperationsFailedError", "DicomWebError", "NetworkConfigError",
    "TLSError", "TextDetectionError", "TableError",
}  # fmt: skip

#: Exceptions deriving from DicomflowError that are internal signals, never raised to a user.
INTERNAL_ERRORS = {
    "dicomflow.dicom._header.Unsupported": "the header parser's 'read this one with pydicom'",
}


def test_public_names_are_pinned() -> None:
    assert set(dfl.__all__) == PUBLIC
    assert len(dfl.__all__) == len(PUBLIC), "a name listed twice in __all__"
    for name in dfl.__all__:
        assert getattr(dfl, name) is not None, name


def test_dir_offers_the_public_names_lazy_ones_included() -> None:
    assert dir(dfl) == sorted(PUBLIC)
    assert "Volume" in dir(dfl) and "network" in dir(dfl)  # resolved on first use


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'scna'"):
        dfl.scna  # noqa: B018


def _package_modules() -> list[str]:
    names = ["dicomflow"]
    for info in pkgutil.walk_packages(dfl.__path__, "dicomflow."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return names


def test_every_public_exception_lives_in_errors_and_is_reachable() -> None:
    """One tree: each DicomflowError subclass is defined in errors.py and named in dfl."""
    found = {}
    for name in _package_modules():
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # an optional extra not installed: name it, do not hide it
            pytest.fail(f"{name} does not import: {exc}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, dfl.DicomflowError):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    outside = {
        key for key, cls in found.items()
        if cls.__module__ != "dicomflow.errors" and key not in INTERNAL_ERRORS
    }  # fmt: skip
    assert not outside, f"define these in dicomflow/errors.py: {sorted(outside)}"
    public = {cls.__name__ for cls in found.values() if cls.__module__ == "dicomflow.errors"}
    assert public == set(dicomflow.errors.__all__)
    assert public <= set(dfl.__all__)
    for name in public:
        assert getattr(dfl, name) is getattr(dicomflow.errors, name)
        assert name in dicomflow.errors.__doc__, f"{name} is missing from the drawn tree"


def test_exception_tree() -> None:
    assert issubclass(dfl.SourceError, (dfl.DicomflowError, OSError))
    assert issubclass(dfl.SourceNotFoundError, FileNotFoundError)
    assert issubclass(dfl.InvalidDicomError, (dfl.DicomflowError, ValueError))
    assert issubclass(dfl.TruncatedError, dfl.InvalidDicomError)
    assert issubclass(dfl.ConfigError, ValueError)
    assert issubclass(dfl.FrameDecodeError, dfl.PixelDataError)
    assert issubclass(dfl.NetworkTimeoutError, TimeoutError)
    assert issubclass(dfl.MoveDestinationError, (dfl.DimseStatusError, LookupError))
    # a setting no retry fixes: a ConfigError (stops a pull) and still a NetworkError
    assert issubclass(dfl.MoveDestinationError, dfl.NetworkConfigError)
    assert issubclass(dfl.NetworkConfigError, (dfl.ConfigError, dfl.NetworkError, OSError))
    assert issubclass(dfl.CollisionError, FileExistsError)
    assert issubclass(dfl.DiskFullError, OSError)
    assert issubclass(dfl.FileMetaError, (dfl.DicomflowError, ValueError))


def test_exceptions_keep_their_fields_through_pickling() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(dfl.FrameDecodeError("a.dcm", 3, "bad")))
    assert (err.uri, err.frame, err.reason, str(err)) == ("a.dcm", 3, "bad", "a.dcm: frame 3: bad")
    status = dfl.MoveDestinationError("no", status=0xA801, completed=2, failed_uids=("1.2",))
    again = pickle.loads(pickle.dumps(status))
    assert type(again) is dfl.MoveDestinationError
    assert (again.status, again.completed, again.failed_uids) == (0xA801, 2, ("1.2",))


def test_contracts_are_protocols_the_built_ins_satisfy(tmp_path) -> None:
    assert isinstance(dfl.scan(str(tmp_path)), dfl.Reader)
    assert not isinstance(pa.table({"uri": ["x"]}), dfl.Reader)  # tables are taken, not Readers
    assert isinstance(dfl.writers.Part10Folder(str(tmp_path / "out")), dfl.Sink)
    assert isinstance(dfl.filter("Modality = 'CT'"), dfl.Stage)
    assert not isinstance(object(), dfl.Sink)


def test_default_columns_are_typed_from_the_dictionary() -> None:
    schema = dfl.scan(".", columns="default").schema
    assert len(dfl.DEFAULT_COLUMNS) >= 60
    assert schema.names[:12] == [
        "uri", "size", "modified", "transfer_syntax_uid", "sop_class_uid", "sop_instance_uid",
        "study_instance_uid", "series_instance_uid", "pixel_offset", "pixel_length",
        "number_of_frames", "error",
    ]  # fmt: skip
    assert str(schema.field("modified").type) == "timestamp[us, tz=UTC]"
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
