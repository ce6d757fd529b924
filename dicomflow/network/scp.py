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
A data set larger than the lake's spool memory goes to a file as it arrives (see
:mod:`._spool`), so memory does not grow with the instance (up to
``SCPOptions.max_instance_bytes``, beyond which the association is aborted).

Every association ends with one line at INFO on the ``dicomflow.network.scp`` logger: the
calling AE and address, the instances stored and failed, the data set bytes, the duration and
how it ended (released, aborted, timed out), e.g.
``association MODALITY@10.0.0.7: 120 instances, 0 failed, 63.2 MB in 1.9 s, released``.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..pipeline import Instance
from ..runtime import ProgressEvent
from ._dimse import (
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_STORE_RQ,
    SUCCESS,
    UNRECOGNIZED_OPERATION,
    response,
)
from ._errors import AssociationAbortedError, NetworkError, NetworkTimeoutError
from ._lake import Lake, Landed
from ._server import AssociationLog, Handoff, Listener, ListeningService, SCPOptions
from ._store import VERIFICATION, is_storage_class, land_and_answer
from ._ul import Accepted, Connection

__all__ = [
    "AssociationLog",
    "ReceiveEvent",
    "ReceiveMeter",
    "SCPOptions",
    "StorageSCP",
    "association_line",
]

if TYPE_CHECKING:
    from ._workers import ReceivingWorkers

LOGGER = logging.getLogger("dicomflow.network.scp")


def association_line(log: AssociationLog, seconds: float, outcome: str) -> str:
    """The line logged when an association ends (see the module docstring)."""
    return (
        f"association {log.calling_ae or '?'}@{log.host}: {log.stored:,} instances, "
        f"{log.failed:,} failed, {log.bytes / 1e6:,.1f} MB in {seconds:.1f} s, {outcome}"
    )


@dataclass(frozen=True, slots=True)
class ReceiveEvent(ProgressEvent):
    """A receiver's running counts, for any progress consumer: ``done`` instances (landed,
    dropped or failed) and ``bytes`` landed since it started, ``failed`` among them; its
    ``rate`` and ``byte_rate`` are over the last ``window`` seconds (a receiver waits most of
    its life, so the average since the start says little)."""

    task: str = "receiving"
    unit: str = "instances"
    window: float = 0.0
    window_done: int = 0
    window_bytes: int = 0

    @property
    def rate(self) -> float:
        return self.window_done / self.window if self.window > 0 else 0.0

    @property
    def byte_rate(self) -> float:
        return self.window_bytes / self.window if self.window > 0 else 0.0


class ReceiveMeter:
    """Makes a :class:`ReceiveEvent` of a lake's counters (or the summed counters of
    receiving workers) each time it is asked (every second or so), its rates over the last
    ``window`` seconds."""

    def __init__(self, lake: Lake | ReceivingWorkers, window: float = 10.0) -> None:
        self.lake = lake
        self.window = window
        self.started = time.monotonic()
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque()

    def event(self, *, finished: bool = False) -> ReceiveEvent:
        stats = self.lake.stats
        now = time.monotonic()
        done = stats.landed + stats.dropped + stats.failed
        self._samples.append((now, done, stats.bytes))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        then, done_then, bytes_then = self._samples[0]
        return ReceiveEvent(
            done=done, failed=stats.failed, bytes=stats.bytes, elapsed=now - self.started,
            finished=finished, window=now - then, window_done=done - done_then,
            window_bytes=stats.bytes - bytes_then,
        )  # fmt: skip


class StorageSCP(ListeningService):
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
    on_association
        Called with the association's :class:`AssociationLog` and the logged line when an
        accepted association ends (in its thread).
    handoff
        Take connections from a parent process instead of binding the port (a worker of
        :class:`~dicomflow.network.ReceivingWorkers`).
    """

    def __init__(
        self,
        lake: Lake | str,
        options: SCPOptions | None = None,
        *,
        stages: Sequence[Callable[[Instance], Instance | None]] = (),
        on_instance: Callable[[Landed, str], None] | None = None,
        on_association: Callable[[AssociationLog, str], None] | None = None,
        handoff: Handoff | None = None,
    ) -> None:
        self.options = options or SCPOptions()
        self._own_lake = not isinstance(lake, Lake)
        self.lake: Lake = (
            lake if isinstance(lake, Lake) else Lake(lake, fsync=self.options.fsync, stages=stages)
        )
        if not self._own_lake and stages:
            raise ConfigError("pass stages to the Lake you share, not to the SCP")
        self.on_instance = on_instance
        self.on_association = on_association
        self._listener = Listener(
            self.options, self._serve,
            lambda uid: uid == VERIFICATION or is_storage_class(uid),
            name="dicomflow-scp", handoff=handoff,
        )  # fmt: skip

    # -- lifetime (the rest from ListeningService) ---------------------------------------
    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let running associations finish (up to ``timeout``), close the lake."""
        self._listener.stop(timeout)
        if self._own_lake:
            self.lake.close()
        else:
            self.lake.flush()

    # -- one association -------------------------------------------------------------------
    def _serve(self, conn: Connection, association: Accepted, log: AssociationLog) -> None:
        started = time.monotonic()
        outcome = "released"
        spooler = self.lake.spooler(
            {cid: ts for cid, (_, ts) in association.contexts.items()},
            association.request.calling_ae,
        )
        conn.spool = spooler
        try:
            self._messages(conn, association, log)
        except NetworkTimeoutError as exc:
            outcome = f"timed out ({exc})"
            raise
        except AssociationAbortedError as exc:
            outcome = f"aborted ({exc})"
            raise
        except NetworkError as exc:
            outcome = f"ended ({exc})"
            raise
        except Exception as exc:
            outcome = f"failed ({type(exc).__name__}: {exc})"
            raise
        finally:
            if spooler is not None:  # an association that ended in the middle of a data set
                spooler.close()
            if log.reason is not None and outcome == "released":
                outcome = f"aborted ({log.reason})"
            line = association_line(log, time.monotonic() - started, outcome)
            LOGGER.info(line)
            if self.on_association is not None:
                self.on_association(log, line)

    def _messages(self, conn: Connection, association: Accepted, log: AssociationLog) -> None:
        calling_ae = association.request.calling_ae
        accepted = association.contexts
        for msg in conn.messages():
            self._listener.last_activity = time.monotonic()
            context = accepted.get(msg.context_id)
            if context is None:
                log.reason = f"message on unaccepted presentation context {msg.context_id}"
                conn.abort()
                return
            field = msg.command_field
            if field == C_STORE_RQ:
                log.bytes += msg.spool.size if msg.spool is not None else len(msg.dataset or b"")
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
