"""A Query/Retrieve SCP over a catalog (Study Root): C-FIND answered from the catalog table,
C-GET sending the cataloged files, as stored, on the same association.

>>> import dicomflow as dfl
>>> from dicomflow.network import QueryRetrieveSCP, SCPOptions
>>> opts = SCPOptions(ae_title="ARCHIVE", port=11112, calling_aes=("*",))
>>> with QueryRetrieveSCP(dfl.scan("archive/"), opts) as qr:  # doctest: +SKIP
...     qr.wait_idle(timeout=600)

Matching (PS3.4 C.2.2.2) is done on the catalog's columns: single values, ``*``/``?``
wildcards, ``\\``-separated lists, and date/time ranges (``20240101-20240131``); an empty key
is a return key. A key the catalog has no column for is returned empty and not matched on
(as PS3.4 C.2.2.2.1 allows for optional keys). ``ModalitiesInStudy``,
``SOPClassesInStudy`` and the ``NumberOf...Related...`` counts are computed. Nothing is
transcoded: a C-GET sub-operation needs a presentation context in the file's own transfer
syntax, else it fails (and is listed in the Failed SOP Instance UID List).
"""

from __future__ import annotations

import datetime as dt
import io
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pyarrow as pa
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds

from ..dicom import parse_da, parse_dt, parse_tm, split_part10
from ..pipeline import read_bytes
from ._dimse import (
    AFFECTED_SOP_CLASS,
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_FIND_RQ,
    C_GET_RQ,
    C_STORE_RSP,
    CANCEL,
    IDENTIFIER_DOES_NOT_MATCH,
    MESSAGE_ID,
    MODEL_UIDS,
    QR_SYNTAXES,
    RESPONDED_TO,
    SOP_CLASS_NOT_SUPPORTED,
    SUBOPERATIONS_WARNING,
    SUCCESS,
    UNRECOGNIZED_OPERATION,
    VERIFICATION,
    Message,
    c_store_rq,
    encode_identifier,
    response,
    status_category,
    text,
    us,
)
from ._errors import AssociationAbortedError
from ._query import UID_COLUMNS
from ._server import AssociationLog, Listener, ListeningService, SCPOptions
from ._store import is_storage_class
from ._ul import Accepted, Connection

__all__ = ["QueryRetrieveSCP", "match_value"]

FIND = MODEL_UIDS[("study", "find")]
GET = MODEL_UIDS[("study", "get")]
UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA702
_UNIQUE = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
_LEVELS = ("STUDY", "SERIES", "IMAGE")
_COMPUTED = {
    "ModalitiesInStudy", "SOPClassesInStudy", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances",
}  # fmt: skip
_SKIPPED = ("QueryRetrieveLevel", "SpecificCharacterSet")

Row = Mapping[str, Any]
Match = Callable[[Any], bool]


class QueryRetrieveSCP(ListeningService):
    """Answer C-FIND (study, series, image level) and C-GET from a catalog; a context manager.

    Parameters
    ----------
    catalog
        A :class:`dicomflow.Catalog` (scanned once, here) or its table
        (``catalog.to_arrow()``): rows with an ``error`` are left out.
    options
        :class:`SCPOptions`: our AE title, port, and who may associate.
    storage_options
        For reading the files of a catalog of URLs (default: the catalog's own).
    """

    def __init__(
        self,
        catalog: Any,
        options: SCPOptions | None = None,
        *,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(catalog, pa.Table):
            table = catalog
        else:
            table = catalog.to_arrow()
            if storage_options is None:
                storage_options = catalog.options.storage_options
        self.options = options or SCPOptions()
        self.storage_options = dict(storage_options or {})
        rows = [r for r in table.to_pylist() if not r.get("error") and r.get("sop_instance_uid")]
        self.rows: list[Row] = rows
        self.columns = set(table.column_names)
        self._study: dict[str, list[Row]] = {}
        self._series: dict[str, list[Row]] = {}
        self._stored_syntaxes: dict[str, set[str]] = {}
        for row in rows:
            self._study.setdefault(row["study_instance_uid"], []).append(row)
            self._series.setdefault(row["series_instance_uid"], []).append(row)
            syntaxes = self._stored_syntaxes.setdefault(row["sop_class_uid"], set())
            syntaxes.add(row["transfer_syntax_uid"])
        self._listener = Listener(
            self.options, self._serve, _accepted, choose_ts=self._choose_ts,
            scp_roles=is_storage_class, name="dicomflow-qr",
        )  # fmt: skip

    # -- negotiation ------------------------------------------------------------------------
    def _choose_ts(self, abstract: str, syntaxes: list[str]) -> str | None:
        if abstract in (VERIFICATION, FIND, GET):
            ours = (*QR_SYNTAXES, ExplicitVRBigEndian)
            return next((ts for ts in syntaxes if ts in ours), None)
        stored = self._stored_syntaxes.get(abstract, set())
        return next((ts for ts in syntaxes if ts in stored), syntaxes[0])

    # -- one association ----------------------------------------------------------------------
    def _serve(self, conn: Connection, association: Accepted, log: AssociationLog) -> None:
        messages = conn.messages()
        contexts = association.contexts
        for msg in messages:
            self._listener.last_activity = time.monotonic()
            context = contexts.get(msg.context_id)
            if context is None:
                log.reason = f"message on unaccepted presentation context {msg.context_id}"
                conn.abort()
                return
            field = msg.command_field
            sop_class = text(msg.command, AFFECTED_SOP_CLASS)
            if field == C_ECHO_RQ:
                conn.send_message(msg.context_id, response(msg.command, SUCCESS))
            elif field == C_CANCEL_RQ:
                continue  # for a request already answered
            elif field not in (C_FIND_RQ, C_GET_RQ):
                conn.send_message(msg.context_id, response(msg.command, UNRECOGNIZED_OPERATION))
            elif sop_class != (FIND if field == C_FIND_RQ else GET) or sop_class != context[0]:
                conn.send_message(msg.context_id, response(msg.command, SOP_CLASS_NOT_SUPPORTED))
            else:
                query = _read_identifier(msg, context[1])
                level = str(query.get("QueryRetrieveLevel", "")).upper()
                if level not in _LEVELS or (field == C_GET_RQ and not query.get(_UNIQUE[level])):
                    status = response(msg.command, IDENTIFIER_DOES_NOT_MATCH,
                                      comment=f"level {level!r} or its unique key")  # fmt: skip
                    conn.send_message(msg.context_id, status)
                elif field == C_FIND_RQ:
                    self._find(conn, msg, context[1], query, level, messages)
                else:
                    self._get(conn, msg, query, level, messages, contexts, log)

    def _find(
        self, conn: Connection, msg: Message, ts: str, query: Dataset, level: str,
        messages: Iterator[Message],
    ) -> None:  # fmt: skip
        message_id = us(msg.command, MESSAGE_ID)
        try:
            answers = list(self.answers(query, level))
        except ValueError as exc:  # a key value matching is not defined on
            failure = response(msg.command, IDENTIFIER_DOES_NOT_MATCH, comment=str(exc))
            conn.send_message(msg.context_id, failure)
            return
        for answer in answers:
            if conn.pending() and _cancelled(next(messages, None), message_id):
                conn.send_message(msg.context_id, response(msg.command, CANCEL))
                return
            conn.send_message(
                msg.context_id, response(msg.command, 0xFF00, dataset=True),
                encode_identifier(answer, ts),
            )  # fmt: skip
        conn.send_message(msg.context_id, response(msg.command, SUCCESS))

    def _get(
        self, conn: Connection, msg: Message, query: Dataset, level: str,
        messages: Iterator[Message], contexts: dict[int, tuple[str, str]], log: AssociationLog,
    ) -> None:  # fmt: skip
        message_id = us(msg.command, MESSAGE_ID)
        keys = {k: _text(query.get(k)) for k in _UNIQUE.values() if k in query}
        matchers = _matchers(keys)
        rows = [r for r in self.rows if self._matches(r, matchers)]
        by_syntax = {(a, t): cid for cid, (a, t) in contexts.items() if a not in (FIND, GET)}
        completed = failed = warning = 0
        failed_uids: list[str] = []
        cancelled = False
        for done, row in enumerate(rows, 1):
            sop = row["sop_instance_uid"]
            try:
                sop_class, _, ts, body = split_part10(read_bytes(row["uri"], self.storage_options))
            except Exception:  # noqa: BLE001 - an unreadable file is a failed sub-operation
                failed, failed_uids = failed + 1, [*failed_uids, sop]
                continue
            cid = by_syntax.get((sop_class, ts))
            if cid is None:  # the requestor took no context for this class in this syntax
                failed, failed_uids = failed + 1, [*failed_uids, sop]
                continue
            store_id = done % 65535 + 1
            conn.send_message(cid, c_store_rq(store_id, sop_class, sop), body)
            status, cancelled = _store_response(messages, store_id, message_id, cancelled)
            category = status_category(status)
            if category == "success":
                completed += 1
                log.stored += 1
            elif category == "warning":
                warning += 1
                log.stored += 1
            else:
                failed, failed_uids = failed + 1, [*failed_uids, sop]
                log.failed += 1
            if cancelled:
                break
            pending = response(msg.command, 0xFF00, counts=(completed, failed, warning),
                               remaining=len(rows) - done)  # fmt: skip
            conn.send_message(msg.context_id, pending)
        remaining = len(rows) - completed - failed - warning
        if cancelled:
            status, left = CANCEL, remaining
        elif failed and not completed and not warning:
            status, left = UNABLE_TO_PERFORM_SUBOPERATIONS, None
        elif failed or warning:
            status, left = SUBOPERATIONS_WARNING, None
        else:
            status, left = SUCCESS, None
        dataset = None
        if failed_uids:
            failed_list = Dataset()
            failed_list.FailedSOPInstanceUIDList = failed_uids
            dataset = encode_identifier(failed_list, contexts[msg.context_id][1])
        final = response(msg.command, status, dataset=dataset is not None,
                         counts=(completed, failed, warning), remaining=left)  # fmt: skip
        conn.send_message(msg.context_id, final, dataset)

    # -- matching -------------------------------------------------------------------------
    def answers(self, query: Dataset, level: str) -> Iterator[Dataset]:
        """The C-FIND answers to ``query`` at ``level``, as identifiers."""
        keys = {e.keyword: _text(e.value) for e in query if e.keyword and e.keyword not in _SKIPPED}
        matchable = {k: v for k, v in keys.items() if v and self._has(k) and k not in _COMPUTED}
        matchers = _matchers(matchable)
        rows = [r for r in self.rows if self._matches(r, matchers)]
        modalities = keys.get("ModalitiesInStudy")
        groups: dict[str, Row] = {}
        column = UID_COLUMNS[_UNIQUE[level]]
        for row in rows:
            groups.setdefault(row[column], row)
        for row in groups.values():
            if level == "STUDY" and modalities:
                found = self._computed("ModalitiesInStudy", row)
                match = _matchers({"Modality": modalities})[0][1]
                if not any(match(m) for m in found):
                    continue
            yield self._identifier(row, level, keys)

    def _has(self, keyword: str) -> bool:
        return UID_COLUMNS.get(keyword, keyword) in self.columns

    @staticmethod
    def _matches(row: Row, matchers: list[tuple[str, Match]]) -> bool:
        for column, match in matchers:
            value = row.get(column)
            values = value if isinstance(value, list) else [value]
            if not any(v is not None and match(v) for v in values):
                return False
        return True

    def _computed(self, keyword: str, row: Row) -> Any:
        study = self._study[row["study_instance_uid"]]
        if keyword == "ModalitiesInStudy":
            return sorted({r["Modality"] for r in study if r.get("Modality")})
        if keyword == "SOPClassesInStudy":
            return sorted({r["sop_class_uid"] for r in study})
        if keyword == "NumberOfStudyRelatedSeries":
            return len({r["series_instance_uid"] for r in study})
        if keyword == "NumberOfStudyRelatedInstances":
            return len(study)
        return len(self._series[row["series_instance_uid"]])

    def _identifier(self, row: Row, level: str, keys: Mapping[str, str]) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = level
        wanted = dict.fromkeys(keys)
        for lvl in _LEVELS[: _LEVELS.index(level) + 1]:
            wanted[_UNIQUE[lvl]] = None
        for keyword in wanted:
            if keyword in _COMPUTED:
                value = self._computed(keyword, row)
            else:
                value = row.get(UID_COLUMNS.get(keyword, keyword))
            setattr(ds, keyword, _dicom_value(keyword, value))
        if any(isinstance(v, str) and not v.isascii() for v in _strings(ds)):
            ds.SpecificCharacterSet = "ISO_IR 192"
        return ds


def _accepted(uid: str) -> bool:
    return uid in (VERIFICATION, FIND, GET) or is_storage_class(uid)


def _read_identifier(msg: Message, transfer_syntax: str) -> Dataset:
    data = io.BytesIO(bytes(msg.dataset or b""))
    implicit = transfer_syntax == ImplicitVRLittleEndian
    return read_dataset(data, implicit, transfer_syntax != ExplicitVRBigEndian)


def _cancelled(msg: Message | None, message_id: int) -> bool:
    """Whether ``msg``, read while answering ``message_id``, is its C-CANCEL (else abort)."""
    if msg is None:
        raise AssociationAbortedError("the peer released the association during a C-FIND")
    if msg.command_field == C_CANCEL_RQ:
        return us(msg.command, RESPONDED_TO) == message_id
    raise AssociationAbortedError("the peer sent a request while one was being answered")


def _store_response(
    messages: Iterator[Message], store_id: int, get_id: int, cancelled: bool
) -> tuple[int, bool]:
    """Wait for the C-STORE response to ``store_id``; a C-CANCEL of the C-GET may come first."""
    for msg in messages:
        field = msg.command_field
        if field == C_STORE_RSP and us(msg.command, RESPONDED_TO) == store_id:
            return msg.status or 0, cancelled
        if field == C_CANCEL_RQ and us(msg.command, RESPONDED_TO) == get_id:
            cancelled = True
            continue
        raise AssociationAbortedError(f"unexpected message 0x{field:04X} during a C-GET")
    raise AssociationAbortedError("the peer released the association during a C-GET")


# -- values -----------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """A query value as the text DICOM matching is defined on ('' for an empty key)."""
    if value is None or isinstance(value, (bytes, DicomSequence)):
        return ""  # a sequence or binary key: a return key only
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


def _matchers(keys: Mapping[str, str]) -> list[tuple[str, Match]]:
    """(column, predicate on one value) per matching key."""
    out = []
    for keyword, value in keys.items():
        if value in ("", "*"):
            continue  # universal matching
        vr = dictionary_VR(keyword_dict[keyword]) if keyword in keyword_dict else "LO"
        try:
            match = match_value(vr, value)
        except (ValueError, TypeError):
            raise ValueError(f"cannot match {keyword} ({vr}) on {value!r}") from None
        out.append((UID_COLUMNS.get(keyword, keyword), match))
    return out


def match_value(vr: str, value: str) -> Match:
    if "\\" in value:  # list of values (UID list matching, PS3.4 C.2.2.2.2)
        parts = [match_value(vr, v) for v in value.split("\\") if v]
        return lambda v: any(p(v) for p in parts)
    if vr in ("DA", "TM", "DT"):
        parser = {"DA": parse_da, "TM": parse_tm, "DT": parse_dt}[vr]

        def parse(text: str) -> Any:
            value = parser(text)
            if value is None:
                raise ValueError(text)
            return value

        if "-" in value and not (vr == "DT" and re.search(r"[+-]\d{4}$", value)):
            start, _, end = value.partition("-")
            low, high = parse(start) if start else None, parse(end) if end else None
            return lambda v: (low is None or v >= low) and (high is None or v <= high)
        exact = parse(value)
        return lambda v: v == exact
    if vr in ("IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "UV", "SV"):
        number = float(value)
        return lambda v: float(v) == number
    if "*" in value or "?" in value:  # the only wildcards of PS3.4 C.2.2.2.4
        pattern = re.compile(re.escape(value).replace(r"\*", ".*").replace(r"\?", "."), re.S)
        return lambda v: bool(pattern.fullmatch(str(v)))
    return lambda v: str(v) == value


def _dicom_value(keyword: str, value: Any) -> Any:
    """A catalog value as pydicom takes it for ``keyword`` (None: an empty element)."""
    if value is None:
        return None
    if isinstance(value, list):
        items = [_dicom_value(keyword, v) for v in value]
        return [v for v in items if v is not None] or None
    vr = dictionary_VR(keyword_dict[keyword]) if keyword in keyword_dict else "LO"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y%m%d%H%M%S.%f" if value.microsecond else "%Y%m%d%H%M%S")
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d")
    if isinstance(value, dt.time):
        return value.strftime("%H%M%S.%f" if value.microsecond else "%H%M%S")
    if vr == "DS":
        return format_number_as_ds(float(value))
    if vr == "IS":
        return str(int(value))
    if vr == "SQ" or isinstance(value, bytes):
        return None  # not answered from a catalog
    return value


def _strings(ds: Dataset) -> Iterator[str]:
    for elem in ds:
        values = elem.value if isinstance(elem.value, (list, MultiValue)) else [elem.value]
        yield from (str(v) for v in values if v is not None)
