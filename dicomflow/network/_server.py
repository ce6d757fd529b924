"""What every dicomflow SCP shares: who may associate (:class:`SCPOptions`), and a listener
that accepts TCP connections and runs one thread per association (:class:`Listener`).

An SCP is a :class:`Listener` plus what it does with an accepted association: which abstract
syntaxes it takes, and a ``serve`` function that reads the association's messages
(:class:`~dicomflow.network.StorageSCP`, :class:`~dicomflow.network.QueryRetrieveSCP`).

With ``SCPOptions.tls`` every connection is a DICOM TLS connection: the TLS handshake runs in
the connection's own thread, under the same ARTIM deadline as the A-ASSOCIATE-RQ that must
follow it, and counts as "still negotiating" until then. A peer that fails the handshake (no
TLS, an untrusted or missing client certificate) or never finishes it is logged, counted in
:attr:`Listener.handshake_failures` and dropped; the listener goes on.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, Self

from ..errors import ConfigError
from ._errors import AssociationRejectedError, NetworkConfigError, NetworkError
from ._options import TLSOptions, UserIdentity, check_ae_title
from ._tls import describe, peer_subject, ssl_reason, tls_context
from ._ul import (
    DEFAULT_MAX_DATASET,
    Accepted,
    AssociateRequest,
    Connection,
    Refusal,
    accept_association,
)

__all__ = ["AssociationLog", "Listener", "ListeningService", "SCPOptions"]

LOGGER = logging.getLogger("dicomflow.network.scp")


@dataclass(frozen=True, slots=True)
class SCPOptions:
    """Who may store to us, and how.

    Parameters
    ----------
    ae_title
        The AE title we answer to (the peers' "called AE").
    host, port
        Where to listen; ``port=0`` picks a free port (see :attr:`StorageSCP.port`).
    calling_aes
        Calling AE titles allowed to associate; ``("*",)`` allows any. Empty: none.
    hosts
        If given, only these peer IP addresses may associate.
    check_called_ae
        Refuse associations addressed to another AE title.
    fsync
        ``"each"`` (acknowledge only durable files), ``"batch"`` or ``"none"``.
    max_associations
        Concurrent associations; more are refused as "local limit exceeded". Only accepted
        associations count: connections still negotiating have a cap of their own.
    max_instance_bytes
        The largest data set one C-STORE may carry; a peer sending more (or never ending its
        data set) is aborted.
    max_negotiating
        Connections that have not sent their whole A-ASSOCIATE-RQ yet. Each one has
        ``acse_timeout`` seconds in all (the ARTIM timer) to send it, and when one more
        connects, the oldest still negotiating is dropped: idle or slow-dripping sockets
        cannot hold an allowed sender out, whose request takes milliseconds.
    tls
        :class:`TLSOptions` with our certificate and key: accept DICOM TLS connections only
        (``ca_file`` and ``require_client_cert`` decide which client certificates are taken).
        The TLS handshake is part of the ``acse_timeout``.
    authenticate
        User identity (PS3.7 D.3.3.7): called as ``authenticate(identity)`` with the
        :class:`UserIdentity` of each association request (None when it carries none); an
        association is accepted only when it returns True, else rejected (permanent, "no
        reason given"). A requestor asking for a positive response gets one when accepted.
        It runs in the association's thread, before the association takes a slot.
    """

    ae_title: str = "DICOMFLOW"
    host: str = "0.0.0.0"
    port: int = 11113
    calling_aes: tuple[str, ...] = ()
    hosts: tuple[str, ...] | None = None
    check_called_ae: bool = True
    max_pdu: int = 1 << 20
    acse_timeout: float = 30.0
    network_timeout: float | None = 120.0
    max_associations: int = 16
    max_negotiating: int = 8
    max_instance_bytes: int = DEFAULT_MAX_DATASET
    fsync: str = "each"
    tls: TLSOptions | None = None
    authenticate: Callable[[UserIdentity | None], bool] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title, "SCP AE title"))
        aes = tuple(self.calling_aes)
        for ae in aes:
            if ae != "*":
                check_ae_title(ae, "allowed calling AE")
        object.__setattr__(self, "calling_aes", tuple(a.strip() for a in aes))
        if self.hosts is not None:
            object.__setattr__(self, "hosts", tuple(self.hosts))
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port {self.port} is out of range")
        if self.max_associations < 1:
            raise ConfigError("max_associations must be >= 1")
        if self.max_negotiating < 1:
            raise ConfigError("max_negotiating must be >= 1")
        if self.tls is not None and self.tls.certificate is None:
            raise ConfigError("an SCP with TLS needs tls.certificate (and its private key)")

    def allows(self, calling_ae: str, host: str) -> str | None:
        """Why an association would be refused, or None when it is allowed."""
        if "*" not in self.calling_aes and calling_ae not in self.calling_aes:
            return f"calling AE {calling_ae!r} is not allowed"
        if self.hosts is not None and host not in self.hosts:
            return f"host {host} is not allowed"
        return None


@dataclass
class AssociationLog:
    """One association an SCP handled (kept in its ``associations``); ``stored`` and ``failed``
    count the C-STOREs it received (Storage SCP) or sent (C-GET of the Q/R SCP), ``bytes``
    the data set bytes the Storage SCP received. ``tls`` is the TLS version and cipher suite
    (None: plain TCP), ``certificate`` the subject of the client's certificate, ``username``
    the user identity it sent."""

    calling_ae: str
    host: str
    accepted: bool
    reason: str | None = None
    stored: int = 0
    failed: int = 0
    seconds: float = 0.0
    tls: str | None = None
    certificate: str | None = None
    username: str | None = None
    bytes: int = 0


Serve = Callable[[Connection, Accepted, AssociationLog], None]


def bind(options: SCPOptions, *, listen: bool = True) -> socket.socket:
    """The socket bound to ``options.host:options.port``, listening (``listen=False``: call
    its ``listen(64)`` when ready to take connections); a clear error when it cannot be."""
    server = None
    try:
        family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
        server = socket.socket(family, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((options.host, options.port))
        if listen:
            server.listen(64)
    except OSError as exc:
        if server is not None:
            server.close()
        where = f"{options.host}:{options.port}"
        fixes = {
            errno.EADDRINUSE: "another program listens there: stop it or choose another "
            "port (--port)",
            errno.EACCES: "ports below 1024 need privileges: choose a port above 1023 (--port)",
            errno.EADDRNOTAVAIL: "no interface of this machine has that address: bind to "
            "one it has, or 0.0.0.0 (--bind)",
        }
        fix = fixes.get(exc.errno or 0)
        if fix is None:
            raise NetworkError(f"cannot listen on {where}: {exc}") from exc
        raise NetworkConfigError(f"cannot listen on {where} ({exc.strerror}): {fix}") from exc
    return server


class Handoff(Protocol):
    """Where a worker process's :class:`Listener` gets its connections (see :mod:`._workers`):
    the next accepted socket and its peer's address (None: none yet; ``stop`` set: no more),
    notes to the parent when one is judged or closed, and the association slots it shares."""

    stop: threading.Event

    def take(self) -> tuple[socket.socket, str] | None: ...
    def judged(self, client: socket.socket) -> None: ...
    def closed(self, client: socket.socket) -> None: ...
    def take_slot(self) -> bool: ...
    def free_slot(self) -> None: ...


class Listener:
    """Accept associations on ``options.host:options.port``, each served in its own thread.

    An association is accepted only from the allowed calling AE titles (and hosts), for the
    AE title we answer to, below ``max_associations``; its presentation contexts are decided
    by ``accept_abstract``, ``choose_ts`` and ``scp_roles`` (see :func:`._ul.accept_association`),
    then ``serve(conn, accepted, log)`` runs until the association ends.
    """

    def __init__(
        self,
        options: SCPOptions,
        serve: Serve,
        accept_abstract: Callable[[str], bool],
        *,
        choose_ts: Callable[[str, list[str]], str | None] | None = None,
        scp_roles: Callable[[str], bool] | None = None,
        name: str = "dicomflow-scp",
        handoff: Handoff | None = None,
    ) -> None:
        self.options = options
        #: a worker process's source of connections (None: this listener binds and accepts)
        self.handoff = handoff
        self.serve = serve
        self.accept_abstract = accept_abstract
        self.choose_ts = choose_ts
        self.scp_roles = scp_roles
        self.name = name
        self.associations: list[AssociationLog] = []
        self.last_activity = time.monotonic()
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._active: set[threading.Thread] = set()
        #: connections not judged yet, oldest first: accepted socket -> the socket in use now
        #: (its TLS wrapper once the handshake starts)
        self._waiting: dict[socket.socket, socket.socket] = {}
        self._associated = 0  # accepted associations still running
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        #: TLS handshakes that failed or never finished (each also in ``associations``)
        self.handshake_failures = 0

    @property
    def port(self) -> int:
        if self._server is None:  # not started, or a worker fed by its parent
            return self.options.port
        return self._server.getsockname()[1]

    def start(self) -> None:
        if self._server is not None:
            return
        if self.options.tls is not None:  # a bad certificate fails here, not per connection
            self._tls = tls_context(self.options.tls, server=True)
        if self.handoff is not None:  # connections come from a parent process
            self._thread = threading.Thread(
                target=self._accept_loop, name=f"{self.name}-handoff", daemon=True
            )
            self._thread.start()
            return
        server = bind(self.options)
        server.settimeout(0.2)
        self._server = server
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"{self.name}-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let running associations finish (up to ``timeout``), close."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        deadline = time.monotonic() + timeout
        for t in list(self._active):
            t.join(max(0.0, deadline - time.monotonic()))
        if self._server is not None:
            self._server.close()

    @property
    def active_associations(self) -> int:
        with self._lock:
            return len(self._active)

    def wait_idle(self, idle: float = 1.0, timeout: float | None = None) -> bool:
        """Block until no association has been active for ``idle`` seconds (True), or timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self.active_associations and time.monotonic() - self.last_activity >= idle:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _next(self) -> tuple[socket.socket, str] | None:
        """The next connection and its peer's address (None: none within 0.2 s)."""
        if self.handoff is not None:
            return self.handoff.take()
        assert self._server is not None
        try:
            client, address = self._server.accept()
        except TimeoutError:
            return None
        except OSError:
            if not self._stopping.is_set():
                time.sleep(0.05)
            return None
        return client, address[0]

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            taken = self._next()
            if taken is None:
                if self.handoff is not None and self.handoff.stop.is_set():
                    return
                continue
            client, host = taken
            with self._lock:
                oldest = None
                if len(self._waiting) >= self.options.max_negotiating:
                    oldest = self._waiting.pop(next(iter(self._waiting)))
                self._waiting[client] = client
            if oldest is not None:
                LOGGER.warning("dropped the oldest of %d connections still negotiating",
                               self.options.max_negotiating)  # fmt: skip
                try:  # its thread sees the end and leaves (a TLS one: in its handshake)
                    socket.socket.shutdown(oldest, socket.SHUT_RDWR)
                except OSError:
                    pass
            thread = threading.Thread(
                target=self._serve, args=(client, host), name=f"{self.name}-assoc",
                daemon=True,
            )  # fmt: skip
            with self._lock:
                self._active.add(thread)
            self.last_activity = time.monotonic()
            thread.start()

    def _serve(self, client: socket.socket, host: str) -> None:
        started = time.monotonic()
        log = AssociationLog("", host, False)
        sock: socket.socket | None = client
        if self._tls is not None:
            sock = self._handshake(client, host, log)
        if sock is None:
            self._finish(client, log, started, associated=False)
            return
        conn = Connection(
            sock, max_pdu=self.options.max_pdu, timeout=self.options.acse_timeout,
            max_dataset=self.options.max_instance_bytes,
        )  # fmt: skip
        conn.set_deadline(self.options.acse_timeout - (time.monotonic() - started))
        state = {"associated": False}
        try:
            self._associate_and_serve(conn, client, host, log, state)
        except NetworkError as exc:
            if log.reason is None and log.accepted:
                log.reason = str(exc)
            LOGGER.debug("association from %s ended: %s", host, exc)
        except Exception:  # noqa: BLE001 - one bad association must not stop the SCP
            LOGGER.exception("association from %s failed", host)
            conn.abort()
        finally:
            conn.close()
            self._finish(client, log, started, associated=state["associated"])

    def _finish(
        self, client: socket.socket, log: AssociationLog, started: float, *, associated: bool
    ) -> None:
        log.seconds = time.monotonic() - started
        with self._lock:
            self.associations.append(log)
            self._active.discard(threading.current_thread())
            self._associated -= associated
            self._waiting.pop(client, None)
        if self.handoff is not None:
            if associated:
                self.handoff.free_slot()
            self.handoff.closed(client)
        self.last_activity = time.monotonic()

    def _handshake(
        self, client: socket.socket, host: str, log: AssociationLog
    ) -> ssl.SSLSocket | None:
        """Run the TLS handshake as the server within ``acse_timeout``; None when it failed
        (logged, counted, the connection closed)."""
        assert self._tls is not None
        tls: ssl.SSLSocket | None = None
        try:
            with self._lock:  # wrapping detaches ``client``: the listener must drop the wrapper
                tls = self._tls.wrap_socket(client, server_side=True,
                                            do_handshake_on_connect=False)  # fmt: skip
                if client in self._waiting:
                    self._waiting[client] = tls
            tls.settimeout(self.options.acse_timeout)
            tls.do_handshake()
        except Exception as exc:  # noqa: BLE001 - ssl.SSLError, timeouts, resets: never fatal
            if isinstance(exc, TimeoutError):
                why = f"not finished within {self.options.acse_timeout} s"
            elif isinstance(exc, OSError):
                why = ssl_reason(exc)
            else:
                why = str(exc)
            log.reason = f"TLS handshake failed: {why}"
            with self._lock:
                self.handshake_failures += 1
            LOGGER.warning("TLS handshake with %s failed: %s", host, why)
            for sock in (tls, client):
                if sock is not None:
                    sock.close()
            return None
        log.tls = describe(tls)
        log.certificate = peer_subject(tls)
        return tls

    def _associate_and_serve(
        self,
        conn: Connection,
        client: socket.socket,
        host: str,
        log: AssociationLog,
        state: dict[str, bool],
    ) -> None:
        def judge(rq: AssociateRequest) -> Refusal | None:
            check = self.options.authenticate  # outside the lock: it may take its time
            authenticated = check is None or _authenticated(check, rq)
            with self._lock:  # judged: it leaves the negotiating count, and may take a slot
                refusal = self._judge(rq, host, log, authenticated)
                self._waiting.pop(client, None)
                if refusal is None:
                    self._associated += 1
                    state["associated"] = True
            if self.handoff is not None:
                self.handoff.judged(client)
            return refusal

        def identity_response(rq: AssociateRequest) -> bytes | None:
            # judged and accepted: a verified identity is confirmed when the requestor asks
            identity = rq.identity
            if self.options.authenticate is None or identity is None:
                return None
            return b"" if identity.positive_response else None

        try:
            accepted = accept_association(
                conn, judge, self.accept_abstract,
                network_timeout=self.options.network_timeout, choose_ts=self.choose_ts,
                scp_roles=self.scp_roles, identity_response=identity_response,
            )  # fmt: skip
        except AssociationRejectedError:
            return
        except NetworkError as exc:
            log.reason = str(exc)
            return
        log.accepted = True
        self.serve(conn, accepted, log)

    def _judge(
        self, rq: AssociateRequest, host: str, log: AssociationLog, authenticated: bool = True
    ) -> Refusal | None:
        opts = self.options
        log.calling_ae = rq.calling_ae
        log.username = rq.identity.username if rq.identity and rq.identity.kind <= 2 else None
        reason = opts.allows(rq.calling_ae, host)
        refusal = None
        if reason is not None:
            refusal = Refusal(reason, 1, 1, 3 if "calling AE" in reason else 1)
        elif opts.check_called_ae and rq.called_ae != opts.ae_title:
            refusal = Refusal(f"called AE {rq.called_ae!r} is not {opts.ae_title!r}", 1, 1, 7)
        elif not authenticated:
            who = f"user {log.username!r}" if log.username else "no user identity"
            if rq.identity is not None and log.username is None:
                who = f"a user identity of type {rq.identity.kind}"
            refusal = Refusal(f"{who}: not authenticated", 1, 1, 1)
        elif not self._slot():
            refusal = Refusal("too many associations", 2, 3, 2)
        if refusal is not None:
            log.reason = refusal.reason
            LOGGER.warning("refused association from %s@%s: %s", rq.calling_ae, host,
                           refusal.reason)  # fmt: skip
        return refusal

    def _slot(self) -> bool:
        """Whether an association may take a slot (taken in a worker's shared count: all of
        the workers together stay within ``max_associations``)."""
        if self.handoff is not None:
            return self.handoff.take_slot()
        return self._associated < self.options.max_associations


def _authenticated(check: Callable[[UserIdentity | None], bool], rq: AssociateRequest) -> bool:
    try:
        return bool(check(rq.identity))
    except Exception:  # noqa: BLE001 - a failing check refuses, it does not stop the SCP
        LOGGER.exception("the authenticate callback failed for %s", rq.calling_ae)
        return False


class ListeningService:
    """What every SCP built on a :class:`Listener` offers: its port, its log, a lifetime.

    A service sets ``options`` (:class:`SCPOptions`) and ``_listener`` in its ``__init__`` and
    implements what it does with an association; starting, stopping, ``with`` and waiting for
    idleness are the same for all of them.
    """

    options: SCPOptions
    _listener: Listener

    @property
    def port(self) -> int:
        """The port listened on (useful with ``port=0``)."""
        return self._listener.port

    @property
    def ae_title(self) -> str:
        return self.options.ae_title

    @property
    def associations(self) -> list[AssociationLog]:
        """Every association handled so far, accepted or refused."""
        return self._listener.associations

    @property
    def active_associations(self) -> int:
        return self._listener.active_associations

    @property
    def handshake_failures(self) -> int:
        """TLS handshakes that failed or never finished (see ``associations`` for why)."""
        return self._listener.handshake_failures

    def start(self) -> Self:
        """Bind and start accepting associations (returns at once)."""
        self._listener.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let running associations finish (up to ``timeout``), close."""
        self._listener.stop(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_idle(self, idle: float = 1.0, timeout: float | None = None) -> bool:
        """Block until no association has been active for ``idle`` seconds (True), or timeout."""
        return self._listener.wait_idle(idle, timeout)
