"""The DICOM Upper Layer (PS3.8): associations, PDUs and P-DATA over one blocking socket.

dicomflow's only DIMSE transport, requestor and acceptor alike: C-ECHO, C-FIND, C-GET, C-MOVE
and C-STORE as service user (:mod:`.scu`, :mod:`._retrieve`) and the SCPs (:mod:`.scp`,
:mod:`._qr`). One association is one :class:`Connection` used by one thread: a blocking
socket read into one reusable buffer, P-DATA values appended straight to the message's
buffer, no queue or reactor thread between the socket and the caller. (pynetdicom, which
dicomflow used before, costs about 3 ms of CPU per received CT image in its three threads
per association and per-PDU copies, against about 1.3 ms for DCMTK's whole transfer.)

Implemented: A-ASSOCIATE as requestor (:func:`request_association`, :func:`open_association`)
and acceptor (:func:`accept_association`), with presentation contexts, maximum length,
implementation identification, SCP/SCU role selection and user identity (PS3.7 D.3.3.7);
P-DATA with fragmentation to the peer's maximum (:meth:`Connection.send_message`) and
reassembly (:meth:`Connection.messages`); A-RELEASE (both directions, collisions included) and
A-ABORT; DICOM TLS (PS3.15 B.9) for requestors (``tls=`` of :func:`request_association`; an
acceptor's socket arrives already wrapped, see :mod:`._server`). What the messages say is
:mod:`._dimse`'s business.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from ..dicom import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from ._dimse import DatasetSpool, Message, decode_command
from ._errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    NetworkError,
    NetworkTimeoutError,
    TLSError,
)
from ._options import AssociationOptions, Peer, TLSOptions, UserIdentity
from ._tls import ssl_reason, tls_context

__all__ = [
    "APPLICATION_CONTEXT",
    "AssociateAccept",
    "AssociateRequest",
    "Connection",
    "accept_association",
    "negotiate_contexts",
    "open_association",
    "request_association",
]

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA, RELEASE_RQ, RELEASE_RP, ABORT = range(1, 8)

#: The longest data set one message may carry unless told otherwise (4 GiB, the most a
#: 32-bit length can declare).
DEFAULT_MAX_DATASET = 2**32 - 1
_MAX_COMMAND = 64 * 1024
#: The longest PDU accepted when we announce no maximum (max_pdu 0).
HARD_PDU_LIMIT = 64 * 2**20
#: A-ASSOCIATE PDUs may be longer than a small P-DATA maximum: up to this much is accepted.
_MIN_PDU_LIMIT = 64 * 1024

_HEADER = struct.Struct(">BxL")
_READ_AHEAD = 64 * 1024  # bytes a read asks for beyond the PDU it completes
_PDV = struct.Struct(">LBB")


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
    identity: UserIdentity | None = None

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
    #: the User Identity server response (sub-item 0x59; ``b""`` for kinds 1 and 2), None: none
    identity_response: bytes | None = None

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
    if isinstance(pdu, AssociateRequest) and pdu.identity is not None:
        sub += _item(0x58, _identity_rq(pdu.identity))
    elif isinstance(pdu, AssociateAccept) and pdu.identity_response is not None:
        sub += _item(0x59, _field(pdu.identity_response))
    return sub


def _field(value: bytes) -> bytes:
    return struct.pack(">H", len(value)) + value


def _identity_rq(identity: UserIdentity) -> bytes:
    """The User Identity sub-item's value (PS3.7 D.3.3.7.1): type, positive response
    requested, the primary field (user name or token), the secondary field (passcode)."""
    secondary = identity.password.encode("utf-8") if identity.kind == 2 else b""
    return (
        bytes([identity.kind, 1 if identity.positive_response else 0])
        + _field(identity.username.encode("utf-8"))
        + _field(secondary)
    )


def _read_identity(sub: bytes) -> UserIdentity | None:
    """The User Identity of a request's sub-item 0x58, None when it does not parse."""
    if len(sub) < 6:
        return None
    kind, positive = sub[0], sub[1]
    if not 1 <= kind <= 5:
        return None
    n = struct.unpack(">H", sub[2:4])[0]
    primary = sub[4 : 4 + n]
    if len(primary) < n or len(sub) < 6 + n:
        return None
    m = struct.unpack(">H", sub[4 + n : 6 + n])[0]
    secondary = sub[6 + n : 6 + n + m]
    try:
        return UserIdentity(
            primary.decode("utf-8", "replace"),
            secondary.decode("utf-8", "replace") if kind == 2 else "",
            kind=kind, positive_response=bool(positive),
        )  # fmt: skip
    except ValueError:  # an unknown kind, an empty user name
        return None


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
        elif sub_type == 0x58 and isinstance(pdu, AssociateRequest):
            pdu.identity = _read_identity(sub)
        elif sub_type == 0x59 and isinstance(pdu, AssociateAccept) and len(sub) >= 2:
            n = struct.unpack(">H", sub[:2])[0]
            pdu.identity_response = sub[2 : 2 + n]


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

    ``peer_max_pdu`` (from the peer's A-ASSOCIATE) bounds the P-DATA PDUs we send;
    ``max_pdu`` (ours, announced to the peer) sizes the receive buffer. Every byte received on
    an association goes through :meth:`recv_pdu`.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        max_pdu: int,
        timeout: float | None,
        nodelay: bool = True,
        max_dataset: int = DEFAULT_MAX_DATASET,
    ) -> None:
        self.sock = sock
        sock.settimeout(timeout)
        if nodelay:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # not a TCP socket
        self.max_pdu = max_pdu
        #: the longest PDU accepted from the peer (see :meth:`recv_pdu`)
        self.limit = max(max_pdu, _MIN_PDU_LIMIT) if max_pdu else HARD_PDU_LIMIT
        self.peer_max_pdu = 16384
        self._deadline: float | None = None
        #: the longest data set (one instance) accepted in a message
        self.max_dataset = max_dataset
        # what was received: PDUs are read from it, and each recv takes as much as the peer
        # has sent (a C-STORE's command and data set PDUs in one system call, usually)
        self._buf = bytearray(max(max_pdu, 65536) + 6)
        self._view = memoryview(self._buf)
        self._start = 0  # the first byte not read as a PDU yet
        self._end = 0  # the end of what was received
        self.closed = False
        #: where received data sets go: None keeps each in memory (``Message.dataset``); an
        #: SCP landing data sets in files sets a function that gives a message its spool (or
        #: None: memory), and :meth:`messages` appends the fragments there (``Message.spool``)
        self.spool: Callable[[Message], DatasetSpool | None] | None = None

    def recv_pdu(self) -> tuple[int, memoryview]:
        """The next PDU's type and body; the view is valid until the next call.

        This is the one place where PDUs are read from the socket, for requestors and
        acceptors, during negotiation, transfer and release alike, so every limit on what a
        peer may send lives here. The 6-byte header is checked before anything else is read: a
        known PDU type, and a length of at most :attr:`limit` (our announced maximum, at least
        64 KiB for the A-ASSOCIATE PDUs, :data:`HARD_PDU_LIMIT` when we announce none). A
        larger PDU aborts the association at once, before the buffer grows for it. Each read
        asks for the rest of the PDU and up to 64 KiB more: small PDUs come with those before
        them, usually, not by two system calls of their own.

        Raises
        ------
        AssociationAbortedError
            The peer closed or reset the connection, or sent an unknown PDU type.
        NetworkTimeoutError
            Nothing arrived within the socket's timeout.
        """
        self._fill(6)
        start = self._start
        pdu_type, length = _HEADER.unpack_from(self._buf, start)
        if not ASSOCIATE_RQ <= pdu_type <= ABORT:
            self.abort()
            raise AssociationAbortedError(f"unknown PDU type 0x{pdu_type:02X}: aborted")
        if length > self.limit:
            self.abort()
            raise AssociationAbortedError(
                f"the peer announced a PDU of {length:,} bytes, more than the {self.limit:,} "
                "this side accepts: aborted"
            )
        size = 6 + length
        if size > len(self._buf):  # a larger buffer, what is received moved to it
            buf = bytearray(size)
            buf[: self._end - start] = self._view[start : self._end]
            self._buf, self._view = buf, memoryview(buf)
            self._start, self._end = 0, self._end - start
        self._fill(size)
        start = self._start  # _fill may have moved the PDU to the front of the buffer
        self._start = start + size
        return pdu_type, self._view[start + 6 : start + size]

    def _protocol_error(self, what: str) -> NoReturn:
        self.abort()
        raise AssociationAbortedError(f"the peer sent {what}: aborted")

    def set_deadline(self, seconds: float | None) -> None:
        """Until :meth:`set_deadline` (None), every byte must arrive within ``seconds`` from now.

        This is the ARTIM timer of PS3.8 9.1.5 for an acceptor: the whole A-ASSOCIATE-RQ must
        arrive in time, however slowly a peer drips it, instead of a timeout that restarts on
        every byte.
        """
        self._deadline = None if seconds is None else time.monotonic() + seconds

    def set_timeout(self, seconds: float | None) -> None:
        """The network timeout from now on: a read or a write that waits longer fails
        (None: none).

        On Linux, for a plain TCP socket, the kernel keeps it (``SO_RCVTIMEO``,
        ``SO_SNDTIMEO``) on a blocking socket: a read is one system call, where Python's own
        timeout polls before every read and write. A TLS socket keeps Python's timeout.
        """
        if (
            not sys.platform.startswith("linux")
            or isinstance(self.sock, ssl.SSLSocket)
            or self.sock.family not in (socket.AF_INET, socket.AF_INET6)
            or (seconds is not None and seconds <= 0)
        ):
            self.sock.settimeout(seconds)
            return
        micro = 0 if seconds is None else max(1, round(seconds * 1e6))  # 0: no timeout
        timeval = struct.pack("@ll", micro // 1_000_000, micro % 1_000_000)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        except OSError:
            self.sock.settimeout(seconds)
            return
        self.sock.settimeout(None)  # blocking: the kernel's timeouts end a wait (EAGAIN)

    def _fill(self, n: int) -> None:
        """Receive until ``n`` bytes from :attr:`_start` are in the buffer (which holds them)."""
        if self._end - self._start >= n:
            return
        if self._start + n > len(self._buf):  # what is left of the buffer is too short
            left = self._view[self._start : self._end].tobytes()
            self._buf[: len(left)] = left
            self._start, self._end = 0, len(left)
        elif self._start == self._end:
            self._start = self._end = 0
        view, size = self._view, len(self._buf)
        recv_into = self.sock.recv_into
        try:
            while self._end - self._start < n:
                if self._deadline is not None:
                    left_s = self._deadline - time.monotonic()
                    if left_s <= 0:
                        raise TimeoutError
                    self.sock.settimeout(left_s)
                # what is still needed, and up to _READ_AHEAD more (the next small PDUs):
                # never much of the next large PDU, which would be moved to the front
                want = max(n - (self._end - self._start), _READ_AHEAD)
                k = recv_into(view[self._end :], min(size - self._end, want))
                if not k:
                    raise AssociationAbortedError("the peer closed the connection")
                self._end += k
        except (TimeoutError, BlockingIOError) as exc:  # BlockingIOError: SO_RCVTIMEO
            if self._deadline is not None:
                raise NetworkTimeoutError(
                    "the association request did not arrive within the ARTIM timeout"
                ) from exc
            raise NetworkTimeoutError("no data from the peer within the network timeout") from exc
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise AssociationAbortedError(f"connection lost: {exc}") from exc
        except ssl.SSLError as exc:
            raise TLSError(f"TLS: {ssl_reason(exc)}") from exc

    def pending(self) -> bool:
        """Whether the peer has sent bytes not read yet (a look at the socket: reads nothing)."""
        if self._end > self._start:
            return True  # received already, not read as a PDU yet
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True  # decrypted already, so select() would not see it
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True  # closed: the next read says so
        return bool(readable)

    def send_pdu(self, pdu_type: int, *parts: bytes | bytearray | memoryview) -> None:
        length = sum(len(p) for p in parts)
        try:
            if length <= 65536:  # one send: small PDUs are never split over segments
                self.sock.sendall(b"".join((_HEADER.pack(pdu_type, length), *parts)))
                return
            self.sock.sendall(_HEADER.pack(pdu_type, length) + bytes(parts[0]))
            for part in parts[1:]:
                self.sock.sendall(part)
        except (TimeoutError, BlockingIOError) as exc:  # BlockingIOError: SO_SNDTIMEO
            raise NetworkTimeoutError("the peer did not take our data in time") from exc
        except ssl.SSLError as exc:
            raise TLSError(f"TLS: {ssl_reason(exc)}") from exc
        except OSError as exc:
            raise AssociationAbortedError(f"connection lost while sending: {exc}") from exc

    # DIMSE messages in P-DATA (PS3.8 9.3.5, E.2)
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
        """Yield DIMSE messages until the peer releases (answered) or aborts (raised).

        A message is yielded once its command set, and its data set if the command says one
        follows (Command Data Set Type), are complete. A PDV whose length runs past its PDU, a
        command set over 64 KiB, or a data set growing past :attr:`max_dataset` (a peer that
        never sets the last-fragment bit) aborts the association.
        """
        command = bytearray()
        dataset: bytearray | None = None
        spool: DatasetSpool | None = None
        current: Message | None = None
        while True:
            pdu_type, body = self.recv_pdu()
            if pdu_type == P_DATA:
                pos, n = 0, len(body)
                while pos < n:
                    if pos + 6 > n:
                        self._protocol_error("a PDV header runs past the end of its PDU")
                    length, cid, control = _PDV.unpack_from(body, pos)
                    if length < 2 or pos + 4 + length > n:
                        self._protocol_error(f"a PDV of {length} bytes does not fit its PDU")
                    value = body[pos + 6 : pos + 4 + length]
                    pos += 4 + length
                    if control & 1:
                        command += value
                        if len(command) > _MAX_COMMAND:
                            self._protocol_error("a command set longer than 64 KiB")
                        if control & 2:
                            current = Message(cid, decode_command(command))
                            command = bytearray()
                            if not current.has_dataset:
                                yield current
                                current = None
                            else:
                                dataset = bytearray()
                                if self.spool is not None:
                                    spool = self.spool(current)
                    else:
                        if dataset is None:
                            dataset = bytearray()
                        if spool is not None:
                            spool.write(value)
                            received = spool.size
                        else:
                            dataset += value
                            received = len(dataset)
                        if received > self.max_dataset:
                            self._protocol_error(
                                f"a data set longer than {self.max_dataset:,} bytes"
                                " (max_instance_bytes)"
                            )
                        if control & 2:
                            if current is None:
                                raise AssociationAbortedError(
                                    "a data set arrived without a command"
                                )
                            current.dataset, current.spool = dataset, spool
                            dataset = spool = None
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


# -- requestor ---------------------------------------------------------------------------------


def request_association(
    host: str,
    port: int,
    request: AssociateRequest,
    *,
    connect_timeout: float | None,
    acse_timeout: float | None,
    network_timeout: float | None,
    max_pdu: int,
    nodelay: bool = True,
    tls: TLSOptions | None = None,
) -> tuple[Connection, AssociateAccept]:
    """Connect and negotiate as the requestor; raise why not.

    With ``tls`` the TLS handshake runs right after the TCP connection, within
    ``acse_timeout``, and the peer's certificate is verified as ``tls`` says. When
    ``request.identity`` asks for a positive response and the accept carries none, the
    association is aborted.

    Raises
    ------
    AssociationRejectedError
        The TCP connection was refused, the peer rejected or dropped the association, or did
        not confirm the user identity asked to be confirmed.
    TLSError
        The TLS handshake failed: the peer's certificate is not trusted or does not name the
        host, it refused ours, or it does not speak TLS.
    NetworkTimeoutError
        Connecting or negotiating took longer than the timeouts allow.
    NetworkError
        Any other socket error (host unreachable, name not resolved...).
    ConfigError
        ``tls`` names files that cannot be used.
    """
    peer = f"{request.called_ae}@{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
    except TimeoutError as exc:
        raise NetworkTimeoutError(
            f"connecting to {peer} timed out after {connect_timeout} s"
        ) from exc
    except ConnectionRefusedError as exc:
        raise AssociationRejectedError(
            f"{peer}: connection refused (is the peer running on port {port}?)"
        ) from exc
    except OSError as exc:
        raise NetworkError(f"cannot connect to {peer}: {exc}") from exc
    if tls is not None:
        sock = _client_handshake(sock, host, tls, peer, acse_timeout)
    conn = Connection(sock, max_pdu=max_pdu, timeout=acse_timeout, nodelay=nodelay)
    try:
        conn.send_pdu(ASSOCIATE_RQ, request.encode())
        pdu_type, body = conn.recv_pdu()
    except TLSError as exc:  # TLS 1.3: the server refuses our certificate after the handshake
        conn.close()
        cause = exc.__cause__
        why = ssl_reason(cause) if isinstance(cause, OSError) else str(exc)
        raise TLSError(f"{peer} ended the TLS connection: {why} (does it trust our client "
                       "certificate? does it want one?)") from exc  # fmt: skip
    except NetworkTimeoutError as exc:
        conn.abort()
        raise NetworkTimeoutError(
            f"{peer} did not answer the association request within {acse_timeout} s"
        ) from exc
    except NetworkError as exc:
        conn.close()
        hint = "" if tls is not None else " (a DICOM TLS port? then connect with TLS)"
        raise AssociationRejectedError(
            f"{peer} dropped the association request: {exc}{hint}"
        ) from exc
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
    identity = request.identity
    if identity is not None and identity.positive_response and accept.identity_response is None:
        conn.abort()
        raise AssociationRejectedError(
            f"{peer} accepted the association without confirming the user identity "
            f"{identity.username!r} (a positive response was requested): aborted"
        )
    conn.peer_max_pdu = accept.max_pdu
    conn.set_timeout(network_timeout)
    return conn, accept


def _client_handshake(
    sock: socket.socket, host: str, tls: TLSOptions, peer: str, timeout: float | None
) -> ssl.SSLSocket:
    """Wrap a connected socket in TLS as the client; the handshake must end within
    ``timeout``. The socket is closed when it fails."""
    try:
        context = tls_context(tls, server=False)
    except BaseException:
        sock.close()
        raise
    name = tls.server_hostname or host
    try:
        sock.settimeout(timeout)
        wrapped = context.wrap_socket(sock, server_hostname=name, do_handshake_on_connect=False)
    except (OSError, ValueError) as exc:
        sock.close()
        raise TLSError(f"{peer}: cannot start TLS: {exc}") from exc
    try:
        wrapped.do_handshake()
    except TimeoutError as exc:
        wrapped.close()
        raise NetworkTimeoutError(
            f"{peer}: the TLS handshake did not finish within {timeout} s (does it speak TLS "
            "on this port?)"
        ) from exc
    except ssl.SSLCertVerificationError as exc:
        wrapped.close()
        raise TLSError(
            f"{peer}: its TLS certificate is not accepted: {exc.verify_message or exc.reason}"
            + ("" if tls.ca_file else " (no CA file given: the system's trust store was used)")
        ) from exc
    except (ssl.SSLError, OSError) as exc:
        wrapped.close()
        raise TLSError(
            f"{peer}: the TLS handshake failed: {ssl_reason(exc)} (does the peer speak TLS "
            "on this port, and accept our certificate?)"
        ) from exc
    return wrapped


def open_association(
    peer: Peer,
    options: AssociationOptions,
    contexts: Sequence[tuple[int, str, list[str]]],
    roles: dict[str, tuple[int, int]] | None = None,
) -> tuple[Connection, AssociateAccept]:
    """:func:`request_association` with ``options``: our AE title, maximum PDU, timeouts.

    Once associated, the socket waits for each message up to ``options.dimse_timeout``
    (``network_timeout`` when that is None).
    """
    request = AssociateRequest(
        peer.ae_title, options.calling_ae, list(contexts), options.max_pdu,
        IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, dict(roles or {}),
        options.identity,
    )  # fmt: skip
    timeout = options.dimse_timeout
    if timeout is None:
        timeout = options.network_timeout
    return request_association(
        peer.host, peer.port, request,
        connect_timeout=options.connection_timeout, acse_timeout=options.acse_timeout,
        network_timeout=timeout, max_pdu=options.max_pdu, nodelay=options.tcp_nodelay,
        tls=options.tls,
    )  # fmt: skip


# -- acceptor ----------------------------------------------------------------------------------


def negotiate_contexts(
    offered: Sequence[tuple[int, str, list[str]]],
    accept_abstract: Callable[[str], bool],
    choose_ts: Callable[[str, list[str]], str | None] | None = None,
) -> dict[int, tuple[int, str]]:
    """Per offered context: (0, chosen transfer syntax), (3, ...) abstract syntax refused, or
    (4, ...) no transfer syntax we take (PS3.8 9.3.3.2)."""
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


@dataclass(frozen=True)
class Refusal:
    """Why an acceptor rejects an association, and the A-ASSOCIATE-RJ fields to send.

    ``result`` 1 permanent, 2 transient; ``source`` 1 service user, 2 ACSE, 3 presentation;
    ``diagnostic`` as PS3.8 9.3.4 (e.g. 3 calling AE title not recognized).
    """

    reason: str
    result: int = 1
    source: int = 1
    diagnostic: int = 1


@dataclass
class Accepted:
    """An association as accepted: the request, and per accepted context id its abstract and
    transfer syntax."""

    request: AssociateRequest
    contexts: dict[int, tuple[str, str]]


def accept_association(
    conn: Connection,
    judge: Callable[[AssociateRequest], Refusal | None],
    accept_abstract: Callable[[str], bool],
    *,
    network_timeout: float | None,
    choose_ts: Callable[[str, list[str]], str | None] | None = None,
    scp_roles: Callable[[str], bool] | None = None,
    identity_response: Callable[[AssociateRequest], bytes | None] | None = None,
) -> Accepted:
    """Read an A-ASSOCIATE-RQ on ``conn`` and accept it, or reject it and raise.

    ``judge`` refuses the association (a :class:`Refusal`) or lets it through (None);
    ``accept_abstract`` and ``choose_ts`` decide each presentation context. A requestor asking
    for the SCP role of an accepted abstract syntax (C-GET) gets it where ``scp_roles`` says so.
    ``identity_response`` gives the User Identity server response for the accept (``b""``
    confirms a user name and passcode; None sends none).

    Raises
    ------
    AssociationRejectedError
        The association was rejected (A-ASSOCIATE-RJ sent, the connection closed); the
        message is the refusal's reason.
    AssociationAbortedError
        The peer sent something other than an A-ASSOCIATE-RQ (the association is aborted).
    """
    pdu_type, body = conn.recv_pdu()
    if pdu_type != ASSOCIATE_RQ:
        conn.abort()
        raise AssociationAbortedError(f"expected an A-ASSOCIATE-RQ, got PDU type {pdu_type}")
    rq = AssociateRequest.decode(body)
    refusal = judge(rq)
    if refusal is not None:
        conn.send_pdu(ASSOCIATE_RJ, associate_rj(refusal.result, refusal.source,
                                                 refusal.diagnostic))  # fmt: skip
        conn.close()
        raise AssociationRejectedError(refusal.reason)
    results = negotiate_contexts(rq.contexts, accept_abstract, choose_ts)
    abstract_of = {cid: abstract for cid, abstract, _ in rq.contexts}
    accepted = {cid: (abstract_of[cid], ts) for cid, (result, ts) in results.items() if result == 0}
    roles: dict[str, tuple[int, int]] = {}
    if scp_roles is not None:
        taken = {abstract for abstract, _ in accepted.values()}
        for uid, (scu, scp) in rq.roles.items():
            if uid in taken:
                roles[uid] = (scu, 1 if scp and scp_roles(uid) else 0)
    accept = AssociateAccept(
        rq.called_ae, rq.calling_ae, results, conn.max_pdu,
        IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, roles,
        identity_response(rq) if identity_response is not None else None,
    )  # fmt: skip
    conn.send_pdu(ASSOCIATE_AC, accept.encode())
    conn.peer_max_pdu = rq.max_pdu
    conn.set_deadline(None)
    conn.set_timeout(network_timeout)
    return Accepted(rq, accepted)
