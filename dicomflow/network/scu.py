"""DIMSE client: C-ECHO, C-FIND to Arrow, C-GET into a lake, C-MOVE, C-STORE as a sink.

>>> from dicomflow.network import Peer, echo, find, get
>>> pacs = Peer.parse("ORTHANC@127.0.0.1:4242")
>>> echo(pacs)  # doctest: +SKIP
0.004
>>> studies = find(pacs, "Modality=CT StudyDate=20240101-20240131", level="study")  # doctest: +SKIP
>>> uid = studies["study_instance_uid"][0].as_py()
>>> get(pacs, {"StudyInstanceUID": uid}, "lake/")  # doctest: +SKIP
RetrieveResult(operation='c-get', status=0, completed=120, failed=0, ...)

Every operation runs on dicomflow's own Upper Layer (:mod:`._ul`) with the messages of
:mod:`._dimse`: C-FIND answers are read by the header parser into the catalog's column types,
C-GET and C-STORE move data set bytes without decoding them. Failures raise the classes of
:mod:`._errors`; results are values.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pydicom import Dataset

from ..dicom import ParsedHeader, split_part10
from ..errors import ConfigError
from ..pipeline import Instance, Output, RunContext
from ._dimse import (
    C_ECHO_RSP,
    C_FIND_RSP,
    C_STORE_RSP,
    ERROR_COMMENT,
    MODEL_UIDS,
    PENDING,
    QR_SYNTAXES,
    VERIFICATION,
    Message,
    c_cancel_rq,
    c_echo_rq,
    c_find_rq,
    c_store_rq,
    encode_identifier,
    identifier_header,
    status_category,
    text,
)
from ._errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    DimseStatusError,
    NetworkError,
)
from ._lake import Lake
from ._options import AssociationOptions, Peer, TLSOptions, check_ae_title
from ._query import (
    LEVEL_KEYS,
    check_level,
    identifier,
    keys_at_level,
    parse_query,
    results_table,
)
from ._retrieve import RetrieveResult, check_retrieve, retrieve, retrieve_level
from ._ul import Connection, open_association

__all__ = [
    "RetrieveResult",
    "StoreSink",
    "echo",
    "find",
    "get",
    "move",
]


def _options(options: AssociationOptions | None) -> AssociationOptions:
    return options or AssociationOptions()


# -- C-ECHO ----------------------------------------------------------------------------------


def echo(peer: Peer | str, *, options: AssociationOptions | None = None) -> float:
    """C-ECHO ``peer``; returns the round trip in seconds, raises if it does not answer.

    Raises
    ------
    AssociationRejectedError
        No connection, the association was rejected, or Verification was not accepted.
    NetworkTimeoutError
        Connecting or negotiating timed out.
    AssociationAbortedError
        No C-ECHO response came back (aborted, released or timed out).
    DimseStatusError
        The peer answered with a status other than success.
    """
    peer, opts = Peer.parse(peer), _options(options)
    started = time.perf_counter()
    conn, accept = open_association(peer, opts, [(1, VERIFICATION, list(QR_SYNTAXES))])
    try:
        if accept.results.get(1, (1, ""))[0] != 0:
            raise AssociationRejectedError(f"{peer} does not accept C-ECHO (Verification)")
        conn.send_message(1, c_echo_rq(1))
        status = next(_responses(conn, peer, C_ECHO_RSP, "C-ECHO")).status
    except BaseException:
        conn.abort()
        raise
    conn.release()
    if status != 0x0000:
        raise DimseStatusError(f"{peer} answered C-ECHO with 0x{status:04X}", status=status)
    return time.perf_counter() - started


def _responses(conn: Connection, peer: Peer, field: int, what: str) -> Iterator[Message]:
    """The responses ``field`` on ``conn``; raises when none comes, or something else does."""
    hint = (
        f"{peer} gave no {what} response (association aborted, timed out, or the peer "
        "refused the request: Orthanc does so for calling AEs it does not know unless "
        "DicomAlwaysAllowFind/Get/Move is true)"
    )
    messages = conn.messages()
    while True:
        try:
            msg = next(messages, None)
        except NetworkError as exc:
            conn.abort()
            raise AssociationAbortedError(f"{hint}: {exc}") from exc
        if msg is None:  # the peer released the association
            raise AssociationAbortedError(hint)
        if msg.command_field != field or msg.status is None:
            conn.abort()
            raise AssociationAbortedError(
                f"{hint}: it sent a message 0x{msg.command_field:04X} instead"
            )
        yield msg


# -- C-FIND ----------------------------------------------------------------------------------


def find(
    peer: Peer | str,
    query: str | Mapping[str, Any] | None = None,
    *,
    level: str = "study",
    model: str = "study",
    columns: Sequence[str] = (),
    options: AssociationOptions | None = None,
) -> pa.Table:
    """C-FIND at ``level`` (patient, study, series, image); answers as a typed Arrow table.

    Parameters
    ----------
    query
        ``'Modality=CT StudyDate=20240101-20240131'`` or a mapping of keywords to values
        (wildcards, ranges and ``\\``-separated UID lists as DICOM matching allows; dates
        and times also in ISO form, ranges ``2024-01-01..2024-01-31``).
    level
        Query/Retrieve level. A key of a lower level is matched as its study-level
        equivalent (``Modality`` as ``ModalitiesInStudy``) or refused.
    model
        ``"study"`` (Study Root) or ``"patient"`` (Patient Root).
    columns
        Extra return keys (DICOM keywords) beyond the level's defaults, checked like the
        query's keys.

    Raises
    ------
    ConfigError
        A key that is not a DICOM keyword, has no answer at ``level``, or a date or time
        in a form that cannot be matched.

    Returns
    -------
    pyarrow.Table
        One row per answer: UIDs in the catalog's columns (``study_instance_uid``...), every
        other attribute by keyword, typed from the data dictionary as in :func:`dicomflow.scan`.
    """
    level = check_level(level)
    if model not in ("study", "patient"):
        raise ConfigError(f"model={model!r}: expected 'study' or 'patient'")
    if model == "study" and level == "PATIENT":
        raise ConfigError("the Study Root model has no PATIENT level; use model='patient'")
    keys = keys_at_level(parse_query(query), level)
    extra = tuple(keys_at_level(dict.fromkeys(columns), level, what="column"))
    ds = identifier(level, keys, (*LEVEL_KEYS[level], *extra), model=model)
    answers = list(iter_find(peer, ds, model=model, options=options))
    return results_table(level, answers, extra=(*keys, *extra))


def iter_find(
    peer: Peer | str,
    ds: Dataset,
    *,
    model: str = "study",
    options: AssociationOptions | None = None,
) -> Iterator[ParsedHeader | None]:
    """Stream the C-FIND answers to the identifier ``ds``, as the peer sends them.

    Each answer is the parsed identifier (None for one that does not parse); a failure status
    raises :class:`DimseStatusError`. Closing the generator before the last answer sends a
    C-CANCEL and waits for the peer's final response before releasing.
    """
    peer, opts = Peer.parse(peer), _options(options)
    uid = MODEL_UIDS[(model, "find")]
    conn, accept = open_association(peer, opts, [(1, uid, list(QR_SYNTAXES))])
    responses = _responses(conn, peer, C_FIND_RSP, "C-FIND")
    try:
        result, ts = accept.results.get(1, (1, ""))
        if result != 0:
            raise AssociationRejectedError(f"{peer} does not accept C-FIND for the {model} root")
        conn.send_message(1, c_find_rq(1, uid), encode_identifier(ds, ts))
        for msg in responses:
            code = msg.status or 0
            if code in PENDING:
                if msg.dataset is not None:
                    yield _answer(msg.dataset, ts)
                continue
            if status_category(code) == "failure":
                comment = text(msg.command, ERROR_COMMENT)
                raise DimseStatusError(
                    f"{peer} failed the C-FIND with 0x{code:04X}"
                    + (f": {comment}" if comment else ""),
                    status=code,
                )
            break
    except GeneratorExit:
        _cancel(conn, 1, responses)
        raise
    except DimseStatusError:
        conn.release()
        raise
    except BaseException:
        conn.abort()
        raise
    conn.release()


def _answer(data: bytearray, transfer_syntax: str) -> ParsedHeader | None:
    try:
        return identifier_header(data, transfer_syntax)
    except Exception:  # noqa: BLE001 - an answer that does not parse becomes an all-null row
        return None


def _cancel(conn: Connection, message_id: int, responses: Iterator[Message]) -> None:
    """C-CANCEL the request ``message_id`` (PS3.7 9.3.2.3), read the responses still coming
    up to the final one, release; abort if the peer does not end it."""
    try:
        conn.send_message(1, c_cancel_rq(message_id))
        for msg in responses:
            if msg.status not in PENDING:
                conn.release()
                return
    except NetworkError:
        pass
    conn.abort()


# -- C-GET / C-MOVE --------------------------------------------------------------------------


def sop_classes_of(
    peer: Peer | str,
    query: Mapping[str, Any],
    *,
    model: str = "study",
    options: AssociationOptions | None = None,
) -> list[str]:
    """The SOP classes a retrieve of ``query`` will send: from ``SOPClassesInStudy`` where the
    peer answers it (Orthanc), else from a C-FIND at image level."""
    keys = {k: v for k, v in query.items() if k in _UNIQUE_KEYS and v}
    classes: set[str] = set()
    if set(keys) == {"StudyInstanceUID"}:
        found = find(
            peer, keys, level="study", model=model, columns=("SOPClassesInStudy",),
            options=options,
        )  # fmt: skip
        for value in found.column("SOPClassesInStudy").to_pylist():
            classes.update(v for v in value or () if v)
    if not classes and keys:
        found = find(peer, keys, level="image", model=model, options=options)
        classes.update(v for v in found.column("sop_class_uid").to_pylist() if v)
    return sorted(classes)


_UNIQUE_KEYS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def get(
    peer: Peer | str,
    query: str | Mapping[str, Any],
    lake: Lake | str,
    *,
    level: str | None = None,
    model: str = "study",
    sop_classes: Sequence[str] | None = None,
    options: AssociationOptions | None = None,
    progress: Callable[[RetrieveResult], None] | None = None,
    check: bool = True,
) -> RetrieveResult:
    """C-GET what ``query`` names into ``lake``: instances land as received, no decoding.

    Parameters
    ----------
    query
        Unique keys: ``{"StudyInstanceUID": uid}``, plus ``SeriesInstanceUID`` /
        ``SOPInstanceUID`` (a list or ``\\``-joined string retrieves several).
    lake
        A :class:`~dicomflow.network.Lake` or a folder (opened with ``fsync="each"``).
    level
        Defaults to the most specific UID given.
    sop_classes
        Storage SOP classes to expect (proposed with their own presentation contexts, so the
        peer sends every transfer syntax unchanged); default: about 30 common ones.
    check
        Raise :class:`SubOperationsFailedError` / :class:`DimseStatusError` on failures
        (otherwise they are only in the returned counts).
    """
    peer, opts = Peer.parse(peer), _options(options)
    keys = parse_query(query)
    lvl = retrieve_level(keys, level)
    ds = identifier(lvl, keys, model=model)
    if sop_classes is None:
        sop_classes = sop_classes_of(peer, keys, model=model, options=opts) or None
    own = not isinstance(lake, Lake)
    target = lake if isinstance(lake, Lake) else Lake(lake)
    try:
        result = retrieve(
            "c-get", peer, ds, opts, model=model, lake=target, sop_classes=sop_classes,
            progress=progress,
        )  # fmt: skip
    finally:
        if own:
            target.close()
    if check:
        check_retrieve(result, peer, None)
    return result


def move(
    peer: Peer | str,
    query: str | Mapping[str, Any],
    destination: str | Any,
    *,
    level: str | None = None,
    model: str = "study",
    options: AssociationOptions | None = None,
    progress: Callable[[RetrieveResult], None] | None = None,
    check: bool = True,
) -> RetrieveResult:
    """C-MOVE what ``query`` names to ``destination`` (an AE title, or a running StorageSCP).

    The peer must know the destination AE title with its host and port (Orthanc:
    ``DicomModalities``; DCMTK dcmqrscp: its ``HostTable``). To pull into a lake, run a
    :class:`~dicomflow.network.StorageSCP` with that AE title and pass it here.

    Raises
    ------
    MoveDestinationError
        The peer refused the destination (0xA801, or a failure before any sub-operation).
    SubOperationsFailedError
        Some C-STOREs to the destination failed (with the counts).
    """
    peer, opts = Peer.parse(peer), _options(options)
    dest = destination if isinstance(destination, str) else destination.ae_title
    dest = check_ae_title(dest, "move destination")
    keys = parse_query(query)
    lvl = retrieve_level(keys, level)
    ds = identifier(lvl, keys, model=model)
    result = retrieve("c-move", peer, ds, opts, model=model, destination=dest, progress=progress)
    if check:
        check_retrieve(result, peer, dest)
    return result


# -- C-STORE as a sink -----------------------------------------------------------------------


@dataclass
class StoreSink:
    """Sink: C-STORE every instance to ``peer``, bytes as they are (no decoding).

    Associations are opened lazily, one per thread, with a presentation context per (SOP
    class, transfer syntax) seen so far; a new pair re-associates. An instance whose
    ``dataset`` a stage parsed is re-encoded first.
    """

    peer: Peer | str
    options: AssociationOptions = field(default_factory=AssociationOptions)
    name: str = "c-store"

    def __post_init__(self) -> None:
        self.peer = Peer.parse(self.peer)
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._message_id = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"peer": self.peer, "options": self.options, "name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    def config(self) -> dict[str, Any]:
        out = {"type": "c-store", "peer": str(self.peer), "calling_ae": self.options.calling_ae}
        if self.options.tls is not None:
            out["tls"] = self.options.config()["tls"]
        return out

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StoreSink:
        """From a pipeline file: ``peer = "AE@HOST:PORT"``, optional ``calling_ae``, and
        optional ``[sink.tls]`` with the fields of :class:`TLSOptions` (``ca_file``,
        ``certificate``, ``private_key``...)."""
        tls = config.get("tls")
        try:
            tls_options = TLSOptions(**tls) if tls is not None else None
        except TypeError as exc:
            raise ConfigError(f"c-store sink tls = {tls!r}: {exc}") from exc
        options = AssociationOptions(
            calling_ae=config.get("calling_ae", "DICOMFLOW"), tls=tls_options
        )
        return cls(config["peer"], options)

    def open(self, context: RunContext) -> None:
        pass

    def write(self, instance: Instance) -> list[Output]:
        if instance._dataset is not None:
            from ..dicom import encode_part10

            data = encode_part10(instance.dataset)
        else:
            data = instance.raw
        sop_class, sop, ts, body = split_part10(data)
        status, comment = self.store(sop_class, sop, ts, body)
        if status not in (0x0000, 0xB000, 0xB007, 0xB006):
            raise DimseStatusError(
                f"{self.peer} refused C-STORE of {sop} with 0x{status:04X}"
                + (f": {comment}" if comment else ""),
                status=status,
            )
        return [Output.of_bytes(self.name, f"dicom://{self.peer}/{sop}", data)]

    def store(
        self, sop_class: str, sop: str, ts: str, dataset: bytes | memoryview
    ) -> tuple[int, str]:
        """C-STORE one data set; returns the peer's status and error comment."""
        conn, cid = self._association(sop_class, ts)
        with self._lock:
            self._message_id = self._message_id % 65535 + 1
            message_id = self._message_id
        command = c_store_rq(message_id, sop_class, sop)
        try:
            conn.send_message(cid, command, dataset)
            for msg in conn.messages():
                if msg.command_field == C_STORE_RSP:
                    return msg.status or 0, text(msg.command, ERROR_COMMENT)
            raise AssociationAbortedError(f"{self.peer} released during a C-STORE")
        except NetworkError:
            self._drop()
            raise

    def _association(self, sop_class: str, ts: str) -> tuple[Connection, int]:
        state = getattr(self._local, "state", None)
        if state is not None:
            conn, accepted = state
            cid = accepted.get((sop_class, ts))
            if cid is not None and not conn.closed:
                return conn, cid
        wanted = set(state[1]) if state else set()
        wanted.add((sop_class, ts))
        if state is not None:
            state[0].release()
        pairs = sorted(wanted)[:127]
        peer = self.peer
        assert isinstance(peer, Peer)
        contexts = [(2 * i + 1, c, [t]) for i, (c, t) in enumerate(pairs)]
        conn, accept = open_association(peer, self.options, contexts)
        accepted = {pairs[(cid - 1) // 2]: cid for cid, (r, _) in accept.results.items() if r == 0}
        self._local.state = (conn, accepted)
        with self._lock:
            self._all.append(conn)
        if (sop_class, ts) not in accepted:
            conn.release()
            self._local.state = None
            raise AssociationRejectedError(
                f"{peer} does not accept {sop_class} in transfer syntax {ts}"
            )
        return conn, accepted[(sop_class, ts)]

    def _drop(self) -> None:
        state = getattr(self._local, "state", None)
        if state is not None:
            state[0].abort()
        self._local.state = None

    def close(self, context: RunContext | None = None, manifest: Any = None) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.release()
        self._local = threading.local()
