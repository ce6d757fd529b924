"""Lake tables: catalog and record batches appended to Parquet part files, Delta Lake or Iceberg.

One :class:`TableWriter` per target. Every batch it appends carries a *batch id* (derived
from what the batch holds, or the record part it mirrors); before committing, the writer
looks for that id in the table's commit metadata and skips a batch already there, so a rerun
after a kill adds nothing twice. Commits that conflict with another writer's are retried with
a growing, jittered pause, so several processes may append at once. A batch with columns the
table lacks adds them (additive schema evolution); a batch lacking some gets them as nulls.

Where the batch id is kept:

- ``parquet``: part files ``part-<batch>-<n>.parquet`` under the folder, and an empty marker
  ``_batches/<batch>`` written once every part file of the batch is in place (a batch id
  with other characters than letters, digits, ``_`` and ``.`` is hashed for these names);
- ``delta``: an application transaction ``dicomflow-<batch>`` (Delta's idempotent-write
  mechanism) and ``dicomflow.batch`` in the commit's metadata;
- ``iceberg``: ``dicomflow.batch`` in the snapshot summary.

The types Delta and Iceberg lack are stored as the nearest they have: unsigned integers in
the next wider signed type; a DICOM time (``time64``) as ``HH:MM:SS.ffffff`` text in Delta
(Iceberg has a time type).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from ..dicom import is_url
from ..errors import ConfigError, TableError

if TYPE_CHECKING:
    from ..runtime import ProgressConsumer
    from ._catalog import Catalog, ScanStats

__all__ = [
    "FORMATS", "TableWriter", "batch_id", "read_table", "rows_batch_id", "write_table",
]  # fmt: skip

FORMATS = ("parquet", "delta", "iceberg")
BATCH_KEY = "dicomflow.batch"
_APP = "dicomflow-"
_MARKERS = "_batches"
_EXTRA = "lake"


def batch_id(*parts: Any) -> str:
    """A batch id from JSON-serialisable parts (e.g. a run id and a batch number)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def rows_batch_id(table: pa.Table | pa.RecordBatch, keys: Sequence[str] = ()) -> str:
    """A batch id from the rows' identity: ``keys`` (default: ``uri``, ``size`` and
    ``modified`` where the table has them, else every column), in row order."""
    names = [k for k in (keys or ("uri", "size", "modified")) if k in table.schema.names]
    names = names or list(table.schema.names)
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0")
        digest.update(json.dumps(table.column(name).to_pylist(), default=str).encode())
    return digest.hexdigest()[:32]


def _lazy(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"this table format needs {module.split('.')[0]}: pip install 'dicomflow[{_EXTRA}]'"
        ) from exc


# -- types ----------------------------------------------------------------------------------------

_WIDER = {
    pa.uint8(): pa.int16(),
    pa.uint16(): pa.int32(),
    pa.uint32(): pa.int64(),
    pa.uint64(): pa.int64(),
}


def _lake_type(t: pa.DataType, fmt: str) -> pa.DataType:
    """The type a column of type ``t`` is stored as in ``fmt``."""
    if t in _WIDER:
        return _WIDER[t]
    if pa.types.is_null(t):
        return pa.string()
    if pa.types.is_dictionary(t):
        return _lake_type(t.value_type, fmt)
    if fmt == "delta" and pa.types.is_time(t):
        return pa.string()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = _lake_type(t.value_type, fmt)
        return pa.list_(inner) if inner != t.value_type or pa.types.is_large_list(t) else t
    if pa.types.is_struct(t):
        fields = [pa.field(f.name, _lake_type(f.type, fmt), f.nullable) for f in t]
        return pa.struct(fields)
    return t


def _cast_column(column: Any, target: pa.DataType) -> Any:
    """``column`` as ``target`` (a time as text is ``HH:MM:SS.ffffff``, also inside lists)."""
    return column if column.type == target else pc.cast(column, target)


def conform(table: pa.Table, fmt: str, schema: pa.Schema | None = None) -> tuple[pa.Table, bool]:
    """``table`` in the types ``fmt`` stores, aligned to the table's ``schema`` (columns it
    lacks added as nulls, types of the table's); and whether ``table`` has new columns."""
    columns, fields = [], []
    for field in table.schema:
        target = _lake_type(field.type, fmt)
        if schema is not None and field.name in schema.names:
            target = schema.field(field.name).type
        try:
            columns.append(_cast_column(table.column(field.name), target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise TableError(
                f"column {field.name!r} ({field.type}) does not fit the table's {target}: {exc}"
            ) from exc
        fields.append(pa.field(field.name, target))
    new = False
    if schema is not None:
        new = any(name not in schema.names for name in table.schema.names)
        for field in schema:
            if field.name not in table.schema.names:
                columns.append(pa.nulls(table.num_rows, field.type))
                fields.append(pa.field(field.name, field.type))
    return pa.table(columns, schema=pa.schema(fields)), new


# -- storage options ------------------------------------------------------------------------------


def object_store_options(uri: str, options: Mapping[str, Any]) -> dict[str, str]:
    """fsspec-style S3 options (``key``, ``secret``, ``endpoint_url``...) as Delta's
    (``AWS_ACCESS_KEY_ID``...); upper-case keys pass as they are. On ``s3://``, commits use
    S3 conditional puts (``conditional_put=etag``) unless a locking provider or
    ``AWS_S3_ALLOW_UNSAFE_RENAME`` is given."""
    names = {
        "key": "AWS_ACCESS_KEY_ID",
        "secret": "AWS_SECRET_ACCESS_KEY",
        "token": "AWS_SESSION_TOKEN",
        "endpoint_url": "AWS_ENDPOINT_URL",
        "region_name": "AWS_REGION",
    }
    out: dict[str, str] = {}
    for key, value in options.items():
        if key in names:
            out[names[key]] = str(value)
        elif key == "client_kwargs" and isinstance(value, Mapping):
            for k, v in value.items():
                if k in names:
                    out[names[k]] = str(v)
        elif key == "anon" and value:
            out["AWS_SKIP_SIGNATURE"] = "true"
        elif key.isupper() or key.startswith(("aws_", "conditional_put", "google_", "azure_")):
            out[key] = str(value)
    if out.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        out.setdefault("AWS_ALLOW_HTTP", "true")
    if uri.startswith(("s3://", "s3a://")):
        out.setdefault("AWS_REGION", "us-east-1")
        safe = {"AWS_S3_LOCKING_PROVIDER", "AWS_S3_ALLOW_UNSAFE_RENAME", "conditional_put"}
        if not safe & {k for k in out} and "aws_conditional_put" not in out:
            out["conditional_put"] = "etag"
    return out


def iceberg_properties(options: Mapping[str, Any]) -> dict[str, str]:
    """fsspec-style S3 options as pyiceberg's FileIO properties (``s3.endpoint``...);
    keys with a dot (``s3.region``) pass as they are."""
    names = {
        "key": "s3.access-key-id",
        "secret": "s3.secret-access-key",
        "token": "s3.session-token",
        "endpoint_url": "s3.endpoint",
        "region_name": "s3.region",
    }
    out: dict[str, str] = {}
    for key, value in options.items():
        if key in names:
            out[names[key]] = str(value)
        elif key == "client_kwargs" and isinstance(value, Mapping):
            out.update({names[k]: str(v) for k, v in value.items() if k in names})
        elif "." in key:
            out[key] = str(value)
    if "s3.endpoint" in out:
        out.setdefault("s3.region", "us-east-1")
        out.setdefault("s3.force-virtual-addressing", "false")
    return out


# -- retries --------------------------------------------------------------------------------------


def _pause(attempt: int) -> None:
    time.sleep(min(2.0, 0.02 * 2**attempt) * (0.5 + random.random()))


# -- the formats ----------------------------------------------------------------------------------


class _Parquet:
    """Part files under a folder; a batch's marker is written after its last part."""

    def __init__(self, uri: str, storage_options: Mapping[str, Any], partition_by: Sequence[str]):
        import fsspec

        self.uri = uri
        self.partition_by = tuple(partition_by)
        self.url = is_url(uri)
        if self.url:
            self.fs, self.root = fsspec.core.url_to_fs(uri, **dict(storage_options))
        else:
            self.fs, self.root = None, os.path.abspath(uri)

    @staticmethod
    def token(batch: str) -> str:
        """How a batch id names files: itself, or where it has other characters than
        letters, digits, ``_`` and ``.``, its hash."""
        if re.fullmatch(r"[0-9A-Za-z_.]{1,64}", batch):
            return batch
        return hashlib.sha256(batch.encode()).hexdigest()[:32]

    def _marker(self, batch: str) -> str:
        return f"{self.root.rstrip('/')}/{_MARKERS}/{self.token(batch)}"

    def has_batch(self, batch: str) -> bool:
        marker = self._marker(batch)
        return bool(self.fs.exists(marker)) if self.fs is not None else os.path.exists(marker)

    def batches(self) -> set[str]:
        folder = f"{self.root.rstrip('/')}/{_MARKERS}"
        try:
            names = self.fs.ls(folder, detail=False) if self.fs is not None else os.listdir(folder)
        except FileNotFoundError:
            return set()
        return {n.rstrip("/").rsplit("/", 1)[-1] for n in names}

    def _stale(self, batch: str) -> list[str]:
        """Part files of ``batch`` a crash left without their marker."""
        pattern = f"{self.root.rstrip('/')}/**/part-{self.token(batch)}-*.parquet"
        if self.fs is not None:
            return list(self.fs.glob(pattern))
        import glob

        return glob.glob(pattern, recursive=True)

    def append(self, table: pa.Table, batch: str) -> bool:
        if self.has_batch(batch):
            return False
        for path in self._stale(batch):
            self.fs.rm(path) if self.fs is not None else os.unlink(path)
        if self.fs is None:
            from ._parquet import write_dataset

            write_dataset(table, self.root, partition_by=self.partition_by, token=self.token(batch))
            os.makedirs(os.path.dirname(self._marker(batch)), exist_ok=True)
            with open(self._marker(batch), "wb"):
                pass
        else:
            import pyarrow.parquet as pq

            from ._parquet import partitions

            root = self.root.rstrip("/")
            for i, (folder, rows) in enumerate(partitions(table, self.partition_by)):
                name = "/".join(
                    p for p in (root, folder, f"part-{self.token(batch)}-{i}.parquet") if p
                )
                with self.fs.open(name, "wb") as f:  # an object's put is whole or nothing
                    pq.write_table(rows, f, compression="zstd")
            self.fs.pipe_file(self._marker(batch), b"")
        return True

    def delete_uris(self, uris: Sequence[str]) -> None:
        raise ConfigError("an incremental update of changed files needs a delta or iceberg table")

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        import pyarrow.dataset as pads

        done = self.batches()
        if not done:
            return pa.table({})
        dataset = pads.dataset(
            self.root,
            filesystem=self.fs,
            format="parquet",
            partitioning="hive",
            exclude_invalid_files=True,
            ignore_prefixes=[".", "_"],
        )
        keep = [
            f
            for f in dataset.files
            if f.replace("\\", "/").rsplit("/", 1)[-1][len("part-") :].split("-", 1)[0] in done
        ]
        dataset = pads.dataset(
            keep,
            filesystem=self.fs,
            format="parquet",
            partitioning=pads.partitioning(flavor="hive"),
            partition_base_dir=self.root,
        )
        names = [c for c in columns if c in dataset.schema.names] if columns else None
        return dataset.to_table(columns=names)


class _Delta:
    """A Delta Lake table (the ``deltalake`` package)."""

    def __init__(
        self,
        uri: str,
        storage_options: Mapping[str, Any],
        partition_by: Sequence[str],
        retries: int,
    ):
        self.dl = _lazy("deltalake")
        self.uri = uri if is_url(uri) else os.path.abspath(uri)
        self.options = object_store_options(uri, storage_options)
        self.partition_by = list(partition_by) or None
        self.retries = retries

    def _open(self) -> Any:
        try:
            return self.dl.DeltaTable(self.uri, storage_options=self.options or None)
        except self.dl.exceptions.TableNotFoundError:
            return None

    @staticmethod
    def _has(dt: Any, batch: str) -> bool:
        return dt is not None and dt.transaction_version(_APP + batch) is not None

    def has_batch(self, batch: str) -> bool:
        return self._has(self._open(), batch)

    def batches(self) -> set[str]:
        dt = self._open()
        if dt is None:
            return set()
        return {str(h[BATCH_KEY]) for h in dt.history() if BATCH_KEY in h}

    def append(self, table: pa.Table, batch: str) -> bool:
        dl = self.dl
        conflicts = (dl.exceptions.CommitFailedError, dl.exceptions.DeltaError, OSError)
        last: BaseException | None = None
        for attempt in range(self.retries):
            dt = self._open()
            if self._has(dt, batch):
                return False
            schema = pa.schema(dt.schema().to_arrow()) if dt is not None else None
            data, new = conform(table, "delta", schema)
            properties = dl.CommitProperties(
                custom_metadata={BATCH_KEY: batch},
                app_transactions=[dl.Transaction(_APP + batch, 1)],
            )
            try:
                dl.write_deltalake(
                    dt if dt is not None else self.uri,
                    data,
                    mode="append",
                    schema_mode="merge" if new else None,
                    partition_by=self.partition_by if dt is None else None,
                    storage_options=self.options or None if dt is None else None,
                    commit_properties=properties,
                )
                return True
            except dl.exceptions.SchemaMismatchError as exc:
                raise TableError(f"batch {batch} does not fit {self.uri}: {exc}") from exc
            except conflicts as exc:  # a concurrent commit (or the table created meanwhile)
                if not isinstance(exc, dl.exceptions.CommitFailedError) and attempt >= 4:
                    raise TableError(f"appending to {self.uri} failed: {exc}") from exc
                last = exc
                _pause(attempt)
        raise TableError(f"appending to {self.uri} kept conflicting: {last}") from last

    def delete_uris(self, uris: Sequence[str]) -> None:
        quoted = ", ".join("'" + u.replace("'", "''") + "'" for u in uris)
        last: BaseException | None = None
        for attempt in range(self.retries):
            dt = self._open()
            if dt is None:
                return
            try:
                dt.delete(f"uri IN ({quoted})")
                return
            except (self.dl.exceptions.CommitFailedError, self.dl.exceptions.DeltaError) as exc:
                last = exc
                _pause(attempt)
        raise TableError(f"deleting from {self.uri} kept conflicting: {last}") from last

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        dt = self._open()
        if dt is None:
            return pa.table({})
        # deltalake's own engine (DataFusion), not its pyarrow dataset: that one reads
        # through a Python file system whose reads ahead can outlive the call, and abort the
        # interpreter as it exits (arrow's threads then take the GIL of a finished Python)
        schema = pa.schema(dt.schema().to_arrow())
        names = [c for c in columns if c in schema.names] if columns else schema.names
        if not names:
            return pa.table({})
        query = "SELECT " + ", ".join('"' + n.replace('"', '""') + '"' for n in names)
        reader = self.dl.QueryBuilder().register("t", dt).execute(query + " FROM t")
        batches = [pa.record_batch(b) for b in reader]
        wanted = pa.schema([schema.field(n) for n in names])
        if not batches:
            return wanted.empty_table()
        return pa.Table.from_batches(batches).cast(wanted)


class _Iceberg:
    """An Iceberg table in a SQL catalog (SQLite by default), with pyiceberg."""

    def __init__(
        self,
        uri: str,
        storage_options: Mapping[str, Any],
        partition_by: Sequence[str],
        retries: int,
        catalog: str | None,
        name: str,
    ):
        self.sql = _lazy("pyiceberg.catalog.sql")
        self.exc = _lazy("pyiceberg.exceptions")
        url = is_url(uri)
        self.uri = uri.rstrip("/") if url else os.path.abspath(uri)
        if catalog is None:
            if url:
                raise ConfigError(
                    f"an Iceberg table at {uri} needs a catalog: give a local SQLite file "
                    "(e.g. catalog='lake-catalog.db') or a SQLAlchemy URL"
                )
            os.makedirs(self.uri, exist_ok=True)
            catalog = os.path.join(self.uri, "catalog.db")
        if "://" not in catalog:
            catalog = "sqlite:///" + os.path.abspath(catalog)
        self.catalog_uri = catalog
        self.warehouse = self.uri if url else "file://" + self.uri
        self.properties = iceberg_properties(storage_options)
        self.partition_by = tuple(partition_by)
        self.retries = retries
        self.name = name if "." in name else f"dicomflow.{name}"
        self._catalog: Any = None

    def _cat(self) -> Any:
        if self._catalog is None:
            self._catalog = self.sql.SqlCatalog(
                "dicomflow", uri=self.catalog_uri, warehouse=self.warehouse, **self.properties
            )
        return self._catalog

    def _load(self) -> Any:
        try:
            return self._cat().load_table(self.name)
        except (self.exc.NoSuchTableError, self.exc.NoSuchNamespaceError):
            return None

    def _create(self, schema: pa.Schema) -> Any:
        cat = self._cat()
        namespace = self.name.rsplit(".", 1)[0]
        try:
            cat.create_namespace_if_not_exists(namespace)
        except self.exc.NamespaceAlreadyExistsError:
            pass
        try:
            table = cat.create_table(self.name, schema=schema)
        except self.exc.TableAlreadyExistsError:
            return cat.load_table(self.name)
        if self.partition_by:
            with table.update_spec() as spec:
                for column in self.partition_by:
                    spec.add_identity(column)
        return table

    @staticmethod
    def _has(table: Any, batch: str) -> bool:
        return table is not None and any(
            s.summary is not None and s.summary.get(BATCH_KEY) == batch for s in table.snapshots()
        )

    def has_batch(self, batch: str) -> bool:
        return self._has(self._load(), batch)

    def batches(self) -> set[str]:
        table = self._load()
        if table is None:
            return set()
        found = (s.summary.get(BATCH_KEY) if s.summary else None for s in table.snapshots())
        return {b for b in found if b}

    def append(self, table: pa.Table, batch: str) -> bool:
        import sqlalchemy.exc

        retry = (
            self.exc.CommitFailedException,
            self.exc.TableAlreadyExistsError,
            sqlalchemy.exc.OperationalError,
            sqlalchemy.exc.IntegrityError,
        )
        last: BaseException | None = None
        for attempt in range(self.retries):
            try:
                target = self._load()
                if self._has(target, batch):
                    return False
                data, _ = conform(table, "iceberg")
                if target is None:
                    target = self._create(data.schema)
                held = target.schema().as_arrow()
                if any(name not in held.names for name in data.schema.names):
                    with target.update_schema() as update:
                        update.union_by_name(data.schema)
                    continue  # reload: the new schema, and commits made meanwhile
                data, _ = conform(data, "iceberg", held)
                target.append(data, snapshot_properties={BATCH_KEY: batch})
                return True
            except retry as exc:
                last = exc
                _pause(attempt)
            except ValueError as exc:
                raise TableError(f"batch {batch} does not fit {self.name}: {exc}") from exc
        raise TableError(f"appending to {self.name} kept conflicting: {last}") from last

    def delete_uris(self, uris: Sequence[str]) -> None:
        from pyiceberg import expressions

        within: Any = expressions.In  # a pydantic model: its signature is not what mypy sees
        last: BaseException | None = None
        for attempt in range(self.retries):
            table = self._load()
            if table is None:
                return
            try:
                table.delete(within("uri", list(uris)))
                return
            except self.exc.CommitFailedException as exc:
                last = exc
                _pause(attempt)
        raise TableError(f"deleting from {self.name} kept conflicting: {last}") from last

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        table = self._load()
        if table is None:
            return pa.table({})
        if columns:
            held = set(table.schema().as_arrow().names)
            return table.scan(selected_fields=tuple(c for c in columns if c in held)).to_arrow()
        return table.scan().to_arrow()

    def table(self) -> Any:
        """The pyiceberg ``Table`` (for ``polars.scan_iceberg``), or None before the first
        append."""
        return self._load()


class TableWriter:
    """Append batches to a lake table: ``parquet`` part files, ``delta`` or ``iceberg``.

    Parameters
    ----------
    uri
        Local folder or URL (``s3://bucket/path``) of the table (Iceberg: its warehouse).
    format
        ``"parquet"``, ``"delta"`` or ``"iceberg"``.
    storage_options
        fsspec-style options (``key``, ``secret``, ``endpoint_url``); turned into Delta's
        and pyiceberg's own (``AWS_ACCESS_KEY_ID``..., ``s3.endpoint``...).
    partition_by
        Columns to partition by (hive folders; Delta partitions; Iceberg identity partitions).
    catalog
        Iceberg only: the SQL catalog, a SQLite file or a SQLAlchemy URL (default:
        ``catalog.db`` in a local warehouse; required for a URL).
    table
        Iceberg only: the table's name in the catalog, ``namespace.name``.
    retries
        Attempts at a commit that conflicts with another writer's.

    Examples
    --------
    >>> writer = TableWriter("catalog.delta", "delta")  # doctest: +SKIP
    >>> writer.append(batch, rows_batch_id(batch))  # doctest: +SKIP
    True
    """

    def __init__(
        self,
        uri: str | os.PathLike[str],
        format: str = "parquet",
        *,
        storage_options: Mapping[str, Any] | None = None,
        partition_by: Sequence[str] = (),
        catalog: str | None = None,
        table: str = "dicomflow.catalog",
        retries: int = 30,
    ) -> None:
        if format not in FORMATS:
            raise ConfigError(f"table format {format!r}: expected one of {', '.join(FORMATS)}")
        self.uri = os.fspath(uri)
        self.format = format
        options = dict(storage_options or {})
        self._impl: _Parquet | _Delta | _Iceberg
        if format == "parquet":
            self._impl = _Parquet(self.uri, options, partition_by)
        elif format == "delta":
            self._impl = _Delta(self.uri, options, partition_by, retries)
        else:
            self._impl = _Iceberg(self.uri, options, partition_by, retries, catalog, table)

    def __repr__(self) -> str:
        return f"<dicomflow TableWriter {self.format} {self.uri!r}>"

    def has_batch(self, batch: str) -> bool:
        """Whether a batch with this id is committed."""
        return self._impl.has_batch(batch)

    def batches(self) -> set[str]:
        """The ids of every committed batch."""
        return self._impl.batches()

    def append(self, table: pa.Table | pa.RecordBatch, batch: str | None = None) -> bool:
        """Commit ``table`` as one batch; False where a batch with this id is committed
        already (nothing written). ``batch`` defaults to
        :func:`~dicomflow.catalog.rows_batch_id`."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if table.num_rows == 0:
            return False
        return self._impl.append(table, batch or rows_batch_id(table))

    def append_all(self, batches: Iterable[pa.Table | pa.RecordBatch]) -> tuple[int, int]:
        """Append each batch under its :func:`~dicomflow.catalog.rows_batch_id`; (rows
        appended, rows of batches committed before, skipped)."""
        added = skipped = 0
        for batch in batches:
            if self.append(batch):
                added += batch.num_rows
            else:
                skipped += batch.num_rows
        return added, skipped

    def append_new(
        self, batches: Iterable[pa.Table | pa.RecordBatch], keys: Sequence[str]
    ) -> tuple[int, int]:
        """Append the rows whose ``keys`` the table does not hold yet, a batch at a time
        (each batch's id from those keys): however a rerun batches the same rows, none is
        appended twice. Returns (rows appended, rows held already)."""
        held = self.read(columns=keys)
        have: set[tuple[Any, ...]] = set()
        if held.num_rows and all(k in held.column_names for k in keys):
            have = set(zip(*(held.column(k).to_pylist() for k in keys)))
        added = skipped = 0
        for batch in batches:
            table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
            if have:
                rows = zip(*(table.column(k).to_pylist() for k in keys))
                table = table.filter(pa.array([r not in have for r in rows], pa.bool_()))
            skipped += batch.num_rows - table.num_rows
            if table.num_rows and self.append(table, rows_batch_id(table, keys)):
                added += table.num_rows
            else:
                skipped += table.num_rows
        return added, skipped

    def delete_uris(self, uris: Sequence[str]) -> None:
        """Remove the rows of these URIs (Delta and Iceberg: one commit)."""
        if uris:
            self._impl.delete_uris(uris)

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole table (``columns`` where it has them) as one ``pyarrow.Table``."""
        return self._impl.read(columns)

    def iceberg_table(self) -> Any:
        """The pyiceberg ``Table`` (Iceberg only; None before the first append)."""
        if not isinstance(self._impl, _Iceberg):
            raise ConfigError(f"{self.uri} is a {self.format} table, not an Iceberg one")
        return self._impl.table()


def write_table(
    catalog: Catalog,
    writer: TableWriter,
    *,
    incremental: bool = False,
    progress: ProgressConsumer | None = None,
) -> ScanStats:
    """Append a scan to a lake table, one commit per scan batch (its id from the batch's
    URIs, sizes and modification times, so a rerun skips what a killed run committed).

    ``incremental``: read only the files the table lacks or holds with another size or
    modification time (see :meth:`Catalog.update`); the rows of changed files are deleted
    first (a run killed in between leaves them out, and the next run finds them new).
    """
    from ._incremental import Known

    if incremental:
        held = writer.read(columns=("uri", "size", "modified"))
        files: dict[str, tuple[int | None, int | None]] = {}
        if held.num_rows:
            uris = held.column("uri").to_pylist()
            sizes = held.column("size").to_pylist()
            times = held.column("modified").cast(pa.timestamp("us", tz="UTC"))
            files = dict(zip(uris, zip(sizes, times.cast(pa.int64()).to_pylist())))
        known = Known(files)
        narrowed = catalog.only(known.new_or_changed)
        first = True
        for batch in narrowed.iter_batches(progress):
            if first and known.changed:
                writer.delete_uris(sorted(known.changed))
            first = False
            writer.append(batch)
        stats = narrowed.stats
        stats.unchanged = known.unchanged
        stats.replaced = len(known.changed)
        catalog.stats = stats
        return stats
    committed = writer.batches()  # a rerun skips these without a look at the table each
    for batch in catalog.iter_batches(progress):
        if rows_batch_id(batch) not in committed:
            writer.append(batch)
    return catalog.stats


def read_table(
    uri: str | os.PathLike[str],
    format: str = "parquet",
    *,
    storage_options: Mapping[str, Any] | None = None,
    columns: Sequence[str] | None = None,
    catalog: str | None = None,
    table: str = "dicomflow.catalog",
) -> pa.Table:
    """A lake table written by :class:`TableWriter`, as one ``pyarrow.Table``."""
    writer = TableWriter(uri, format, storage_options=storage_options, catalog=catalog, table=table)
    return writer.read(columns)
