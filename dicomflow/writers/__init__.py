"""Sinks that write instances (Part 10 folders, media sets) and catalogs (Parquet)."""

from __future__ import annotations

from .parquet import ParquetDataset, write_catalog, write_dataset
from .part10 import Part10Folder

__all__ = ["ParquetDataset", "Part10Folder", "write_catalog", "write_dataset"]
