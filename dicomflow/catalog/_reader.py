"""The Reader contract: what a source of catalog rows must offer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import pyarrow as pa

__all__ = ["Reader"]


@runtime_checkable
class Reader(Protocol):
    """A source of catalog rows: one Arrow record batch after another, one declared schema.

    :class:`~dicomflow.Catalog` (from :func:`~dicomflow.scan`) is one; pipelines also take a
    catalog as an Arrow or polars table (what :func:`~dicomflow.read_mediaset` returns). A
    third-party reader (a DICOMweb QIDO search, a
    vendor archive index) is any object with these two members, registered under a name with
    the ``dicomflow.readers`` entry point group so pipeline files can name it. Every batch has
    the columns of ``schema`` (the catalog's fixed columns first: ``uri``, ``size``, the UIDs,
    ``pixel_offset``... see :data:`dicomflow.dicom.FIXED_SCHEMA`); stages and sinks read
    instances through the ``uri`` column.
    """

    @property
    def schema(self) -> pa.Schema: ...

    def iter_batches(self) -> Iterator[pa.RecordBatch]: ...
