"""Catalogs to Parquet: one file written atomically, or a partitioned, appendable dataset."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..dicom import atomic_path

if TYPE_CHECKING:
    from ._catalog import Catalog, ScanStats

__all__ = ["partitions", "write_catalog", "write_dataset"]

ROW_GROUP_ROWS = 64 * 1024


def _regrouped(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Tables of about ``rows`` rows, so row groups are not one per scan batch.

    Batches of ``columns="all"`` scans have the columns their files have: a batch with another
    schema than the ones held starts a new table (the caller unifies them).
    """
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if held and not batch.schema.equals(held[0].schema):
            yield pa.Table.from_batches(held)
            held, count = [], 0
        held.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.Table.from_batches(held)
            held, count = [], 0
    if held:
        yield pa.Table.from_batches(held)


def write_catalog(
    catalog: Catalog,
    path: str | os.PathLike[str],
    *,
    progress: Any = None,
    compression: str = "zstd",
    row_group_rows: int = ROW_GROUP_ROWS,
) -> ScanStats:
    """Stream a catalog into one Parquet file at ``path``, replacing it only when complete.

    The file is written under a temporary name beside ``path`` and renamed at the end, so a
    reader never sees a partial catalog. With ``columns="all"`` the attribute columns are known
    only after reading: batches are spooled to a temporary dataset and merged at the end.
    """
    with atomic_path(os.path.abspath(os.fspath(path))) as tmp:
        if catalog.options.specs is not None:
            with pq.ParquetWriter(tmp, catalog.schema, compression=compression) as writer:
                for table in _regrouped(catalog.iter_batches(progress), row_group_rows):
                    writer.write_table(table)
        else:
            _write_spooled(catalog, tmp, progress, compression, row_group_rows)
    return catalog.stats


def _write_spooled(
    catalog: Catalog, tmp: str, progress: Any, compression: str, row_group_rows: int
) -> None:
    from ._catalog import unify

    with tempfile.TemporaryDirectory(dir=os.path.dirname(tmp)) as spool:
        parts = []
        for i, table in enumerate(_regrouped(catalog.iter_batches(progress), row_group_rows)):
            part = os.path.join(spool, f"part-{i:06d}.parquet")
            pq.write_table(table, part, compression="lz4")
            parts.append(part)
        schemas = [pq.read_schema(p) for p in parts]
        merged = unify([s.empty_table() for s in schemas] or [], catalog.schema).schema
        with pq.ParquetWriter(tmp, merged, compression=compression) as writer:
            for part in parts:
                table = pq.read_table(part)
                for name in merged.names:
                    if name not in table.column_names:
                        table = table.append_column(
                            merged.field(name), pa.nulls(table.num_rows, merged.field(name).type)
                        )
                writer.write_table(table.select(merged.names).cast(merged))


def partitions(table: pa.Table, partition_by: Sequence[str]) -> Iterator[tuple[str, pa.Table]]:
    """The hive folder (``Modality=CT/...``; ``""`` unpartitioned) and rows of each partition,
    its key columns dropped, rows in their order: what ``pyarrow.dataset.write_dataset`` makes,
    without its background writer threads (which can abort the interpreter at exit, apache/arrow
    #36980: about 1 process in 10 that appends a few batches and exits)."""
    if not partition_by:
        yield "", table
        return
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    fields = [table.schema.field(name) for name in partition_by]
    hive = pads.partitioning(pa.schema(fields), flavor="hive")
    keys = table.select(list(partition_by)).group_by(list(partition_by), use_threads=False)
    rest = [name for name in table.column_names if name not in partition_by]
    for key in keys.aggregate([]).to_pylist():
        match = None
        for field in fields:
            value = key[field.name]
            test = (
                pc.field(field.name).is_null()
                if value is None
                else pc.field(field.name) == pa.scalar(value, field.type)
            )
            match = test if match is None else match & test
        folder, _ = hive.format(match)
        yield folder, table.filter(match).select(rest)


def write_dataset(
    source: Catalog | pa.Table,
    root: str | os.PathLike[str],
    *,
    partition_by: tuple[str, ...] | list[str] = (),
    compression: str = "zstd",
    token: str | None = None,
) -> list[str]:
    """Append a catalog to a (hive-)partitioned Parquet dataset under ``root``.

    Each call adds new files (named by a fresh id), never rewriting existing ones, so
    appending is safe while readers read; files are written under temporary names and renamed.
    Read it back with ``polars.scan_parquet(f"{root}/**/*.parquet", hive_partitioning=True)``,
    ``pyarrow.dataset.dataset(root, partitioning="hive")`` or DuckDB. The files are named
    ``part-<token>-<n>.parquet`` (``token``: a fresh id unless given).
    """
    from ._catalog import Catalog

    table = source.to_arrow() if isinstance(source, Catalog) else source
    root = os.fspath(root)
    os.makedirs(root, exist_ok=True)
    token = token or uuid.uuid4().hex[:12]
    final = []
    for i, (folder, rows) in enumerate(partitions(table, partition_by)):
        target = os.path.join(root, folder, f"part-{token}-{i}.parquet")
        with atomic_path(target) as tmp:  # (its folder made)
            pq.write_table(rows, tmp, compression=compression)
        final.append(target)
    return final
