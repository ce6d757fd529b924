"""A Storage SCP that lands every received instance in a lake, as received, durably.

>>> from dicomflow.network import StorageSCP, SCPOptions
>>> opts = SCPOptions(ae_title="LAKE", port=11113, calling_aes=("ORTHANC",))
>>> with StorageSCP("lake/", opts) as scp:  # doctest: +SKIP
...     scp.wait_idle(timeout=60)

Each association runs in its own thread over dicomflow's Upper Layer (:mod:`._ul`), its
messages built and read by :mod:`._dimse`. An association is accepted only from the configured
calling AE titles (and hosts, if given) and for the AE title we answer to; every storage
presentation context offered is accepted with the sender's first transfer syntax, so nothing is
transcoded and nothing is decoded. The C-STORE response is sent only after the instance is
written, fsync'ed (``fsync="each"``) and linked into place; records follow in the background.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from ..pipeline.instance import Instance
from ._dimse import (
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_STORE_RQ,
    SUCCESS,
    UNRECOGNIZED_OPERATION,
    response,
)
from ._errors import AssociationRejectedError, NetworkError
from ._lake import Lake, Landed
from ._options import check_ae_title
from ._store import VERIFICATION, is_storage_class, land_and_answer
from ._ul import AssociateRequest, Connection, Refusal, accept_association

__all__ = ["SCPOptions", "StorageSCP"]

LOGGER = logging.getLogger(__name__)


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
        Concurrent associations; more are refused as "local limit exceeded".
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
    fsync: str = "each"

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

    def allows(self, calling_ae: str, host: str) -> str | None:
        """Why an association would be refused, or None when it is allowed."""
        if "*" not in self.calling_aes and calling_ae not in self.calling_aes:
            return f"calling AE {calling_ae!r} is not allowed"
        if self.hosts is not None and host not in self.hosts:
            return f"host {host} is not allowed"
        return None


@dataclass
class AssociationLog:
    """One association the SCP handled (kept in :attr:`StorageSCP.associations`)."""

    calling_ae: str
    host: str
    accepted: bool
    reason: str | None = None
    stored: int = 0
    failed: int = 0
    seconds: float = 0.0


class StorageSCP:
    """Listen for C-STORE (and C-ECHO) and land instances in a lake; a context manager.

    Parameters
    ----------
    lake
        A :class:`~dicomflow.network.Lake` (shared, not closed by us) or a folder/URL
        (a lake is opened with ``options.fsync`` and ``stages``, and closed on exit).
    options
        :class:`SCPOptions`.
    stages
        Callables ``Instance -> Instance | None`` applied before an instance lands.
    on_instance
        Called as ``on_instance(landed, calling_ae)`` after each C-STORE (in the
        association's thread).
    """

    def __init__(
        self,
        lake: Lake | str,
        options: SCPOptions | None = None,
        *,
        stages: Sequence[Callable[[Instance], Instance | None]] = (),
        on_instance: Callable[[Landed, str], None] | None = None,
    ) -> None:
        self.options = options or SCPOptions()
        self._own_lake = not isinstance(lake, Lake)
        self.lake = Lake(lake, fsync=self.options.fsync, stages=stages) if self._own_lake else lake
        if not self._own_lake and stages:
            raise ConfigError("pass stages to the Lake you share, not to the SCP")
        self.on_instance = on_instance
        self.associations: list[AssociationLog] = []
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._active: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._last_activity = time.monotonic()

    # -- lifetime --------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port listened on (useful with ``port=0``)."""
        if self._server is None:
            return self.options.port
        return self._server.getsockname()[1]

    @property
    def ae_title(self) -> str:
        return self.options.ae_title

    def start(self) -> StorageSCP:
        """Bind and start accepting associations (returns at once)."""
        if self._server is not None:
            return self
        try:
            server = socket.create_server(
                (self.options.host, self.options.port), backlog=64, reuse_port=False
            )
        except OSError as exc:
            raise NetworkError(
                f"cannot listen on {self.options.host}:{self.options.port}: {exc}"
            ) from exc
        server.settimeout(0.2)
        self._server = server
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"dicomflow-scp-{self.port}", daemon=True
        )
        self._thread.start()
        return self

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
        if self._own_lake:
            self.lake.close()
        else:
            self.lake.flush()

    def __enter__(self) -> StorageSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def active_associations(self) -> int:
        with self._lock:
            return len(self._active)

    def wait_idle(self, idle: float = 1.0, timeout: float | None = None) -> bool:
        """Block until no association has been active for ``idle`` seconds (True), or timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self.active_associations and time.monotonic() - self._last_activity >= idle:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    # -- associations ----------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._stopping.is_set():
            try:
                client, address = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)
                continue
            thread = threading.Thread(
                target=self._serve, args=(client, address[0]), name="dicomflow-assoc", daemon=True
            )
            with self._lock:
                self._active.add(thread)
            self._last_activity = time.monotonic()
            thread.start()

    def _serve(self, client: socket.socket, host: str) -> None:
        started = time.monotonic()
        log = AssociationLog("", host, False)
        conn = Connection(client, max_pdu=self.options.max_pdu, timeout=self.options.acse_timeout)
        try:
            self._associate_and_serve(conn, host, log)
        except NetworkError as exc:
            if log.reason is None and log.accepted:
                log.reason = str(exc)
            LOGGER.debug("association from %s ended: %s", host, exc)
        except Exception:  # noqa: BLE001 - one bad association must not stop the SCP
            LOGGER.exception("association from %s failed", host)
            conn.abort()
        finally:
            conn.close()
            log.seconds = time.monotonic() - started
            with self._lock:
                self.associations.append(log)
                self._active.discard(threading.current_thread())
            self._last_activity = time.monotonic()

    def _judge(self, rq: AssociateRequest, host: str, log: AssociationLog) -> Refusal | None:
        opts = self.options
        log.calling_ae = rq.calling_ae
        reason = opts.allows(rq.calling_ae, host)
        refusal = None
        if reason is not None:
            refusal = Refusal(reason, 1, 1, 3 if "calling AE" in reason else 1)
        elif opts.check_called_ae and rq.called_ae != opts.ae_title:
            refusal = Refusal(f"called AE {rq.called_ae!r} is not {opts.ae_title!r}", 1, 1, 7)
        elif self.active_associations > opts.max_associations:
            refusal = Refusal("too many associations", 2, 3, 2)
        if refusal is not None:
            log.reason = refusal.reason
            LOGGER.warning("refused association from %s@%s: %s", rq.calling_ae, host,
                           refusal.reason)  # fmt: skip
        return refusal

    def _associate_and_serve(self, conn: Connection, host: str, log: AssociationLog) -> None:
        try:
            association = accept_association(
                conn, lambda rq: self._judge(rq, host, log),
                lambda uid: uid == VERIFICATION or is_storage_class(uid),
                network_timeout=self.options.network_timeout,
            )  # fmt: skip
        except AssociationRejectedError:
            return
        except NetworkError as exc:
            log.reason = str(exc)
            return
        log.accepted = True
        calling_ae = association.request.calling_ae
        accepted = association.contexts
        for msg in conn.messages():
            self._last_activity = time.monotonic()
            context = accepted.get(msg.context_id)
            if context is None:
                log.reason = f"message on unaccepted presentation context {msg.context_id}"
                conn.abort()
                return
            field = msg.command_field
            if field == C_STORE_RQ:
                landed = land_and_answer(conn, msg, self.lake, context[1], calling_ae, "c-store")
                if landed.status == "failed":
                    log.failed += 1
                else:
                    log.stored += 1
                if self.on_instance is not None:
                    self.on_instance(landed, calling_ae)
            elif field == C_ECHO_RQ:
                conn.send_message(msg.context_id, response(msg.command, SUCCESS))
            elif field == C_CANCEL_RQ:
                continue
            else:
                conn.send_message(msg.context_id, response(msg.command, UNRECOGNIZED_OPERATION))
