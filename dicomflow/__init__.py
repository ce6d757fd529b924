"""dicomflow: DICOM archives to analysis-ready data and back.

>>> import dicomflow as dfl
>>> cat = dfl.scan("archive/")            # doctest: +SKIP
>>> df = cat.to_polars()                  # doctest: +SKIP

Everything a user needs is a name here (pinned by ``tests/test_api.py``); the packages below are
the layers of ``docs/architecture.md``. Pixel arrays, volumes, transcoding and the network load
dask.array, codecs and sockets code: they are imported on first use, so ``import dicomflow``
stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import writers  # dfl.writers.Part10Folder(...)
from ._version import __version__
from .anonymize import Deidentify, DeidOptions, Recipe
from .catalog import Catalog, Reader, ScanStats, TableWriter, read_mediaset, read_table, scan
from .dicom import DEFAULT_COLUMNS, private_column
from .errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    CollisionError,
    ConfigError,
    DeidentificationError,
    DerivedObjectError,
    DicomflowError,
    DicomWebError,
    DimseStatusError,
    DiskFullError,
    EncodeError,
    FileMetaError,
    FrameDecodeError,
    GeometryError,
    InvalidDicomError,
    MediaSetError,
    MoveDestinationError,
    NetworkConfigError,
    NetworkError,
    NetworkTimeoutError,
    PixelDataError,
    PixelSizeError,
    Skip,
    SourceError,
    SourceNotFoundError,
    SubOperationsFailedError,
    TableError,
    TextDetectionError,
    TLSError,
    TranscodeError,
    TruncatedError,
)
from .pipeline import (
    Filter,
    Instance,
    Map,
    Output,
    Pipeline,
    RunReport,
    Sink,
    Stage,
    filter,
    map,
    pipeline,
)

#: Names resolved on first use: ``name -> module``.
_LAZY = {
    "Transcode": "dicomflow.pipeline",
    **{
        name: "dicomflow.pixels"
        for name in ("PixelOptions", "Volume", "Volumes", "frames", "locate_frames", "volumes")
    },
    **{
        name: "dicomflow.derived"
        for name in (
            "LabelVolume",
            "read_measurements",
            "read_rtstruct",
            "read_seg",
            "write_measurement_report",
            "write_seg",
        )
    },
}
# dfl.network.find(...), dfl.pixels.available_backends(), dfl.derived.fill_polygon(...)
_LAZY_MODULES = ("derived", "network", "pixels")

__all__ = [
    "DEFAULT_COLUMNS",
    "AssociationAbortedError",
    "AssociationRejectedError",
    "Catalog",
    "CollisionError",
    "ConfigError",
    "DeidOptions",
    "DeidentificationError",
    "Deidentify",
    "DerivedObjectError",
    "DicomWebError",
    "DicomflowError",
    "DimseStatusError",
    "DiskFullError",
    "EncodeError",
    "FileMetaError",
    "Filter",
    "FrameDecodeError",
    "GeometryError",
    "Instance",
    "InvalidDicomError",
    "LabelVolume",
    "Map",
    "MediaSetError",
    "MoveDestinationError",
    "NetworkConfigError",
    "NetworkError",
    "NetworkTimeoutError",
    "Output",
    "Pipeline",
    "PixelDataError",
    "PixelOptions",
    "PixelSizeError",
    "Reader",
    "Recipe",
    "RunReport",
    "ScanStats",
    "Sink",
    "Skip",
    "SourceError",
    "SourceNotFoundError",
    "Stage",
    "SubOperationsFailedError",
    "TLSError",
    "TableError",
    "TableWriter",
    "TextDetectionError",
    "Transcode",
    "TranscodeError",
    "TruncatedError",
    "Volume",
    "Volumes",
    "__version__",
    "derived",
    "filter",
    "frames",
    "locate_frames",
    "map",
    "network",
    "pipeline",
    "pixels",
    "private_column",
    "read_measurements",
    "read_mediaset",
    "read_rtstruct",
    "read_seg",
    "read_table",
    "scan",
    "volumes",
    "write_measurement_report",
    "write_seg",
    "writers",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"dicomflow.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dicomflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names (what tab completion offers), lazy ones included."""
    return sorted(__all__)
