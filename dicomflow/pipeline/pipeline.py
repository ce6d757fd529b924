"""Pipelines as data: a source, a chain of stages, sinks; run anywhere, every input accounted for.

>>> run = (dfl.pipeline(dfl.scan("export/"))               # doctest: +SKIP
...        | dfl.filter("Modality = 'CT'")
...        | dfl.Transcode("jpeg2000-lossless")
...       ).write(dfl.writers.Part10Folder("out/"))
>>> report = run.execute(progress=True)                     # doctest: +SKIP
>>> report.manifest                                         # one row per input instance
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute

from .._version import __version__
from ..errors import ConfigError, DiskFullError
from ..runtime import fork_is_safe, make_executor
from .instance import Instance, RunContext, Skip
from .manifest import ManifestWriter, done_inputs, manifest_table
from .stages import Filter

__all__ = ["DiskFullError", "Pipeline", "RunReport", "pipeline"]


@dataclass(frozen=True)
class RunReport:
    """What a run did: the manifest (one row per input) and its counts."""

    run_id: str
    manifest: pa.Table
    seconds: float
    manifest_path: str | None = None
    stopped: str | None = None  # why the run stopped early (e.g. a full disk), else None

    def count(self, status: str) -> int:
        return sum(1 for s in self.manifest.column("status").to_pylist() if s == status)

    @property
    def done(self) -> int:
        return self.count("done")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def failed(self) -> int:
        return self.count("failed")

    def to_polars(self) -> Any:
        import polars as pl

        return pl.from_arrow(self.manifest)

    def summary(self) -> str:
        n = self.manifest.num_rows
        resumed = sum(1 for r in self.manifest.column("resumed_from").to_pylist() if r)
        text = (
            f"{n:,} inputs: {self.done:,} done ({resumed:,} from earlier runs), "
            f"{self.skipped:,} skipped, {self.failed:,} failed in {self.seconds:.1f} s"
        )
        if self.stopped:
            text += f"; stopped early: {self.stopped}"
        return text

    def __repr__(self) -> str:
        return f"<RunReport {self.run_id}: {self.summary()}>"


@dataclass(frozen=True)
class _Task:
    rows: list[dict[str, Any]]
    stages: tuple[Any, ...]
    sinks: tuple[Any, ...]
    storage_options: Mapping[str, Any]
    context: RunContext


def _stage_name(stage: Any) -> str:
    name = getattr(stage, "name", None) or getattr(stage, "__name__", None)
    return str(name or type(stage).__name__)


def _run_one(row: dict[str, Any], task: _Task) -> dict[str, Any]:
    start = time.perf_counter()
    result: dict[str, Any] = {
        "source_uri": row["uri"],
        "sop_instance_uid": row.get("sop_instance_uid"),
        "status": "done",
        "reason": None,
        "stage": None,
        "outputs": [],
        "counts": None,
        "resumed_from": None,
        "run_id": task.context.run_id,
        "config_hash": task.context.config_hash,
        "version": task.context.version,
    }
    instance: Instance | None = Instance(row["uri"], row, task.storage_options)
    current = "read"
    try:
        for stage in task.stages:
            current = _stage_name(stage)
            instance = stage(instance)
            if instance is None:
                result.update(status="skipped", stage=current, reason=f"dropped by {current}")
                break
        else:
            for sink in task.sinks:
                current = sink.name
                outputs = sink.write(instance)
                result["outputs"].extend(
                    {"sink": o.sink, "path": o.path, "sha256": o.sha256, "size": o.size}
                    for o in outputs
                )
            result["counts"] = (instance.counts or None) if instance is not None else None
    except Skip as exc:
        result.update(status="skipped", stage=current, reason=str(exc))
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            result.update(status="failed", stage=current, reason=f"no space left: {exc}")
            result["seconds"] = time.perf_counter() - start
            raise _DiskFull(result) from exc
        result.update(status="failed", stage=current, reason=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - any failure of one instance is a manifest row
        result.update(status="failed", stage=current, reason=f"{type(exc).__name__}: {exc}")
    if instance is not None and result["sop_instance_uid"] is None:
        result["sop_instance_uid"] = row.get("sop_instance_uid")
    result["seconds"] = time.perf_counter() - start
    return result


class _DiskFull(Exception):
    def __init__(self, row: dict[str, Any]):
        self.row = row


def _run_task(task: _Task) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Run one batch of instances (in a worker). Stops the batch at a full disk."""
    out = []
    for i, row in enumerate(task.rows):
        try:
            out.append(_run_one(row, task))
        except _DiskFull as full:
            out.append(full.row)
            return out, {"stopped": full.row["reason"], "unprocessed": task.rows[i + 1 :]}
    return out, None


def _catalog_batches(source: Any) -> Iterator[pa.RecordBatch]:
    from ..catalog import Catalog

    if isinstance(source, Catalog):
        yield from source.iter_batches()
    elif isinstance(source, pa.Table):
        yield from source.to_batches()
    elif hasattr(source, "to_arrow"):  # a polars DataFrame
        yield from source.to_arrow().to_batches()
    else:
        from ..catalog import scan

        yield from scan(source).iter_batches()


def _describe_source(source: Any) -> Any:
    from ..catalog import Catalog

    if isinstance(source, Catalog):
        src = source.source
        return {"scan": [os.fspath(s) for s in src] if isinstance(src, (list, tuple)) else
                os.fspath(src)}  # fmt: skip
    if isinstance(source, (str, os.PathLike)):
        return {"scan": os.fspath(source)}
    return {"table": f"{type(source).__name__} of {len(source)} rows"}


@dataclass(frozen=True)
class Pipeline:
    """A source, a chain of stages and sinks. Immutable: ``|`` and :meth:`write` return new ones.

    ``source`` is a :class:`~dicomflow.Catalog`, a catalog table (pyarrow or polars), or
    anything :func:`dicomflow.scan` takes.
    """

    source: Any
    stages: tuple[Any, ...] = ()
    sinks: tuple[Any, ...] = ()
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    def __or__(self, stage: Any) -> Pipeline:
        if isinstance(stage, (list, tuple)):
            return replace(self, stages=self.stages + tuple(stage))
        if not callable(stage):
            raise ConfigError(f"a stage must be callable, got {type(stage).__name__}")
        return replace(self, stages=self.stages + (stage,))

    def write(self, *sinks: Any) -> Pipeline:
        """The same pipeline, also writing every surviving instance to ``sinks``."""
        for sink in sinks:
            if not all(hasattr(sink, m) for m in ("write", "open", "close", "name")):
                raise ConfigError(f"{sink!r} is not a sink (write/open/close/name)")
        return replace(self, sinks=self.sinks + tuple(sinks))

    # -- description -------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """A JSON-able description: source, stages and sinks with their options (no secrets)."""
        return {
            "version": __version__,
            "source": _describe_source(self.source),
            "stages": [_config_of(s) for s in self.stages],
            "sinks": [_config_of(s) for s in self.sinks],
        }

    def config_hash(self) -> str:
        """A hash of what the outputs depend on (stages and sinks, not the source)."""
        relevant = {k: v for k, v in self.config().items() if k in ("stages", "sinks")}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]

    def _manifest_folder(self, manifest: str | os.PathLike[str] | None) -> str | None:
        if manifest is not None:
            return os.fspath(manifest)
        for sink in self.sinks:
            folder = getattr(sink, "manifest_folder", None)
            if folder is not None and "://" not in str(folder):
                return os.fspath(folder)
            root = getattr(sink, "root", None)
            if root is not None and "://" not in str(root):
                # beside the output, not in it: outputs are often shared, manifests name sources
                return os.fspath(root).rstrip("/") + ".manifests"
        return None

    # -- running -----------------------------------------------------------------------------

    def execute(
        self,
        *,
        workers: int | None = None,
        client: Any = None,
        batch_size: int = 32,
        progress: bool = False,
        manifest: str | os.PathLike[str] | None = None,
        resume: bool = True,
        dry_run: bool = False,
    ) -> RunReport:
        """Run the pipeline; every input instance ends as one manifest row.

        Parameters
        ----------
        workers, client
            Where instances are processed: ``1`` in this process, ``None`` a process per core,
            or a ``dask.distributed.Client``. Outputs are byte-identical on each.
        batch_size
            Instances per task.
        manifest
            Folder of the manifest; by default ``<first local sink root>.manifests``, beside it.
        resume
            Skip inputs an earlier run into the same manifest folder finished with the same
            stages and sinks (their rows are carried over with ``resumed_from`` set).
        dry_run
            Plan only: which inputs would be processed, skipped, or are done already.
        """
        from ..runtime import Progress

        start = time.perf_counter()
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        config = self.config()
        context = RunContext(run_id, self.config_hash(), __version__)
        folder = self._manifest_folder(manifest)
        done = done_inputs(folder, context.config_hash) if folder and resume else {}
        filters = [s for s in self.stages if isinstance(s, Filter)]
        stages = tuple(s for s in self.stages if not isinstance(s, Filter))
        writer = ManifestWriter(folder, run_id, config) if folder and not dry_run else None
        rows_out: list[dict[str, Any]] = []

        def record(rows: list[dict[str, Any]]) -> None:
            rows_out.extend(rows)
            if writer is not None:
                writer.append(rows)

        if not dry_run:
            for sink in self.sinks:
                sink.open(context)
        executor = None
        if not dry_run:
            local_fork = client is None and workers != 1 and fork_is_safe()
            executor = make_executor(
                workers, client, start_method="fork" if local_fork else "forkserver"
            )
        halt: list[str] = []  # set when a worker hit a full disk

        def tasks() -> Iterator[_Task]:
            planned = self._plan(filters, done, context, record, dry_run)
            for rows in _chunks(planned, batch_size):
                if halt:
                    record([_not_processed(row, context, halt[0]) for row in rows])
                    continue
                yield _Task(rows, stages, self.sinks, self._storage_options(), context)

        try:
            with Progress("running", unit="instances", enabled=progress) as bar:
                if executor is None:
                    for _ in tasks():
                        pass
                else:
                    for rows, stop in executor.map(_run_task, tasks()):
                        record(rows)
                        if stop is not None:
                            halt.append(stop["stopped"])
                            reason = stop["stopped"]
                            record(
                                [_not_processed(r, context, reason) for r in stop["unprocessed"]]
                            )
                        bar.update(len(rows_out))
        finally:
            if executor is not None:
                executor.close()
        stopped = halt[0] if halt else None
        table = manifest_table(rows_out)
        table = table.take(pa.compute.sort_indices(table, [("source_uri", "ascending")]))
        path = writer.finish() if writer is not None else None
        if not dry_run and stopped is None:
            for sink in self.sinks:
                sink.close(context, table)
        return RunReport(run_id, table, time.perf_counter() - start, path, stopped)

    def _plan(
        self,
        filters: Sequence[Filter],
        done: Mapping[tuple[str, str | None], Mapping[str, Any]],
        context: RunContext,
        record: Any,
        dry_run: bool,
    ) -> Iterator[dict[str, Any]]:
        """Catalog rows to process; records scan errors, filtered and already-done inputs."""
        import polars as pl

        expressions = [(f, f.expression()) for f in filters]
        for batch in _catalog_batches(self.source):
            reasons: list[str | None] = [None] * batch.num_rows
            if expressions:
                frame = pl.DataFrame(pa.Table.from_batches([batch]))
                for f, expr in expressions:
                    mask = frame.select(expr.fill_null(False).alias("m")).to_series().to_list()
                    for i, ok in enumerate(mask):
                        if not ok and reasons[i] is None:
                            reasons[i] = f"filtered out by {f.describe()}"
            immediate = []
            for row, reason in zip(batch.to_pylist(), reasons):
                base = {
                    "source_uri": row["uri"],
                    "sop_instance_uid": row.get("sop_instance_uid"),
                    "outputs": [],
                    "run_id": context.run_id,
                    "config_hash": context.config_hash,
                    "version": context.version,
                }
                key = (row["uri"], row.get("sop_instance_uid"))
                if row.get("error"):
                    immediate.append(base | {"status": "failed", "stage": "scan",
                                             "reason": row["error"]})  # fmt: skip
                elif reason is not None:
                    immediate.append(base | {"status": "skipped", "stage": "filter",
                                             "reason": reason})  # fmt: skip
                elif key in done:
                    earlier = dict(done[key])
                    earlier.update(
                        resumed_from=earlier["run_id"], run_id=context.run_id, seconds=0.0
                    )
                    immediate.append(earlier)
                elif dry_run:
                    immediate.append(base | {"status": "planned", "reason": None})
                else:
                    yield row
            if immediate:
                record(immediate)

    def _storage_options(self) -> Mapping[str, Any]:
        from ..catalog import Catalog

        if self.storage_options or not isinstance(self.source, Catalog):
            return self.storage_options
        return self.source.options.storage_options

    # -- files -------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Pipeline:
        """Build a pipeline from its :meth:`config` dict (or a TOML file's contents)."""
        from .registry import build_reader, build_sink, build_stage

        source = dict(config.get("source") or {})
        if "scan" in source:  # the short form: [source] scan = PATH
            source = {"type": "scan", "path": source.pop("scan"), **source}
        if "type" not in source:
            raise ConfigError(
                "a pipeline file needs [source] with scan = PATH or [PATHS], "
                "or type = READER and path = PATH"
            )
        stages = tuple(build_stage(s) for s in config.get("stages", config.get("stage", [])))
        sinks = tuple(build_sink(s) for s in config.get("sinks", config.get("sink", [])))
        return cls(build_reader(source), stages, sinks)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Pipeline:
        """Read a pipeline from a TOML or JSON file."""
        import tomllib

        text = open(path, "rb").read()
        try:
            config = (
                json.loads(text) if str(path).endswith(".json") else tomllib.loads(text.decode())
            )
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: not a valid pipeline file: {exc}") from exc
        return cls.from_config(config)


def _config_of(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "config"):
        return obj.config()
    return {"type": "callable", "name": _stage_name(obj)}


def _not_processed(row: Mapping[str, Any], context: RunContext, why: str) -> dict[str, Any]:
    return {
        "source_uri": row["uri"],
        "sop_instance_uid": row.get("sop_instance_uid"),
        "status": "skipped",
        "stage": "run",
        "reason": f"not processed: the run stopped early ({why})",
        "outputs": [],
        "run_id": context.run_id,
        "config_hash": context.config_hash,
        "version": context.version,
    }


def _chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def pipeline(source: Any, *, storage_options: Mapping[str, Any] | None = None) -> Pipeline:
    """Start a pipeline from a catalog, a catalog table, or what :func:`dicomflow.scan` takes."""
    return Pipeline(source, storage_options=dict(storage_options or {}))
