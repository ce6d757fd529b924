"""Several receiving processes behind one port (``dicomflow receive --workers N``).

All associations of one :class:`~dicomflow.network.StorageSCP` share one Python process, so
concurrent senders share one interpreter. :class:`ReceivingWorkers` runs ``N`` of them:

* The parent binds the port and accepts every connection. It hands the socket to the worker
  with the fewest connections (``socket.send_fds`` over a Unix ``SOCK_SEQPACKET`` pair); the
  worker serves it as a one-process receiver would (TLS, the ARTIM timer, idle timeouts, the
  PDU and instance limits are all the worker's, per connection).
* **Limits are global.** ``max_associations`` is checked and taken under one lock over an
  array shared by the workers (one count per worker, zeroed when a worker dies).
  ``max_negotiating`` is the parent's: it keeps a duplicate of each connection until its worker
  says it was judged or closed, and when one more connects it shuts the oldest down (its
  worker sees the end, as in one process).
* **Memory is per worker**: the peak resident memory is at most ``N`` times a one-process
  receiver's bound (the spool's memory and the PDU buffer per association), plus the parent's.
* **The lake**: every worker opens the same lake, and each writes its own record parts (every
  part has a name of its own, so no two processes write one file). Only the parent compacts
  parts, every while and when it stops; only the parent adopts files without a record, when
  it starts, before any worker runs. What a worker acknowledged is durable when it was
  acknowledged (``fsync``); a worker killed before writing its records leaves files that the
  next start adopts. The other workers go on; when none is left, :attr:`failed` is set (the
  command then stops with an error, for its supervisor to start it again).
* **Logging**: each worker sends its records of the ``dicomflow.network.scp`` logger (the
  association lines, refusals) and its counts to the parent, which logs the records on that
  logger and sums the counts (:attr:`stats`).
* **Stopping** (:meth:`stop`, SIGTERM or SIGINT in the command): the parent stops accepting
  and tells each worker to stop; a worker lets its associations finish, writes its records and
  exits; one that does not within the timeout is terminated.

Workers are forked before the parent starts a thread (they start at once, with what the
parent imported); a program that already runs threads gets them by ``spawn``, their stages
and ``authenticate`` callback pickled, as for a process pool.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import select
import selectors
import signal
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError
from ..pipeline import Instance
from ._errors import NetworkError
from ._lake import Lake, LakeStats
from ._server import AssociationLog, SCPOptions, bind
from .scp import StorageSCP

__all__ = ["ReceivingWorkers"]

LOGGER = logging.getLogger("dicomflow.network.scp")
_MESSAGE = 1 << 16  # the longest message between parent and worker
_COMPACT_EVERY = 30.0  # seconds between the parent's compactions


@dataclass
class _Worker:
    index: int
    process: Any
    channel: socket.socket
    connections: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    alive: bool = True


class ReceivingWorkers:
    """``workers`` Storage SCP processes landing in the lake at ``root``, behind one port.

    Parameters are those of :class:`~dicomflow.network.Lake` and
    :class:`~dicomflow.network.StorageSCP`; see the module docstring for what is per worker
    and what is global. ``on_line`` gets each association's line (in the parent).
    """

    def __init__(
        self,
        root: str,
        options: SCPOptions,
        *,
        workers: int,
        stages: Sequence[Callable[[Instance], Instance | None]] = (),
        deidentified: Callable[[str], str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        on_line: Callable[[str], None] | None = None,
        table: Any = None,
    ) -> None:
        if workers < 2:
            raise ConfigError("ReceivingWorkers needs 2 workers or more (1: a StorageSCP)")
        self.root = root
        self.options = options
        self.workers = workers
        self.on_line = on_line
        #: a TableWriter the parent brings up to date at each compaction and at the stop (the
        #: workers never touch it: one writer, and no table client before the fork)
        self.table = table
        self._lake_spec: dict[str, Any] = {
            "root": root, "fsync": options.fsync, "stages": tuple(stages),
            "deidentified": deidentified, "storage_options": dict(storage_options or {}),
            "log_level": LOGGER.getEffectiveLevel(),
        }  # fmt: skip
        self._slots = mp.get_context("spawn").Array("i", workers)  # per worker, one lock
        self._workers: list[_Worker] = []
        self._waiting: OrderedDict[tuple[int, int], socket.socket] = OrderedDict()
        self._next_id = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: socket.socket | None = None
        self._selector = selectors.DefaultSelector()
        self.lake: Lake | None = None
        #: association lines received from the workers, in order
        self.lines: list[str] = []
        #: set when every worker has died (killed): the receiver cannot go on
        self.failed = threading.Event()

    @staticmethod
    def default_workers() -> int:
        """The default of ``--workers``: the cores this process may run on."""
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)

    # -- lifetime -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.getsockname()[1])

    def start(self) -> ReceivingWorkers:
        """Bind, start the workers, adopt what a crash left, listen; returns once every
        worker serves."""
        spec = self._lake_spec
        try:
            self._server = bind(self.options, listen=False)  # a port in use fails here, first
            for index in range(self.workers):  # before this process has threads: forked
                self._workers.append(self._spawn(index))
            # the parent's lake: adoption now, compaction later; it never receives
            self.lake = Lake(
                spec["root"], fsync=spec["fsync"], deidentified=spec["deidentified"],
                storage_options=spec["storage_options"], writers=1, table=self.table,
            )  # fmt: skip
            for worker in self._workers:  # connections are taken once every worker serves
                self._wait_ready(worker)
            self._server.listen(64)
        except BaseException:
            self._close_all()
            raise
        self._server.setblocking(False)
        self._selector.register(self._server, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._loop, name="dicomflow-workers", daemon=True)
        self._thread.start()
        return self

    def _spawn(self, index: int) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        blocked = {signal.SIGINT, signal.SIGTERM}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)  # until the worker handles them
        # a forked worker closes what it inherited of the parent's: the port, the other
        # workers' channels (else a parent's death would not end their channels)
        inherited = [w.channel.fileno() for w in self._workers if w.alive and w.index != index]
        if self._server is not None:
            inherited.append(self._server.fileno())
        inherited.append(ours.fileno())
        context = self._context()
        if context.get_start_method() != "fork":
            inherited = []  # a spawned worker inherits only what it is given
        try:
            process = context.Process(
                target=_worker_main, name=f"dicomflow-receive-{index}",
                args=(theirs, self._lake_spec, self.options, self._slots, index, inherited),
            )  # fmt: skip
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
            theirs.close()
        ours.setblocking(True)
        worker = _Worker(index, process, ours)
        self._selector.register(ours, selectors.EVENT_READ, worker)
        return worker

    @staticmethod
    def _context() -> Any:
        """Fork while this process has one thread (a worker starts at once, with what is
        imported); else spawn (a program with threads: its main module must be importable
        without side effects, as for any process pool)."""
        one = threading.active_count() == 1
        return mp.get_context("fork" if one and os.name == "posix" else "spawn")

    def _wait_ready(self, worker: _Worker, timeout: float = 120.0) -> None:
        """Wait for a new worker's first message ("ready": its listener runs)."""
        worker.channel.settimeout(timeout)
        try:
            data = worker.channel.recv(_MESSAGE)
        except TimeoutError:
            data = b""
        finally:
            worker.channel.settimeout(None)
        if not data or not json.loads(data).get("ready"):
            code = worker.process.exitcode
            raise NetworkError(f"receiving worker {worker.index} did not start (exit code {code})")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting; each worker finishes its associations (up to ``timeout``) and
        writes its records; then the parent compacts the record parts and closes."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.channel.send(b'{"stop": true}')
        deadline = time.monotonic() + timeout + 30.0  # + writing the last records
        for worker in self._workers:
            while worker.process.is_alive() and time.monotonic() < deadline:
                self._drain(worker)  # read as it stops: it never waits on a full channel
                worker.process.join(0.1)
            if worker.process.is_alive():
                LOGGER.warning("worker %d did not stop in time: terminated", worker.index)
                worker.process.terminate()
                worker.process.join(5)
            self._drain(worker)  # its last lines and counts
        self._close_all()

    def _close_all(self) -> None:
        for sock in self._waiting.values():
            sock.close()
        self._waiting.clear()
        for worker in self._workers:
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.channel.close()
        if self._server is not None:
            self._server.close()
        self._selector.close()
        if self.lake is not None:
            self.lake.close()  # compacts the workers' parts

    def __enter__(self) -> ReceivingWorkers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- counts ---------------------------------------------------------------------------
    @property
    def stats(self) -> LakeStats:
        """The workers' lake counters summed, with the parent's adoption."""
        total = LakeStats()
        if self.lake is not None:
            total.adopted = self.lake.stats.adopted
            total.not_adopted = self.lake.stats.not_adopted
        with self._lock:
            for s in [w.stats for w in self._workers]:
                total.landed += s.get("landed", 0)
                total.dropped += s.get("dropped", 0)
                total.failed += s.get("failed", 0)
                total.bytes += s.get("bytes", 0)
                total.adopted += s.get("adopted", 0)
                for source, n in dict(s.get("by_source", {})).items():
                    total.by_source[source] = total.by_source.get(source, 0) + n
        return total

    @property
    def active_associations(self) -> int:
        with self._slots.get_lock():
            return int(sum(self._slots[:]))

    # -- the parent's loop ------------------------------------------------------------------
    def _loop(self) -> None:
        last_compact = time.monotonic()
        while not self._stopping.is_set():
            for key, _ in self._selector.select(0.2):
                if key.data is None:
                    self._accept()
                else:
                    self._read(key.data)
            for worker in self._workers:
                if worker.alive and not worker.process.is_alive():
                    if worker.process.exitcode == 0:  # it was told to stop (SIGTERM)
                        worker.alive = False
                        self._drain(worker)
                    else:
                        self._lost(worker)
            if time.monotonic() - last_compact >= _COMPACT_EVERY and self.lake is not None:
                last_compact = time.monotonic()
                try:
                    self.lake.compact()
                except Exception as exc:  # noqa: BLE001 - the parts stay readable
                    LOGGER.warning("compacting the lake's records failed: %s", exc)
                try:
                    self.lake.catch_up_table()
                except Exception as exc:  # noqa: BLE001 - the records hold it: retried later
                    LOGGER.warning("the lake's table could not catch up: %s", exc)

    def _accept(self) -> None:
        assert self._server is not None
        try:
            client, address = self._server.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            LOGGER.warning("accept failed: %s", exc)
            time.sleep(0.05)
            return
        try:
            worker = min((w for w in self._workers if w.alive), key=lambda w: w.connections)
            self._next_id += 1
            key = (worker.index, self._next_id)
            note = json.dumps({"id": self._next_id, "host": address[0]}).encode()
            socket.send_fds(worker.channel, [note], [client.fileno()])
        except (ValueError, OSError) as exc:  # no worker alive, or its channel broke
            LOGGER.warning("could not hand a connection from %s to a worker: %s", address[0], exc)
            client.close()
            return
        worker.connections += 1
        self._waiting[key] = client  # our copy: closed once judged or closed
        if len(self._waiting) > self.options.max_negotiating:
            _, oldest = self._waiting.popitem(last=False)
            LOGGER.warning("dropped the oldest of %d connections still negotiating",
                           self.options.max_negotiating)  # fmt: skip
            with contextlib.suppress(OSError):  # the worker's copy sees the end
                oldest.shutdown(socket.SHUT_RDWR)
            oldest.close()

    def _read(self, worker: _Worker) -> None:
        try:
            data = worker.channel.recv(_MESSAGE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._selector.unregister(worker.channel)
            return
        self._handle(worker, json.loads(data))

    def _handle(self, worker: _Worker, message: dict[str, Any]) -> None:
        if "judged" in message or "closed" in message:
            key = (worker.index, int(message.get("judged", message.get("closed", 0))))
            sock = self._waiting.pop(key, None)
            if sock is not None:
                sock.close()
            if "closed" in message:
                worker.connections -= 1
        if "log" in message:  # a worker's log record, as its logger would have logged it
            level, text = message["log"]
            LOGGER.log(int(level), "%s", text)
        if "line" in message:
            self.lines.append(message["line"])
            if self.on_line is not None:
                self.on_line(message["line"])
        if "stats" in message:
            with self._lock:
                worker.stats = message["stats"]

    def _drain(self, worker: _Worker) -> None:
        """Read what a worker left on its channel, without waiting."""
        while True:
            try:
                data = worker.channel.recv(_MESSAGE, socket.MSG_DONTWAIT)
            except OSError:  # nothing more now (BlockingIOError), or closed
                return
            if not data:
                return
            self._handle(worker, json.loads(data))

    def _lost(self, worker: _Worker) -> None:
        """A worker died (killed): free its slots, drop its connections, keep its counts; the
        others go on. With none left the receiver has failed (:attr:`failed`)."""
        LOGGER.warning("worker %d ended (exit code %s); files it acknowledged without a "
                       "record are adopted at the next start", worker.index,
                       worker.process.exitcode)  # fmt: skip
        worker.alive = False
        self._drain(worker)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(worker.channel)
        with self._slots.get_lock():
            self._slots[worker.index] = 0
        for key in [k for k in self._waiting if k[0] == worker.index]:
            self._waiting.pop(key).close()
        if not any(w.alive for w in self._workers):
            LOGGER.error("no receiving worker is left: stopping")
            self.failed.set()


# -- a worker --------------------------------------------------------------------------------


class _Handoff:
    """A worker's side: connections from the parent, notes back to it, the shared slots."""

    def __init__(self, channel: socket.socket, slots: Any, index: int, limit: int) -> None:
        self.channel = channel
        self.slots = slots
        self.index = index
        self.limit = limit
        self._ids: dict[socket.socket, int] = {}  # a connection -> the parent's id for it
        self._send_lock = threading.Lock()
        self.stop = threading.Event()

    def take(self) -> tuple[socket.socket, str] | None:
        """The next connection (None: none within 0.2 s); sets :attr:`stop` at the end."""
        try:
            readable, _, _ = select.select([self.channel], [], [], 0.2)
            if not readable:
                return None
            data, fds, _, _ = socket.recv_fds(self.channel, _MESSAGE, 1)
        except (OSError, ValueError):
            data, fds = b"", []
        if not data:
            self.stop.set()
            return None
        message = json.loads(data)
        if message.get("stop") or not fds:
            self.stop.set()
            return None
        client = socket.socket(fileno=fds[0])
        self._ids[client] = int(message["id"])
        return client, str(message["host"])

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode()[:_MESSAGE]
        with self._send_lock, contextlib.suppress(OSError):
            self.channel.send(data)

    def judged(self, client: socket.socket) -> None:
        cid = self._ids.get(client)
        if cid is not None:
            self.send({"judged": cid})

    def closed(self, client: socket.socket) -> None:
        cid = self._ids.pop(client, None)
        if cid is not None:
            self.send({"closed": cid})

    def take_slot(self) -> bool:
        with self.slots.get_lock():
            if sum(self.slots[:]) >= self.limit:
                return False
            self.slots[self.index] += 1
            return True

    def free_slot(self) -> None:
        with self.slots.get_lock():
            self.slots[self.index] = max(0, self.slots[self.index] - 1)


class _ToParent(logging.Handler):
    """A worker's log records, sent to the parent as text."""

    def __init__(self, handoff: _Handoff) -> None:
        super().__init__()
        self.handoff = handoff

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.handoff.send({"log": [record.levelno, self.format(record)]})
        except Exception:  # noqa: BLE001 - logging never fails the worker
            self.handleError(record)


def _worker_main(
    channel: socket.socket,
    spec: dict[str, Any],
    options: SCPOptions,
    slots: Any,
    index: int,
    inherited: Sequence[int] = (),
) -> None:
    """One worker process: a Storage SCP fed by the parent until it says stop."""
    for fd in inherited:  # forked: the parent's sockets are not ours
        with contextlib.suppress(OSError):
            os.close(fd)
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides (a Ctrl-C hits the group)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    handoff = _Handoff(channel, slots, index, options.max_associations)
    logger = logging.getLogger(LOGGER.name)  # its records go to the parent, which logs them
    for handler in list(logger.handlers):  # a forked worker has the parent's
        logger.removeHandler(handler)
    logger.addHandler(_ToParent(handoff))
    logger.setLevel(spec.get("log_level", logging.INFO))
    logger.propagate = False
    lake = Lake(
        spec["root"], fsync=spec["fsync"], stages=spec["stages"],
        deidentified=spec["deidentified"], storage_options=spec["storage_options"],
        adopt=False, compact_parts=0,
    )  # fmt: skip

    def on_association(log: AssociationLog, line: str) -> None:
        handoff.send({"line": line})

    scp = StorageSCP(lake, options, on_association=on_association, handoff=handoff)
    scp.start()
    handoff.send({"ready": True})
    last: dict[str, Any] = {}
    try:
        while not (stop.is_set() or handoff.stop.is_set()):
            stop.wait(0.5)
            now = asdict(lake.stats)
            if now != last:
                handoff.send({"stats": now})
                last = now
    finally:
        scp.stop()
        lake.close()
        handoff.send({"stats": asdict(lake.stats)})
        channel.close()
