"""C-GET and C-MOVE over the lean Upper Layer: requests, sub-operation C-STOREs landed in a
lake as they arrive, final statuses turned into results or errors."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from ..dicom import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, parse_header
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
from ._ul import (
    AFFECTED_SOP_CLASS,
    AFFECTED_SOP_INSTANCE,
    C_GET_RQ,
    C_GET_RSP,
    C_MOVE_RQ,
    C_MOVE_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    COMMAND_FIELD,
    COMPLETED,
    DATASET_TYPE,
    ERROR_COMMENT,
    FAILED,
    MESSAGE_ID,
    MOVE_DESTINATION,
    PRIORITY,
    REMAINING,
    STATUS,
    WARNING,
    AssociateRequest,
    Connection,
    encode_command,
    request_association,
    text,
    us,
)

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

MODEL_UIDS = {
    ("study", "find"): "1.2.840.10008.5.1.4.1.2.2.1",
    ("study", "move"): "1.2.840.10008.5.1.4.1.2.2.2",
    ("study", "get"): "1.2.840.10008.5.1.4.1.2.2.3",
    ("patient", "find"): "1.2.840.10008.5.1.4.1.2.1.1",
    ("patient", "move"): "1.2.840.10008.5.1.4.1.2.1.2",
    ("patient", "get"): "1.2.840.10008.5.1.4.1.2.1.3",
}
QR_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]

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

_PENDING = (0xFF00, 0xFF01)
_WARNING_STATUSES = (0xB000, 0x0001, 0x0107, 0x0116)


def status_category(status: int) -> str:
    if status == 0x0000:
        return "success"
    if status in _PENDING:
        return "pending"
    if status == 0xFE00:
        return "cancel"
    if status in _WARNING_STATUSES or 0xB000 <= status <= 0xBFFF:
        return "warning"
    return "failure"


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


def _encode_identifier(ds: Dataset, ts: str) -> bytes:
    buf = DicomBytesIO()
    buf.is_little_endian = ts != ExplicitVRBigEndian
    buf.is_implicit_VR = ts == ImplicitVRLittleEndian
    write_dataset(buf, ds)
    return buf.getvalue()


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
    request = AssociateRequest(
        peer.ae_title, opts.calling_ae, contexts, opts.max_pdu,
        IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, roles,
    )  # fmt: skip
    timeout = opts.dimse_timeout if opts.dimse_timeout is not None else opts.network_timeout
    conn, accept = request_association(
        peer.host, peer.port, request,
        connect_timeout=opts.connection_timeout, acse_timeout=opts.acse_timeout,
        network_timeout=timeout, max_pdu=opts.max_pdu,
    )  # fmt: skip
    try:
        result, ts = accept.results.get(1, (1, ""))
        if result != 0:
            raise AssociationRejectedError(
                f"{peer} does not accept {operation.upper()} for the {model} root model"
            )
        storage = {cid: ts for cid, (r, ts) in accept.results.items() if r == 0 and cid != 1}
        fields: list[tuple[int, int | str]] = [
            (AFFECTED_SOP_CLASS, model_uid),
            (COMMAND_FIELD, C_GET_RQ if operation == "c-get" else C_MOVE_RQ),
            (MESSAGE_ID, 1),
            (PRIORITY, 0),
            (DATASET_TYPE, 0x0001),
        ]
        if destination is not None:
            fields.append((MOVE_DESTINATION, destination))
        conn.send_message(1, encode_command(fields), _encode_identifier(ds, ts))
        outcome = _collect(operation, conn, peer, lake, storage, started, progress)
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
    started: float,
    progress: Callable[[RetrieveResult], None] | None,
) -> RetrieveResult:
    received = nbytes = 0
    landed: list[str] = []
    counts = {"completed": 0, "failed": 0, "warning": 0, "remaining": 0}
    pending_seen = False
    response = C_GET_RSP if operation == "c-get" else C_MOVE_RSP
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
                nbytes += len(msg.dataset or b"")
                landed.append(got.path)
            continue
        if field_ != response:
            raise AssociationAbortedError(f"{peer} sent an unexpected message 0x{field_:04X}")
        status = us(msg.command, STATUS)
        counts = {
            "completed": us(msg.command, COMPLETED),
            "failed": us(msg.command, FAILED),
            "warning": us(msg.command, WARNING),
            "remaining": us(msg.command, REMAINING),
        }
        snapshot = RetrieveResult(
            operation, status, **counts, received=received, bytes=nbytes,
            seconds=time.perf_counter() - started,
        )  # fmt: skip
        if status in _PENDING:
            pending_seen = True
            if progress is not None:
                progress(snapshot)
            continue
        failed_uids: tuple[str, ...] = ()
        if msg.dataset:
            failed_uids = _failed_uids(bytes(msg.dataset))
        return RetrieveResult(
            operation, status, **counts, failed_uids=failed_uids, received=received,
            bytes=nbytes, seconds=time.perf_counter() - started,
            comment=text(msg.command, ERROR_COMMENT), landed=tuple(landed),
        )  # fmt: skip
    raise AssociationAbortedError(
        f"{peer} released the association before the final {operation.upper()} response "
        f"({received} instances received, pending responses seen: {pending_seen})"
    )


def _refuse_store(conn: Connection, msg: Any) -> None:
    fields: list[tuple[int, int | str]] = [
        (COMMAND_FIELD, C_STORE_RSP),
        (0x00000120, us(msg.command, MESSAGE_ID)),
        (DATASET_TYPE, 0x0101),
        (AFFECTED_SOP_CLASS, text(msg.command, AFFECTED_SOP_CLASS)),
        (AFFECTED_SOP_INSTANCE, text(msg.command, AFFECTED_SOP_INSTANCE)),
        (STATUS, 0xA700),
    ]
    conn.send_message(msg.context_id, encode_command(fields))


def _failed_uids(data: bytes) -> tuple[str, ...]:
    try:
        h = parse_header(data, complete=True)
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
            f"before any sub-operation: the destination is most likely not registered on the "
            f"peer (Orthanc answers 0xC000, DCMTK 0xA801; register {destination!r} with its "
            "host and port there)",
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
