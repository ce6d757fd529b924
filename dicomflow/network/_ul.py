"""A lean DICOM Upper Layer (PS3.8) for bulk C-STORE traffic: one thread, one socket, no decoding.

Why not pynetdicom here: receiving a 512 x 512 CT image through pynetdicom costs about 3 ms
of CPU (measured with ``benchmarks/bench_pull.py --profile``), against about 1.3 ms for DCMTK's
whole transfer. The time goes to its three threads per association handing every PDU and
message over queues (each hand-off waits for the GIL), to building a pydicom ``Dataset`` for
every command set it receives and sends, and to copying each PDU four times. Tuning its socket
(:mod:`._transport`) removes the polling sleeps but not that CPU. The receive paths that carry
whole archives (the Storage SCP and C-GET) therefore use this module: a blocking socket read
into one reusable buffer, P-DATA values appended straight to the instance's buffer, command
sets parsed and built as a handful of fixed-layout elements. Everything else (C-ECHO, C-FIND,
C-MOVE requests, C-STORE as a sender) stays on pynetdicom.

Only what those paths need is implemented: association negotiation as acceptor and requestor
(presentation contexts, maximum length, implementation identification, SCP/SCU role
selection), P-DATA with fragmentation, release and abort.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ._errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    NetworkError,
    NetworkTimeoutError,
)

__all__ = [
    "APPLICATION_CONTEXT",
    "AssociateAccept",
    "AssociateRequest",
    "Connection",
    "Message",
    "decode_command",
    "encode_command",
]

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA, RELEASE_RQ, RELEASE_RP, ABORT = range(1, 8)

# Command Field values (PS3.7 E.1)
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_GET_RQ, C_GET_RSP = 0x0010, 0x8010
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
C_MOVE_RQ, C_MOVE_RSP = 0x0021, 0x8021
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
C_CANCEL_RQ = 0x0FFF
NO_DATASET = 0x0101

# Command Set tags (group 0000)
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

_VR_OF = {
    AFFECTED_SOP_CLASS: "UI",
    0x00000003: "UI",
    AFFECTED_SOP_INSTANCE: "UI",
    MOVE_DESTINATION: "AE",
    MOVE_ORIGINATOR_AE: "AE",
    ERROR_COMMENT: "LO",
}
_HEADER = struct.Struct(">BxL")
_PDV = struct.Struct(">LBB")
_ELEMENT = struct.Struct("<HHL")
_US = struct.Struct("<H")


def _pad(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def encode_command(fields: Iterable[tuple[int, int | str]]) -> bytes:
    """A command set (implicit VR little endian) with its group length, from (tag, value)."""
    body = bytearray()
    for tag, value in sorted(fields):
        if isinstance(value, int):
            raw = _US.pack(value)
        else:
            vr = _VR_OF.get(tag, "UI")
            raw = _pad(value.encode("ascii"), b"\0" if vr == "UI" else b" ")
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


def us(command: dict[int, bytes], tag: int, default: int = 0) -> int:
    raw = command.get(tag)
    return _US.unpack(raw[:2])[0] if raw and len(raw) >= 2 else default


def text(command: dict[int, bytes], tag: int) -> str:
    raw = command.get(tag)
    return raw.decode("ascii", "replace").rstrip("\0 ") if raw else ""


@dataclass
class Message:
    """One DIMSE message: its presentation context, command set and data set (if any)."""

    context_id: int
    command: dict[int, bytes]
    dataset: bytearray | None = None

    @property
    def command_field(self) -> int:
        return us(self.command, COMMAND_FIELD)


# -- association PDUs -------------------------------------------------------------------------


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


def _ae(title: str) -> bytes:
    return title.encode("ascii")[:16].ljust(16, b" ")


@dataclass
class AssociateRequest:
    """What an A-ASSOCIATE-RQ carries (the parts dicomflow uses)."""

    called_ae: str
    calling_ae: str
    contexts: list[tuple[int, str, list[str]]]  # (id, abstract syntax, transfer syntaxes)
    max_pdu: int = 0
    implementation_uid: str = ""
    implementation_version: str = ""
    roles: dict[str, tuple[int, int]] = field(default_factory=dict)  # uid -> (scu, scp)

    def encode(self) -> bytes:
        items = [_item(0x10, APPLICATION_CONTEXT.encode())]
        for cid, abstract, syntaxes in self.contexts:
            sub = _item(0x30, abstract.encode()) + b"".join(
                _item(0x40, ts.encode()) for ts in syntaxes
            )
            items.append(_item(0x20, bytes([cid, 0, 0, 0]) + sub))
        items.append(_item(0x50, _user_info(self)))
        body = struct.pack(">HH", 1, 0) + _ae(self.called_ae) + _ae(self.calling_ae)
        return body + b"\0" * 32 + b"".join(items)

    @classmethod
    def decode(cls, data: bytes | memoryview) -> AssociateRequest:
        data = bytes(data)
        called = data[4:20].decode("ascii", "replace").strip()
        calling = data[20:36].decode("ascii", "replace").strip()
        rq = cls(called, calling, [])
        for item_type, value in _items(data, 68):
            if item_type == 0x20:
                cid = value[0]
                abstract, syntaxes = "", []
                for sub_type, sub in _items(value, 4):
                    uid = sub.decode("ascii", "replace").rstrip("\0 ")
                    if sub_type == 0x30:
                        abstract = uid
                    elif sub_type == 0x40:
                        syntaxes.append(uid)
                rq.contexts.append((cid, abstract, syntaxes))
            elif item_type == 0x50:
                _read_user_info(value, rq)
        return rq


@dataclass
class AssociateAccept:
    """What an A-ASSOCIATE-AC carries: per context (result, transfer syntax), max PDU, roles."""

    called_ae: str
    calling_ae: str
    results: dict[int, tuple[int, str]]
    max_pdu: int = 0
    implementation_uid: str = ""
    implementation_version: str = ""
    roles: dict[str, tuple[int, int]] = field(default_factory=dict)

    def encode(self) -> bytes:
        items = [_item(0x10, APPLICATION_CONTEXT.encode())]
        for cid, (result, ts) in sorted(self.results.items()):
            items.append(_item(0x21, bytes([cid, 0, result, 0]) + _item(0x40, ts.encode())))
        items.append(_item(0x50, _user_info(self)))
        body = struct.pack(">HH", 1, 0) + _ae(self.called_ae) + _ae(self.calling_ae)
        return body + b"\0" * 32 + b"".join(items)

    @classmethod
    def decode(cls, data: bytes | memoryview) -> AssociateAccept:
        data = bytes(data)
        ac = cls(data[4:20].decode().strip(), data[20:36].decode().strip(), {})
        for item_type, value in _items(data, 68):
            if item_type == 0x21:
                ts = ""
                for sub_type, sub in _items(value, 4):
                    if sub_type == 0x40:
                        ts = sub.decode("ascii", "replace").rstrip("\0 ")
                ac.results[value[0]] = (value[2], ts)
            elif item_type == 0x50:
                _read_user_info(value, ac)
        return ac


def _user_info(pdu: AssociateRequest | AssociateAccept) -> bytes:
    sub = _item(0x51, struct.pack(">L", pdu.max_pdu))
    sub += _item(0x52, pdu.implementation_uid.encode())
    for uid, (scu, scp) in pdu.roles.items():
        raw = uid.encode()
        sub += _item(0x54, struct.pack(">H", len(raw)) + raw + bytes([scu, scp]))
    if pdu.implementation_version:
        sub += _item(0x55, pdu.implementation_version.encode()[:16])
    return sub


def _read_user_info(value: bytes, pdu: AssociateRequest | AssociateAccept) -> None:
    for sub_type, sub in _items(value, 0):
        if sub_type == 0x51 and len(sub) >= 4:
            pdu.max_pdu = struct.unpack(">L", sub[:4])[0]
        elif sub_type == 0x52:
            pdu.implementation_uid = sub.decode("ascii", "replace").rstrip("\0 ")
        elif sub_type == 0x55:
            pdu.implementation_version = sub.decode("ascii", "replace").strip()
        elif sub_type == 0x54 and len(sub) >= 4:
            n = struct.unpack(">H", sub[:2])[0]
            uid = sub[2 : 2 + n].decode("ascii", "replace").rstrip("\0 ")
            pdu.roles[uid] = (sub[2 + n], sub[3 + n])


def _items(data: bytes, pos: int) -> Iterator[tuple[int, bytes]]:
    n = len(data)
    while pos + 4 <= n:
        item_type = data[pos]
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        yield item_type, data[pos + 4 : pos + 4 + length]
        pos += 4 + length


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ body: result 1 permanent, 2 transient; source 1 user, 2 ACSE, 3 provider."""
    return bytes([0, result, source, reason])


_RJ_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognized",
    (1, 7): "called AE title not recognized",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


# -- the connection --------------------------------------------------------------------------


class Connection:
    """One association's transport: PDUs in and out of a blocking TCP socket.

    ``peer_max_pdu`` (from the peer's A-ASSOCIATE) bounds the PDUs we send; ``max_pdu`` (ours)
    sizes the receive buffer.
    """

    def __init__(self, sock: socket.socket, *, max_pdu: int, timeout: float | None) -> None:
        self.sock = sock
        sock.settimeout(timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.max_pdu = max_pdu
        self.peer_max_pdu = 16384
        self._buf = bytearray(max(max_pdu, 65536) + 6)
        self._view = memoryview(self._buf)
        self.closed = False

    # raw PDUs
    def _recv_exact(self, view: memoryview, n: int) -> None:
        got = 0
        recv_into = self.sock.recv_into
        try:
            while got < n:
                k = recv_into(view[got:n], n - got)
                if not k:
                    raise AssociationAbortedError("the peer closed the connection")
                got += k
        except TimeoutError as exc:
            raise NetworkTimeoutError("no data from the peer within the network timeout") from exc
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise AssociationAbortedError(f"connection lost: {exc}") from exc

    def recv_pdu(self) -> tuple[int, memoryview]:
        """The next PDU's type and body; the view is valid until the next call."""
        self._recv_exact(self._view, 6)
        pdu_type, length = _HEADER.unpack_from(self._buf, 0)
        if pdu_type not in (1, 2, 3, 4, 5, 6, 7):
            raise AssociationAbortedError(f"unknown PDU type 0x{pdu_type:02X}")
        if length > len(self._buf):
            self._buf = bytearray(length + 6)
            self._view = memoryview(self._buf)
        self._recv_exact(self._view, length)
        return pdu_type, self._view[:length]

    def send_pdu(self, pdu_type: int, *parts: bytes | bytearray | memoryview) -> None:
        length = sum(len(p) for p in parts)
        try:
            if length <= 65536:  # one send: small PDUs are never split over segments
                self.sock.sendall(b"".join((_HEADER.pack(pdu_type, length), *parts)))
                return
            self.sock.sendall(_HEADER.pack(pdu_type, length) + bytes(parts[0]))
            for part in parts[1:]:
                self.sock.sendall(part)
        except TimeoutError as exc:
            raise NetworkTimeoutError("the peer did not take our data in time") from exc
        except OSError as exc:
            raise AssociationAbortedError(f"connection lost while sending: {exc}") from exc

    # DIMSE messages
    def send_message(
        self, context_id: int, command: bytes, dataset: bytes | bytearray | memoryview | None = None
    ) -> None:
        """Send a command set and an optional data set, fragmented to the peer's maximum."""
        limit = (self.peer_max_pdu or (1 << 24)) - 6  # PDV header: length(4) id(1) control(1)
        self._send_fragments(context_id, memoryview(command), limit, command=True)
        if dataset is not None:
            self._send_fragments(context_id, memoryview(dataset), limit, command=False)

    def _send_fragments(self, cid: int, data: memoryview, limit: int, *, command: bool) -> None:
        flag = 1 if command else 0
        pos, n = 0, len(data)
        while True:
            chunk = data[pos : pos + limit]
            pos += len(chunk)
            control = flag | (2 if pos >= n else 0)
            self.send_pdu(P_DATA, _PDV.pack(len(chunk) + 2, cid, control), chunk)
            if pos >= n:
                return

    def messages(self) -> Iterator[Message]:
        """Yield DIMSE messages until the peer releases (answered) or aborts (raised)."""
        command = bytearray()
        dataset: bytearray | None = None
        current: Message | None = None
        while True:
            pdu_type, body = self.recv_pdu()
            if pdu_type == P_DATA:
                pos, n = 0, len(body)
                while pos < n:
                    length, cid, control = _PDV.unpack_from(body, pos)
                    value = body[pos + 6 : pos + 4 + length]
                    pos += 4 + length
                    if control & 1:
                        command += value
                        if control & 2:
                            current = Message(cid, decode_command(command))
                            command = bytearray()
                            if us(current.command, DATASET_TYPE, NO_DATASET) == NO_DATASET:
                                yield current
                                current = None
                            else:
                                dataset = bytearray()
                    else:
                        if dataset is None:
                            dataset = bytearray()
                        dataset += value
                        if control & 2:
                            if current is None:
                                raise AssociationAbortedError(
                                    "a data set arrived without a command"
                                )
                            current.dataset = dataset
                            dataset = None
                            yield current
                            current = None
            elif pdu_type == RELEASE_RQ:
                self.send_pdu(RELEASE_RP, b"\0\0\0\0")
                self.close()
                return
            elif pdu_type == ABORT:
                self.close()
                raise AssociationAbortedError("the peer aborted the association")
            else:
                self.abort()
                raise AssociationAbortedError(f"unexpected PDU type {pdu_type} during transfer")

    # ending
    def release(self) -> None:
        """Ask the peer to release the association and wait for its answer."""
        if self.closed:
            return
        try:
            self.send_pdu(RELEASE_RQ, b"\0\0\0\0")
            while True:
                pdu_type, _ = self.recv_pdu()
                if pdu_type in (RELEASE_RP, ABORT):
                    break
                if pdu_type == RELEASE_RQ:  # release collision: answer it
                    self.send_pdu(RELEASE_RP, b"\0\0\0\0")
                    break
        except NetworkError:
            pass
        finally:
            self.close()

    def abort(self) -> None:
        if self.closed:
            return
        try:
            self.send_pdu(ABORT, b"\0\0\0\0")
        except NetworkError:
            pass
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


def request_association(
    host: str,
    port: int,
    request: AssociateRequest,
    *,
    connect_timeout: float | None,
    acse_timeout: float | None,
    network_timeout: float | None,
    max_pdu: int,
) -> tuple[Connection, AssociateAccept]:
    """Connect and negotiate as the requestor; raise why not."""
    peer = f"{request.called_ae}@{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
    except TimeoutError as exc:
        raise NetworkTimeoutError(f"connecting to {peer} timed out") from exc
    except ConnectionRefusedError as exc:
        raise AssociationRejectedError(
            f"{peer}: connection refused (is the peer running on port {port}?)"
        ) from exc
    except OSError as exc:
        raise NetworkError(f"cannot connect to {peer}: {exc}") from exc
    conn = Connection(sock, max_pdu=max_pdu, timeout=acse_timeout)
    try:
        conn.send_pdu(ASSOCIATE_RQ, request.encode())
        pdu_type, body = conn.recv_pdu()
    except NetworkTimeoutError as exc:
        conn.abort()
        raise NetworkTimeoutError(f"{peer} did not answer the association request") from exc
    except NetworkError as exc:
        conn.close()
        raise AssociationRejectedError(f"{peer} dropped the association request: {exc}") from exc
    if pdu_type == ASSOCIATE_RJ:
        result, source, reason = body[1], body[2], body[3]
        conn.close()
        why = _RJ_REASONS.get((source, reason), f"source {source}, reason {reason}")
        kind = "permanently" if result == 1 else "transiently"
        raise AssociationRejectedError(
            f"{peer} {kind} rejected the association from {request.calling_ae}: {why}"
        )
    if pdu_type != ASSOCIATE_AC:
        conn.abort()
        raise AssociationRejectedError(f"{peer} answered the association with PDU {pdu_type}")
    accept = AssociateAccept.decode(body)
    conn.peer_max_pdu = accept.max_pdu
    conn.sock.settimeout(network_timeout)
    return conn, accept


def negotiate_contexts(
    offered: Sequence[tuple[int, str, list[str]]], accept_abstract, choose_ts=None
) -> dict[int, tuple[int, str]]:
    """Per offered context: (0, chosen transfer syntax) or (3, '') abstract syntax refused."""
    results: dict[int, tuple[int, str]] = {}
    for cid, abstract, syntaxes in offered:
        if not syntaxes:
            results[cid] = (4, "")  # transfer syntaxes not supported
        elif accept_abstract(abstract):
            ts = choose_ts(abstract, syntaxes) if choose_ts else syntaxes[0]
            results[cid] = (0, ts) if ts else (4, syntaxes[0])
        else:
            results[cid] = (3, syntaxes[0])
    return results
