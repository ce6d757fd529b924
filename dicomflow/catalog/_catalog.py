"""``scan``: DICOM objects anywhere -> a lazy catalog, one typed Arrow row per instance."""

from __future__ import annotations

import fnmatch
import itertools
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..dicom import (
    FIXED_SCHEMA,
    ColumnSpec,
    ParsedHeader,
    catalog_schema,
    column_array,
    encodings_of,
    is_url,
    resolve_columns,
    specs_for_tags,
)
from ..errors import ConfigError
from ..runtime import (
    Executor,
    InProcessExecutor,
    ProcessExecutor,
    ProgressConsumer,
    ProgressEvent,
    fork_is_safe,
    make_executor,
)
from ._sources import DEFAULT_PREFIX, FileRef, iter_sources, read_headers

if TYPE_CHECKING:
    import dask.dataframe
    import polars

__all__ = ["Catalog", "ScanEvent", "ScanOptions", "ScanStats", "scan", "scan_batch"]

_TS_BY_ENCODING = {
    (True, True): "1.2.840.10008.1.2",
    (True, False): "1.2.840.10008.1.2.1",
    (False, False): "1.2.840.10008.1.2.2",
}


@dataclass(frozen=True)
class ScanOptions:
    """What a scan reads: picklable, sent with every batch to the workers."""

    specs: tuple[ColumnSpec, ...] | None  # None: every public attribute present
    header: str | None = None
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    prefix: int = DEFAULT_PREFIX


@dataclass
class ScanStats:
    """Counters of a scan, filled while its batches stream."""

    files: int = 0
    errors: int = 0
    bytes_read: int = 0
    fallbacks: int = 0
    seconds: float = 0.0
    #: files listed but left out by ``exclude`` patterns (not rows)
    excluded: int = 0
    #: incremental updates: files the catalog held as they are (not read again), and rows of
    #: changed files read again
    unchanged: int = 0
    replaced: int = 0
    #: files to read, once the listing has ended (None while it runs): the progress total
    total: int | None = None

    @property
    def instances(self) -> int:
        return self.files - self.errors

    @property
    def files_per_second(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    def event(self, *, finished: bool = False) -> ScanEvent:
        """These counters as a progress event."""
        return ScanEvent(
            "scanning", unit="files", done=self.files, total=self.total, failed=self.errors,
            bytes=self.bytes_read, elapsed=self.seconds, fallbacks=self.fallbacks,
            finished=finished,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ScanEvent(ProgressEvent):
    """A scan's progress event: the counters of :class:`ScanStats` so far, by the same names
    (``files``, ``errors``, ``bytes_read``, ``seconds``...), so a callback written for the
    stats reads an event the same way."""

    fallbacks: int = 0

    @property
    def files(self) -> int:
        return self.done

    @property
    def errors(self) -> int:
        return self.failed

    @property
    def bytes_read(self) -> int:
        return self.bytes

    @property
    def seconds(self) -> float:
        return self.elapsed

    @property
    def instances(self) -> int:
        return self.done - self.failed

    @property
    def files_per_second(self) -> float:
        return self.rate


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return raw.decode("latin-1").rstrip("\x00 ")


#: the largest Number of Frames the int32 column holds (real objects stay far below)
_MAX_FRAMES = 2**31 - 1


def _fixed_row(
    uri: str, size: int | None, modified: int | None, h: ParsedHeader | None, error: str | None
) -> tuple:
    if h is None:
        return (uri, size, modified, None, None, None, None, None, None, None, None, error)
    ts = _text(h.meta.get(0x00020010)) or _TS_BY_ENCODING.get((h.little, h.implicit))
    if ts is None:  # no File Meta, and the data reads as implicit VR big endian
        error = error or "the data reads as implicit VR big endian, which no transfer syntax is"
    sop_class = _text(h.value(0x00080016)) or _text(h.meta.get(0x00020002)) or None
    sop_instance = _text(h.value(0x00080018)) or _text(h.meta.get(0x00020003)) or None
    frames: int | None = None
    pixel_offset = h.pixel_offset
    pixel_length: int | None = None
    if h.pixel is not None:
        frames_raw = _text(h.value(0x00280008))
        try:
            frames = int(float(frames_raw)) if frames_raw else 1
        except ValueError:
            frames = 1
        except OverflowError:  # "1e999"
            frames = -1
        if not 1 <= frames <= _MAX_FRAMES:
            error = error or f"Number of Frames {frames_raw!r} is not a frame count"
            frames = None
        declared = h.pixel[3]
        if declared == 0xFFFFFFFF:
            pixel_length = (
                size - pixel_offset if size is not None and pixel_offset is not None else None
            )
        else:
            pixel_length = declared
            if size is not None and pixel_offset is not None and pixel_offset + declared > size:
                error = error or (
                    f"Pixel Data truncated: {declared} bytes declared at byte {pixel_offset}, "
                    f"the file has {size - pixel_offset}"
                )
    return (
        uri,
        size,
        modified,
        ts,
        sop_class,
        sop_instance,
        _text(h.value(0x0020000D)) or None,
        _text(h.value(0x0020000E)) or None,
        pixel_offset,
        pixel_length,
        frames,
        error,
    )


def _header_json(uri: str, h: ParsedHeader, held: bytes) -> str | None:
    from pydicom import dcmread

    source = held[: h.header_end] if held else None
    if source is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(BytesIO(source), force=True, stop_before_pixels=True)
            doc = ds.to_json_dict(
                bulk_data_threshold=4096,
                bulk_data_element_handler=lambda e: f"{uri}#tag={int(e.tag):08X}",
            )
        except Exception as exc:  # noqa: BLE001 - the header of a broken file stays null
            return json.dumps({"error": f"{type(exc).__name__}: {exc}"})
    if h.pixel is not None and h.pixel_offset is not None:
        tag, vr, _, length = h.pixel
        doc[f"{tag:08X}"] = {
            "vr": (vr or b"OW").decode("latin-1"),
            "BulkDataURI": f"{uri}#offset={h.pixel_offset}&length={length}",
        }
    return json.dumps(doc, separators=(",", ":"))


def scan_batch(refs: Sequence[FileRef], options: ScanOptions) -> tuple[pa.RecordBatch, dict]:
    """Scan one batch of objects into a record batch (runs in a worker).

    This is the scan's per-file boundary: whatever fails while one object is read, its fixed
    columns derived or one of its values converted becomes that object's ``error`` (the
    values that did convert stay), and every other row of the batch is unaffected.
    """
    results, counters = read_headers(refs, options.storage_options, options.prefix)
    headers: list[ParsedHeader | None] = [r[1] for r in results]
    errors: list[str | None] = [r[3] for r in results]

    def fail(i: int, what: str, exc: BaseException) -> None:
        errors[i] = errors[i] or f"{what}: {type(exc).__name__}: {exc}"

    encodings: list[tuple[str, ...]] = []
    for i, h in enumerate(headers):
        try:
            encodings.append(encodings_of(h) if h is not None else ())
        except Exception as exc:  # noqa: BLE001 - one object, one error row
            fail(i, "Specific Character Set", exc)
            encodings.append(())
    rows = []
    for i, ((uri, _, _), (size, h, _, _, modified)) in enumerate(zip(refs, results, strict=True)):
        try:
            rows.append(_fixed_row(uri, size, modified, h, errors[i]))
        except Exception as exc:  # noqa: BLE001
            fail(i, "cannot read the fixed columns", exc)
            rows.append(_fixed_row(uri, size, modified, None, errors[i]))
    specs = options.specs
    if specs is None:
        specs = specs_for_tags(itertools.chain.from_iterable(h.elements for h in headers if h))
    columns = [_column(spec, headers, encodings, fail) for spec in specs]
    if options.header == "json":
        values = [
            _header_json(uri, h, held) if h is not None else None
            for (uri, _, _), (_, h, held, _, _) in zip(refs, results)
        ]
        columns.append(pa.array(values, type=pa.string()))
    elif options.header == "raw":
        raw = [
            held[: h.header_end] if h is not None and held else None
            for (_, h, held, _, _) in results
        ]
        columns.append(pa.array(raw, type=pa.binary()))
    rows = [(*row[:-1], row[-1] or errors[i]) for i, row in enumerate(rows)]
    fixed = [pa.array(col, type=f.type) for col, f in zip(zip(*rows), FIXED_SCHEMA, strict=True)]
    schema = catalog_schema(specs, header=options.header)
    counters["errors"] = sum(1 for r in rows if r[-1] is not None)
    return pa.RecordBatch.from_arrays(fixed + columns, schema=schema), counters


def _column(
    spec: ColumnSpec,
    headers: Sequence[ParsedHeader | None],
    encodings: Sequence[Sequence[str]],
    fail: Callable[[int, str, BaseException], None],
) -> pa.Array:
    """One attribute column; when the batch fails, each object alone, a failing one null."""
    try:
        return column_array(spec, headers, encodings)
    except Exception:  # noqa: BLE001 - find the object(s) at fault, keep the rest
        pass
    parts = []
    for i, (h, enc) in enumerate(zip(headers, encodings, strict=True)):
        try:
            parts.append(column_array(spec, [h], [enc]))
        except Exception as exc:  # noqa: BLE001
            fail(i, f"cannot convert {spec.name}", exc)
            parts.append(pa.nulls(1, spec.arrow_type))
    return pa.concat_arrays(parts) if parts else pa.array([], spec.arrow_type)


def _scan_task(args: tuple[Sequence[FileRef], ScanOptions]) -> tuple[pa.RecordBatch, dict]:
    return scan_batch(*args)


class _WireBatch:
    """A record batch on its way back from a worker: pickled as one Arrow IPC stream (schema
    and batch), unpickled as the ``pyarrow.RecordBatch`` itself, over the received buffer.

    pyarrow pickles a batch array by array and buffer by buffer; for a catalog batch of 256
    rows and ~80 columns that costs ~5 us per row to pickle and ~2.5 to unpickle, where the
    IPC stream takes ~1 and ~0.3 (measured on the benchmarks' archive).
    """

    __slots__ = ("batch",)

    def __init__(self, batch: pa.RecordBatch):
        self.batch = batch

    def __reduce__(self) -> tuple[Callable[[bytes], pa.RecordBatch], tuple[bytes]]:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, self.batch.schema) as writer:
            writer.write_batch(self.batch)
        return _batch_from_ipc, (sink.getvalue().to_pybytes(),)


def _batch_from_ipc(data: bytes) -> pa.RecordBatch:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_next_batch()


def _scan_task_wired(args: tuple[Sequence[FileRef], ScanOptions]) -> tuple[Any, dict]:
    """:func:`_scan_task` in a worker process: its batch travels as :class:`_WireBatch`
    (only for a process pool: a dask cluster may run tasks in the caller's process, where the
    result is not pickled)."""
    batch, counters = scan_batch(*args)
    return _WireBatch(batch), counters


def _counted(refs: Iterable[FileRef], stats: ScanStats) -> Iterator[FileRef]:
    """The refs, setting ``stats.total`` when the listing ends (a pool or the look-ahead that
    decides on one usually takes the whole listing before the reads are done)."""
    listed = 0
    for ref in refs:
        listed += 1
        yield ref
    stats.total = listed


def _batched(items: Iterable[FileRef], size: int) -> Iterator[list[FileRef]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


#: batches below which ``workers=None`` scans in process
POOL_THRESHOLD = 8
#: batches below which an explicit ``workers=W`` scans in process (forking 2 takes ~50 ms)
EXPLICIT_POOL_THRESHOLD = 3
#: files a catalog's notebook view reads by itself (a larger or remote source says how)
REPR_READ_LIMIT = 5000


class Catalog:
    """A lazy scan: nothing is listed or read until batches are asked for.

    Iterate it for ``pyarrow.RecordBatch`` es (bounded memory), or turn it into a
    ``pyarrow.Table`` (:meth:`to_arrow`), a polars ``DataFrame``/``LazyFrame``
    (:meth:`to_polars`, :meth:`lazy`), a dask ``DataFrame`` (:meth:`to_dask`), or a Parquet
    file (:meth:`to_parquet`). Every input file is exactly one row; a file that is not a
    readable DICOM object has its ``error`` column set.
    """

    def __init__(
        self,
        source: Any,
        options: ScanOptions,
        *,
        workers: int | None = None,
        client: Any = None,
        batch_size: int = 256,
        exclude: Sequence[str] = (),
    ):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.source = source
        self.options = options
        self.workers = workers
        self.client = client
        self.batch_size = batch_size
        self.exclude = tuple(exclude)
        self.stats = ScanStats()
        self._select: Callable[[Iterable[FileRef]], Iterator[FileRef]] | None = None
        self._excluded = 0

    def __repr__(self) -> str:
        cols = "all" if self.options.specs is None else len(self.options.specs)
        return f"<dicomflow.Catalog source={self.source!r} columns={cols}>"

    @property
    def schema(self) -> pa.Schema:
        """The schema of every batch (for ``columns="all"``: the fixed part and header)."""
        return catalog_schema(self.options.specs or (), header=self.options.header)

    def files(self) -> Iterator[FileRef]:
        """``(uri, size, modified)`` of every input, in scan order (``exclude`` applied)."""
        self._excluded = 0
        refs: Iterator[FileRef] = iter_sources(self.source, self.options.storage_options)
        if self.exclude:
            refs = self._not_excluded(refs)
        if self._select is not None:
            refs = self._select(refs)
        return refs

    def _not_excluded(self, refs: Iterable[FileRef]) -> Iterator[FileRef]:
        for ref in refs:
            uri = ref[0]
            name = uri.rpartition("/")[2]
            if any(
                fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(uri, p) for p in self.exclude
            ):
                self._excluded += 1
                continue
            yield ref

    def only(self, select: Callable[[Iterable[FileRef]], Iterator[FileRef]]) -> Catalog:
        """This catalog limited to the listed files ``select`` passes on (a new catalog)."""
        narrowed = Catalog(
            self.source, self.options, workers=self.workers, client=self.client,
            batch_size=self.batch_size, exclude=self.exclude,
        )  # fmt: skip
        narrowed._select = select
        return narrowed

    def update(
        self,
        path: str | os.PathLike[str],
        *,
        partition_by: Sequence[str] = (),
        progress: ProgressConsumer | None = None,
    ) -> ScanStats:
        """Add to the catalog at ``path`` only the files it lacks or holds in an older state.

        A file is read again when its URI is new, or its size or modification time differ from
        the row the catalog has (that row is replaced); unchanged files are not read at all, so
        a rerun after an interruption or on a grown archive gives every file exactly once.
        ``path`` is one Parquet file (rewritten atomically) or, with ``partition_by``, a
        partitioned dataset folder (new rows appended; parts holding changed files rewritten).
        A ``path`` that does not exist yet is created. Returns the counters, with
        ``unchanged`` and ``replaced`` set.

        Examples
        --------
        >>> dfl.scan("archive/").update("catalog.parquet")  # doctest: +SKIP
        """
        from ._incremental import update_catalog

        return update_catalog(self, path, partition_by=tuple(partition_by), progress=progress)

    def _executor(
        self, batches: Iterator[list[FileRef]], shared: Executor | None = None
    ) -> tuple[Executor, Iterator]:
        """Small inputs run in process: starting workers would cost more than it saves.

        One worker scans about 4,000 headers per second and a pool takes about half a second
        to start, so below :data:`POOL_THRESHOLD` batches the pool is not worth it. Where a
        pool is worth it and the caller has one (``shared``), the scan runs there.
        """
        if self.client is None and self.workers == 1:
            return InProcessExecutor(), batches
        if self.client is None:
            # with workers asked for, only an input of one or two batches stays here: forking
            # the workers (~50 ms for 2) costs what scanning a batch beside them (~30 ms) saves
            least = POOL_THRESHOLD if self.workers is None else EXPLICIT_POOL_THRESHOLD
            head = list(itertools.islice(batches, least))
            batches = itertools.chain(head, batches)
            if len(head) < least:
                return InProcessExecutor(), batches
        if shared is not None:
            return shared, batches
        if self.client is None and fork_is_safe():
            # pyarrow imports pandas on its first array from a list: once here, not per worker
            import pandas  # noqa: F401

            return make_executor(self.workers, start_method="fork"), batches
        # (the caller scanning beside W - 1 workers was tried: on a quiet 2-core machine it
        # took 1.13 s where 2 workers and a collecting caller took 1.01, 20,000 small files)
        return make_executor(self.workers, self.client), batches

    def iter_batches(
        self,
        progress: ProgressConsumer | None = None,
        *,
        executor: Executor | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Stream the catalog as record batches, in input order.

        ``progress`` is called with a :class:`ScanEvent` after each batch and once at the end
        (``finished``). ``executor`` is a pool the caller owns (a pipeline's, so that a run has
        one pool): where the scan would start workers, it runs there instead (small inputs
        and ``workers=1`` still run in this process).
        """
        self.stats = stats = ScanStats()
        start = time.perf_counter()
        batches = _batched(_counted(self.files(), stats), self.batch_size)
        shared = executor
        executor, batches = self._executor(batches, shared)
        try:
            tasks = ((batch, self.options) for batch in batches)
            task = _scan_task_wired if isinstance(executor, ProcessExecutor) else _scan_task
            for record_batch, counters in executor.map(task, tasks):
                stats.files += record_batch.num_rows
                stats.errors += counters["errors"]
                stats.bytes_read += counters["bytes_read"]
                stats.fallbacks += counters["fallbacks"]
                stats.seconds = time.perf_counter() - start
                if progress is not None:
                    progress(stats.event())
                yield record_batch
        finally:
            if executor is not shared:
                executor.close()
            stats.seconds = time.perf_counter() - start
            stats.excluded = self._excluded
        if progress is not None:
            progress(stats.event(finished=True))

    __iter__ = iter_batches

    def to_arrow(self) -> pa.Table:
        """The whole catalog as one ``pyarrow.Table``."""
        table = unify(list(self.iter_batches()), self.schema)
        self._last = table  # the notebook view shows it (the same buffers: no copy)
        return table

    def _repr_html_(self) -> str:
        from ._summary import catalog_html

        table = getattr(self, "_last", None)
        if table is None and self._small_and_local():
            table = self.to_arrow()
        return catalog_html(self, table)

    def _small_and_local(self, limit: int = REPR_READ_LIMIT) -> bool:
        """Whether the notebook view may read the catalog itself: local, at most ``limit``
        files (listing stops there)."""
        sources = [self.source] if isinstance(self.source, str | os.PathLike) else self.source
        if any(is_url(os.fspath(s)) for s in sources):
            return False
        try:
            return sum(1 for _ in itertools.islice(self.files(), limit + 1)) <= limit
        except Exception:  # noqa: BLE001 - a source that cannot be listed: not read here
            return False

    def to_polars(self) -> polars.DataFrame:
        """The whole catalog as a polars ``DataFrame``."""
        import polars as pl

        return pl.from_arrow(self.to_arrow())  # type: ignore[return-value]

    def lazy(self) -> polars.LazyFrame:
        """A polars ``LazyFrame`` over the catalog."""
        return self.to_polars().lazy()

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()

    def to_dask(self) -> dask.dataframe.DataFrame:
        """A dask ``DataFrame`` with one partition per batch; each partition scans its files."""
        import dask.dataframe as dd

        if self.options.specs is None:
            raise ConfigError(
                "to_dask() needs a schema known before reading: pass explicit columns "
                "(columns='all' decides its columns from the data)"
            )
        batches = list(_batched(self.files(), self.batch_size))
        meta = self.schema.empty_table().to_pandas()
        return dd.from_map(_scan_frame, batches, options=self.options, meta=meta)

    def to_parquet(
        self, path: str | os.PathLike[str], *, partition_by: Sequence[str] = (), **kwargs: Any
    ) -> ScanStats:
        """Write the catalog to one Parquet file, atomically; returns the scan's counters.

        With ``partition_by`` (e.g. ``["Modality"]``), ``path`` is a folder and the rows are
        appended to a hive-partitioned dataset there instead.
        """
        from ._parquet import write_catalog, write_dataset

        if partition_by:
            table = unify(list(self.iter_batches(kwargs.pop("progress", None))), self.schema)
            write_dataset(table, path, partition_by=tuple(partition_by), **kwargs)
            return self.stats
        return write_catalog(self, path, **kwargs)

    def to_table(
        self,
        uri: str | os.PathLike[str],
        format: str = "delta",
        *,
        incremental: bool = False,
        progress: ProgressConsumer | None = None,
        **options: Any,
    ) -> ScanStats:
        """Append the catalog to a lake table (``"delta"``, ``"iceberg"`` or ``"parquet"``
        part files), one commit per batch; a rerun skips the batches committed already.
        ``options`` go to :class:`~dicomflow.TableWriter` (``storage_options``,
        ``partition_by``, ``catalog``, ``table``).

        Examples
        --------
        >>> dfl.scan("archive/").to_table("catalog.delta", "delta")  # doctest: +SKIP
        """
        from ._tables import TableWriter, write_table

        writer = TableWriter(uri, format, **options)
        return write_table(self, writer, incremental=incremental, progress=progress)


def _scan_frame(batch: list[FileRef], options: ScanOptions) -> Any:
    return pa.Table.from_batches([scan_batch(batch, options)[0]]).to_pandas()


def unify(batches: Sequence[pa.RecordBatch | pa.Table], schema: pa.Schema) -> pa.Table:
    """One table from batches whose attribute columns may differ (``columns="all"``).

    Columns are the fixed ones, then attributes in tag order, then ``header``: the same for
    the same files however they were batched.
    """
    if not batches:
        return schema.empty_table()
    tables = [b if isinstance(b, pa.Table) else pa.Table.from_batches([b]) for b in batches]
    if all(t.schema.equals(tables[0].schema) for t in tables):
        return pa.concat_tables(tables)
    table = pa.concat_tables(tables, promote_options="default")
    return table.select(_ordered_names(table.schema))


def _ordered_names(schema: pa.Schema) -> list[str]:
    from pydicom.datadict import keyword_dict

    fixed = [f.name for f in FIXED_SCHEMA]
    rest = [n for n in schema.names if n not in fixed and n != "header"]
    rest.sort(key=lambda n: (keyword_dict.get(n, 0xFFFFFFFF), n))
    return fixed + rest + (["header"] if "header" in schema.names else [])


def scan(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    columns: str | Sequence[str] | None = "default",
    header: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    workers: int | None = None,
    client: Any = None,
    batch_size: int = 256,
    prefix: int = DEFAULT_PREFIX,
    exclude: str | Sequence[str] = (),
) -> Catalog:
    """Catalog DICOM objects: one typed Arrow row per instance, read lazily.

    Parameters
    ----------
    source
        A local path (a file or a folder, scanned recursively), a glob (``"archive/**/*.dcm"``),
        an fsspec URL (``s3://``, ``gs://``, ``zip://...::...``, ``http(s)://``, ``memory://``),
        or a list of them.
    columns
        ``"default"`` (about 70 attributes people filter on), ``"all"`` (every public attribute
        present), or a list of DICOM keywords, tags (``"(0018,0050)"``) and private attributes
        named ``"CREATOR:ggggxxee"`` (see :func:`dicomflow.private_column`).
    header
        ``"json"`` adds a ``header`` column with the whole header as DICOM JSON (PS3.18 F.2,
        Pixel Data as a BulkDataURI); ``"raw"`` adds the encoded header bytes.
    storage_options
        Passed to fsspec for URLs (credentials, ``endpoint_url``, ...).
    workers
        ``None``: one process per core (in process for small inputs); ``1``: in this process.
        ``W`` worker processes (an input of one or two batches is scanned in this process).
    client
        A ``dask.distributed.Client``: batches run on its cluster instead.
    batch_size
        Files per task and per record batch.
    prefix
        Bytes read first from each object; more is fetched only when the header is longer.
    exclude
        Glob patterns (``"*.txt"``, ``"*/DICOMDIR"``) of files to leave out, matched against
        each file's name and its whole URI: sidecar files (READMEs, JSON, NIfTI) then are not
        error rows. Excluded files are counted (``stats.excluded``), not rows.

    Examples
    --------
    >>> cat = dfl.scan("archive/", columns=["PatientID", "Modality"])  # doctest: +SKIP
    >>> cat.to_polars().group_by("Modality").len()  # doctest: +SKIP
    """
    specs = resolve_columns(columns)
    if header not in (None, "json", "raw"):
        raise ConfigError(f"header={header!r}: expected None, 'json' or 'raw'")
    if prefix < 256:
        raise ConfigError(f"prefix must be at least 256 bytes, got {prefix}")
    options = ScanOptions(specs, header, dict(storage_options or {}), prefix)
    patterns = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    return Catalog(
        source, options, workers=workers, client=client, batch_size=batch_size, exclude=patterns
    )
