"""Sinks that write instances (Part 10 folders, media sets) and catalogs (Parquet)."""

from __future__ import annotations

from .parquet import write_catalog
from .part10 import Part10Folder

__all__ = ["Part10Folder", "write_catalog"]
