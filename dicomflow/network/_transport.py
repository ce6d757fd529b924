"""pynetdicom, tuned for bulk transfer, without touching pynetdicom's globals.

pynetdicom's Upper Layer runs one reactor thread per association that polls its socket with
``select(timeout=0)`` and sleeps 1 ms whenever nothing was ready. A C-GET or C-MOVE peer sends
the next instance only after it has our C-STORE response, so every instance paid that sleep
twice (once before the response went out, once before the next instance arrived): about 2 ms
an instance, more than DCMTK needs to move a whole 512 x 512 CT image. It also reads each PDU
in 4 KB ``recv`` calls, sends with repeated slicing, and never sets TCP_NODELAY.

Here each association gets a socket (:class:`TunedSocket`) that

* sets TCP_NODELAY on its own TCP socket (no global monkeypatch),
* waits for "data from the peer" *or* "a PDU of ours to send" in one ``select`` (a socketpair
  wakes the reactor when a primitive is queued), so the reactor neither sleeps nor spins,
* reads a whole PDU with ``recv_into`` into one buffer and sends with ``sendall``.

Sockets come from :class:`TunedAE` (``AE._create_socket`` is pynetdicom's factory for the
requestor's socket), so only dicomflow's own associations are affected. dicomflow's receiving
paths (Storage SCP, C-GET) do not use pynetdicom at all: see :mod:`._ul` for why.
"""

from __future__ import annotations

import queue
import select
import socket
import time
from collections.abc import Sequence
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.transport import AddressInformation, AssociationSocket

from ._errors import AssociationRejectedError, NetworkError, NetworkTimeoutError
from ._options import AssociationOptions, Peer

__all__ = ["TunedAE", "TunedSocket", "associate", "make_ae", "set_nodelay"]

#: How long an idle reactor blocks in ``select`` before it looks at its timers and kill flag.
IDLE_WAIT = 0.01


def set_nodelay(sock: socket.socket) -> None:
    """Turn Nagle's algorithm off on a TCP socket (ignored for non-TCP sockets)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


class _WakingQueue(queue.Queue):
    """The DUL's to-provider queue: putting a primitive wakes the reactor's ``select``."""

    def __init__(self, wake: socket.socket) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        try:
            self._wake.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or the association is closing


class _ConnectRecorder(socket.socket):
    """A TCP socket that remembers why ``connect`` failed (pynetdicom only logs it)."""

    connect_error: OSError | None = None

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except OSError as exc:
            self.connect_error = exc
            raise


class TunedSocket(AssociationSocket):
    """An ``AssociationSocket`` that blocks instead of polling, reads whole PDUs, no Nagle."""

    connect_error: OSError | None = None
    _wake_r: socket.socket | None = None
    _wake_w: socket.socket | None = None

    def tune(self, nodelay: bool = True) -> None:
        """Attach the wake-up pair to the association's DUL; call before its reactor starts."""
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        dul = self.assoc.dul
        pending = list(dul.to_provider_queue.queue)
        dul.to_provider_queue = _WakingQueue(self._wake_w)
        for item in pending:
            dul.to_provider_queue.put(item)
        dul._run_loop_delay = 0  # the select in `ready` is the wait
        if nodelay and self.socket is not None:
            set_nodelay(self.socket)

    def _create_socket(self, address: AddressInformation) -> socket.socket:
        family = socket.AF_INET if address.is_ipv4 else socket.AF_INET6
        sock = _ConnectRecorder(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        set_nodelay(sock)
        if self.assoc.network_timeout is not None:
            sock.settimeout(self.assoc.network_timeout)
        sock.bind(address.as_tuple)
        self._is_connected = False
        return sock

    def connect(self, primitive: Any) -> None:
        raw = self.socket
        super().connect(primitive)
        self.connect_error = getattr(raw, "connect_error", None)

    @property
    def ready(self) -> bool:
        sock = self.socket
        if sock is None or not self._is_connected:
            time.sleep(0.001)  # not connected yet, or closed: nothing to wait on
            return False
        if getattr(sock, "pending", None) and sock.pending():  # TLS-buffered bytes
            return True
        dul = self.assoc.dul
        busy = dul.to_provider_queue.qsize() or dul.event_queue.qsize()
        wake = self._wake_r
        watch = [sock] if wake is None or wake.fileno() < 0 else [sock, wake]
        try:
            readable, _, _ = select.select(watch, [], [], 0 if busy else IDLE_WAIT)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # Evt17: transport connection closed
            return False
        if wake is not None and wake in readable:
            try:
                while wake.recv(4096):
                    pass
            except (BlockingIOError, OSError):
                pass
        return sock in readable

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        buf = bytearray(nr_bytes)
        view = memoryview(buf)
        got = 0
        while got < nr_bytes:
            n = sock.recv_into(view[got:], nr_bytes - got)  # type: ignore[union-attr]
            if not n:
                del view
                del buf[got:]
                return buf
            got += n
        return buf

    def send(self, bytestream: bytes) -> None:
        try:
            self.socket.sendall(bytestream)  # type: ignore[union-attr]
            evt.trigger(self.assoc, evt.EVT_DATA_SENT, {"data": bytestream})
        except Exception:
            self.event_queue.put("Evt17")

    def close(self) -> None:
        super().close()
        for s in (self._wake_r, self._wake_w):
            if s is not None:
                s.close()


class TunedAE(AE):
    """An ``AE`` whose requestor associations use :class:`TunedSocket`."""

    tcp_nodelay: bool = True

    def _create_socket(
        self, assoc: Association, address: AddressInformation, tls_args: Any
    ) -> AssociationSocket:
        sock = TunedSocket(assoc, address=address)
        sock.tls_args = tls_args
        sock.tune(self.tcp_nodelay)
        return sock


def make_ae(options: AssociationOptions, ae_title: str | None = None) -> TunedAE:
    """An application entity configured from ``options`` (timeouts, PDU size, TCP_NODELAY)."""
    ae = TunedAE(ae_title=ae_title or options.calling_ae)
    ae.tcp_nodelay = options.tcp_nodelay
    ae.maximum_pdu_size = options.max_pdu
    ae.connection_timeout = options.connection_timeout
    ae.acse_timeout = options.acse_timeout
    ae.dimse_timeout = options.dimse_timeout
    ae.network_timeout = options.network_timeout
    return ae


def associate(
    peer: Peer,
    options: AssociationOptions,
    contexts: Sequence[Any],
    *,
    ext_neg: Sequence[Any] | None = None,
    evt_handlers: Sequence[Any] | None = None,
) -> Association:
    """Open an association with ``peer`` or raise why not.

    Raises
    ------
    AssociationRejectedError
        The TCP connection was refused, or the peer rejected or aborted the association.
    NetworkTimeoutError
        Connecting or negotiating took longer than the options allow.
    NetworkError
        Any other socket error (host unreachable, name not resolved...).
    """
    ae = make_ae(options)
    started = time.monotonic()
    assoc = ae.associate(
        peer.host,
        peer.port,
        contexts=list(contexts),
        ae_title=peer.ae_title,
        max_pdu=options.max_pdu,
        ext_neg=list(ext_neg or []),
        evt_handlers=list(evt_handlers or []),
    )
    if assoc.is_established:
        return assoc
    sock = assoc.dul.socket
    error = getattr(sock, "connect_error", None)
    if assoc.is_rejected:
        prim = assoc.acceptor.primitive
        detail = ""
        if prim is not None:
            detail = (
                f" (result {prim.result_str}, source {prim.source_str}, reason {prim.reason_str})"
            )
        raise AssociationRejectedError(
            f"{peer} rejected the association from {options.calling_ae}{detail}"
        )
    if isinstance(error, TimeoutError):
        raise NetworkTimeoutError(
            f"connecting to {peer} timed out after {options.connection_timeout} s"
        ) from error
    if isinstance(error, ConnectionRefusedError):
        raise AssociationRejectedError(
            f"{peer}: connection refused (is the peer running on port {peer.port}?)"
        ) from error
    if error is not None:
        raise NetworkError(f"cannot connect to {peer}: {error}") from error
    waited = time.monotonic() - started
    if assoc.is_aborted and waited < 0.9 * options.acse_timeout:
        raise AssociationRejectedError(f"{peer} aborted the association during negotiation")
    raise NetworkTimeoutError(
        f"{peer} did not answer the association request within {options.acse_timeout} s"
    )
