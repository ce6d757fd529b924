"""A lake's records: one Parquet part per batch of landed instances, a catalog, compaction.

Every part ``_lake/received-<time>-<id>.parquet`` is at once the lake's *records* and its
*catalog*: one row per landed instance, with the scan's columns (``dicomflow.scan``'s fixed
columns and default attributes, read from the landed file, so equal to a scan of the lake but
for ``modified``, the time it was read, and ``uri``) followed by what only the lake knows
(:data:`RECORD_EXTRA`: the SOP Instance UID as received, SHA-256, calling AE, source, time).
:data:`RECORD_SCHEMA` is the records' view of those columns, :func:`read_catalog` the
catalog's; polars and DuckDB read the parts directly
(``pl.scan_parquet("lake/_lake/received-*.parquet")``, ``FROM 'lake/_lake/received-*.parquet'``).
An instance received again has a second row in a later part until the next compaction; the
readers here keep the latest row per SOP Instance UID.

**Compaction.** Parts are merged so that a lake keeps a few of them, not one per batch: when
``compact_parts`` parts have fewer than ``compact_rows`` rows each, and when the lake is
closed, those parts are merged into one (the latest row per SOP Instance UID), named after
the newest of them with a ``-c`` suffix and listing the parts it replaces in its Parquet
metadata (``dicomflow.replaces``). It is written under a temporary name, made durable, and
renamed into place; only then are the parts it replaces removed. A reader of this module
(:func:`read_records`, :func:`read_catalog`, :func:`read_state`) leaves out every part that a
compacted part present replaces, so at every moment, and after a crash at any point, each row
is read exactly once; opening the lake removes what a crash left behind. (A glob read by
another tool in the instant between the rename and the removals could see the replaced rows
twice: read with these functions when the lake is being written.)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..catalog import ScanOptions, scan_batch
from ..dicom import (
    FIXED_SCHEMA,
    atomic_path,
    atomic_write,
    catalog_schema,
    is_url,
    join,
    resolve_columns,
)

__all__ = [
    "CATALOG_OPTIONS",
    "RECORD_EXTRA",
    "RECORD_SCHEMA",
    "STATE_DIR",
    "catalog_rows",
    "compact",
    "finish_compactions",
    "part_table",
    "read_catalog",
    "read_records",
    "read_state",
    "state_parts",
    "write_part",
]

STATE_DIR = "_lake"
RECORD_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("sop_class_uid", pa.string()),
        ("sop_instance_uid", pa.string()),
        ("study_instance_uid", pa.string()),
        ("series_instance_uid", pa.string()),
        ("transfer_syntax_uid", pa.string()),
        ("source_sop_instance_uid", pa.string()),  # as received (a shareable lake: as landed)
        ("sha256", pa.string()),
        ("size", pa.int64()),
        ("calling_ae", pa.string()),
        ("source", pa.string()),  # c-store, c-get, c-move, wado-rs, adopted
        ("received_at", pa.timestamp("us", tz="UTC")),
    ]
)
#: the records' columns that are not the scan's
RECORD_EXTRA = pa.schema([f for f in RECORD_SCHEMA if f.name not in FIXED_SCHEMA.names])
#: what the catalog of a lake holds: the scan's default columns
CATALOG_OPTIONS = ScanOptions(resolve_columns("default"))
_REPLACES = b"dicomflow.replaces"
_RETRIES = 5


# -- writing ------------------------------------------------------------------------------------


def catalog_rows(
    files: Sequence[tuple[str, int, int | None]], storage_options: Mapping[str, Any]
) -> pa.RecordBatch:
    """The scan's rows of landed files ``(uri, size, modified)``, read as ``dicomflow.scan``
    reads them (the header only, from the file just written: the page cache)."""
    options = ScanOptions(CATALOG_OPTIONS.specs, storage_options=dict(storage_options))
    batch, _ = scan_batch(list(files), options)
    return batch


def part_table(records: Mapping[str, Sequence[Any]], catalog: pa.RecordBatch | None) -> pa.Table:
    """One part: the scan's columns (the records' values where both have one: the UIDs the
    lake checked and named the file by), then the records' own; ``catalog`` None: records
    only."""
    base = pa.table(records, schema=RECORD_SCHEMA)  # records are built as a table first
    if catalog is None:
        return base
    columns, fields = [], []
    for field in catalog.schema:
        column = base.column(field.name) if field.name in RECORD_SCHEMA.names else None
        columns.append(column if column is not None else catalog.column(field.name))
        fields.append(field)
    for field in RECORD_EXTRA:
        columns.append(base.column(field.name))
        fields.append(field)
    return pa.table(columns, schema=pa.schema(fields))


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")


def write_part(
    root: str,
    kind: str,
    table: pa.Table,
    *,
    fsync: bool,
    storage_options: Mapping[str, Any],
    name: str | None = None,
    folder: str = STATE_DIR,
) -> str:
    """Write ``table`` as ``<root>/_lake/<kind>-<time>-<id>.parquet`` (or ``name``, or in
    another ``folder`` of ``root``), atomically."""
    name = name or f"{kind}-{_stamp()}-{uuid.uuid4().hex[:8]}.parquet"
    path = join(root, folder, name) if folder else join(root, name)
    if is_url(path):
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        atomic_write(path, sink.getvalue().to_pybytes(), storage_options=storage_options)
        return path
    with atomic_path(path, fsync=fsync) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    if fsync:
        fsync_dir(os.path.dirname(path))
    return path


# -- listing --------------------------------------------------------------------------------------


def _fs(root: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    folder = join(os.fspath(root), STATE_DIR)
    if is_url(folder):
        import fsspec

        fs, path = fsspec.core.url_to_fs(folder, **dict(storage_options or {}))
        return fs, path
    return None, folder


def _names(fs: Any, folder: str, kind: str) -> list[str]:
    """Paths of the ``<kind>-*.parquet`` parts, oldest first (every one, replaced or not)."""
    if fs is not None:
        try:
            found = list(fs.ls(folder, detail=False))
        except FileNotFoundError:
            return []
        names = [n.rsplit("/", 1)[-1] for n in found]
        prefix = folder.rstrip("/") + "/"
    else:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        prefix = folder + os.sep
    return [
        prefix + n for n in sorted(names) if n.startswith(kind + "-") and n.endswith(".parquet")
    ]


def _is_compacted(path: str) -> bool:
    return path.endswith("-c.parquet")


def _replaced_by(fs: Any, path: str) -> list[str]:
    """The part names a compacted part replaces (its Parquet metadata)."""
    if fs is None:
        meta = pq.read_schema(path).metadata or {}
    else:
        with fs.open(path, "rb") as f:
            meta = pq.read_schema(f).metadata or {}
    return list(json.loads(meta.get(_REPLACES, b"[]")))


def _listing(
    root: str, kind: str, storage_options: Mapping[str, Any] | None
) -> tuple[Any, list[str], list[str]]:
    """(fs, the parts to read, the parts replaced by a compacted part but still present)."""
    fs, folder = _fs(root, storage_options)
    paths = _names(fs, folder, kind)
    replaced: set[str] = set()
    for path in paths:
        if _is_compacted(path):
            try:
                replaced.update(_replaced_by(fs, path))
            except FileNotFoundError:
                raise  # compacted again meanwhile: the caller lists again
            except Exception:  # noqa: BLE001 - an unreadable part is set aside on opening
                continue
    base = lambda p: p.replace("\\", "/").rsplit("/", 1)[-1]  # noqa: E731
    live = [p for p in paths if base(p) not in replaced]
    stale = [p for p in paths if base(p) in replaced]
    return fs, live, stale


def state_parts(
    root: str, kind: str, storage_options: Mapping[str, Any] | None = None
) -> list[tuple[Any, str]]:
    """``(filesystem or None, path)`` of each part to read: compacted parts replace theirs."""
    fs, live, _ = _listing(root, kind, storage_options)
    return [(fs, p) for p in live]


def _read_parts(
    root: str,
    kind: str,
    storage_options: Mapping[str, Any] | None,
    columns: Sequence[str] | None,
) -> list[pa.Table]:
    """Every live part of ``kind`` (``columns`` where it has them), read at one moment: a part
    removed by a compaction while reading makes the listing start over."""
    for attempt in range(_RETRIES):
        tables = []
        try:
            fs, live, _ = _listing(root, kind, storage_options)
            for path in live:
                tables.append(_read_one(fs, path, columns))
        except FileNotFoundError:
            if attempt == _RETRIES - 1:
                raise
            continue
        return tables
    return []


def _read_one(fs: Any, path: str, columns: Sequence[str] | None) -> pa.Table:
    try:
        if columns is None:
            return pq.read_table(path, filesystem=fs)
        names = set(pq.read_schema(path, filesystem=fs).names)
        return pq.read_table(path, filesystem=fs, columns=[c for c in columns if c in names])
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:  # opening the lake sets such parts aside
        warnings.warn(f"lake record part {path} is unreadable, skipped: {exc}", stacklevel=3)
        return pa.table({})


# -- reading --------------------------------------------------------------------------------------


def read_records(root: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """The lake's instance records, one row per SOP Instance UID (the latest)."""
    tables = [
        t.select(RECORD_SCHEMA.names).cast(RECORD_SCHEMA)
        for t in _read_parts(root, "received", storage_options, RECORD_SCHEMA.names)
        if t.num_columns == len(RECORD_SCHEMA)
    ]
    if not tables:
        return RECORD_SCHEMA.empty_table()
    return latest_per_uid(pa.concat_tables(tables))


def read_catalog(root: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """The lake's catalog: the scan's columns of every landed instance, one row per SOP
    Instance UID (the latest), as its records were written (no file is read).

    Rows recorded by a dicomflow older than the lake's catalog have only the fixed columns
    the records hold.
    """
    schema = catalog_schema(CATALOG_OPTIONS.specs or ())
    tables = _read_parts(root, "received", storage_options, schema.names)
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return schema.empty_table()
    table = pa.concat_tables([_conform(t, schema) for t in tables])
    return latest_per_uid(table)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.table(columns, schema=schema)


def latest_per_uid(table: pa.Table) -> pa.Table:
    """The last row of each SOP Instance UID, in the order of those rows."""
    if table.num_rows == 0:
        return table
    uids = table.column("sop_instance_uid").to_pylist()
    last: dict[str, int] = {}
    for i, u in enumerate(uids):
        last[u] = i
    if len(last) == len(uids):
        return table
    keep = sorted(last.values())
    return table.take(pa.array(keep, pa.int64()))


def read_state(root: str, kind: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """All ``_lake/<kind>-*.parquet`` parts of a lake as one table (e.g. ``kind="pull"``)."""
    tables = [t for t in _read_parts(root, kind, storage_options, None) if t.num_columns]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="default")


# -- compaction -----------------------------------------------------------------------------------


def compact(
    root: str,
    kind: str,
    *,
    min_parts: int,
    max_rows: int,
    fsync: bool,
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Merge the parts of ``kind`` with fewer than ``max_rows`` rows into one, when there are
    at least ``min_parts`` of them (see the module docstring); returns how many were merged.

    The caller makes sure no other compaction of this lake runs at the same time; parts
    written meanwhile are left for the next one.
    """
    so = dict(storage_options or {})
    fs, live, _ = _listing(root, kind, so)
    small = []
    for path in live:
        try:
            rows = pq.read_metadata(path, filesystem=fs).num_rows
        except FileNotFoundError:
            return 0
        except Exception:  # noqa: BLE001 - unreadable: set aside when the lake opens
            continue
        if rows < max_rows:
            small.append(path)
    if len(small) < max(min_parts, 2):
        return 0
    tables = [pq.read_table(p, filesystem=fs) for p in small]
    table = pa.concat_tables(tables, promote_options="default")
    if kind == "received":
        table = latest_per_uid(table)
    names = [p.replace("\\", "/").rsplit("/", 1)[-1] for p in small]
    metadata = dict(table.schema.metadata or {})
    metadata[_REPLACES] = json.dumps(names).encode()
    table = table.replace_schema_metadata(metadata)
    stamp = max(n[len(kind) + 1 :].split("-", 1)[0] for n in names)  # the newest part's
    name = f"{kind}-{stamp}-{uuid.uuid4().hex[:8]}-c.parquet"
    write_part(root, kind, table, fsync=fsync, storage_options=so, name=name)
    _remove(fs, small)
    if fs is None and fsync:
        fsync_dir(os.path.dirname(small[0]))
    return len(small)


def finish_compactions(root: str, storage_options: Mapping[str, Any] | None = None) -> int:
    """Remove the parts a compacted part replaces that a crash left behind; how many."""
    removed = 0
    for kind in ("received",):
        fs, _, stale = _listing(root, kind, storage_options)
        _remove(fs, stale)
        removed += len(stale)
    return removed


def _remove(fs: Any, paths: Sequence[str]) -> None:
    for path in paths:
        try:
            if fs is None:
                os.unlink(path)
            else:
                fs.rm(path)
        except FileNotFoundError:
            pass


def fsync_dir(folder: str) -> None:
    """Make a folder's new entries durable (best effort: where a folder cannot be opened or
    synced, nothing)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
