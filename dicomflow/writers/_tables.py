"""Sinks: the catalog of what a pipeline wrote, appended to a lake table (Delta, Iceberg)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..catalog import TableWriter, scan
from ._parquet import written_paths

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["DeltaSink", "IcebergSink", "TableSink"]

#: what makes a row the same row again: a rerun appends none of these twice
_KEYS = ("uri", "size", "modified")


class TableSink:
    """Sink: the catalog rows of what a pipeline wrote, appended to a lake table at ``root``.

    At the end of a run it scans the files the other sinks wrote (or, alone, the inputs that
    were done) and appends the rows the table does not hold yet (by URI, size and
    modification time), one commit per scan batch: a rerun, or a run resumed after a kill,
    adds nothing twice, and several runs may append to one table at once. ``format`` is
    ``"delta"``, ``"iceberg"`` or ``"parquet"`` (part files); the other options go to
    :class:`~dicomflow.TableWriter`.
    """

    name = "table"

    def __init__(
        self,
        root: str | os.PathLike[str],
        format: str = "delta",
        partition_by: tuple[str, ...] | list[str] = (),
        columns: Any = "default",
        storage_options: Mapping[str, Any] | None = None,
        catalog: str | None = None,
        table: str = "dicomflow.catalog",
    ):
        self.root = os.fspath(root)
        self.format = format
        self.partition_by = tuple(partition_by)
        self.columns = columns
        self.storage_options = dict(storage_options or {})
        self.catalog = catalog
        self.table = table
        self.writer()  # a bad format or a missing extra is an error before the run

    def writer(self) -> TableWriter:
        """The table's writer (made when asked: a sink stays picklable)."""
        return TableWriter(
            self.root, self.format, storage_options=self.storage_options,
            partition_by=self.partition_by, catalog=self.catalog, table=self.table,
        )  # fmt: skip

    def config(self) -> dict[str, Any]:
        config = {"type": self.name, "root": self.root, "partition_by": list(self.partition_by)}
        if self.name == "table":
            config["format"] = self.format
        if self.catalog is not None:
            config.update(catalog=self.catalog, table=self.table)
        return config

    def open(self, context: Any) -> None:
        pass

    def write(self, instance: Any) -> list[Any]:
        return []

    def close(self, context: Any, manifest: pa.Table) -> None:
        paths = written_paths(manifest, self.name)
        if paths:
            batches = scan(paths, columns=self.columns, storage_options=self.storage_options)
            self.writer().append_new(batches.iter_batches(), _KEYS)


class DeltaSink(TableSink):
    """Sink: :class:`TableSink` into a Delta Lake table (``type = "delta"``)."""

    name = "delta"

    def __init__(self, root: str | os.PathLike[str], **options: Any):
        super().__init__(root, "delta", **options)


class IcebergSink(TableSink):
    """Sink: :class:`TableSink` into an Iceberg table (``type = "iceberg"``; ``catalog``:
    a SQLite file or SQLAlchemy URL, default ``catalog.db`` in a local ``root``)."""

    name = "iceberg"

    def __init__(self, root: str | os.PathLike[str], **options: Any):
        super().__init__(root, "iceberg", **options)
