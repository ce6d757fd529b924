"""Bulk, resumable pulls from a PACS into a lake: plan with C-FIND, fetch series by series.

>>> from dicomflow.network import pull, PullOptions
>>> report = pull("PACS@10.0.0.5:104", "Modality=CT StudyDate=20240101-20240131", "lake/",
...               PullOptions(ae_title="LAKE", port=11113, concurrency=2))  # doctest: +SKIP
>>> report.summary()  # doctest: +SKIP
'40/40 series complete, 12,480 instances (12,480 fetched), 6.5 GB in 0:01:10, 178 inst/s'

A cohort (a CSV with a query per row), at night, at most 60 studies an hour, over DICOMweb:

>>> night = PullOptions(window="20:00-06:00", max_studies_per_hour=60)
>>> report = pull("https://pacs.example.org/dicom-web", lake="lake/", cohort="cohort.csv",
...               options=night)  # doctest: +SKIP
>>> report.cohort.filter(pc.equal(report.cohort["status"], "no match"))  # doctest: +SKIP

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
   ``_lake/pull-*.parquet`` and returned; the plan beside it (``_lake/plan-*.parquet``).

Cohorts (:mod:`._cohort`): every row's query is planned first (its study and series C-FINDs),
then the series are de-duplicated across rows into one plan with one progress total; the
plan's ``cohort_rows`` column says which rows matched each series, and an outcome table (one
row per cohort row: what it matched, how it ended; ``no match`` for a row that matched
nothing) is written to ``_lake/cohort-*.parquet`` and returned as ``report.cohort``.

Politeness (:mod:`._schedule`): with a ``window`` (``"20:00-06:00"``, local time) the pull
and each retrieve start only inside it; a retrieve started inside runs to its end. Outside
it the pull waits, or with ``outside_window="stop"`` ends at once (``report.stopped`` says
why; the series not fetched are ``deferred``) to be resumed by running it again. Rate limits
are token buckets passed before each retrieve: ``max_studies_per_hour`` spaces the starts of
studies evenly (a study's first retrieve takes its token), ``max_instances_per_second``
charges each retrieve the instances it asks for (a series is one retrieve: the rate holds on
average, the next retrieve waits out a large one).

DICOMweb (:class:`~dicomflow.network.DicomWeb`, or its ``http(s)://`` URL as ``peer``): the
plan is QIDO-RS searches, each series is retrieved with WADO-RS into the same lake layout
with the same records (``source`` says ``wado-rs``).

**Into a shareable lake** (a :class:`~dicomflow.network.Lake` with ``deidentified=``, what
``dicomflow pull --deid`` opens): the plan, the cohort's outcome and the report name the
originals (their UIDs, Patient ID, dates, descriptions), so they are written beside the
lake, to ``DST.private/`` (``pull-*``, ``plan-*``, ``cohort-*``), never inside it; the lake
gets a de-identified report (``_lake/pull-*.parquet``): per series the values of its landed,
de-identified instances (from the lake's catalog; none for a series of which nothing landed),
the counts and statuses, errors by their kind only, in the order of the de-identified UIDs.
What the lake holds of an original instance is found through ``Lake.source_key``.
"""

from __future__ import annotations

import datetime as dt
import os
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
from ._cohort import Cohort, outcome_table, read_cohort
from ._errors import (
    AssociationRejectedError,
    MoveDestinationError,
    NetworkConfigError,
    NetworkError,
)
from ._lake import Lake
from ._options import AssociationOptions, Peer, TLSOptions, check_ae_title
from ._plan import (
    Asking,
    as_remote,
    check_series_keys,
    empty_plan,
    plan_cohort,
    query_series,
    search,
)
from ._query import parse_query
from ._schedule import Gate, OutsideWindow, TokenBucket, Window
from .dicomweb import DicomWeb
from .scp import SCPOptions, StorageSCP
from .scu import get, move

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
        ("status", pa.string()),  # complete, already complete, incomplete, failed, deferred
        ("attempts", pa.int32()),
        ("method", pa.string()),
        ("seconds", pa.float64()),
        ("bytes", pa.int64()),
        ("error", pa.string()),
        ("started", pa.timestamp("us", tz="UTC")),  # its first retrieve (null: none)
        ("waited", pa.float64()),  # seconds its retrieves waited for the window and rates
    ]
)

#: Statuses of a series that is in the lake whole.
_DONE = ("complete", "already complete")


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
        Timeouts, PDU size, TLS and user identity (its ``calling_ae`` is replaced by
        ``ae_title``).
    scp_tls
        :class:`TLSOptions` of the Storage SCP started for C-MOVE (our certificate and key, the
        CA that signed the PACS's), for a PACS that stores to us over DICOM TLS.
    window
        Times of day (local) when the pull and its retrieves may start: ``"20:00-06:00"``,
        several comma separated; None: any time.
    outside_window
        ``"wait"`` until the window opens, or ``"stop"``: end the pull cleanly (the series
        left are ``deferred``; run it again to resume).
    max_studies_per_hour
        Study retrieves started per hour at most, spaced evenly (None: no limit).
    max_instances_per_second
        Instances asked for per second at most, on average over retrieves (None: no limit).
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
    scp_tls: TLSOptions | None = None
    window: str | None = None
    outside_window: str = "wait"
    max_studies_per_hour: float | None = None
    max_instances_per_second: float | None = None

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title, "our AE title")
        if self.method not in ("auto", "get", "move"):
            raise ConfigError(f"method={self.method!r}: expected auto, get or move")
        if self.concurrency < 1:
            raise ConfigError("concurrency must be >= 1")
        if self.retries < 0 or self.backoff < 0:
            raise ConfigError("retries and backoff must be >= 0")
        if self.window is not None:
            object.__setattr__(self, "window", str(Window.parse(self.window)))
        if self.outside_window not in ("wait", "stop"):
            raise ConfigError(f"outside_window={self.outside_window!r}: expected wait or stop")
        for name in ("max_studies_per_hour", "max_instances_per_second"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0 (or None: no limit), got {value}")

    def gate(self, sleep: Callable[[float], bool] | None = None) -> Gate:
        """The window and rate limits as a :class:`~._schedule.Gate` (``sleep`` returns True
        when the pull is stopping)."""
        studies = instances = None
        if self.max_studies_per_hour is not None:
            studies = TokenBucket(self.max_studies_per_hour / 3600.0, 1.0)
        if self.max_instances_per_second is not None:
            rate = self.max_instances_per_second
            instances = TokenBucket(rate, max(1.0, rate))  # a second's worth at once
        gate = Gate(
            Window.parse(self.window) if self.window else None, self.outside_window,
            studies, instances,
        )  # fmt: skip
        if sleep is not None:
            gate.sleep = sleep
        return gate

    @property
    def assoc(self) -> AssociationOptions:
        base = self.association or AssociationOptions()
        return replace(base, calling_ae=self.ae_title)

    @property
    def asking(self) -> Asking:
        """How the plan asks the peer."""
        return Asking(self.model, self.assoc)


@dataclass(frozen=True, slots=True)
class PullEvent(ProgressEvent):
    """A pull's progress event: ``kind`` is queried (a cohort row was planned: ``done`` of
    ``total`` rows, ``task`` "querying"), planned, series-start, series-retry, waiting (for
    the window or a rate limit: ``wait`` seconds, ``detail`` why), series-done, study-done
    (the last series of a study finished; ``status`` says how the study ended) or finished
    (the last event).

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
    wait: float = 0.0


@dataclass
class PullReport:
    """What a pull did: one row per series (``table``) and the totals.

    ``planned`` is the plan (one row per series; ``cohort_rows`` with a cohort), ``cohort``
    the outcome of each cohort row (see :func:`~._cohort.outcome_table`), ``stopped`` why the
    pull ended before its end (outside its window: run it again later), and ``path``,
    ``plan_path``, ``cohort_path`` where the report, the plan and the outcome were written.
    """

    table: pa.Table
    seconds: float
    path: str | None = None
    method: str = ""
    planned: pa.Table | None = field(default=None, repr=False)
    cohort: pa.Table | None = field(default=None, repr=False)
    stopped: str | None = None
    plan_path: str | None = None
    cohort_path: str | None = None
    #: the de-identified report inside a shareable lake (``path`` is then beside the lake)
    shared: str | None = None

    @property
    def complete(self) -> bool:
        """Every planned series is in the lake whole (and the pull was not stopped)."""
        statuses = self.table.column("status").to_pylist()
        return self.stopped is None and all(s in _DONE for s in statuses)

    @property
    def unmatched(self) -> list[dict[str, Any]]:
        """The cohort rows that matched nothing (an empty list without a cohort)."""
        if self.cohort is None:
            return []
        return [r for r in self.cohort.to_pylist() if r["status"] == "no match"]

    @property
    def fetched(self) -> int:
        return int(pc.sum(self.table.column("fetched")).as_py() or 0)

    @property
    def bytes(self) -> int:
        return int(pc.sum(self.table.column("bytes")).as_py() or 0)

    def summary(self) -> str:
        rows = self.table.to_pylist()
        done = sum(1 for r in rows if r["status"] in _DONE)
        present = sum(r["present_after"] or 0 for r in rows)
        rate = self.fetched / self.seconds if self.seconds else 0.0
        mbs = self.bytes / self.seconds / 1e6 if self.seconds else 0.0
        deferred = [r for r in rows if r["status"] == "deferred"]
        failed = [r for r in rows if r["status"] not in (*_DONE, "deferred")]
        text = (
            f"{done}/{len(rows)} series complete, {present:,} instances in the lake "
            f"({self.fetched:,} fetched now, {self.bytes / 1e6:,.1f} MB) in {self.seconds:.1f} s"
            f", {rate:,.0f} inst/s, {mbs:,.1f} MB/s, by {self.method or 'nothing to fetch'}"
        )
        if failed:
            text += f"; {len(failed)} series incomplete (rerun the same pull to finish them)"
        if deferred:
            text += f"; {len(deferred)} series deferred"
        if self.cohort is not None:
            n = self.cohort.num_rows
            text += f"; cohort: {n - len(self.unmatched)}/{n} rows matched"
        if self.stopped:
            text += f"; stopped: {self.stopped}"
        return text


# -- planning ---------------------------------------------------------------------------------


def plan(
    peer: Peer | DicomWeb | str,
    query: str | Mapping[str, Any] | None = None,
    *,
    cohort: Any = None,
    options: PullOptions | None = None,
) -> pa.Table:
    """The series a pull would fetch: study then series C-FIND (or QIDO-RS), filtered by the
    query; with a ``cohort`` (see :func:`pull`), every row's series, de-duplicated, with the
    column ``cohort_rows`` saying which rows matched each."""
    remote = as_remote(peer)
    asking = (options or PullOptions()).asking
    if cohort is not None:
        rows = cohort if isinstance(cohort, Cohort) else read_cohort(cohort, query)
        return plan_cohort(remote, rows, asking)
    keys = parse_query(query)
    check_series_keys(keys)
    return query_series(remote, keys, asking, {}) or empty_plan()


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
        remote: Peer | DicomWeb,
        lake: Lake,
        opts: PullOptions,
        progress: Callable[[PullEvent], None] | None,
        gate: Gate,
        stopping: threading.Event,
    ) -> None:
        self.remote = remote
        self.web = remote if isinstance(remote, DicomWeb) else None
        self.lake = lake
        self.opts = opts
        self.progress = progress
        self.method = "wado-rs" if self.web is not None else opts.method
        self.gate = gate
        self.deferred: str | None = None  # why retrieves stopped: outside the window
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
        self.stopping = stopping  # a setting no retry can fix: every series stops
        self.scp_lock = threading.Lock()

    @property
    def peer(self) -> Peer:
        """The DIMSE peer (only DIMSE code asks)."""
        assert isinstance(self.remote, Peer)
        return self.remote

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
            return self.method  # given, or wado-rs for DICOMweb
        from ._retrieve import MODEL_UIDS, QR_SYNTAXES
        from ._ul import open_association

        uid = MODEL_UIDS[(self.opts.model, "get")]
        try:  # with our TLS and user identity, as the retrieves will be
            conn, accept = open_association(
                self.peer, self.opts.assoc, [(1, uid, list(QR_SYNTAXES))]
            )
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
                max_pdu=self.opts.assoc.max_pdu, fsync=self.opts.fsync, tls=self.opts.scp_tls,
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
        keys = {"StudyInstanceUID": s.study, "SeriesInstanceUID": s.series}
        rows = search(self.remote, "image", keys, self.opts.asking)
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

    def fetch(
        self,
        s: _Series,
        missing: Sequence[str] | None,
        classes: Sequence[str],
        row: dict[str, Any],
    ) -> None:
        """Retrieve the series (or its ``missing`` instances), each retrieve through the gate
        (which may raise :class:`OutsideWindow`)."""
        batches: list[list[str] | None] = [None]
        if missing is not None:
            ordered = sorted(missing)
            step = 1 if self.web is not None else self.opts.chunk  # WADO-RS: one per request
            batches = [ordered[i : i + step] for i in range(0, len(ordered), step)]
        for uids in batches:
            cost = len(uids) if uids is not None else (s.expected or 1)
            waited = self.gate.before_retrieve(s.study, cost)
            if waited < 0:
                return  # stopping: another series hit a setting to fix
            row["waited"] += waited
            if row["started"] is None:
                row["started"] = dt.datetime.now(dt.UTC)
            self.retrieve(s, uids, classes)

    def retrieve(self, s: _Series, uids: list[str] | None, classes: Sequence[str]) -> None:
        """One retrieve: the whole series, or these instances of it."""
        if self.web is not None:
            if uids is None:
                self.web.retrieve_into(self.lake, s.study, s.series)
            for uid in uids or ():
                self.web.retrieve_into(self.lake, s.study, s.series, uid)
            return
        query: dict[str, Any] = {"StudyInstanceUID": s.study, "SeriesInstanceUID": s.series}
        if uids is not None:
            query["SOPInstanceUID"] = uids
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
            "started": None,
            "waited": 0.0,
        }
        if self.deferred is not None:  # outside the window: not started, left for a rerun
            row.update(status="deferred", error=self.deferred, attempts=0)
            return row
        self.emit("series-start", s)
        expected_uids: set[str] | None = None
        classes = list(s.sop_classes)
        before: set[str] | None = None
        delay = self.opts.backoff
        for attempt in range(self.opts.retries + 1):
            if self.stopping.is_set():
                row["error"] = row["error"] or "stopped: another series hit a setting to fix"
                break
            if self.deferred is not None:
                row.update(status="deferred", error=self.deferred)
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
                self.fetch(s, sorted(missing) if present and missing else None, classes, row)
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
            except OutsideWindow as exc:  # no retrieve starts now: the series is left for later
                with self.lock:
                    self.deferred = self.deferred or str(exc)
                row.update(status="deferred", error=str(exc))
                break
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
        ok = row["status"] in _DONE
        with self.lock:
            self.done += 1
            self.failed += 0 if ok or row["status"] == "deferred" else 1
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
    peer: Peer | DicomWeb | str,
    query: str | Mapping[str, Any] | None = None,
    lake: Lake | str | os.PathLike[str] | None = None,
    options: PullOptions | None = None,
    *,
    cohort: Any = None,
    stages: Sequence[Callable[[Instance], Instance | None]] = (),
    progress: Callable[[PullEvent], None] | None = None,
) -> PullReport:
    """Pull every series matching ``query`` (or the rows of ``cohort``) from ``peer`` into
    ``lake``; see the module docs.

    Parameters
    ----------
    peer
        ``AE@HOST:PORT`` or a :class:`Peer` (DIMSE), or a DICOMweb service: its
        ``http(s)://`` URL or a :class:`~dicomflow.network.DicomWeb` (which holds the
        credentials).
    query
        ``'Modality=CT StudyDate=2024-01-01..2024-01-31'`` or a mapping; with a cohort, the
        keys every row's query gets too. None: everything (without a cohort).
    lake
        A folder or fsspec URL, or a :class:`Lake` to share.
    options
        :class:`PullOptions`: our AE title, concurrency, retries, the time window, the rate
        limits.
    cohort
        A table of queries, one a row (see :func:`~dicomflow.network._cohort.read_cohort`):
        a CSV path, a ``pyarrow.Table``, a pandas or polars data frame, or a sequence of
        mappings; column names are DICOM keywords. The outcome of each row is
        ``report.cohort`` (``no match`` for a row that matched nothing).
    stages
        Callables run on every instance before it lands (de-identification...).
    progress
        Called with a :class:`PullEvent` (a :class:`~dicomflow.runtime.ProgressEvent`) as
        series start and end: a plain function or a progress consumer
        (:class:`~dicomflow.runtime.ProgressLog`, the terminal bar...).

    Returns
    -------
    PullReport
        Also written to ``lake/_lake/pull-*.parquet``, beside the plan (``plan-*``) and the
        cohort's outcome (``cohort-*``); for a shareable lake these go to ``lake.private/``
        and the lake gets a de-identified report (``report.shared``, see the module
        docstring). Series that stay incomplete after the retries are
        reported, not raised: rerun the same pull. Outside its window with
        ``outside_window="stop"``, ``report.stopped`` says so (nothing is raised) and the
        series left are ``deferred``.

    Raises
    ------
    NetworkConfigError
        On the first occurrence of a setting that no retry can fix, and no series starts
        after it: the peer does not know our AE title as a C-MOVE destination
        (:class:`MoveDestinationError`), our Storage SCP's port is in use. The message says
        how to fix it.
    ConfigError
        A query that cannot choose series (an image-level key), a cohort that cannot be read
        or has rows that cannot be queried (all named), or bad options.
    """
    remote = as_remote(peer)
    opts = options or PullOptions()
    if lake is None:
        raise ConfigError("pull needs a lake: a folder or an fsspec URL (lake=...)")
    if isinstance(remote, DicomWeb) and opts.method != "auto":
        raise ConfigError(
            f"method={opts.method!r} is a DIMSE retrieve; a DICOMweb pull retrieves with WADO-RS"
        )
    own = not isinstance(lake, Lake)
    if not own and stages:
        raise ConfigError("pass stages to the Lake you share, not to pull()")
    rows: Cohort | None = None
    if cohort is not None:
        rows = cohort if isinstance(cohort, Cohort) else read_cohort(cohort, query)
    else:
        check_series_keys(parse_query(query))
    started = time.monotonic()

    def tell(event: PullEvent) -> None:
        if progress is not None:
            progress(event)

    stopping = threading.Event()
    gate = opts.gate(sleep=stopping.wait)
    gate.on_wait = lambda why, wait: tell(
        PullEvent(kind="waiting", detail=why, wait=wait, elapsed=time.monotonic() - started)
    )
    try:
        gate.wait_for_window()  # the plan's queries start inside the window too
    except OutsideWindow as exc:
        tell(PullEvent(kind="finished", finished=True, detail=str(exc),
                       elapsed=time.monotonic() - started))  # fmt: skip
        return PullReport(REPORT_SCHEMA.empty_table(), time.monotonic() - started,
                          stopped=str(exc))  # fmt: skip

    def queried(done: int, total: int) -> None:
        tell(PullEvent(task="querying", unit="rows", done=done, total=total, kind="queried",
                       elapsed=time.monotonic() - started))  # fmt: skip

    if rows is not None:
        planned = plan_cohort(remote, rows, opts.asking, on_row=queried)
    else:
        planned = query_series(remote, parse_query(query), opts.asking, {}) or empty_plan()
    target = lake if isinstance(lake, Lake) else Lake(lake, fsync=opts.fsync, stages=stages)
    write_plan = target.write_private_table if target.shareable else target.write_state_table
    plan_path = write_plan("plan", planned)
    puller = _Puller(remote, target, opts, progress, gate, stopping)
    puller.started = started
    gate.on_wait = lambda why, wait: puller.emit("waiting", detail=why, wait=wait)
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
    detail = f"{len(puller.left_in_study)} studies"
    if rows is not None:
        detail += f", from {len(rows.rows)} cohort rows"
    puller.emit("planned", detail=detail)
    report_rows: list[dict[str, Any]] = []
    try:
        if series:
            puller.method = puller.choose_method()
            with ThreadPoolExecutor(opts.concurrency, thread_name_prefix="dicomflow-pull") as pool:
                futures = [pool.submit(puller.run_series, s) for s in series]
                fatal: ConfigError | None = None
                try:
                    for future in futures:
                        try:
                            row = future.result()
                        except CancelledError:
                            continue
                        except ConfigError as exc:  # no series starts after it; others stop
                            puller.stopping.set()
                            fatal = fatal or exc
                            for f in futures:
                                f.cancel()
                            continue
                        if row is not None:
                            report_rows.append(row)
                except BaseException:  # Ctrl-C: no thread may go on waiting for a window
                    puller.stopping.set()
                    for f in futures:
                        f.cancel()
                    raise
                if fatal is not None:
                    raise fatal
    finally:
        puller.close()
        target.flush()
    landed = [row.pop("_landed", []) for row in report_rows]
    table = (
        pa.Table.from_pylist(report_rows, schema=REPORT_SCHEMA)
        if report_rows
        else REPORT_SCHEMA.empty_table()
    )
    outcome = outcome_table(rows, planned, table) if rows is not None else None
    shared = None
    cohort_path = None
    if target.shareable:  # the plan, the report and the cohort name originals: beside it
        path = target.write_private_table("pull", table) if report_rows else None
        if report_rows:
            shared = target.write_state_table("pull", _deidentified_report(target, table, landed))
        if outcome is not None:
            cohort_path = target.write_private_table("cohort", outcome)
    else:
        path = target.write_state_table("pull", table) if report_rows else None
        if outcome is not None:
            cohort_path = target.write_state_table("cohort", outcome)
    if own:
        target.close()
    puller.emit("finished", detail=f"{puller.done} of {puller.total} series")
    return PullReport(
        table, time.monotonic() - started, path, puller.method, planned, outcome,
        puller.deferred, plan_path, cohort_path, shared,
    )  # fmt: skip


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
