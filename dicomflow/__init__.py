"""dicomflow: DICOM archives to analysis-ready data and back.

>>> import dicomflow as dfl
>>> cat = dfl.scan("archive/")            # doctest: +SKIP
>>> df = cat.to_polars()                  # doctest: +SKIP
"""

from __future__ import annotations

from . import writers  # noqa: E402 - dfl.writers.Part10Folder(...)
from ._version import __version__
from .anonymize import DeidentificationError, Deidentify, DeidOptions
from .catalog import Catalog, ScanStats, read_mediaset, scan
from .dicom import DEFAULT_COLUMNS, private_column
from .errors import (
    ConfigError,
    DicomflowError,
    InvalidDicomError,
    SourceError,
    SourceNotFoundError,
    TruncatedError,
)
from .pipeline.instance import Instance, Output, Skip
from .pipeline.pipeline import DiskFullError, Pipeline, RunReport, pipeline
from .pipeline.stages import Filter, Map, filter, map

# Pixel arrays and volumes load dask.array, nibabel and zarr: imported on first use.
_LAZY = {"Transcode": "dicomflow.pipeline.transcode"} | {
    name: "dicomflow.pixels"
    for name in (
        "FrameDecodeError", "GeometryError", "PixelDataError", "PixelOptions", "PixelSizeError",
        "Volume", "Volumes", "frames", "locate_frames", "volumes",
    )
}  # fmt: skip


def __getattr__(name: str) -> object:
    if name == "network":  # DIMSE and DICOMweb: dfl.network.find(...), dfl.network.pull(...)
        import importlib

        return importlib.import_module("dicomflow.network")
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dicomflow' has no attribute {name!r}")


__all__ = [
    "DEFAULT_COLUMNS",
    "Catalog",
    "DeidOptions",
    "DeidentificationError",
    "Deidentify",
    "DiskFullError",
    "FrameDecodeError",
    "GeometryError",
    "PixelDataError",
    "PixelOptions",
    "PixelSizeError",
    "Volume",
    "Volumes",
    "frames",
    "locate_frames",
    "volumes",
    "Filter",
    "Instance",
    "Map",
    "Output",
    "Pipeline",
    "RunReport",
    "Skip",
    "Transcode",
    "filter",
    "map",
    "pipeline",
    "writers",
    "ConfigError",
    "DicomflowError",
    "InvalidDicomError",
    "ScanStats",
    "SourceError",
    "SourceNotFoundError",
    "TruncatedError",
    "__version__",
    "private_column",
    "read_mediaset",
    "scan",
]
