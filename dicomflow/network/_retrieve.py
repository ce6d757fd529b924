"""C-GET and C-MOVE over the lean Upper Layer: requests, sub-operation C-STOREs landed in a
lake as they arrive, final statuses turned into results or errors."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydicom import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from ._dimse import (
    C_GET_RSP,
    C_MOVE_RSP,
    C_STORE_RQ,
    COMPLETED,
    ERROR_COMMENT,
    FAILED,
    MODEL_UIDS,
    OUT_OF_RESOURCES,
    PENDING,
    QR_SYNTAXES,
    REMAINING,
    STATUS,
    WARNING,
    Message,
    c_get_rq,
    c_move_rq,
    encode_identifier,
    identifier_header,
    response,
    status_category,
    text,
    us,
)
from ._errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    DimseStatusError,
    MoveDestinationError,
    SubOperationsFailedError,
)
from ._lake import Lake
from ._options import AssociationOptions, Peer
from ._query import check_level
from ._store import land_and_answer
from ._ul import Connection, open_association

__all__ = [
    "DEFAULT_GET_CLASSES",
    "MODEL_UIDS",
    "QR_SYNTAXES",
    "STORE_TRANSFER_SYNTAXES",
    "RetrieveResult",
    "check_retrieve",
    "retrieve",
    "retrieve_level",
    "status_category",
]

#: Transfer syntaxes offered for C-GET sub-operations, so the peer sends what it stores
#: (no transcoding): the uncompressed ones, then the usual compressed ones.
STORE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",
)  # fmt: skip

#: Storage SOP classes offered for C-GET when the SOP classes to expect are unknown.
DEFAULT_GET_CLASSES: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.5.1.4.1.1.6.1",
    "1.2.840.10008.5.1.4.1.1.3.1", "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.128",
    "1.2.840.10008.5.1.4.1.1.130", "1.2.840.10008.5.1.4.1.1.20", "1.2.840.10008.5.1.4.1.1.12.1",
    "1.2.840.10008.5.1.4.1.1.12.2", "1.2.840.10008.5.1.4.1.1.481.1",
    "1.2.840.10008.5.1.4.1.1.481.2", "1.2.840.10008.5.1.4.1.1.481.3",
    "1.2.840.10008.5.1.4.1.1.481.5", "1.2.840.10008.5.1.4.1.1.66.4",
    "1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.88.22",
    "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.59",
    "1.2.840.10008.5.1.4.1.1.11.1", "1.2.840.10008.5.1.4.1.1.104.1",
    "1.2.840.10008.5.1.4.1.1.77.1.6", "1.2.840.10008.5.1.4.1.1.30",
    "1.2.840.10008.5.1.4.1.1.4.4", "1.2.840.10008.5.1.4.1.1.2.2",
)  # fmt: skip


@dataclass(frozen=True)
class RetrieveResult:
    """The outcome of a C-GET or C-MOVE: the final status and sub-operation counts.

    ``received`` counts the instances that landed in the lake through this call (C-GET);
    for C-MOVE they arrive at the destination instead.
    """

    operation: str
    status: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int = 0
    failed_uids: tuple[str, ...] = ()
    received: int = 0
    bytes: int = 0
    seconds: float = 0.0
    comment: str = ""
    landed: tuple[str, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return status_category(self.status) in ("success", "warning") and not self.failed


def retrieve_level(query: Mapping[str, Any], level: str | None) -> str:
    if level is not None:
        return check_level(level)
    for key, lvl in (("SOPInstanceUID", "IMAGE"), ("SeriesInstanceUID", "SERIES"),
                     ("StudyInstanceUID", "STUDY")):  # fmt: skip
        if query.get(key):
            return lvl
    return "PATIENT"


def _get_contexts(
    sop_classes: Sequence[str], syntaxes: Sequence[str]
) -> list[tuple[str, list[str]]]:
    """Storage contexts for C-GET: one per (class, syntax) when they fit in 127 contexts.

    A context per transfer syntax lets the peer send each instance in the syntax it is stored
    in; with one context listing them all, the peer picks one syntax per class and converts.
    """
    classes = list(dict.fromkeys(sop_classes))[:126]
    if len(classes) * len(syntaxes) <= 126:
        return [(c, [ts]) for c in classes for ts in syntaxes]
    return [(c, list(syntaxes)) for c in classes]


def retrieve(
    operation: str,
    peer: Peer,
    ds: Dataset,
    opts: AssociationOptions,
    *,
    model: str,
    lake: Lake | None = None,
    destination: str | None = None,
    sop_classes: Sequence[str] | None = None,
    progress: Callable[[RetrieveResult], None] | None = None,
) -> RetrieveResult:
    started = time.perf_counter()
    model_uid = MODEL_UIDS[(model, "get" if operation == "c-get" else "move")]
    contexts: list[tuple[int, str, list[str]]] = [(1, model_uid, list(QR_SYNTAXES))]
    roles: dict[str, tuple[int, int]] = {}
    if operation == "c-get":
        classes = list(sop_classes or DEFAULT_GET_CLASSES)
        for i, (abstract, syntaxes) in enumerate(_get_contexts(classes, STORE_TRANSFER_SYNTAXES)):
            contexts.append((2 * i + 3, abstract, syntaxes))
        roles = {c: (0, 1) for c in dict.fromkeys(classes)}
    conn, accept = open_association(peer, opts, contexts, roles)
    try:
        result, ts = accept.results.get(1, (1, ""))
        if result != 0:
            raise AssociationRejectedError(
                f"{peer} does not accept {operation.upper()} for the {model} root model"
            )
        storage = {cid: ts for cid, (r, ts) in accept.results.items() if r == 0 and cid != 1}
        if operation == "c-get":
            command = c_get_rq(1, model_uid)
        else:
            assert destination is not None
            command = c_move_rq(1, model_uid, destination)
        spooler = lake.spooler(storage, peer.ae_title) if lake is not None else None
        conn.spool = spooler  # large data sets of the C-GET go to files as they arrive
        conn.send_message(1, command, encode_identifier(ds, ts))
        try:
            outcome = _collect(operation, conn, peer, lake, storage, ts, started, progress)
        finally:
            if spooler is not None:
                spooler.close()
    except BaseException:
        conn.abort()
        raise
    conn.release()
    return outcome


def _collect(
    operation: str,
    conn: Connection,
    peer: Peer,
    lake: Lake | None,
    storage: dict[int, str],
    identifier_ts: str,
    started: float,
    progress: Callable[[RetrieveResult], None] | None,
) -> RetrieveResult:
    received = nbytes = 0
    landed: list[str] = []
    pending_seen = False
    final_field = C_GET_RSP if operation == "c-get" else C_MOVE_RSP
    for msg in conn.messages():
        field_ = msg.command_field
        if field_ == C_STORE_RQ:
            ts = storage.get(msg.context_id)
            if lake is None or ts is None:
                _refuse_store(conn, msg)
                continue
            got = land_and_answer(conn, msg, lake, ts, peer.ae_title, operation)
            if got.status in ("landed", "queued") and got.path:
                received += 1
                nbytes += msg.spool.size if msg.spool is not None else len(msg.dataset or b"")
                landed.append(got.path)
            continue
        if field_ != final_field:
            raise AssociationAbortedError(f"{peer} sent an unexpected message 0x{field_:04X}")
        status = us(msg.command, STATUS)
        snapshot = RetrieveResult(
            operation, status,
            completed=us(msg.command, COMPLETED), failed=us(msg.command, FAILED),
            warning=us(msg.command, WARNING), remaining=us(msg.command, REMAINING),
            received=received, bytes=nbytes, seconds=time.perf_counter() - started,
        )  # fmt: skip
        if status in PENDING:
            pending_seen = True
            if progress is not None:
                progress(snapshot)
            continue
        failed_uids: tuple[str, ...] = ()
        if msg.dataset:
            failed_uids = _failed_uids(msg.dataset, identifier_ts)
        return replace(
            snapshot, failed_uids=failed_uids, comment=text(msg.command, ERROR_COMMENT),
            landed=tuple(landed),
        )  # fmt: skip
    raise AssociationAbortedError(
        f"{peer} released the association before the final {operation.upper()} response "
        f"({received} instances received, pending responses seen: {pending_seen})"
    )


def _refuse_store(conn: Connection, msg: Message) -> None:
    conn.send_message(msg.context_id, response(msg.command, OUT_OF_RESOURCES))


def _failed_uids(data: bytearray, transfer_syntax: str) -> tuple[str, ...]:
    try:
        h = identifier_header(data, transfer_syntax)
    except Exception:  # noqa: BLE001 - the list is informative only
        return ()
    raw = h.value(0x00080058)
    if not raw:
        return ()
    return tuple(u for u in raw.decode("ascii", "replace").rstrip("\0 ").split("\\") if u)


def check_retrieve(result: RetrieveResult, peer: Peer, destination: str | None) -> None:
    op = result.operation.upper()
    category = status_category(result.status)
    comment = f": {result.comment}" if result.comment else ""
    no_subops = not (result.completed or result.failed or result.warning or result.received)
    if result.status == 0xA801 or (destination is not None and category == "failure" and no_subops):
        raise MoveDestinationError(
            f"{peer} refused the C-MOVE to {destination!r} with 0x{result.status:04X}{comment} "
            f"before any sub-operation: it does not know {destination!r} as a destination, or "
            "cannot reach it (Orthanc answers 0xC000, DCMTK 0xA801). Register "
            f"{destination!r} on the peer with the host and port of its Storage SCP (Orthanc: "
            f"DicomModalities, or PUT /modalities/{destination}; DCMTK dcmqrscp: HostTable)",
            status=result.status,
        )
    if result.failed or category in ("failure", "cancel") or result.status == 0xB000:
        if result.failed or result.status in (0xB000, 0xA702):
            raise SubOperationsFailedError(
                f"{op} from {peer}: {result.failed} sub-operation(s) failed, "
                f"{result.completed} completed, {result.warning} with warnings "
                f"(status 0x{result.status:04X}{comment})",
                status=result.status, completed=result.completed, failed=result.failed,
                warning=result.warning, failed_uids=result.failed_uids,
            )  # fmt: skip
        raise DimseStatusError(
            f"{op} from {peer} ended with 0x{result.status:04X} ({category}){comment}",
            status=result.status, completed=result.completed, failed=result.failed,
            warning=result.warning, failed_uids=result.failed_uids,
        )  # fmt: skip
