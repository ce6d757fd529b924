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

import time
from collections.abc import Callable, Sequence

from ..errors import ConfigError
from ..pipeline import Instance
from ._dimse import (
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_STORE_RQ,
    SUCCESS,
    UNRECOGNIZED_OPERATION,
    response,
)
from ._lake import Lake, Landed
from ._server import AssociationLog, Listener, ListeningService, SCPOptions
from ._store import VERIFICATION, is_storage_class, land_and_answer
from ._ul import Accepted, Connection

__all__ = ["AssociationLog", "SCPOptions", "StorageSCP"]


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
        self.lake: Lake = (
            lake if isinstance(lake, Lake) else Lake(lake, fsync=self.options.fsync, stages=stages)
        )
        if not self._own_lake and stages:
            raise ConfigError("pass stages to the Lake you share, not to the SCP")
        self.on_instance = on_instance
        self._listener = Listener(
            self.options, self._serve,
            lambda uid: uid == VERIFICATION or is_storage_class(uid),
            name="dicomflow-scp",
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
