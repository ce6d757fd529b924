"""Landing received instances in a lake: bytes as received, atomically, durably, recorded.

Layout::

    DST/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm   (each part safe_component'd)
    DST/_lake/received-<time>-<id>[-c].parquet    records and catalog: a row per landed instance
    DST/_lake/pull-<time>-<id>.parquet            one row per series of a pull
    DST/_lake/incoming/<pid>-<id>.part            large data sets while they arrive
    DST.private/                                  beside a shareable lake: what names originals

A received data set is written after a File Meta Information group built here (no pydicom, no
decoding), under a temporary name in its final folder, then linked into place; one larger than
the spool's memory (:mod:`._spool`, 4 MiB) is written to ``_lake/incoming`` while it arrives
and that file is linked into place (a lake on a URL spools to a folder of the local temporary
space and streams the file up in 8 MiB blocks: memory stays bounded there too). ``fsync``:

* ``"each"``: file and folder are fsync'ed before :meth:`Lake.receive` returns, so a Storage
  SCP acknowledges only what is durable (the default);
* ``"batch"``: written files are fsync'ed together by :meth:`Lake.sync` (a pull calls it at the
  end of every series, before recording the series); records are written only after it;
* ``"none"``: written and linked before :meth:`Lake.receive` returns, as with ``"each"``
  (a killed receiver never loses what it acknowledged), but never fsync'ed: after a power
  loss, what the operating system had not written yet is lost.

Records (path, UIDs, SHA-256, size, calling AE, time), with the scan's columns of each
landed file (the lake's catalog), are hashed and written by background threads, so hashing
never delays the acknowledgement; their parts are compacted (:mod:`._records`). A file present
without a record (the process was killed before its record was written) is *adopted*: when the
lake is opened (:meth:`Lake.adopt_unrecorded`, every such file of the lake) and by
:meth:`Lake.reconcile` (one series, during a pull), after its header proves it whole.

**A shareable lake** (``deidentified=``, e.g. ``dicomflow pull --deid``): its stages
de-identify, and nothing the lake writes holds a value of an original. Files are named by the
landed (de-identified) UIDs; records and catalog hold only values read from the landed data
sets (the SOP Instance UID "as received" is the landed one, the calling AE the landed File
Meta's, none); a data set is never spooled to a file before the stages ran. What does name
originals (a pull's plan and report) goes to ``DST.private/``, beside the lake, never inside
it. The lake finds an original UID (a pull checking what it holds) through ``deidentified``,
the UID the stages give it. The lake does not hide *when* it received: file times, the
``modified`` and ``received_at`` columns and part names are the receiving time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import queue
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..dicom import (
    TMP_SUFFIX,
    encode_part10,
    file_meta_bytes,
    header_uids,
    is_url,
    join,
    meta_uids,
    parse_header,
    put_url,
    read_meta,
    replace_url,
    safe_component,
    temporary_token,
    uid_of,
    uid_problem,
)
from ..errors import ConfigError, InvalidDicomError
from ..pipeline import Instance, Output, run_stages
from ._dimse import AFFECTED_SOP_CLASS, AFFECTED_SOP_INSTANCE, C_STORE_RQ, Message, text
from ._records import (
    RECORD_SCHEMA,
    STATE_DIR,
    catalog_rows,
    compact,
    finish_compactions,
    fsync_dir,
    part_table,
    read_catalog,
    read_records,
    read_state,
    state_parts,
    write_part,
)
from ._spool import SPOOL_MEMORY, Spool, process_alive, remove_stale
from ._staged import SpooledInstance, write_dataset

__all__ = ["RECORD_SCHEMA", "Lake", "Landed", "read_catalog", "read_records", "read_state"]

_FSYNC = ("each", "batch", "none")
_HASH_EVERY = 0.05  # seconds between a writer thread's looks at the written instances
_HASH_BATCH = 64  # written instances waiting for a writer: the receiving thread hashes them
INCOMING = "incoming"


@dataclass(frozen=True, slots=True)
class Landed:
    """What happened to one received instance: ``status`` is landed (or queued), dropped or
    failed; ``stage`` names the stage that dropped or failed it, if one did; ``invalid`` names
    the attribute (a keyword: ``AffectedSOPInstanceUID``, ``StudyInstanceUID``...) whose
    value made the instance itself unacceptable, so nothing was written."""

    status: str
    path: str | None = None
    sop_instance_uid: str | None = None
    reason: str | None = None
    stage: str | None = None
    invalid: str | None = None


@dataclass
class _Record:
    path: str
    parts: tuple[Any, ...]
    sop_class: str
    sop_instance: str
    study: str
    series: str
    ts: str
    source_sop: str
    calling_ae: str
    source: str
    when: dt.datetime
    output: Output | None = None  # once written and hashed
    write: bool = False
    in_file: bool = False  # landed from a spool file: hashed from the file


@dataclass
class LakeStats:
    """Counters since the lake was opened."""

    landed: int = 0
    dropped: int = 0
    failed: int = 0
    bytes: int = 0
    adopted: int = 0
    not_adopted: int = 0  # files without a record that are not whole instances of this lake
    by_source: dict[str, int] = field(default_factory=dict)


class Spooler:
    """Makes the spool of each C-STORE of one association (see :meth:`Lake.spooler`);
    :meth:`close` removes the file of a data set the association did not finish."""

    def __init__(self, lake: Lake, syntaxes: Mapping[int, str], calling_ae: str) -> None:
        self.lake = lake
        self.syntaxes = dict(syntaxes)
        self.calling_ae = calling_ae
        self._last: Spool | None = None

    def __call__(self, msg: Message) -> Spool | None:
        ts = self.syntaxes.get(msg.context_id)
        if ts is None or msg.command_field != C_STORE_RQ:
            return None
        try:
            meta = file_meta_bytes(
                text(msg.command, AFFECTED_SOP_CLASS), text(msg.command, AFFECTED_SOP_INSTANCE),
                ts, self.calling_ae,
            )  # fmt: skip
        except UnicodeError:  # not even ASCII: refused by receive(), from memory
            return None
        folder = self.lake._stage_incoming if self.lake.stages else self.lake._incoming
        self._last = Spool(folder, meta, memory=self.lake.spool_memory)
        return self._last

    def close(self) -> None:
        """Remove what an unfinished data set left (a landed one's file is already moved)."""
        if self._last is not None:
            self._last.discard()
            self._last = None


class Lake:
    """A folder (or fsspec URL) that received instances land in; see the module docstring.

    Parameters
    ----------
    root
        Local folder or fsspec URL.
    fsync
        ``"each"``, ``"batch"`` or ``"none"`` (see above).
    stages
        Callables ``Instance -> Instance | None`` run on each received instance before it
        lands (e.g. de-identification). A stage that parses or changes ``instance.dataset``
        makes the instance re-encoded; otherwise the bytes land as received.
    flush_every, flush_seconds
        Records are written as a Parquet part every this many instances or seconds
        (``fsync="batch"``: only at :meth:`sync`).
    writers
        Background threads that write queued files and hash every landed instance (writing
        and SHA-256 release the GIL, so two keep up with a fast sender on two cores).
    adopt
        On opening, record the files that have no record (:meth:`adopt_unrecorded`): after
        a crash, what was acknowledged is then recorded too. It lists every series folder
        and reads the records; only files without a record of their size are read.
    deidentified
        The UID the stages give a UID as received (a keyed de-identification:
        ``Deidentify(...).uid``). Given, the lake is *shareable* (see the module docstring):
        it records only values of the landed data sets, and finds an original SOP Instance
        UID through this function (:meth:`source_key`).
    catalog
        Write the scan's columns of each landed file with its record (the lake's catalog,
        :meth:`catalog`); off: the records only.
    spool_memory
        Data set bytes a C-STORE keeps in memory before its data set goes to a file in
        ``_lake/incoming`` as it arrives (local lakes without stages; see :mod:`._spool`).
    compact_parts, compact_rows
        Record parts are merged when ``compact_parts`` of them have fewer than
        ``compact_rows`` rows each, and on :meth:`close` (see :mod:`._records`);
        ``compact_parts=0``: never by itself (another process compacts: the receiving
        workers' parent).
    table
        A :class:`~dicomflow.TableWriter` (Delta, Iceberg) that gets every record part
        too, one commit per part under the part's name as its batch id; on :meth:`close`
        it is given the records it lacks (a crash between a part and its commit).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        fsync: str = "each",
        stages: Sequence[Callable[[Instance], Instance | None]] = (),
        storage_options: Mapping[str, Any] | None = None,
        flush_every: int = 1024,
        flush_seconds: float = 2.0,
        writers: int = 2,
        adopt: bool = True,
        deidentified: Callable[[str], str] | None = None,
        catalog: bool = True,
        spool_memory: int = SPOOL_MEMORY,
        compact_parts: int = 32,
        compact_rows: int = 100_000,
        table: Any = None,
    ) -> None:
        if fsync not in _FSYNC:
            raise ConfigError(f"fsync={fsync!r}: expected one of {', '.join(_FSYNC)}")
        self.root = os.fspath(root)
        self.url = is_url(self.root)
        if not self.url:
            self.root = os.path.abspath(self.root)
            os.makedirs(os.path.join(self.root, STATE_DIR), exist_ok=True)
        self.fsync = fsync
        self.stages = tuple(stages)
        self.storage_options = dict(storage_options or {})
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self.deidentified = deidentified
        self.keeps_catalog = catalog
        self.spool_memory = spool_memory
        self.compact_parts = compact_parts
        self.compact_rows = compact_rows
        self.table = table
        self.stats = LakeStats()
        self._dirs: set[str] = set()
        self._lock = threading.Lock()
        self._records_lock = threading.Lock()
        self._unsynced: list[str] = []
        self._pending: list[_Record] = []
        self._queue: queue.Queue[_Record | None] = queue.Queue(maxsize=64)
        # written instances waiting to be hashed, in batches (by a writer thread, every
        # _HASH_EVERY seconds, or by the thread that finds _HASH_BATCH of them waiting):
        # nothing wakes a thread per instance
        self._landed: list[_Record] = []
        self._outstanding = 0  # instances queued or being hashed: guarded by _idle
        self._idle = threading.Condition()
        self._last_flush = time.monotonic()
        self._recorded: dict[str, int] | None = None
        self._closed = False
        self._compacting = threading.Lock()
        self._parts_written = 0
        # a URL lake spools to a local folder, then uploads the finished file
        self._incoming = _local_incoming() if self.url else join(self.root, STATE_DIR, INCOMING)
        remove_stale(self._incoming)
        # where a data set waits for the stages: never inside a shareable lake (it is the
        # original), so beside it, in DST.private
        self._stage_incoming = self._incoming
        if self.stages and self.shareable and not self.url:
            self._stage_incoming = join(self.private_root, INCOMING)
            remove_stale(self._stage_incoming)
        finish_compactions(self.root, self.storage_options)
        self._threads = [
            threading.Thread(target=self._work, name=f"dicomflow-lake-{i}", daemon=True)
            for i in range(max(1, writers))
        ]
        for thread in self._threads:
            thread.start()
        if adopt:
            try:
                self.adopt_unrecorded()
            except BaseException:
                self.close()  # no writer threads left behind
                raise

    # -- paths -----------------------------------------------------------------------------
    @property
    def shareable(self) -> bool:
        """Whether nothing this lake writes holds an original's value (``deidentified``)."""
        return self.deidentified is not None

    @property
    def private_root(self) -> str:
        """``DST.private``, beside the lake: where what names the originals goes (a pull's
        plan and report in a shareable lake); never inside the lake."""
        return self.root.rstrip("/\\") + ".private"

    def source_key(self, uid: str) -> str:
        """How the records hold a SOP Instance UID as received: itself, or in a shareable
        lake the UID it landed as."""
        return self.deidentified(uid) if self.deidentified is not None else uid

    def series_dir(self, study: str, series: str) -> str:
        return join(self.root, safe_component(study or "_"), safe_component(series or "_"))

    def path_for(self, study: str, series: str, sop: str) -> str:
        return join(self.series_dir(study, series), safe_component(sop or "_") + ".dcm")

    def files_in(self, study: str, series: str) -> dict[str, int]:
        """``.dcm`` files in a series folder and their sizes (empty when there is none)."""
        folder = self.series_dir(study, series)
        if self.url:
            import fsspec

            fs, path = fsspec.core.url_to_fs(folder, **self.storage_options)
            try:
                entries = fs.ls(path, detail=True)
            except FileNotFoundError:
                return {}
            return {
                e["name"].rsplit("/", 1)[-1]: int(e.get("size") or 0)
                for e in entries
                if e["name"].endswith(".dcm")
            }
        try:
            with os.scandir(folder) as it:
                return {
                    e.name: e.stat().st_size
                    for e in it
                    if e.name.endswith(".dcm") and not e.name.startswith(".")
                }
        except FileNotFoundError:
            return {}

    # -- receiving -------------------------------------------------------------------------
    def spooler(self, syntaxes: Mapping[int, str], calling_ae: str) -> Spooler | None:
        """For one association's :attr:`._ul.Connection.spool`: a spool for each C-STORE's
        data set (its presentation context's transfer syntax from ``syntaxes``). A URL lake
        spools to a local temporary folder and uploads the finished file; a lake with stages
        runs them on the spool file (:mod:`._staged`), which for a shareable lake is in
        ``DST.private/incoming``, outside the lake. Close it when the association ends."""
        return Spooler(self, syntaxes, calling_ae)

    def receive(
        self,
        *,
        sop_class: str,
        sop_instance: str,
        transfer_syntax: str,
        dataset: bytes | bytearray | memoryview | Spool,
        calling_ae: str = "",
        source: str = "c-store",
    ) -> Landed:
        """Land one received data set (without its meta); returns where, or why not.

        With ``fsync="each"`` the file is written, fsync'ed and linked before this returns;
        with ``"none"`` written and linked, not fsync'ed. With ``"batch"`` it is handed to the
        lake's writer thread and this returns at once (status ``"queued"``): a pull
        acknowledges while the previous instance is still being written, and proves
        completeness from the files afterwards (:meth:`sync`, :meth:`reconcile`). Hashing and
        the record always happen later, in the writer threads.
        The caller must not modify ``dataset`` afterwards. A :class:`~._spool.Spool` (from
        :meth:`spooler`) whose data set went to its file lands by linking that file into
        place, durably as ``fsync`` says, before this returns.

        Before anything is written, the UIDs are checked (PS3.5 9.1, :func:`uid_problem`):
        ``sop_class``, ``sop_instance`` and ``transfer_syntax`` as given (a C-STORE's Affected
        SOP Class and Instance UIDs, the context's transfer syntax), and the data set's SOP
        Instance, Study and Series Instance UIDs, which name the file. The data set's SOP
        Instance UID must be ``sop_instance``. An instance that breaks a rule fails with
        ``invalid`` naming the attribute and ``reason`` saying why; so a file name is always a
        valid UID, never hidden, and two different instances never share a file.
        """
        if isinstance(dataset, Spool):
            if self.stages and (dataset.spilled or dataset.error is not None):
                return self._receive_staged(
                    dataset, sop_class, sop_instance, transfer_syntax, calling_ae, source
                )
            if dataset.spilled or dataset.error is not None:
                return self._receive_spooled(
                    dataset, sop_class, sop_instance, transfer_syntax, calling_ae, source
                )
            dataset = dataset.data
        try:
            refused = _check_sent(sop_class, sop_instance, transfer_syntax)
            if refused is None:
                meta = file_meta_bytes(sop_class, sop_instance, transfer_syntax, calling_ae)
                study, series, sop = header_uids(meta, dataset)
                refused = _check_dataset(study, series, sop, sop_instance)
            if refused is not None:
                with self._lock:
                    self.stats.failed += 1
                return refused
            parts: tuple[Any, ...] = (meta, dataset)
            source_sop = sop_instance
            if self.stages:
                staged = self._run_stages(meta, dataset, calling_ae, sop_instance)
                if isinstance(staged, Landed):
                    with self._lock:
                        if staged.status == "failed":
                            self.stats.failed += 1
                        else:
                            self.stats.dropped += 1
                    if staged.status == "failed":
                        return replace(staged, sop_instance_uid=sop_instance)
                    return staged
                parts = staged
                study, series, sop = header_uids(b"", parts[0])
                sop_class, transfer_syntax = meta_uids(parts[0])
                changed = _check_dataset(study, series, sop, None)
                if changed is not None:  # a stage gave it UIDs that cannot name a file
                    raise InvalidDicomError(f"after the stages, {changed.reason}")
                if self.shareable:  # only what the landed data set says
                    source_sop, calling_ae = sop, _source_ae(parts[0])
            path = self.path_for(study, series, sop)
            record = _Record(
                path, parts, sop_class, sop, study, series, transfer_syntax, source_sop,
                calling_ae, source, dt.datetime.now(dt.UTC),
            )  # fmt: skip
            if self.fsync != "batch":
                self._write(path, parts)
                self._submit(record)
                return Landed("landed", path, sop)
        except Exception as exc:  # one bad instance is a failed status, not a dead SCP
            with self._lock:
                self.stats.failed += 1
            return Landed("failed", None, sop_instance, f"{type(exc).__name__}: {exc}")
        record.write = True
        self._submit(record)
        return Landed("queued", path, sop)

    def _receive_spooled(
        self,
        spool: Spool,
        sop_class: str,
        sop_instance: str,
        transfer_syntax: str,
        calling_ae: str,
        source: str,
    ) -> Landed:
        """Land a data set that went to its spool file: check it, link the file into place."""
        try:
            refused = _check_sent(sop_class, sop_instance, transfer_syntax)
            if refused is None:
                spool.finish(fsync=False)
                with spool.mapped() as data:
                    study, series, sop = header_uids(spool.meta, data)
                refused = _check_dataset(study, series, sop, sop_instance)
            if refused is not None:
                spool.discard()
                with self._lock:
                    self.stats.failed += 1
                return refused
            path = self.path_for(study, series, sop)
            assert spool.path is not None
            if self.url:
                uids = (sop_class, sop, study, series, transfer_syntax, sop_instance)
                return self._upload_spooled(spool, path, uids, calling_ae, source)
            if self.fsync == "each":
                _fsync_file(spool.path)
            self._link(spool.path, path)
            record = _Record(
                path, (), sop_class, sop, study, series, transfer_syntax, sop_instance,
                calling_ae, source, dt.datetime.now(dt.UTC), in_file=True,
            )  # fmt: skip
            self._submit(record)
            return Landed("landed", path, sop)
        except Exception as exc:  # noqa: BLE001 - a full disk fails this instance only
            spool.discard()
            with self._lock:
                self.stats.failed += 1
            return Landed("failed", None, sop_instance, f"{type(exc).__name__}: {exc}")

    def _receive_staged(
        self,
        spool: Spool,
        sop_class: str,
        sop_instance: str,
        transfer_syntax: str,
        calling_ae: str,
        source: str,
    ) -> Landed:
        """Land a data set that went to its spool file through the stages, reading it from
        there and writing the result by streaming (:mod:`._staged`): memory stays bounded."""
        inst: SpooledInstance | None = None
        try:
            refused = _check_sent(sop_class, sop_instance, transfer_syntax)
            if refused is None:
                spool.finish(fsync=False)
                with spool.mapped() as data:
                    study, series, sop = header_uids(spool.meta, data)
                refused = _check_dataset(study, series, sop, sop_instance)
            if refused is not None:
                with self._lock:
                    self.stats.failed += 1
                return refused
            assert spool.path is not None
            uri = f"dicom://{calling_ae or 'peer'}/received/{sop_instance}"
            inst = SpooledInstance(uri=uri, file=spool.path)
            outcome = run_stages(self.stages, inst)
            staged = _not_landed(outcome)
            if staged is not None:
                with self._lock:
                    if staged.status == "failed":
                        self.stats.failed += 1
                    else:
                        self.stats.dropped += 1
                if staged.status == "failed":
                    return replace(staged, sop_instance_uid=sop_instance)
                return staged
            assert outcome.instance is not None
            if not outcome.instance.parsed:  # no stage looked inside: it lands as received
                inst.close()
                return self._receive_spooled(
                    spool, sop_class, sop_instance, transfer_syntax, calling_ae, source
                )
            ds = outcome.instance.dataset
            meta = getattr(ds, "file_meta", None)
            sop = str(ds.get("SOPInstanceUID", "") or "")
            study = str(ds.get("StudyInstanceUID", "") or "")
            series = str(ds.get("SeriesInstanceUID", "") or "")
            changed = _check_dataset(study, series, sop, None)
            if changed is not None:  # a stage gave it UIDs that cannot name a file
                raise InvalidDicomError(f"after the stages, {changed.reason}")
            ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
            sop_class = str(ds.get("SOPClassUID", "") or sop_class)
            source_sop = sop_instance
            if self.shareable:  # only what the landed data set says
                source_sop = sop
                calling_ae = str(meta.get("SourceApplicationEntityTitle", "") or "") if (
                    meta is not None) else ""  # fmt: skip
            path = self.path_for(study, series, sop)
            uids = (sop_class, sop, study, series, ts or transfer_syntax, source_sop)
            return self._write_staged(ds, path, uids, calling_ae, source)
        except Exception as exc:  # noqa: BLE001 - one bad instance is a failed status
            with self._lock:
                self.stats.failed += 1
            return Landed("failed", None, sop_instance, f"{type(exc).__name__}: {exc}")
        finally:
            if inst is not None:
                inst.close()
            spool.discard()

    def _write_staged(
        self, ds: Any, path: str, uids: tuple[str, ...], calling_ae: str, source: str
    ) -> Landed:
        """Write a staged data set by streaming: into its series folder (then linked), or
        for a URL lake into a local file that is hashed and uploaded."""
        sop_class, sop, study, series, ts, source_sop = uids
        when = dt.datetime.now(dt.UTC)
        if self.url:
            local = os.path.join(_local_incoming(), f"{os.getpid()}-{uuid.uuid4().hex}.part")
            try:
                write_dataset(ds, local, fsync=False)
                output = _output_of_file(local)
                put_url(local, path, self.storage_options)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(local)
            record = _Record(
                path, (), sop_class, sop, study, series, ts, source_sop, calling_ae, source,
                when, output=Output("lake", path, output.sha256, output.size),
            )  # fmt: skip
        else:
            tmp = self._temporary(path)
            try:
                write_dataset(ds, tmp, fsync=self.fsync == "each")
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            self._link(tmp, path)
            record = _Record(
                path, (), sop_class, sop, study, series, ts, source_sop, calling_ae, source,
                when, in_file=True,
            )  # fmt: skip
        self._submit(record)
        return Landed("landed", path, sop)

    def _upload_spooled(
        self, spool: Spool, path: str, uids: tuple[str, ...], calling_ae: str, source: str
    ) -> Landed:
        """A URL lake: hash the local spool file, upload it in pieces (fsspec ``put_file``:
        a multipart upload on S3), then remove it; memory stays at the spool's."""
        assert spool.path is not None
        try:
            local = _output_of_file(spool.path)
            put_url(spool.path, path, self.storage_options)
        finally:
            spool.discard()
        sop_class, sop, study, series, transfer_syntax, sop_instance = uids
        record = _Record(
            path, (), sop_class, sop, study, series, transfer_syntax, sop_instance,
            calling_ae, source, dt.datetime.now(dt.UTC),
            output=Output("lake", path, local.sha256, local.size),
        )  # fmt: skip
        self._submit(record)
        return Landed("landed", path, sop)

    def _run_stages(
        self, meta: bytes, dataset: Any, calling_ae: str, sop_instance: str
    ) -> tuple[Any, ...] | Landed:
        """The stages on a received instance, by the stage runtime: the bytes to land, or why
        not (dropped: its reason names the stage; failed: the pipeline's reason text)."""
        inst = Instance(uri=f"dicom://{calling_ae or 'peer'}/received/{sop_instance}")
        inst._raw = meta + bytes(dataset)
        outcome = run_stages(self.stages, inst)
        refused = _not_landed(outcome)
        if refused is not None:
            return refused
        assert outcome.instance is not None
        inst = outcome.instance
        if inst._dataset is None:
            return (inst.raw,)
        return (encode_part10(inst.dataset),)

    def _write(self, path: str, parts: tuple[Any, ...]) -> None:
        if self.url:
            self._write_url(path, b"".join(bytes(p) for p in parts))
            return
        tmp = self._temporary(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            total = sum(len(p) for p in parts)
            written = os.writev(fd, parts)
            if written != total:  # a short write: finish it the slow way
                rest = b"".join(bytes(p) for p in parts)[written:]
                while rest:
                    rest = rest[os.write(fd, rest) :]
            if self.fsync == "each":
                os.fdatasync(fd)
        finally:
            os.close(fd)
        self._link(tmp, path)

    def _temporary(self, path: str) -> str:
        """A temporary name beside ``path`` (its folder made): hidden, naming this process,
        ending in ``TMP_SUFFIX`` (a killed writer's is removed when the lake is opened)."""
        folder = self._folder_of(path)
        name = f".{os.path.basename(path)}.{temporary_token()}{TMP_SUFFIX}"
        return f"{folder}/{name}"

    def _folder_of(self, path: str) -> str:
        folder = os.path.dirname(path)
        if folder not in self._dirs:
            os.makedirs(folder, exist_ok=True)
            self._dirs.add(folder)
        return folder

    def _link(self, tmp: str, path: str) -> None:
        """Put the written file ``tmp`` at ``path`` (its folder made durable, per ``fsync``)."""
        folder = self._folder_of(path)
        try:
            os.replace(tmp, path)  # the same instance again (a rerun): the newest wins
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if self.fsync == "each":
            fsync_dir(folder)
        elif self.fsync == "batch":
            with self._lock:
                self._unsynced.append(path)

    def _write_url(self, path: str, data: bytes) -> None:
        """Through fsspec: a temporary object moved into place (the newest copy wins, as
        locally: the same SOP Instance UID is the same instance)."""
        replace_url(path, data, self.storage_options)

    # -- durability and records ------------------------------------------------------------
    def sync(self) -> None:
        """Wait for queued writes, make every file durable, then write the pending records."""
        self._drain()
        with self._lock:
            paths, self._unsynced = self._unsynced, []
        if paths and not self.url:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(_fsync_file, paths))
                list(pool.map(fsync_dir, sorted({os.path.dirname(p) for p in paths})))
        self._write_records()

    def flush(self) -> None:
        """Wait for queued writes and write the records of everything landed so far."""
        if self.fsync == "batch":
            self.sync()
            return
        self._drain()
        self._write_records()

    def _submit(self, record: _Record) -> None:
        if record.write:  # to be written: now, by a writer thread
            with self._idle:
                self._outstanding += 1
            self._queue.put(record)  # blocks when the writers are 64 instances behind
            return
        with self._idle:  # written: hashed with others, later
            self._landed.append(record)
            behind = len(self._landed) >= _HASH_BATCH
        if behind:  # the writers are behind (busy cores): this thread hashes them
            self._hash_landed()

    def _hash_landed(self) -> None:
        """Hash and keep the records of the written instances waiting (see ``_landed``)."""
        with self._idle:
            batch, self._landed = self._landed, []
            if not batch:
                return
            self._outstanding += 1
        try:
            for item in batch:
                self._complete(item)
        finally:
            self._done()

    def _done(self) -> None:
        with self._idle:
            self._outstanding -= 1
            if self._outstanding == 0:
                self._idle.notify_all()

    def _drain(self) -> None:
        """Wait until every submitted instance is written and hashed."""
        self._hash_landed()
        with self._idle:
            self._idle.wait_for(lambda: self._outstanding == 0)

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=_HASH_EVERY)
            except queue.Empty:
                item = False  # type: ignore[assignment]
            if item is None:
                return
            if item:
                try:
                    self._complete(item)
                finally:
                    self._done()
            if self._landed:
                self._hash_landed()
            if self.fsync != "batch":
                with self._lock:
                    due = len(self._pending) >= self.flush_every or (
                        self._pending and time.monotonic() - self._last_flush >= self.flush_seconds
                    )
                if due:
                    self._write_records()

    def _complete(self, item: _Record) -> None:
        """Write (if queued), hash and keep the record of one instance (writer thread)."""
        if item.write:
            try:
                self._write(item.path, item.parts)
            except Exception:  # noqa: BLE001 - counted; the instance is missing, refetched
                with self._lock:
                    self.stats.failed += 1
                return
        if item.output is not None:  # hashed before it was uploaded
            output = item.output
        elif item.in_file:
            item.output = output = _output_of_file(item.path)
        else:
            item.output = output = Output.of_parts("lake", item.path, item.parts)
        item.parts = ()
        with self._lock:
            self._pending.append(item)
            self.stats.landed += 1
            self.stats.bytes += output.size
            self.stats.by_source[item.source] = self.stats.by_source.get(item.source, 0) + 1

    def _maybe_compact(self) -> None:
        """A compaction, once ``compact_parts`` parts were written (by the thread that wrote
        the last, not holding the records lock)."""
        self._parts_written = 0
        try:
            self.compact()
        except Exception as exc:  # noqa: BLE001 - parts stay as they are, readable
            warnings.warn(f"compacting the lake's records failed: {exc}", stacklevel=2)

    def _write_records(self) -> None:
        # taken before the pending records leave the list and held until their part is on
        # disk: a reader of the records (reconcile) never sees them in neither place, which
        # would make it adopt their files and record them a second time
        with self._records_lock:
            with self._lock:
                pending, self._pending = self._pending, []
                self._last_flush = time.monotonic()
            if pending:
                self._write_pending(pending)
                self._parts_written += 1
        if pending and self.compact_parts and self._parts_written >= self.compact_parts:
            self._maybe_compact()

    def _write_pending(self, pending: list[_Record]) -> None:
        outputs = [r.output for r in pending if r.output is not None]
        assert len(outputs) == len(pending), "a record is written only once hashed"
        columns: dict[str, list[Any]] = {
            "uri": [o.path for o in outputs],
            "sop_class_uid": [r.sop_class for r in pending],
            "sop_instance_uid": [r.sop_instance for r in pending],
            "study_instance_uid": [r.study for r in pending],
            "series_instance_uid": [r.series for r in pending],
            "transfer_syntax_uid": [r.ts for r in pending],
            "source_sop_instance_uid": [r.source_sop for r in pending],
            "sha256": [o.sha256 for o in outputs],
            "size": [o.size for o in outputs],
            "calling_ae": [r.calling_ae for r in pending],
            "source": [r.source for r in pending],
            "received_at": [r.when for r in pending],
        }
        catalog = None
        if self.keeps_catalog:
            files = [(o.path, o.size, _modified(o.path, self.url)) for o in outputs]
            catalog = catalog_rows(files, self.storage_options)
        part = part_table(columns, catalog)
        path = self.write_state_table("received", part)
        if self.table is not None:
            self._mirror(part, path)
        if self._recorded is not None:
            self._recorded.update((r.source_sop, o.size) for r, o in zip(pending, outputs))

    def _mirror(self, part: pa.Table, path: str) -> None:
        """Commit a record part to the lake's table (a failure waits for :meth:`close`)."""
        try:
            self.table.append(part, path.replace("\\", "/").rsplit("/", 1)[-1])
        except Exception as exc:  # noqa: BLE001 - the part is the record; close catches up
            warnings.warn(f"the lake's table missed a record part: {exc}", stacklevel=2)

    def catch_up_table(self) -> int:
        """Give the lake's table the records it lacks (by SOP Instance UID and SHA-256);
        how many rows it got."""
        if self.table is None:
            return 0
        records = read_state(self.root, "received", self.storage_options)
        if not records.num_rows:
            return 0
        return self.table.append_new([records], ("sop_instance_uid", "sha256"))[0]

    def write_state_table(self, kind: str, table: pa.Table) -> str:
        """Write ``table`` as ``_lake/<kind>-<time>-<id>.parquet``, atomically; returns the path."""
        return write_part(
            self.root, kind, table, fsync=self.fsync != "none",
            storage_options=self.storage_options,
        )  # fmt: skip

    def write_private_table(self, kind: str, table: pa.Table) -> str:
        """Write what names originals (a shareable lake's pull report) as
        ``DST.private/<kind>-<time>-<id>.parquet``, beside the lake, atomically."""
        return write_part(
            self.private_root, kind, table, fsync=self.fsync != "none",
            storage_options=self.storage_options, folder="",
        )  # fmt: skip

    def compact(self, *, min_parts: int | None = None) -> int:
        """Merge the record parts with fewer than ``compact_rows`` rows into one, when there
        are ``min_parts`` (default ``compact_parts``) of them; returns how many were merged.

        It runs by itself every ``compact_parts`` parts and on :meth:`close`; crash-safe, and
        a reader never sees a row twice or misses one (see :mod:`._records`). The parts are
        merged while records go on being written; one compaction at a time.
        """
        if not self._compacting.acquire(blocking=min_parts is not None):
            return 0  # one is running: the next one takes what it leaves
        try:
            return compact(
                self.root, "received", min_parts=min_parts or self.compact_parts,
                max_rows=self.compact_rows, fsync=self.fsync != "none",
                storage_options=self.storage_options,
            )  # fmt: skip
        finally:
            self._compacting.release()

    def catalog(self) -> pa.Table:
        """The lake's catalog: the scan's columns of every landed instance (the latest row
        per SOP Instance UID), from the records (no file is read); as
        :func:`~dicomflow.network.read_catalog`."""
        self.flush()
        return read_catalog(self.root, self.storage_options)

    def records(self) -> pa.Table:
        """Every instance recorded in this lake, one row per SOP Instance UID (latest wins)."""
        self.flush()
        return read_records(self.root, self.storage_options)

    def recorded_sources(self) -> dict[str, int]:
        """SOP Instance UIDs (as received) with a record, and the recorded file sizes."""
        with self._records_lock:  # not while a part is being written: it would be missed
            if self._recorded is None:
                table = read_records(self.root, self.storage_options)
                uids = table.column("source_sop_instance_uid").to_pylist()
                sizes = table.column("size").to_pylist()
                self._recorded = dict(zip(uids, sizes))
            return self._recorded

    def reconcile(self, study: str, series: str) -> tuple[set[str], int]:
        """Complete files in a series folder as SOP UIDs, adopting unrecorded ones.

        A file with a record counts when its size is the recorded one. Any other file is
        read: if its header is complete and names the SOP Instance UID its file name says,
        it gets a record (``source="adopted"``); otherwise it is a torn write and is deleted.
        Returns (present SOP UIDs, how many were adopted).
        """
        self.flush()
        files = self.files_in(study, series)
        if not files:
            return set(), 0
        recorded = self.recorded_sources()
        present: set[str] = set()
        adopted = 0
        for name, size in files.items():
            uid = name[:-4]
            if recorded.get(uid) == size and safe_component(uid) == uid:
                present.add(uid)
                continue
            path = join(self.series_dir(study, series), name)
            record = self._adopt(path, name)
            if record is not None:
                present.add(record.source_sop)
                self._submit(record)
                adopted += 1
        if adopted:
            self.flush()
        with self._lock:
            self.stats.adopted += adopted
        return present, adopted

    def adopt_unrecorded(self) -> int:
        """Record every whole file of the lake that has no record; returns how many.

        Run when the lake is opened (``adopt=True``). After a crash, files that were written
        and acknowledged but whose records were still in memory would otherwise never be
        recorded. Record parts that cannot be read (a torn write on a filesystem without
        atomic renames) are renamed ``*.parquet.unreadable`` first, so their files are
        adopted again.

        Only ``<study>/<series>/<sop>.dcm`` files are looked at, never hidden ones (the
        lake's temporary files start with a dot); a temporary file of a series write whose
        process no longer runs (``.<sop>.dcm.<pid>-<id>.dfltmp``, a kill in the middle of a
        write) is removed. A file whose path and size match a record
        is not read. Any other is adopted (``source="adopted"``) when it is a whole Part 10
        file whose UIDs are valid and are its path; otherwise it is left where it is,
        counted in ``stats.not_adopted``, and a warning names the first.
        """
        self.flush()
        self._set_aside_unreadable_parts()
        with self._records_lock:
            table = read_records(self.root, self.storage_options)
            uris = table.column("uri").to_pylist()
            sizes = table.column("size").to_pylist()
            if self._recorded is None:
                sources = table.column("source_sop_instance_uid").to_pylist()
                self._recorded = dict(zip(sources, sizes))
        recorded = {_tail(uri): size for uri, size in zip(uris, sizes)}
        adopted = 0
        refused: list[str] = []
        for folders, size, path in self._walk():
            if recorded.get(folders) == size:
                continue
            try:
                record = self._read_whole(path, folders)
            except Exception as exc:  # noqa: BLE001 - not ours to adopt; left as it is
                refused.append(f"{path} ({exc})")
                continue
            self._submit(record)
            adopted += 1
        if adopted:
            self.flush()
        with self._lock:
            self.stats.adopted += adopted
            self.stats.not_adopted += len(refused)
        if refused:
            warnings.warn(
                f"{len(refused)} file(s) in the lake {self.root} have no record of their "
                f"size and are not whole instances of it, left as they are: {refused[0]}",
                stacklevel=2,
            )
        return adopted

    def _walk(self) -> Iterator[tuple[tuple[str, str, str], int, str]]:
        """Every ``<study>/<series>/<name>.dcm`` that is not hidden: the three names, the
        size and the path."""
        if self.url:
            import fsspec

            fs, base = fsspec.core.url_to_fs(self.root, **self.storage_options)
            try:
                found = fs.find(base, maxdepth=3, detail=True)
            except FileNotFoundError:
                return
            base = base.rstrip("/")
            for name, info in sorted(found.items()):
                names = name[len(base) :].strip("/").split("/")
                if len(names) == 3 and _visible(names) and names[0] != STATE_DIR:
                    study, series, file = names
                    path = join(self.root, study, series, file)
                    yield (study, series, file), int(info.get("size") or 0), path
            return
        for study in _subfolders(self.root):
            if study.name == STATE_DIR:
                continue
            for series in _subfolders(study.path):
                with os.scandir(series.path) as files:
                    for f in files:
                        if _stale_temporary(f.name):  # a write a killed receiver left
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(f.path)
                        elif _visible([f.name]) and f.is_file(follow_symlinks=False):
                            names = (study.name, series.name, f.name)
                            yield names, f.stat().st_size, f.path

    def _set_aside_unreadable_parts(self) -> None:
        for fs, path in state_parts(self.root, "received", self.storage_options):
            try:
                if fs is None:
                    pq.read_metadata(path)
                else:
                    with fs.open(path, "rb") as f:
                        pq.read_metadata(f)
            except Exception as exc:  # noqa: BLE001 - anything unreadable goes aside
                aside = path + ".unreadable"
                if fs is None:
                    os.replace(path, aside)
                else:
                    fs.mv(path, aside)
                warnings.warn(
                    f"lake record part {path} is unreadable ({exc}); renamed to {aside}, its "
                    "files are adopted again",
                    stacklevel=3,
                )

    def _adopt(self, path: str, name: str) -> _Record | None:
        """The record of a file of a series being reconciled; a file that is not whole is
        removed (it is fetched again)."""
        try:
            return self._read_whole(path, None, name)
        except Exception:  # noqa: BLE001 - a torn or foreign file is removed and fetched again
            if not self.url:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            return None

    def _read_whole(
        self, path: str, folders: tuple[str, str, str] | None, name: str = ""
    ) -> _Record:
        """The record of a whole Part 10 file of this lake, or why it is not one.

        It must be complete (every element, Pixel Data included) and hold the SOP Instance
        UID its name says; with ``folders`` (study, series, file names) its UIDs must also be
        valid and be exactly those names.
        """
        from ..pipeline import read_bytes

        data = read_bytes(path, self.storage_options)
        if data[128:132] != b"DICM":
            raise InvalidDicomError("no Part 10 preamble and DICM prefix")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            h = parse_header(data, complete=True)
        if h.error:
            raise InvalidDicomError(h.error)
        if h.pixel is not None and h.pixel[3] != 0xFFFFFFFF:
            if (h.pixel_offset or 0) + h.pixel[3] > len(data):
                raise InvalidDicomError("Pixel Data is truncated")
        sop = uid_of(h, 0x00080018)
        study, series = uid_of(h, 0x0020000D), uid_of(h, 0x0020000E)
        if folders is not None:
            name = folders[2]
            refused = _check_dataset(study, series, sop, None)
            if refused is not None:
                raise InvalidDicomError(refused.reason)
            if folders[:2] != (study, series):
                raise InvalidDicomError(f"it belongs in {study}/{series}")
        if not sop or safe_component(sop) + ".dcm" != name:
            raise InvalidDicomError(f"{name} holds SOP Instance UID {sop!r}")
        meta = h.meta
        text = lambda raw: raw.decode("ascii", "replace").rstrip("\0 ") if raw else ""  # noqa: E731
        return _Record(
            path, (data,), text(meta.get(0x00020002)) or uid_of(h, 0x00080016), sop,
            study, series, text(meta.get(0x00020010)), sop,
            text(meta.get(0x00020016)), "adopted", dt.datetime.now(dt.UTC),
        )  # fmt: skip

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        """Sync (per the fsync policy), write the last records, stop the writer threads and
        compact the record parts."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        if not self.compact_parts:
            return
        try:
            self.compact(min_parts=2)
        except Exception as exc:  # noqa: BLE001 - the parts stay readable as they are
            warnings.warn(f"compacting the lake's records failed: {exc}", stacklevel=2)
        try:
            self.catch_up_table()
        except Exception as exc:  # noqa: BLE001 - the records hold it: the next close retries
            warnings.warn(f"the lake's table could not catch up: {exc}", stacklevel=2)

    def __enter__(self) -> Lake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<dicomflow Lake {self.root!r} fsync={self.fsync}>"


def _fsync_file(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SENT = (
    ("AffectedSOPClassUID", "Affected SOP Class UID"),
    ("AffectedSOPInstanceUID", "Affected SOP Instance UID"),
    ("TransferSyntaxUID", "Transfer Syntax UID"),
)
_NAMING = (
    ("SOPInstanceUID", "SOP Instance UID"),
    ("StudyInstanceUID", "Study Instance UID"),
    ("SeriesInstanceUID", "Series Instance UID"),
)


def _not_landed(outcome: Any) -> Landed | None:
    """Why the stages' outcome does not land (dropped: the reason names the stage; failed:
    the pipeline's reason text), or None when it lands."""
    if outcome.status == "skipped":
        reason = outcome.reason if outcome.dropped else f"{outcome.stage}: {outcome.reason}"
        return Landed("dropped", None, None, reason, outcome.stage)
    if outcome.status == "failed":
        return Landed("failed", None, None, outcome.reason, outcome.stage)
    return None


def _check_sent(sop_class: str, sop_instance: str, transfer_syntax: str) -> Landed | None:
    """The refusal of an instance whose UIDs as sent are not UIDs (None: they are)."""
    for (keyword, label), value in zip(_SENT, (sop_class, sop_instance, transfer_syntax)):
        problem = uid_problem(value, strict=False)  # legacy leading zeros are still names
        if problem is not None:
            return Landed("failed", None, sop_instance, f"{label} {problem}", invalid=keyword)
    return None


def _check_dataset(study: str, series: str, sop: str, sent_as: str | None) -> Landed | None:
    """The refusal of a data set whose file-naming UIDs are not UIDs, or whose SOP Instance
    UID is not the one it was sent as (``sent_as``; None: not compared)."""
    for (keyword, label), value in zip(_NAMING, (sop, study, series)):
        problem = uid_problem(value, strict=False)
        if problem is not None:
            return Landed("failed", None, sent_as, f"{label} {problem}", invalid=keyword)
    if sent_as is not None and sop != sent_as:
        reason = f"SOP Instance UID differs from the Affected SOP Instance UID: {sop!r}"
        return Landed("failed", None, sent_as, reason, invalid="SOPInstanceUID")
    return None


def _tail(uri: str) -> tuple[str, str, str]:
    """A recorded file's study, series and file names (the lake may have moved since)."""
    study, series, name = (["", "", ""] + uri.replace("\\", "/").split("/"))[-3:]
    return study, series, name


def _stale_temporary(name: str) -> bool:
    """Whether ``name`` is the temporary file of a series write (``.<sop>.dcm.<pid>-<id>``
    + ``TMP_SUFFIX``) by a process that no longer runs."""
    if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
        return False
    pid = name[: -len(TMP_SUFFIX)].rsplit(".", 1)[-1].partition("-")[0]
    return pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid))


def _visible(names: Sequence[str]) -> bool:
    return all(not n.startswith(".") for n in names) and names[-1].endswith(".dcm")


def _subfolders(folder: str) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as it:
        return sorted(
            (e for e in it if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)),
            key=lambda e: e.name,
        )


def _source_ae(data: bytes) -> str:
    """The Source Application Entity Title of a Part 10 object's File Meta ('' if none)."""
    meta, _ = read_meta(data)
    return str(meta.get(0x00020016, "") or "")


def _modified(path: str, url: bool) -> int | None:
    """A local file's modification time in microseconds, as the scan reads it."""
    if url:
        return None
    try:
        return os.stat(path).st_mtime_ns // 1000
    except OSError:
        return None


def _local_incoming() -> str:
    """Where a URL lake's large data sets arrive: a folder of this machine's temporary space
    (the spool names its files by process, so stale ones are removed as for a local lake)."""
    import tempfile

    folder = os.path.join(tempfile.gettempdir(), "dicomflow-incoming")
    os.makedirs(folder, exist_ok=True)
    return folder


def _output_of_file(path: str) -> Output:
    """The record of a file landed from a spool: hashed by reading it in pieces."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return Output("lake", path, h.hexdigest(), size)
