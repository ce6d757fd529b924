"""Bulk, resumable pulls from a PACS into a lake: plan with C-FIND, fetch series by series.

>>> from dicomflow.network import pull, PullOptions
>>> report = pull("PACS@10.0.0.5:104", "Modality=CT StudyDate=20240101-20240131", "lake/",
...               PullOptions(ae_title="LAKE", port=11113, concurrency=2))  # doctest: +SKIP
>>> report.summary()  # doctest: +SKIP
'40/40 series complete, 12,480 instances (12,480 fetched), 6.5 GB in 0:01:10, 178 inst/s'

How it works:

1. **Plan.** C-FIND at study level (patient and study keys of the query; ``Modality`` is also
   asked as ``ModalitiesInStudy``), then at series level per study (series keys, filtered again
   here for peers that ignore them). Peers that give ``NumberOfSeriesRelatedInstances`` (Orthanc)
   give the expected count; for the others (DCMTK dcmqrscp) a C-FIND at image level lists the
   SOP Instance UIDs.
2. **Fetch.** Series run on ``concurrency`` threads, each with its own association: C-GET
   when the peer accepts it (``method="auto"``), else C-MOVE to a Storage SCP started here with
   our AE title and port. A series with nothing in the lake is fetched whole; a partial one
   only its missing instances (image-level C-FIND, then a retrieve of those UIDs).
3. **Check.** After each series the lake is synced and its files are counted (or matched
   against the image-level UIDs); an incomplete or failed series is retried with exponential
   backoff.
4. **State is the lake.** Files are named by UID, and a file without a record (the process
   was killed) is verified and adopted, so rerunning the same pull fetches only what is
   missing and every instance lands exactly once. A report (one row per series) is written to
   ``_lake/pull-*.parquet`` and returned.

**Into a shareable lake** (a :class:`~dicomflow.network.Lake` with ``deidentified=``, what
``dicomflow pull --deid`` opens): the plan and the report name the originals (their UIDs,
Patient ID, dates, descriptions), so the report is written beside the lake, to
``DST.private/pull-*.parquet``, and is never inside it; the lake gets a de-identified report
(``_lake/pull-*.parquet``): per series the values of its landed, de-identified instances (from
the lake's catalog; none for a series of which nothing landed), the counts and statuses,
errors by their kind only, in the order of the de-identified UIDs. What the lake holds of an
original instance is found through ``Lake.source_key``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConfigError, DicomflowError
from ..pipeline import Instance
from ..runtime import ProgressEvent
from ._errors import (
    AssociationRejectedError,
    MoveDestinationError,
    NetworkConfigError,
    NetworkError,
)
from ._lake import Lake
from ._options import AssociationOptions, Peer, check_ae_title
from ._query import _KEY_LEVEL, level_keys, parse_query
from .scp import SCPOptions, StorageSCP
from .scu import find, get, move

__all__ = ["PullEvent", "PullOptions", "PullReport", "plan", "pull"]

REPORT_SCHEMA = pa.schema(
    [
        ("study_instance_uid", pa.string()),
        ("series_instance_uid", pa.string()),
        ("PatientID", pa.string()),
        ("StudyDate", pa.date32()),
        ("Modality", pa.string()),
        ("SeriesDescription", pa.string()),
        ("expected", pa.int64()),
        ("present_before", pa.int64()),
        ("fetched", pa.int64()),
        ("present_after", pa.int64()),
        ("status", pa.string()),  # complete, already complete, incomplete, failed
        ("attempts", pa.int32()),
        ("method", pa.string()),
        ("seconds", pa.float64()),
        ("bytes", pa.int64()),
        ("error", pa.string()),
    ]
)


@dataclass(frozen=True)
class PullOptions:
    """How a pull runs.

    Parameters
    ----------
    ae_title
        Our AE title: the calling AE of every association and the C-MOVE destination.
    port, host
        Where the embedded Storage SCP listens for C-MOVE (started only when needed).
    method
        ``"auto"`` (C-GET if the peer accepts it, else C-MOVE), ``"get"`` or ``"move"``.
    concurrency
        Series fetched at once, each on its own association (polite default: 2).
    retries, backoff
        Attempts after the first per series, and the first wait (doubled each time, at most
        ``max_backoff``).
    fsync
        Durability of landed files (``"batch"``: synced at the end of each series).
    model
        ``"study"`` or ``"patient"`` root.
    chunk
        SOP Instance UIDs per image-level retrieve of a partial series.
    store_aes
        Calling AE titles the peer stores with on C-MOVE, when not its own AE title.
    association
        Timeouts and PDU size (its ``calling_ae`` is replaced by ``ae_title``).
    """

    ae_title: str = "DICOMFLOW"
    port: int = 11113
    host: str = "0.0.0.0"
    method: str = "auto"
    concurrency: int = 2
    retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 30.0
    fsync: str = "batch"
    model: str = "study"
    chunk: int = 200
    store_aes: tuple[str, ...] = ()
    association: AssociationOptions | None = None

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title, "our AE title")
        if self.method not in ("auto", "get", "move"):
            raise ConfigError(f"method={self.method!r}: expected auto, get or move")
        if self.concurrency < 1:
            raise ConfigError("concurrency must be >= 1")
        if self.retries < 0 or self.backoff < 0:
            raise ConfigError("retries and backoff must be >= 0")

    @property
    def assoc(self) -> AssociationOptions:
        base = self.association or AssociationOptions()
        return replace(base, calling_ae=self.ae_title)


@dataclass(frozen=True, slots=True)
class PullEvent(ProgressEvent):
    """A pull's progress event: ``kind`` is planned, series-start, series-retry, series-done,
    study-done (the last series of a study finished; ``status`` says how the study ended) or
    finished (the last event).

    As a :class:`~dicomflow.runtime.ProgressEvent` it counts series (``done`` of ``total``,
    ``failed`` those not complete), ``bytes`` fetched and ``elapsed`` seconds, so any progress
    consumer (a bar, log lines) shows a pull.
    """

    task: str = "pulling"
    unit: str = "series"
    kind: str = ""
    study: str = ""
    series: str = ""
    series_done: int = 0
    series_total: int = 0
    instances: int = 0
    status: str = ""
    detail: str = ""


@dataclass
class PullReport:
    """What a pull did: one row per series (``table``) and the totals."""

    table: pa.Table
    seconds: float
    path: str | None = None
    method: str = ""
    planned: pa.Table | None = field(default=None, repr=False)
    #: the de-identified report inside a shareable lake (``path`` is then beside the lake)
    shared: str | None = None

    @property
    def complete(self) -> bool:
        statuses = self.table.column("status").to_pylist()
        return all(s in ("complete", "already complete") for s in statuses)

    @property
    def fetched(self) -> int:
        return int(pc.sum(self.table.column("fetched")).as_py() or 0)

    @property
    def bytes(self) -> int:
        return int(pc.sum(self.table.column("bytes")).as_py() or 0)

    def summary(self) -> str:
        rows = self.table.to_pylist()
        done = sum(1 for r in rows if r["status"] in ("complete", "already complete"))
        present = sum(r["present_after"] or 0 for r in rows)
        rate = self.fetched / self.seconds if self.seconds else 0.0
        mbs = self.bytes / self.seconds / 1e6 if self.seconds else 0.0
        failed = [r for r in rows if r["status"] not in ("complete", "already complete")]
        text = (
            f"{done}/{len(rows)} series complete, {present:,} instances in the lake "
            f"({self.fetched:,} fetched now, {self.bytes / 1e6:,.1f} MB) in {self.seconds:.1f} s"
            f", {rate:,.0f} inst/s, {mbs:,.1f} MB/s, by {self.method or 'nothing to fetch'}"
        )
        if failed:
            text += f"; {len(failed)} series incomplete (rerun the same pull to finish them)"
        return text


# -- planning ---------------------------------------------------------------------------------


def _is_plain(value: Any) -> bool:
    text = str(value)
    return bool(text) and not any(c in text for c in "*?\\-")


def plan(
    peer: Peer | str,
    query: str | Mapping[str, Any] | None,
    *,
    options: PullOptions | None = None,
) -> pa.Table:
    """The series a pull would fetch: study then series C-FIND, filtered by the query."""
    peer = Peer.parse(peer)
    opts = options or PullOptions()
    keys = parse_query(query)
    per_instance = [k for k in keys if _KEY_LEVEL.get(k) == "IMAGE"]
    if per_instance:
        raise ConfigError(
            f"a pull fetches whole series: {', '.join(per_instance)} is an image-level "
            "attribute, which cannot choose series (filter the lake afterwards, e.g. with "
            "dicomflow scan)"
        )
    study_keys = level_keys(keys, "STUDY")
    study_keys.pop("Modality", None)
    studies = find(
        peer, study_keys, level="study", model=opts.model, options=opts.assoc,
        columns=("SOPClassesInStudy",),
    )  # fmt: skip
    series_keys = {
        k: v for k, v in keys.items() if _KEY_LEVEL.get(k, "SERIES") in ("SERIES", "IMAGE")
    }
    series_keys = {k: v for k, v in series_keys.items() if _KEY_LEVEL.get(k) != "IMAGE"}
    tables = []
    for row in studies.to_pylist():
        uid = row["study_instance_uid"]
        if not uid:
            continue
        ident = {"StudyInstanceUID": uid, **series_keys}
        if opts.model == "patient":
            ident["PatientID"] = row.get("PatientID") or ""
        found = find(peer, ident, level="series", model=opts.model, options=opts.assoc)
        if found.num_rows == 0:
            continue
        n = found.num_rows
        found = found.append_column("PatientID", pa.array([row.get("PatientID")] * n, pa.string()))
        found = found.append_column("StudyDate", pa.array([row.get("StudyDate")] * n, pa.date32()))
        classes = row.get("SOPClassesInStudy") or []
        found = found.append_column(
            "SOPClassesInStudy", pa.array([list(classes)] * n, pa.list_(pa.string()))
        )
        tables.append(found)
    if not tables:
        return pa.table(
            {
                "study_instance_uid": pa.array([], pa.string()),
                "series_instance_uid": pa.array([], pa.string()),
            }
        )
    table = pa.concat_tables(tables, promote_options="default")
    for key, value in series_keys.items():  # peers that ignore a key still get it applied
        if key in table.column_names and _is_plain(value):
            values = table.column(key).to_pylist()
            keep = [v is None or str(v) == str(value) for v in values]
            table = table.filter(pa.array(keep))
    return table


# -- fetching ---------------------------------------------------------------------------------


@dataclass
class _Series:
    study: str
    series: str
    expected: int | None
    info: dict[str, Any]
    sop_classes: list[str]


class _Puller:
    def __init__(
        self,
        peer: Peer,
        lake: Lake,
        opts: PullOptions,
        progress: Callable[[PullEvent], None] | None,
    ) -> None:
        self.peer = peer
        self.lake = lake
        self.opts = opts
        self.progress = progress
        self.method = opts.method
        self.scp: StorageSCP | None = None
        self.lock = threading.Lock()
        self.done = 0
        self.total = 0
        self.left_in_study: dict[str, int] = {}
        self.study_ok: dict[str, bool] = {}
        self.instances = 0
        self.bytes = 0
        self.failed = 0
        self.started = time.monotonic()
        self.stopping = threading.Event()  # a setting no retry can fix: every series stops
        self.scp_lock = threading.Lock()

    def emit(self, kind: str, s: _Series | None = None, **kw: Any) -> None:
        if self.progress is None:
            return
        with self.lock:
            event = PullEvent(
                done=self.done, total=self.total, failed=self.failed, bytes=self.bytes,
                elapsed=time.monotonic() - self.started, finished=kind == "finished",
                kind=kind, study=s.study if s else "", series=s.series if s else "",
                series_done=self.done, series_total=self.total, instances=self.instances, **kw,
            )  # fmt: skip
        self.progress(event)

    def choose_method(self) -> str:
        if self.method != "auto":
            return self.method
        from ._retrieve import MODEL_UIDS, QR_SYNTAXES
        from ._ul import AssociateRequest, request_association

        opts = self.opts.assoc
        uid = MODEL_UIDS[(self.opts.model, "get")]
        request = AssociateRequest(
            self.peer.ae_title, opts.calling_ae, [(1, uid, list(QR_SYNTAXES))], opts.max_pdu
        )
        try:
            conn, accept = request_association(
                self.peer.host, self.peer.port, request,
                connect_timeout=opts.connection_timeout, acse_timeout=opts.acse_timeout,
                network_timeout=opts.network_timeout, max_pdu=opts.max_pdu,
            )  # fmt: skip
        except AssociationRejectedError:
            return "move"
        conn.release()
        return "get" if accept.results.get(1, (1, ""))[0] == 0 else "move"

    def ensure_scp(self) -> None:
        with self.scp_lock:  # one Storage SCP, however many series start at once
            if self.scp is not None:
                return
            scp_opts = SCPOptions(
                ae_title=self.opts.ae_title, host=self.opts.host, port=self.opts.port,
                calling_aes=(self.peer.ae_title, *self.opts.store_aes), check_called_ae=True,
                max_pdu=self.opts.assoc.max_pdu, fsync=self.opts.fsync,
            )  # fmt: skip
            try:
                self.scp = StorageSCP(self.lake, scp_opts).start()
            except NetworkConfigError as exc:
                raise NetworkConfigError(
                    f"C-MOVE needs a Storage SCP here, and {exc}; or fetch with C-GET "
                    "(--method get)"
                ) from exc

    def move(self, query: Mapping[str, Any]) -> None:
        """C-MOVE ``query`` to our Storage SCP; an unknown destination says how to fix it."""
        assert self.scp is not None
        try:
            move(self.peer, query, self.scp, model=self.opts.model, options=self.opts.assoc)
        except MoveDestinationError as exc:
            raise MoveDestinationError(
                f"{exc}. This pull's Storage SCP is {self.opts.ae_title!r} on port "
                f"{self.scp.port}; or use an AE title the peer knows (--ae), or fetch with "
                "C-GET (--method get)",
                status=exc.status, completed=exc.completed, failed=exc.failed,
                warning=exc.warning, failed_uids=exc.failed_uids,
            ) from exc  # fmt: skip

    def expected_uids(self, s: _Series) -> tuple[set[str], list[str]]:
        rows = find(
            self.peer,
            {"StudyInstanceUID": s.study, "SeriesInstanceUID": s.series},
            level="image", model=self.opts.model, options=self.opts.assoc,
        )  # fmt: skip
        uids = {u for u in rows.column("sop_instance_uid").to_pylist() if u}
        classes = sorted({c for c in rows.column("sop_class_uid").to_pylist() if c})
        return uids, classes

    def present(self, s: _Series, expected: set[str] | None) -> set[str]:
        if self.lake.stages:  # landed under new UIDs: only the records know the sources
            recorded = self.lake.recorded_sources()
            key = self.lake.source_key
            return {u for u in (expected or set()) if key(u) in recorded}
        found, _ = self.lake.reconcile(s.study, s.series)
        return found

    def fetch(self, s: _Series, missing: Sequence[str] | None, classes: Sequence[str]) -> None:
        base = {"StudyInstanceUID": s.study, "SeriesInstanceUID": s.series}
        batches: list[dict[str, Any]] = [base]
        if missing is not None:
            uids = sorted(missing)
            step = self.opts.chunk
            batches = [
                {**base, "SOPInstanceUID": uids[i : i + step]} for i in range(0, len(uids), step)
            ]
        for query in batches:
            if self.method == "get":
                get(
                    self.peer, query, self.lake, model=self.opts.model,
                    sop_classes=list(classes) or None, options=self.opts.assoc,
                )  # fmt: skip
            else:
                self.ensure_scp()
                self.move(query)
                self.wait_for_arrivals()

    def wait_for_arrivals(self) -> None:
        """C-MOVE's final response can precede the last C-STORE's landing by a moment."""
        self.lake._drain()

    def run_series(self, s: _Series) -> dict[str, Any] | None:
        """Fetch one series with retries; its report row (None: not started, the pull is
        stopping)."""
        if self.stopping.is_set():
            return None
        started = time.monotonic()
        self.emit("series-start", s)
        row: dict[str, Any] = {
            "study_instance_uid": s.study,
            "series_instance_uid": s.series,
            "PatientID": s.info.get("PatientID"),
            "StudyDate": s.info.get("StudyDate"),
            "Modality": s.info.get("Modality"),
            "SeriesDescription": s.info.get("SeriesDescription"),
            "expected": s.expected,
            "present_before": None,
            "fetched": 0,
            "present_after": None,
            "status": "failed",
            "attempts": 0,
            "method": self.method,
            "seconds": 0.0,
            "bytes": 0,
            "error": None,
        }
        expected_uids: set[str] | None = None
        classes = list(s.sop_classes)
        before: set[str] | None = None
        delay = self.opts.backoff
        for attempt in range(self.opts.retries + 1):
            if self.stopping.is_set():
                row["error"] = row["error"] or "stopped: another series hit a setting to fix"
                break
            row["attempts"] = attempt + 1
            try:
                need_uids = s.expected is None or bool(self.lake.stages)
                if need_uids and expected_uids is None:
                    expected_uids, found_classes = self.expected_uids(s)
                    classes = found_classes or classes
                    s.expected = row["expected"] = len(expected_uids)
                present = self.present(s, expected_uids)
                if before is None:
                    before = set(present)
                    row["present_before"] = len(before)
                expected = s.expected or 0
                if expected_uids is not None:
                    missing: set[str] | None = expected_uids - present
                    complete = not missing
                else:
                    complete = len(present) >= expected
                    missing = None
                if complete:
                    row["status"] = "already complete" if attempt == 0 else "complete"
                    row["error"] = None
                    break
                if present and expected_uids is None:  # partial: fetch only what is missing
                    expected_uids, found_classes = self.expected_uids(s)
                    classes = found_classes or classes
                    s.expected = row["expected"] = len(expected_uids)
                    missing = expected_uids - present
                    if not missing:
                        row["status"] = "complete"
                        row["error"] = None
                        break
                self.fetch(s, sorted(missing) if present and missing else None, classes)
                self.lake.sync()
                after = self.present(s, expected_uids)
                if (expected_uids is not None and expected_uids <= after) or (
                    expected_uids is None and len(after) >= expected
                ):
                    row["status"] = "complete"
                    row["error"] = None
                    break
                short = (len(expected_uids) if expected_uids is not None else expected) - len(
                    after & expected_uids if expected_uids is not None else after
                )
                row["error"] = f"incomplete: {short} of {expected} instances missing"
                row["status"] = "incomplete"
            except ConfigError:  # the same for every series and attempt: stop, say the fix
                self.stopping.set()
                raise
            except (NetworkError, DicomflowError, OSError) as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
                row["status"] = "failed"
            if attempt < self.opts.retries and not self.stopping.is_set():
                self.emit("series-retry", s, status=row["status"], detail=row["error"] or "")
                self.stopping.wait(delay)
                delay = min(delay * 2, self.opts.max_backoff)
        self.lake.flush()
        final = self.present(s, expected_uids)
        row["present_after"] = len(final)
        fetched = final - (before or set())
        row["fetched"] = len(fetched)
        row["bytes"] = self._size(s, fetched)
        row["seconds"] = time.monotonic() - started
        if self.lake.shareable:  # what landed, to report it by its de-identified values
            row["_landed"] = [self.lake.source_key(u) for u in sorted(final)]
        ok = row["status"] in ("complete", "already complete")
        with self.lock:
            self.done += 1
            self.failed += 0 if ok else 1
            self.instances += row["fetched"]
            self.bytes += row["bytes"]
            self.left_in_study[s.study] -= 1
            self.study_ok[s.study] = self.study_ok.get(s.study, True) and ok
            study_done = self.left_in_study[s.study] == 0
        self.emit("series-done", s, status=row["status"], detail=row["error"] or "")
        if study_done:
            status = "complete" if self.study_ok[s.study] else "incomplete"
            self.emit("study-done", _Series(s.study, "", None, {}, []), status=status)
        return row

    def _size(self, s: _Series, uids: set[str]) -> int:
        """Bytes landed for these instances, from the lake's records."""
        recorded = self.lake.recorded_sources()
        key = self.lake.source_key
        return sum(recorded.get(key(uid)) or 0 for uid in uids)

    def close(self) -> None:
        if self.scp is not None:
            self.scp.stop()


def pull(
    peer: Peer | str,
    query: str | Mapping[str, Any] | None,
    lake: Lake | str,
    options: PullOptions | None = None,
    *,
    stages: Sequence[Callable[[Instance], Instance | None]] = (),
    progress: Callable[[PullEvent], None] | None = None,
) -> PullReport:
    """Pull every series matching ``query`` from ``peer`` into ``lake``; see the module docs.

    ``progress`` is called with a :class:`PullEvent` (a
    :class:`~dicomflow.runtime.ProgressEvent`) as series start and end: a plain function or a
    progress consumer (:class:`~dicomflow.runtime.ProgressLog`, the terminal bar...).

    Returns a :class:`PullReport` (also written to ``lake/_lake/pull-*.parquet``; a shareable
    lake's to ``lake.private/``, see the module docstring). Series that stay incomplete after
    the retries are reported, not raised: rerun the same pull.

    Raises
    ------
    NetworkConfigError
        On the first occurrence of a setting that no retry can fix, and no series starts
        after it: the peer does not know our AE title as a C-MOVE destination
        (:class:`MoveDestinationError`), our Storage SCP's port is in use. The message says
        how to fix it.
    ConfigError
        A query that cannot choose series (an image-level key), or bad options.
    """
    peer = Peer.parse(peer)
    opts = options or PullOptions()
    started = time.monotonic()
    planned = plan(peer, query, options=opts)
    own = not isinstance(lake, Lake)
    target = lake if isinstance(lake, Lake) else Lake(lake, fsync=opts.fsync, stages=stages)
    if not own and stages:
        raise ConfigError("pass stages to the Lake you share, not to pull()")
    puller = _Puller(peer, target, opts, progress)
    puller.started = started
    series = [
        _Series(
            r["study_instance_uid"],
            r["series_instance_uid"],
            r.get("NumberOfSeriesRelatedInstances"),
            r,
            list(r.get("SOPClassesInStudy") or []),
        )  # fmt: skip
        for r in planned.to_pylist()
        if r.get("series_instance_uid")
    ]
    puller.total = len(series)
    for s in series:
        puller.left_in_study[s.study] = puller.left_in_study.get(s.study, 0) + 1
    puller.emit("planned", detail=f"{len(puller.left_in_study)} studies")
    rows: list[dict[str, Any]] = []
    try:
        if series:
            puller.method = puller.choose_method()
            with ThreadPoolExecutor(opts.concurrency, thread_name_prefix="dicomflow-pull") as pool:
                futures = [pool.submit(puller.run_series, s) for s in series]
                fatal: ConfigError | None = None
                for future in futures:
                    try:
                        row = future.result()
                    except CancelledError:
                        continue
                    except ConfigError as exc:  # no series starts after it; running ones stop
                        puller.stopping.set()
                        fatal = fatal or exc
                        for f in futures:
                            f.cancel()
                        continue
                    if row is not None:
                        rows.append(row)
                if fatal is not None:
                    raise fatal
    finally:
        puller.close()
        target.flush()
    landed = [row.pop("_landed", []) for row in rows]
    table = (
        pa.Table.from_pylist(rows, schema=REPORT_SCHEMA) if rows else REPORT_SCHEMA.empty_table()
    )
    shared = None
    if target.shareable and rows:
        path: str | None = target.write_private_table("pull", table)
        shared = target.write_state_table("pull", _deidentified_report(target, table, landed))
    else:
        path = target.write_state_table("pull", table) if rows else None
    if own:
        target.close()
    puller.emit("finished", detail=f"{puller.done} of {puller.total} series")
    return PullReport(table, time.monotonic() - started, path, puller.method, planned, shared)


_FROM_CATALOG = ("PatientID", "StudyDate", "Modality", "SeriesDescription")


def _deidentified_report(lake: Lake, table: pa.Table, landed: list[list[str]]) -> pa.Table:
    """The report as a shareable lake may hold it: each series by the values of one of its
    landed (de-identified) instances, the counts, errors by their kind; sorted."""
    catalog = lake.catalog()
    wanted = {uid for uids in landed for uid in uids}
    values: dict[str, dict[str, Any]] = {}
    names = ["study_instance_uid", "series_instance_uid", *_FROM_CATALOG]
    for row in catalog.select(["sop_instance_uid", *names]).to_pylist():
        if row["sop_instance_uid"] in wanted:
            values[row["sop_instance_uid"]] = row
    out = []
    for row, uids in zip(table.to_pylist(), landed, strict=True):
        first = next((values[u] for u in uids if u in values), {})
        row.update({name: first.get(name) for name in names})
        row["error"] = _error_kind(row["error"])
        out.append(row)
    out.sort(key=lambda r: (r["study_instance_uid"] or "~", r["series_instance_uid"] or "~"))
    return pa.Table.from_pylist(out, schema=REPORT_SCHEMA)


def _error_kind(error: str | None) -> str | None:
    """An error without its details (which may name originals): its kind, or the counts."""
    if not error:
        return error
    if error.startswith(("incomplete:", "stopped:")):
        return error
    return error.split(":", 1)[0]
