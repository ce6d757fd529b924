"""DIMSE messages (PS3.7): command sets, one builder per message, statuses, identifiers.

Every DIMSE message dicomflow sends or reads, as service user (echo, find, get, move, the
C-STOREs of a sink) or as provider (the SCPs), is built and read here, and nowhere else:

* a command set is a handful of group 0000 elements in implicit VR little endian
  (PS3.7 6.3.1, E.1), encoded and decoded without pydicom (:func:`encode_command`,
  :func:`decode_command`, :func:`us`, :func:`text`);
* requests: :func:`c_echo_rq`, :func:`c_find_rq`, :func:`c_get_rq`, :func:`c_move_rq`,
  :func:`c_store_rq`, :func:`c_cancel_rq`;
* responses: :func:`response`, for any request (PS3.7 9.3: the response repeats the request's
  Affected SOP Class and answers its Message ID);
* status categories (PS3.7 C): :func:`status_category`;
* identifiers (the data set of C-FIND/C-GET/C-MOVE) in the context's transfer syntax:
  :func:`encode_identifier` (pydicom's writer) and :func:`identifier_header` (dicomflow's
  header parser: no pydicom objects for C-FIND answers).

The Upper Layer (:mod:`._ul`) moves these bytes; this module never touches a socket.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..dicom import ParsedHeader, parse_header

__all__ = [
    "MODEL_UIDS",
    "QR_SYNTAXES",
    "VERIFICATION",
    "DatasetSpool",
    "Message",
    "c_cancel_rq",
    "c_echo_rq",
    "c_find_rq",
    "c_get_rq",
    "c_move_rq",
    "c_store_rq",
    "decode_command",
    "encode_command",
    "encode_identifier",
    "identifier_header",
    "response",
    "status_category",
    "text",
    "us",
]

# -- Command Field values (PS3.7 E.1-1) ------------------------------------------------------
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_GET_RQ, C_GET_RSP = 0x0010, 0x8010
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
C_MOVE_RQ, C_MOVE_RSP = 0x0021, 0x8021
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
C_CANCEL_RQ = 0x0FFF
#: Command Data Set Type: 0x0101 means "no data set follows"; any other value means one does.
NO_DATASET = 0x0101
HAS_DATASET = 0x0001

# -- Command Set tags (group 0000) -------------------------------------------------------------
AFFECTED_SOP_CLASS = 0x00000002
COMMAND_FIELD = 0x00000100
MESSAGE_ID = 0x00000110
RESPONDED_TO = 0x00000120
MOVE_DESTINATION = 0x00000600
PRIORITY = 0x00000700
DATASET_TYPE = 0x00000800
STATUS = 0x00000900
ERROR_COMMENT = 0x00000902
AFFECTED_SOP_INSTANCE = 0x00001000
REMAINING = 0x00001020
COMPLETED = 0x00001021
FAILED = 0x00001022
WARNING = 0x00001023
MOVE_ORIGINATOR_AE = 0x00001030
MOVE_ORIGINATOR_ID = 0x00001031

#: Priority (0000,0700): PS3.7 E.1-1
MEDIUM, HIGH, LOW = 0x0000, 0x0001, 0x0002

# -- SOP classes and transfer syntaxes of the services dicomflow speaks (PS3.4, PS3.6 A) ----
VERIFICATION = "1.2.840.10008.1.1"
MODEL_UIDS = {
    ("study", "find"): "1.2.840.10008.5.1.4.1.2.2.1",
    ("study", "move"): "1.2.840.10008.5.1.4.1.2.2.2",
    ("study", "get"): "1.2.840.10008.5.1.4.1.2.2.3",
    ("patient", "find"): "1.2.840.10008.5.1.4.1.2.1.1",
    ("patient", "move"): "1.2.840.10008.5.1.4.1.2.1.2",
    ("patient", "get"): "1.2.840.10008.5.1.4.1.2.1.3",
}
#: Transfer syntaxes offered and accepted for command-like data sets (C-ECHO, identifiers).
QR_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]

# -- statuses (PS3.7 C, PS3.4 C.4) -------------------------------------------------------------
SUCCESS = 0x0000
CANCEL = 0xFE00
PENDING = (0xFF00, 0xFF01)
UNRECOGNIZED_OPERATION = 0x0211
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: "Invalid SOP Instance": the SOP Instance UID breaks the UID construction rules
INVALID_SOP_INSTANCE = 0x0117
OUT_OF_RESOURCES = 0xA700
#: 0xA900 is "Identifier does not match SOP Class" for C-FIND/C-GET/C-MOVE (PS3.4 C.4) and
#: "Data Set does not match SOP Class" for C-STORE (PS3.4 B.2.3)
IDENTIFIER_DOES_NOT_MATCH = DATASET_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
SUBOPERATIONS_WARNING = 0xB000
_WARNING_STATUSES = (0x0001, 0x0107, 0x0116)


def status_category(status: int) -> str:
    """``success``, ``pending``, ``cancel``, ``warning`` or ``failure`` (PS3.7 C)."""
    if status == SUCCESS:
        return "success"
    if status in PENDING:
        return "pending"
    if status == CANCEL:
        return "cancel"
    if status in _WARNING_STATUSES or 0xB000 <= status <= 0xBFFF:
        return "warning"
    return "failure"


# -- the command set codec ---------------------------------------------------------------------

_VR_OF = {
    AFFECTED_SOP_CLASS: "UI",
    0x00000003: "UI",  # Requested SOP Class UID
    AFFECTED_SOP_INSTANCE: "UI",
    MOVE_DESTINATION: "AE",
    MOVE_ORIGINATOR_AE: "AE",
    ERROR_COMMENT: "LO",
}
_ELEMENT = struct.Struct("<HHL")
_US = struct.Struct("<H")

Fields = Iterable[tuple[int, int | str | bytes]]


def encode_command(fields: Fields) -> bytes:
    """A command set (implicit VR little endian) with its group length, from (tag, value).

    Integers are US (every integer element of a command set PS3.7 E.1-1 lists is); strings are
    UI (padded with NUL) unless the tag is an AE or LO element (padded with a space); bytes
    are put as they are (a value echoed from a request, even one that is not ASCII).
    """
    body = bytearray()
    for tag, value in sorted(fields):
        if isinstance(value, int):
            raw = _US.pack(value)
        elif isinstance(value, bytes):
            raw = value if len(value) % 2 == 0 else value + b"\0"
        else:
            vr = _VR_OF.get(tag, "UI")
            raw = value.encode("ascii")
            if len(raw) % 2:
                raw += b"\0" if vr == "UI" else b" "
        body += _ELEMENT.pack(tag >> 16, tag & 0xFFFF, len(raw)) + raw
    return _ELEMENT.pack(0, 0, 4) + struct.pack("<L", len(body)) + bytes(body)


def decode_command(data: bytes | bytearray | memoryview) -> dict[int, bytes]:
    """Command set elements as ``tag -> raw value``."""
    out: dict[int, bytes] = {}
    pos, n = 0, len(data)
    while pos + 8 <= n:
        group, elem, length = _ELEMENT.unpack_from(data, pos)
        pos += 8
        out[group << 16 | elem] = bytes(data[pos : pos + length])
        pos += length
    return out


def us(command: Mapping[int, bytes], tag: int, default: int = 0) -> int:
    """A US element of a decoded command set (``default`` when absent)."""
    raw = command.get(tag)
    return _US.unpack(raw[:2])[0] if raw and len(raw) >= 2 else default


def text(command: Mapping[int, bytes], tag: int) -> str:
    """A text element of a decoded command set, without its padding ('' when absent)."""
    raw = command.get(tag)
    return raw.decode("ascii", "replace").rstrip("\0 ") if raw else ""


class DatasetSpool(Protocol):
    """Where a data set being received goes instead of memory (the lake's spool file):
    ``write`` takes each fragment as it arrives, ``size`` counts the bytes taken."""

    @property
    def size(self) -> int: ...

    def write(self, fragment: memoryview, /) -> None: ...


@dataclass
class Message:
    """One DIMSE message as received: its presentation context, command set and data set.

    ``spool``: where the data set went when the connection spools data sets
    (:attr:`._ul.Connection.spool`); ``dataset`` is then empty.
    """

    context_id: int
    command: dict[int, bytes]
    dataset: bytearray | None = None
    spool: DatasetSpool | None = None

    @property
    def command_field(self) -> int:
        return us(self.command, COMMAND_FIELD)

    @property
    def status(self) -> int | None:
        """The Status of a response (None when the command set has none)."""
        return us(self.command, STATUS) if STATUS in self.command else None

    @property
    def has_dataset(self) -> bool:
        return us(self.command, DATASET_TYPE, NO_DATASET) != NO_DATASET


# -- requests (PS3.7 9.3.1-9.3.5, 9.3.2.3) -----------------------------------------------------


def c_echo_rq(message_id: int) -> bytes:
    return encode_command(
        [
            (AFFECTED_SOP_CLASS, VERIFICATION),
            (COMMAND_FIELD, C_ECHO_RQ),
            (MESSAGE_ID, message_id),
            (DATASET_TYPE, NO_DATASET),
        ]
    )


def _query_rq(
    field: int, message_id: int, sop_class: str, priority: int
) -> list[tuple[int, int | str]]:
    return [
        (AFFECTED_SOP_CLASS, sop_class),
        (COMMAND_FIELD, field),
        (MESSAGE_ID, message_id),
        (PRIORITY, priority),
        (DATASET_TYPE, HAS_DATASET),
    ]


def c_find_rq(message_id: int, sop_class: str, priority: int = MEDIUM) -> bytes:
    """C-FIND-RQ; the identifier follows as the data set."""
    return encode_command(_query_rq(C_FIND_RQ, message_id, sop_class, priority))


def c_get_rq(message_id: int, sop_class: str, priority: int = MEDIUM) -> bytes:
    """C-GET-RQ; the identifier follows as the data set."""
    return encode_command(_query_rq(C_GET_RQ, message_id, sop_class, priority))


def c_move_rq(message_id: int, sop_class: str, destination: str, priority: int = MEDIUM) -> bytes:
    """C-MOVE-RQ to ``destination`` (an AE title); the identifier follows as the data set."""
    fields = _query_rq(C_MOVE_RQ, message_id, sop_class, priority)
    return encode_command([*fields, (MOVE_DESTINATION, destination)])


def c_store_rq(
    message_id: int,
    sop_class: str,
    sop_instance: str,
    priority: int = MEDIUM,
    *,
    move_originator: tuple[str, int] | None = None,
) -> bytes:
    """C-STORE-RQ; ``move_originator`` is (AE title, Message ID) for a C-MOVE sub-operation."""
    fields: list[tuple[int, int | str]] = [
        (AFFECTED_SOP_CLASS, sop_class),
        (COMMAND_FIELD, C_STORE_RQ),
        (MESSAGE_ID, message_id),
        (PRIORITY, priority),
        (DATASET_TYPE, HAS_DATASET),
        (AFFECTED_SOP_INSTANCE, sop_instance),
    ]
    if move_originator is not None:
        fields += [
            (MOVE_ORIGINATOR_AE, move_originator[0]),
            (MOVE_ORIGINATOR_ID, move_originator[1]),
        ]
    return encode_command(fields)


def c_cancel_rq(message_id: int) -> bytes:
    """C-CANCEL-RQ for the C-FIND/C-GET/C-MOVE whose Message ID was ``message_id``."""
    return encode_command(
        [(COMMAND_FIELD, C_CANCEL_RQ), (RESPONDED_TO, message_id), (DATASET_TYPE, NO_DATASET)]
    )


# -- responses ---------------------------------------------------------------------------------


def response(
    request: Mapping[int, bytes],
    status: int,
    *,
    dataset: bool = False,
    comment: str = "",
    counts: tuple[int, int, int] | None = None,
    remaining: int | None = None,
) -> bytes:
    """The response to ``request`` (a decoded command set) with ``status``.

    The Command Field is the request's with bit 15 set (PS3.7 E.1-1); the Affected SOP Class
    and Instance are the request's; ``dataset`` says an identifier follows. For C-GET and
    C-MOVE, ``counts`` are the (completed, failed, warning) sub-operations and ``remaining``
    the ones left (a final response has none, PS3.4 C.4.2.1.4).
    """
    fields: list[tuple[int, int | str | bytes]] = [
        (COMMAND_FIELD, us(request, COMMAND_FIELD) | 0x8000),
        (RESPONDED_TO, us(request, MESSAGE_ID)),
        (DATASET_TYPE, HAS_DATASET if dataset else NO_DATASET),
        (STATUS, status),
    ]
    for tag in (AFFECTED_SOP_CLASS, AFFECTED_SOP_INSTANCE):
        value = request.get(tag)
        if value:  # the request's bytes: a value that is no UID is echoed, not re-encoded
            fields.append((tag, value))
    if comment:
        fields.append((ERROR_COMMENT, comment.encode("ascii", "replace")[:64].decode()))
    if counts is not None:
        completed, failed, warning = counts
        fields += [(COMPLETED, completed), (FAILED, failed), (WARNING, warning)]
    if remaining is not None:
        fields.append((REMAINING, remaining))
    return encode_command(fields)


# -- identifiers -------------------------------------------------------------------------------


def encode_identifier(ds: Dataset, transfer_syntax: str) -> bytes:
    """An identifier data set in the accepted transfer syntax (explicit/implicit VR, LE/BE)."""
    buf = DicomBytesIO()
    buf.is_little_endian = transfer_syntax != ExplicitVRBigEndian
    buf.is_implicit_VR = transfer_syntax == ImplicitVRLittleEndian
    write_dataset(buf, ds)
    return buf.getvalue()


def identifier_header(data: bytes | bytearray, transfer_syntax: str) -> ParsedHeader:
    """Where the elements of a received identifier are, read in ``transfer_syntax``.

    A one-element group 0002 naming the transfer syntax is put in front, so the header parser
    reads the data set as encoded instead of guessing; raises what :func:`parse_header` raises.
    """
    if not data:  # an empty identifier: no elements (the parser wants at least one)
        little, implicit = (
            transfer_syntax != ExplicitVRBigEndian,
            transfer_syntax == ImplicitVRLittleEndian,
        )
        return ParsedHeader(b"", little, implicit, transfer_syntax, {}, {}, 0, 0, preamble=False)
    ts = transfer_syntax.encode("ascii")
    if len(ts) % 2:
        ts += b"\0"
    meta = struct.pack("<HH2sH", 0x0002, 0x0010, b"UI", len(ts)) + ts
    return parse_header(meta + bytes(data), complete=True)
