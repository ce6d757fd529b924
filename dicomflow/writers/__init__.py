"""Sinks that write instances (Part 10 folders, media sets, PNG and NIfTI images) and catalogs."""

from __future__ import annotations

from .images import NiftiFolder, PngFolder
from .mediaset import MediaSet, write_mediaset
from .parquet import ParquetDataset, write_catalog, write_dataset
from .part10 import Part10Folder

__all__ = [
    "MediaSet",
    "NiftiFolder",
    "ParquetDataset",
    "Part10Folder",
    "PngFolder",
    "write_catalog",
    "write_dataset",
    "write_mediaset",
]
