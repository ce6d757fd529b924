"""Sinks that write instances: Part 10 folders, media sets, PNG and NIfTI images, catalogs
(Parquet, Delta Lake, Iceberg)."""

from __future__ import annotations

from ..catalog import write_catalog, write_dataset
from ._images import NiftiFolder, PngFolder
from ._mediaset import FILE_ID_COMPONENT, MediaSet, build_dicomdir, write_mediaset
from ._parquet import ParquetDataset
from ._part10 import DEFAULT_TEMPLATE, Part10Folder, render_path
from ._tables import DeltaSink, IcebergSink, TableSink

__all__ = [
    "DEFAULT_TEMPLATE",
    "DeltaSink",
    "FILE_ID_COMPONENT",
    "IcebergSink",
    "MediaSet",
    "NiftiFolder",
    "ParquetDataset",
    "Part10Folder",
    "PngFolder",
    "TableSink",
    "build_dicomdir",
    "render_path",
    "write_catalog",
    "write_dataset",
    "write_mediaset",
]
