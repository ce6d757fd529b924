"""Sinks that write instances: Part 10 folders, media sets, PNG and NIfTI images, catalogs."""

from __future__ import annotations

from ..catalog import write_catalog, write_dataset
from .images import NiftiFolder, PngFolder
from .mediaset import MediaSet, write_mediaset
from .parquet import ParquetDataset
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
