"""Progress: one event type, one consumer protocol, three consumers.

A long operation (a scan, a pipeline run, a pull) *emits* :class:`ProgressEvent` s: it calls a
consumer, any callable taking one event, as work completes, and once more at the end with
``finished=True``. What is shown is the consumer's business:

* :class:`Progress`: a live rich bar on a terminal (totals when known), nothing elsewhere;
* :class:`ProgressLog`: one line every N seconds (count, total, rate, ETA) to a stream or a
  logger, for cron jobs and containers where stderr is not a terminal;
* :class:`ProgressCallback`: a plain function (a notebook widget's update), at most every N
  seconds. A bare function is a consumer too: it gets every event;
* :class:`ProgressFile`: the latest state as a small JSON file, replaced whole at most every
  N seconds, for another process to read (``dicomflow serve`` shows it on its browse page).

:func:`progress_for` is the command line's choice: the bar on a terminal, log lines otherwise.

>>> seen = []
>>> emit = ProgressCallback(seen.append)
>>> emit(ProgressEvent("scanning", unit="files", done=256, elapsed=0.5))
>>> seen[0].rate
512.0
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any, Protocol

from ..errors import ConfigError

__all__ = [
    "PROGRESS_FILE",
    "Progress",
    "ProgressCallback",
    "ProgressConsumer",
    "ProgressEvent",
    "ProgressFile",
    "ProgressLog",
    "as_consumer",
    "progress_for",
]


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """Where one task stands: ``done`` of ``total`` (None when not known) ``unit`` s.

    ``failed`` counts items that ended failed (they are in ``done`` too), ``bytes`` the bytes
    moved so far, ``elapsed`` the seconds since the task started. ``detail`` is free: the
    emitter's own words or counters. ``finished`` is set on the last event of the task.

    Emitters with more to say extend this class by one level (the scan's ``ScanEvent``, the
    pull's ``PullEvent``), so a callback written for them keeps its fields and every consumer
    still sees a ``ProgressEvent``.
    """

    task: str
    unit: str = "items"
    done: int = 0
    total: int | None = None
    failed: int = 0
    bytes: int = 0
    elapsed: float = 0.0
    detail: Any = None
    finished: bool = False

    @property
    def rate(self) -> float:
        """Units per second so far (0 before any time has passed)."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def byte_rate(self) -> float:
        """Bytes per second so far (0 before any time has passed)."""
        return self.bytes / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far, when the total is known and work has started."""
        if self.total is None or self.rate <= 0:
            return None
        return max(self.total - self.done, 0) / self.rate


class ProgressConsumer(Protocol):
    """Anything called with each event: ``consumer(event)``."""

    def __call__(self, event: ProgressEvent) -> None: ...


def _clock_text(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """A live bar with count and rate when stderr is a terminal; a consumer of events.

    Used as a context manager it also closes the bar when the block ends early. ``label``,
    ``unit`` and ``total`` default to the events'.

    >>> with Progress("scanning", unit="files", enabled=False) as bar:
    ...     bar(ProgressEvent("scanning", unit="files", done=10))
    ...     bar.update(20)
    """

    def __init__(
        self,
        label: str | None = None,
        *,
        unit: str | None = None,
        total: int | None = None,
        enabled: bool = True,
    ):
        self.label = label
        self.unit = unit
        self.total = total
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None
        self._closed = False
        self._lock = threading.Lock()

    def __enter__(self) -> Progress:
        return self

    def _start(self, label: str, unit: str, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        count = MofNCompleteColumn() if total else TextColumn("{task.completed:,}")
        rate = TextColumn(unit + "  {task.fields[rate]}")
        columns: list[Any] = [TextColumn(f"{label:<10}"), BarColumn(), count, rate,
                              TimeElapsedColumn()]  # fmt: skip
        if total:  # the time left, once there is a total to reach
            columns += [TextColumn("ETA"), TimeRemainingColumn()]
        self._progress = RichProgress(*columns, console=Console(stderr=True))
        self._progress.__enter__()
        self._task = self._progress.add_task(label, total=total, rate="")

    def __call__(self, event: ProgressEvent) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self._closed:
                return
            unit = self.unit or event.unit
            total = self.total if self.total is not None else event.total
            if self._progress is None:
                self._start(self.label or event.task, unit, total)
            rate = f"{event.rate:,.0f} {unit}/s" if event.elapsed > 0 else ""
            self._progress.update(self._task, completed=event.done, total=total, rate=rate)
            if event.finished:
                self._stop(None, None, None)

    def update(self, done: int) -> None:
        """Set the number of units done so far (without an event)."""
        if not self.enabled:
            return
        with self._lock:
            if self._closed:
                return
            if self._progress is None:
                self._start(self.label or "", self.unit or "items", self.total)
            elapsed = self._progress.tasks[0].elapsed or 0.0
            unit = self.unit or "items"
            rate = f"{done / elapsed:,.0f} {unit}/s" if elapsed > 0 else ""
            self._progress.update(self._task, completed=done, rate=rate)

    def _stop(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)
            self._progress = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._stop(exc_type, exc, tb)


class ProgressLog:
    """One line per task every ``interval`` seconds, and one when the task finishes.

    ``target`` is a stream (default ``sys.stderr``) or a :class:`logging.Logger` (lines at
    INFO). A line reads ``running: 1,200/5,000 instances (24%), 3 failed, 40.0 instances/s,
    ETA 0:01:35``; without a total it has no percentage and no ETA; with bytes, the MB
    before the rate and the MB/s after it.

    >>> import io
    >>> out = io.StringIO()
    >>> log = ProgressLog(out, interval=0)
    >>> log(ProgressEvent("scanning", unit="files", done=500, total=1000, elapsed=2.0))
    >>> out.getvalue()
    'scanning: 500/1,000 files (50%), 250.0 files/s, ETA 0:00:02\\n'
    """

    def __init__(
        self,
        target: IO[str] | logging.Logger | None = None,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.target = target
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> ProgressLog:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __call__(self, event: ProgressEvent) -> None:
        now = self.clock()
        with self._lock:
            last = self._last.setdefault(event.task, now)
            if not event.finished and (now - last < self.interval or event.done == 0):
                return
            self._last[event.task] = now
        self._write(self.line(event))

    @staticmethod
    def line(event: ProgressEvent) -> str:
        """The text of one line for ``event``."""
        count = f"{event.done:,}"
        if event.total is not None:
            count += f"/{event.total:,}"
        parts = [f"{event.task}: {count} {event.unit}"]
        if event.total:
            parts[0] += f" ({100 * event.done / event.total:.0f}%)"
        if event.failed:
            parts.append(f"{event.failed:,} failed")
        if event.bytes:
            parts.append(f"{event.bytes / 1e6:,.1f} MB")
        parts.append(f"{event.rate:,.1f} {event.unit}/s")
        if event.bytes:
            parts.append(f"{event.byte_rate / 1e6:,.1f} MB/s")
        if event.finished:
            parts.append(f"finished in {_clock_text(event.elapsed)}")
        elif event.eta is not None:
            parts.append(f"ETA {_clock_text(event.eta)}")
        return ", ".join(parts)

    def _write(self, text: str) -> None:
        if isinstance(self.target, logging.Logger):
            self.target.info(text)
            return
        stream = self.target if self.target is not None else sys.stderr
        print(text, file=stream, flush=True)


class ProgressCallback:
    """A plain function as a consumer, called at most every ``every`` seconds per task (and
    always with the last event): a notebook's widget or print, without one call per batch."""

    def __init__(
        self,
        fn: Callable[[ProgressEvent], Any],
        *,
        every: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.fn = fn
        self.every = every
        self.clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        if self.every > 0 and not event.finished:
            now = self.clock()
            with self._lock:
                last = self._last.get(event.task)
                if last is not None and now - last < self.every:
                    return
                self._last[event.task] = now
        self.fn(event)


def _now_text() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


#: The name of a progress file in a lake's ``_lake/`` folder and in a run's manifest folder.
PROGRESS_FILE = "progress.json"

#: The states a progress file can say: running, finished, or ended early (stopped, failed).
PROGRESS_STATES = ("running", "finished", "stopped", "failed")


class ProgressFile:
    """The latest event as a JSON file, replaced whole at most every ``every`` seconds.

    The file holds one object: ``task``, ``unit``, ``done``, ``total`` (null when not known),
    ``failed``, ``bytes``, ``rate`` (units per second), ``eta`` (seconds, null when not known),
    ``elapsed``, ``state`` (one of :data:`PROGRESS_STATES`), ``started`` and ``updated``
    (UTC, ISO 8601) and ``pid``. Counts only: no file name or UID, so it may sit inside a
    shareable lake. Each write goes to a temporary file in the same folder, then replaces the
    file (``os.replace``), so a reader sees the old state or the new one, never half of one.
    It is not fsynced: it is a view of a run, rewritten every second, not a record.

    Used as a context manager, a task that ends without a finished event is written as
    ``failed`` (an exception) or ``stopped``.

    >>> import json, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "progress.json")
    >>> with ProgressFile(path, every=0) as out:
    ...     out(ProgressEvent("running", unit="instances", done=5, total=10, elapsed=1.0))
    >>> doc = json.load(open(path))
    >>> doc["state"], doc["done"], doc["total"], doc["rate"]
    ('stopped', 5, 10, 5.0)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = os.fspath(path)
        self.every = every
        self.clock = clock
        self._last: float | None = None
        self._event: ProgressEvent | None = None
        self._state = "running"
        self._started = _now_text()
        self._lock = threading.Lock()

    def __enter__(self) -> ProgressFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # an exception failed the task; an interrupt (Ctrl-C) or an early return stopped it
        self.close("failed" if exc_type is not None and issubclass(exc_type, Exception)
                   else "stopped")  # fmt: skip

    def __call__(self, event: ProgressEvent, state: str | None = None) -> None:
        """Keep ``event``; write it when ``every`` seconds have passed, when it is the last
        one (``finished``), or when ``state`` is given (it then overrides the event's)."""
        now = self.clock()
        with self._lock:
            self._event = event
            if state is None:
                state = "finished" if event.finished else "running"
            due = self._last is None or now - self._last >= self.every
            if state == "running" and not due:
                return
            self._last = now
            self._state = state
            self._write(event, state)

    def close(self, state: str = "stopped") -> None:
        """Write ``state`` (default ``stopped``) unless the file already says how it ended."""
        with self._lock:
            if self._state != "running":
                return
            self._state = state
            event = self._event or ProgressEvent("")
            self._write(event, state)

    def _write(self, event: ProgressEvent, state: str) -> None:
        if state not in PROGRESS_STATES:
            raise ConfigError(f"progress state {state!r}: expected one of {PROGRESS_STATES}")
        doc = {
            "task": event.task,
            "unit": event.unit,
            "done": event.done,
            "total": event.total,
            "failed": event.failed,
            "bytes": event.bytes,
            "rate": round(event.rate, 3),
            "eta": None if event.eta is None or state != "running" else round(event.eta, 1),
            "elapsed": round(event.elapsed, 3),
            "state": state,
            "started": self._started,
            "updated": _now_text(),
            "pid": os.getpid(),
        }
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        temporary = os.path.join(folder, f".{os.path.basename(self.path)}.{os.getpid()}.tmp")
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        os.replace(temporary, self.path)


def read_progress(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The object a :class:`ProgressFile` wrote at ``path``, with ``age`` (seconds since it
    was updated) added; None when there is no such file.

    Raises
    ------
    ConfigError
        The file is not a progress file (not JSON, or no ``state``).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("state") not in PROGRESS_STATES:
        raise ConfigError(f"{os.fspath(path)!r} is not a dicomflow progress file")
    try:
        updated = dt.datetime.fromisoformat(str(doc.get("updated")))
        doc["age"] = round((dt.datetime.now(dt.UTC) - updated).total_seconds(), 1)
    except (TypeError, ValueError):
        doc["age"] = None
    return doc


def as_consumer(progress: Any) -> ProgressConsumer | None:
    """What a ``progress=`` argument means: False or None nothing, True the terminal bar,
    a callable itself."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return Progress()
    if not callable(progress):
        raise TypeError(f"progress must be a bool or a callable, got {type(progress).__name__}")
    return progress


#: Environment variable: seconds between two progress lines when stderr is not a terminal.
EVERY_ENV = "DICOMFLOW_PROGRESS_EVERY"


def _interval(interval: float | None) -> float:
    if interval is not None:
        return interval
    text = os.environ.get(EVERY_ENV)
    if not text:
        return 10.0
    try:
        every = float(text)
    except ValueError:
        every = -1.0
    if not every >= 0:
        raise ConfigError(f"{EVERY_ENV} must be a number of seconds >= 0, got {text!r}")
    return every


def progress_for(
    stream: IO[str] | None = None, *, interval: float | None = None, quiet: bool = False
) -> Progress | ProgressLog:
    """The command line's consumer: a bar when ``stream`` (stderr) is a terminal, a log line
    every ``interval`` seconds otherwise, nothing shown when ``quiet``. Use it as a context
    manager, so that a bar is closed however the command ends.

    ``interval`` defaults to ``$DICOMFLOW_PROGRESS_EVERY`` (seconds), else 10."""
    interval = _interval(interval)
    if quiet:
        return Progress(enabled=False)
    stream = stream if stream is not None else sys.stderr
    if stream.isatty():
        return Progress()
    return ProgressLog(stream, interval=interval)
