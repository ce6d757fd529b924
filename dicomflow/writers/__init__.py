"""Sinks that write instances (Part 10 folders, media sets) and catalogs (Parquet)."""

from __future__ import annotations

from .mediaset import MediaSet, write_mediaset
from .parquet import ParquetDataset, write_catalog, write_dataset
from .part10 import Part10Folder

__all__ = [
    "MediaSet",
    "ParquetDataset",
    "Part10Folder",
    "write_catalog",
    "write_dataset",
    "write_mediaset",
]
