"""Pipelines as data: a source, a chain of stages, sinks; run anywhere, every input accounted for.

>>> run = (dfl.pipeline(dfl.scan("export/"))               # doctest: +SKIP
...        | dfl.filter("Modality = 'CT'")
...        | dfl.Transcode("jpeg2000-lossless")
...       ).write(dfl.writers.Part10Folder("out/"))
>>> report = run.execute(progress=True)                     # doctest: +SKIP
>>> report.manifest                                         # one row per input instance
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pickle
import re
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute

from .._version import __version__
from ..catalog import Reader
from ..dicom import is_url
from ..errors import ConfigError, DiskFullError
from ..runtime import (
    PROGRESS_FILE,
    Executor,
    InProcessExecutor,
    ProcessExecutor,
    ProgressConsumer,
    ProgressEvent,
    ProgressFile,
    as_consumer,
    fork_is_safe,
    make_executor,
)
from ._instance import Instance, RunContext, Sink, Stage
from ._manifest import ManifestWriter, done_inputs, manifest_table
from ._runtime import run_stages, stage_name
from ._stages import Filter

__all__ = ["DiskFullError", "Pipeline", "RunReport", "pipeline"]

#: a manifest part holds at least the rows that finished in this many seconds (and a task's
#: worth): a run killed at any moment leaves in its manifest all it finished but the last ones
PART_SECONDS = 0.5


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
    #: the stages and sinks pickled once for the run (by value with cloudpickle, when some are
    #: defined in ``__main__``), unpacked once per worker process
    packed: bytes | None = None


def _by_value(stages: tuple[Any, ...], sinks: tuple[Any, ...]) -> bytes | None:
    """Stages and sinks pickled by value when plain pickle would name ``__main__``.

    A function or class defined in a notebook (or ``python -c``) pickles as a reference to
    ``__main__``, which a worker process cannot import: the pool breaks (BrokenProcessPool).
    cloudpickle (a dependency of dask.distributed) sends such code by value; everything
    importable still travels by reference. ``None``: plain pickle is enough.
    """
    try:
        plain = pickle.dumps((stages, sinks))
    except Exception:  # noqa: BLE001 - e.g. a lambda: cloudpickle may still manage
        plain = b"__main__"
    if b"__main__" not in plain:
        return None
    import cloudpickle

    try:
        return cloudpickle.dumps((stages, sinks))
    except Exception as exc:
        raise ConfigError(
            f"a stage or sink cannot be sent to worker processes ({type(exc).__name__}: "
            f"{exc}); run with workers=1, or define it in a module"
        ) from exc


@functools.lru_cache(maxsize=4)
def _unpacked(packed: bytes) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    return pickle.loads(packed)  # cloudpickle's output too (it imports what it needs)


def _run_one(row: dict[str, Any], task: _Task) -> tuple[dict[str, Any], bool]:
    """The manifest row of one catalog row (its outcome from the stage runtime), and whether
    a full disk ended it."""
    instance = Instance(row["uri"], row, task.storage_options)
    outcome = run_stages(task.stages, instance, sinks=task.sinks)
    result = {
        "source_uri": row["uri"],
        "sop_instance_uid": row.get("sop_instance_uid"),
        "status": outcome.status,
        "reason": outcome.reason,
        "stage": outcome.stage,
        "outputs": [o.record() for o in outcome.outputs],
        "counts": (outcome.instance.counts or None)
        if outcome.done and outcome.instance is not None
        else None,
        "resumed_from": None,
        "run_id": task.context.run_id,
        "config_hash": task.context.config_hash,
        "version": task.context.version,
        "seconds": outcome.seconds,
    }
    return result, outcome.disk_full


def _run_task(task: _Task) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Run one batch of instances (in a worker). Stops the batch at a full disk."""
    if task.packed is not None:
        stages, sinks = _unpacked(task.packed)
        task = dataclasses.replace(task, stages=stages, sinks=sinks, packed=None)
    out = []
    for i, row in enumerate(task.rows):
        result, disk_full = _run_one(row, task)
        out.append(result)
        if disk_full:
            return out, {"stopped": result["reason"], "unprocessed": task.rows[i + 1 :]}
    return out, None


def _catalog_batches(source: Any, pool: Executor | None) -> Iterator[pa.RecordBatch]:
    """The source's catalog batches; a scan still to run uses the run's ``pool``, if any."""
    from ..catalog import Catalog

    if isinstance(source, Catalog):
        yield from source.iter_batches(executor=pool)
    elif isinstance(source, pa.Table):
        yield from source.to_batches()
    elif hasattr(source, "to_arrow"):  # a polars DataFrame
        yield from source.to_arrow().to_batches()
    else:
        from ..catalog import scan

        yield from scan(source).iter_batches(executor=pool)


def _listed_files(source: Any) -> int | None:
    """The files a scan still running as the source has listed, once its listing has ended."""
    stats = getattr(source, "stats", None)
    return getattr(stats, "total", None)


def _is_table(source: Any) -> bool:
    """A catalog table (pyarrow or polars), as opposed to a scan still to run."""
    from ..catalog import Catalog

    return not isinstance(source, Catalog) and (
        isinstance(source, pa.Table) or hasattr(source, "to_arrow")
    )


def _local_roots(source: Any) -> list[Path]:
    """The local folders or files a source reads (globs up to their first wildcard)."""
    from ..catalog import Catalog

    if isinstance(source, Catalog):
        source = source.source
    items = source if isinstance(source, (list, tuple)) else [source]
    roots = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)) or is_url(os.fspath(item)):
            continue
        text = os.fspath(item).removeprefix("file://")
        text = re.split(r"[*?\[]", text, maxsplit=1)[0] or "."
        roots.append(Path(os.path.abspath(os.path.expanduser(text))))
    return roots


def _check_apart(source: Any, sinks: Sequence[Sink]) -> None:
    """Refuse sinks that write into what the run reads, or whose root holds its inputs.

    Outputs inside the source are read again as inputs on the next run (de-identified twice,
    or a share mixed with the originals); a source inside an output root ends up in the share.
    """
    sources = _local_roots(source)
    for sink in sinks:
        root = getattr(sink, "root", None)
        if root is None or is_url(os.fspath(root)):
            continue
        out = Path(os.path.abspath(os.fspath(root)))
        for src in sources:
            if out == src or src in out.parents or out in src.parents:
                where = "is" if out == src else "is inside" if src in out.parents else "holds"
                raise ConfigError(
                    f"the {sink.name} output {out} {where} the source {src}: write the "
                    "outputs to a folder apart from the inputs"
                )


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

    source: Reader | pa.Table | Any  # a Reader, a catalog table, or what scan() takes
    stages: tuple[Stage, ...] = ()
    sinks: tuple[Sink, ...] = ()
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    def __or__(self, stage: Stage | Sequence[Stage]) -> Pipeline:
        if isinstance(stage, (list, tuple)):
            return replace(self, stages=self.stages + tuple(stage))
        if not callable(stage):
            raise ConfigError(f"a stage must be callable, got {type(stage).__name__}")
        return replace(self, stages=self.stages + (stage,))

    def write(self, *sinks: Sink) -> Pipeline:
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
        progress: bool | ProgressConsumer = False,
        manifest: str | os.PathLike[str] | None = None,
        resume: bool = True,
        dry_run: bool = False,
    ) -> RunReport:
        """Run the pipeline; every input instance ends as one manifest row.

        Parameters
        ----------
        workers, client
            Where instances are processed: ``1`` in this process, ``None`` a process per core,
            or a ``dask.distributed.Client``. Outputs are byte-identical on each. A source that
            is a scan not yet run is scanned on the same pool where it would start its own
            (small scans run in this process): a run has one pool.
        batch_size
            Instances per task.
        progress
            ``True``: a bar on a terminal; or a consumer of
            :class:`~dicomflow.runtime.ProgressEvent` s (task ``"running"``, unit
            ``"instances"``, ``detail`` the counts by status), e.g.
            :class:`~dicomflow.runtime.ProgressLog`.
        manifest
            Folder of the manifest; by default ``<first local sink root>.manifests``, beside it.
        resume
            Skip inputs an earlier run into the same manifest folder finished with the same
            stages and sinks (their rows are carried over with ``resumed_from`` set).
        dry_run
            Plan only: which inputs would be processed, skipped, or are done already.
        """
        from ..runtime import Progress

        _check_apart(self.source, self.sinks)
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
        statuses: dict[str, int] = {}
        consumer = as_consumer(progress)
        # the run's state beside its manifest, for another process (dicomflow serve) to show
        shown = None
        if folder and not dry_run and not is_url(folder):
            shown = ProgressFile(os.path.join(folder, PROGRESS_FILE))
        total = len(self.source) if _is_table(self.source) else None  # type: ignore[arg-type]

        def _listed() -> int | None:  # a scan as the source: its file count, once listed
            return None if _is_table(self.source) else _listed_files(self.source)

        unwritten: list[dict[str, Any]] = []  # rows not yet in a manifest part
        parted = [time.perf_counter()]  # when the last part was written

        def record(rows: list[dict[str, Any]]) -> None:
            rows_out.extend(rows)
            for row in rows:
                statuses[row["status"]] = statuses.get(row["status"], 0) + 1
            unwritten.extend(rows)
            # a part holds a task's worth of rows at least (the small last tasks share one),
            # and the rows of PART_SECONDS at least: each part is a Parquet write here, on
            # the cores the workers use (~2 ms: a fast stage's 2,000 files wrote 63 of them)
            if len(unwritten) >= batch_size and time.perf_counter() - parted[0] >= PART_SECONDS:
                flush()

        def flush() -> None:
            if writer is not None and unwritten:
                writer.append(unwritten)
                parted[0] = time.perf_counter()
            unwritten.clear()

        def report_progress(finished: bool = False) -> None:
            if consumer is None and shown is None:
                return
            event = ProgressEvent(
                "running",
                unit="instances",
                done=len(rows_out),
                total=total or _listed(),
                failed=statuses.get("failed", 0),
                elapsed=time.perf_counter() - start,
                detail=dict(statuses),
                finished=finished,
            )
            if shown is not None:
                shown(event, "stopped" if finished and halt else None)
            if consumer is not None:
                consumer(event)

        if not dry_run:
            for sink in self.sinks:
                sink.open(context)
        executor = None
        if not dry_run:
            local_fork = client is None and workers != 1 and fork_is_safe()
            if local_fork and not _is_table(self.source):
                # pyarrow imports pandas on its first array from a list (the scan builds
                # some): once here, not in every forked worker
                import pandas  # noqa: F401
            executor = make_executor(
                workers, client, start_method="fork" if local_fork else "forkserver"
            )
        halt: list[str] = []  # set when a worker hit a full disk

        # a scan still to run uses the run's pool where it would start one: one pool per run
        # (a run in this process has none, and leaves the scan its own choice)
        pool = None if isinstance(executor, InProcessExecutor) else executor
        packed = _by_value(stages, self.sinks) if pool is not None else None
        if packed is None and isinstance(pool, ProcessExecutor):
            # a worker process runs one task at a time: the stages it unpacks once serve all
            # its tasks, with what they cache (a de-identifier's compiled scrubbers and UIDs),
            # as in a run in this process (a dask worker's threads would share them: not there)
            packed = pickle.dumps((stages, self.sinks))

        def tasks() -> Iterator[_Task]:
            planned = self._plan(filters, done, context, record, dry_run, pool)
            spread = executor.workers if executor is not None else 1
            for rows in _chunks(planned, batch_size, spread):
                if halt:
                    record([_not_processed(row, context, halt[0]) for row in rows])
                    continue
                if packed is not None:  # the stages travel once per task as one bytes value
                    yield _Task(rows, (), (), self._storage_options(), context, packed)
                else:
                    yield _Task(rows, stages, self.sinks, self._storage_options(), context)

        try:
            if executor is None:
                for _ in tasks():
                    pass
            else:
                for rows, stop in executor.map(_run_task, tasks()):
                    record(rows)
                    if stop is not None:
                        halt.append(stop["stopped"])
                        reason = stop["stopped"]
                        record([_not_processed(r, context, reason) for r in stop["unprocessed"]])
                    report_progress()
            report_progress(finished=True)
        finally:
            flush()  # what finished is in the manifest, also on an early end
            if executor is not None:
                executor.close()
            if shown is not None:
                shown.close("failed")  # ended by an exception (a finished run has said so)
            if isinstance(consumer, Progress) and progress is True:
                consumer.__exit__(None, None, None)  # the bar made here, on an early end too
        stopped = halt[0] if halt else None
        # the rows the parts hold, in the same order (converted once, as they were appended)
        table = writer.rows() if writer is not None else manifest_table(rows_out)
        path = writer.finish(table) if writer is not None else None
        table = table.take(pa.compute.sort_indices(table, [("source_uri", "ascending")]))
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
        pool: Executor | None,
    ) -> Iterator[dict[str, Any]]:
        """Catalog rows to process; records scan errors, filtered and already-done inputs."""
        import polars as pl

        expressions = [(f, f.expression()) for f in filters]

        def base(row: dict[str, Any]) -> dict[str, Any]:  # a row recorded here, not run
            return {
                "source_uri": row["uri"],
                "sop_instance_uid": row.get("sop_instance_uid"),
                "outputs": [],
                "run_id": context.run_id,
                "config_hash": context.config_hash,
                "version": context.version,
            }

        for batch in _catalog_batches(self.source, pool):
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
                if row.get("error"):
                    immediate.append(base(row) | {"status": "failed", "stage": "scan",
                                                  "reason": row["error"]})  # fmt: skip
                elif reason is not None:
                    immediate.append(base(row) | {"status": "skipped", "stage": "filter",
                                                  "reason": reason})  # fmt: skip
                elif done and (key := (row["uri"], row.get("sop_instance_uid"))) in done:
                    earlier = dict(done[key])
                    earlier.update(
                        resumed_from=earlier["run_id"], run_id=context.run_id, seconds=0.0
                    )
                    immediate.append(earlier)
                elif dry_run:
                    immediate.append(base(row) | {"status": "planned", "reason": None})
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
        from ._registry import build_reader, build_sink, build_stage

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
    return {"type": "callable", "name": stage_name(obj)}


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


def _chunks(
    rows: Iterable[dict[str, Any]], size: int, workers: int = 1
) -> Iterator[list[dict[str, Any]]]:
    """``rows`` in tasks of ``size``; with several ``workers``, the last ones smaller.

    Tasks of ``size`` leave the other workers idle while the last one runs (half a task on
    average at 2 workers: 50 ms of a 0.8 s run for RLE). So ``size * workers`` rows are read
    ahead; once the rows end, what is left goes out in tasks of a ``2 * workers``-th of it
    (guided scheduling: no smaller than an eighth of ``size``), and the workers finish
    together. In one process (``workers == 1``) there is nothing to balance.
    """
    if workers <= 1:
        chunk: list[dict[str, Any]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        return
    ahead: deque[dict[str, Any]] = deque()
    for row in rows:
        ahead.append(row)
        if len(ahead) >= size * (workers + 1):
            yield [ahead.popleft() for _ in range(size)]
    least = max(1, size // 8)
    while ahead:
        share = -(-len(ahead) // (2 * workers))  # ceil
        n = min(len(ahead), size, max(least, share))
        yield [ahead.popleft() for _ in range(n)]


def pipeline(source: Any, *, storage_options: Mapping[str, Any] | None = None) -> Pipeline:
    """Start a pipeline from a catalog, a catalog table, or what :func:`dicomflow.scan` takes."""
    return Pipeline(source, storage_options=dict(storage_options or {}))
