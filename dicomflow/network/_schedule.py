"""When a pull may retrieve: a time window (local time) and rate limits (token buckets).

A PACS administrator's two usual conditions for a bulk pull are "only at night" and "not more
than N studies an hour". A :class:`Gate` holds both and is passed before each retrieve
(C-GET, C-MOVE or WADO-RS request); it answers by waiting, or, outside the window with
``outside="stop"``, by raising :class:`OutsideWindow` so the pull ends cleanly to be resumed.

>>> w = Window.parse("20:00-06:00")
>>> import datetime as dt
>>> w.is_open(dt.datetime(2024, 1, 1, 23, 30)), w.is_open(dt.datetime(2024, 1, 1, 12, 0))
(True, False)
>>> w.opens_in(dt.datetime(2024, 1, 1, 19, 0))
3600.0
>>> b = TokenBucket(rate=1.0, capacity=1.0, clock=lambda: 0.0)
>>> b.reserve(), b.reserve(), b.reserve()
(0.0, 1.0, 2.0)
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["Gate", "OutsideWindow", "TokenBucket", "Window", "duration_text"]

_SPAN = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
_DAY = 24 * 60


class OutsideWindow(Exception):  # noqa: N818 - a signal, not an error: the pull resumes later
    """Raised by :meth:`Gate.before_retrieve` outside the window when told to stop there."""


def duration_text(seconds: float) -> str:
    """``3 h 05 min``, ``12 min``, ``40 s``: how long a wait is, for people."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass(frozen=True)
class Window:
    """Times of day (local time) when retrieves may start: ``20:00-06:00`` (crossing midnight),
    several spans comma separated (``12:00-13:00,20:00-06:00``). A span includes its start
    minute and excludes its end; ``24:00`` is accepted as an end.
    """

    spans: tuple[tuple[int, int], ...]  # (start, end) in minutes after midnight

    @classmethod
    def parse(cls, text: str) -> Window:
        """Parse ``HH:MM-HH:MM[,HH:MM-HH:MM...]``.

        Raises
        ------
        ConfigError
            A span that is not ``HH:MM-HH:MM``, a time out of range, or an empty span.
        """
        spans = []
        for part in text.split(","):
            match = _SPAN.match(part.strip())
            if not match:
                raise ConfigError(
                    f"window {text!r}: expected HH:MM-HH:MM in local time, e.g. 20:00-06:00 "
                    "(several comma separated)"
                )
            h1, m1, h2, m2 = (int(g) for g in match.groups())
            start, end = h1 * 60 + m1, h2 * 60 + m2
            if h1 > 23 or m1 > 59 or m2 > 59 or end > _DAY:
                raise ConfigError(f"window {text!r}: {part.strip()} is not a time of day")
            if start == end:
                raise ConfigError(
                    f"window {text!r}: {part.strip()} is empty; leave the window out to "
                    "retrieve at any time"
                )
            spans.append((start, end))
        return cls(tuple(spans))

    def __str__(self) -> str:
        return ",".join(f"{s // 60:02d}:{s % 60:02d}-{e // 60:02d}:{e % 60:02d}"
                        for s, e in self.spans)  # fmt: skip

    def is_open(self, when: dt.datetime) -> bool:
        """Whether a retrieve may start at ``when`` (a naive local time)."""
        minute = when.hour * 60 + when.minute
        for start, end in self.spans:
            if start < end and start <= minute < end:
                return True
            if start > end and (minute >= start or minute < end % _DAY):
                return True
        return False

    def opens_in(self, when: dt.datetime) -> float:
        """Seconds from ``when`` until the window next opens (0 when it is open)."""
        if self.is_open(when):
            return 0.0
        midnight = when.replace(hour=0, minute=0, second=0, microsecond=0)
        waits = []
        for start, _ in self.spans:
            opening = midnight + dt.timedelta(minutes=start)
            if opening <= when:
                opening += dt.timedelta(days=1)
            waits.append((opening - when).total_seconds())
        return min(waits)

    def next_opening(self, when: dt.datetime) -> dt.datetime:
        """When the window next opens after ``when`` (``when`` itself when open)."""
        return when + dt.timedelta(seconds=self.opens_in(when))


class TokenBucket:
    """A token bucket: ``rate`` tokens a second, holding at most ``capacity``.

    :meth:`reserve` takes the tokens for one request and says how long to wait before
    starting it. A request may cost more than the bucket holds (a series of 500 instances
    against a limit of 10 a second): it waits until the bucket is full, starts, and leaves the
    bucket in debt, which the next request waits out. So over any period ``T`` the requests
    started cost at most ``capacity + rate * T`` plus the last request's cost.

    ``clock`` (seconds, monotonic) is injectable for tests. Thread-safe: concurrent callers
    get successive slots.
    """

    def __init__(
        self,
        rate: float,
        capacity: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or capacity <= 0:
            raise ConfigError("a rate limit must be > 0")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self.clock = clock
        self._tokens = self.capacity
        self._stamp = clock()  # the time self._tokens is counted at (may be in the future)
        self._lock = threading.Lock()

    def reserve(self, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; returns the seconds to wait before the request may start."""
        with self._lock:
            now = self.clock()
            at = max(now, self._stamp)
            tokens = min(self.capacity, self._tokens + (at - self._stamp) * self.rate)
            need = min(float(cost), self.capacity)
            extra = max(0.0, (need - tokens) / self.rate)
            start = at + extra
            self._tokens = tokens + extra * self.rate - cost
            self._stamp = start
            return start - now


@dataclass
class Gate:
    """The window and the rate limits a pull's retrieves pass, in that order.

    Parameters
    ----------
    window
        When retrieves may start (None: any time).
    outside
        ``"wait"`` (sleep until the window opens) or ``"stop"`` (raise :class:`OutsideWindow`).
    studies
        A bucket of studies (one token for each study's first retrieve), or None.
    instances
        A bucket of instances (a retrieve costs the instances it asks for), or None.
    now
        The local time (injectable for tests).
    sleep
        Waits this many seconds; returns True when the pull is stopping (injectable).
    on_wait
        Told ``(reason, seconds)`` before each wait.
    """

    window: Window | None = None
    outside: str = "wait"
    studies: TokenBucket | None = None
    instances: TokenBucket | None = None
    now: Callable[[], dt.datetime] = dt.datetime.now
    sleep: Callable[[float], bool] = lambda seconds: threading.Event().wait(seconds)
    on_wait: Callable[[str, float], None] | None = None

    def __post_init__(self) -> None:
        if self.outside not in ("wait", "stop"):
            raise ConfigError(f"outside={self.outside!r}: expected 'wait' or 'stop'")
        self._charged: set[str] = set()
        self._lock = threading.Lock()

    def window_closed(self) -> str | None:
        """Why a retrieve may not start now (the window is closed), else None."""
        if self.window is None:
            return None
        when = self.now()
        if self.window.is_open(when):
            return None
        opening = self.window.next_opening(when)
        return (
            f"outside the window {self.window} (local time {when:%H:%M}; it opens at "
            f"{opening:%H:%M}, in {duration_text((opening - when).total_seconds())})"
        )

    def wait_for_window(self) -> float:
        """Wait until the window is open (or raise :class:`OutsideWindow` when told to stop
        outside it); returns the seconds waited, or -1 when the pull is stopping."""
        waited = 0.0
        while (reason := self.window_closed()) is not None:
            if self.outside == "stop":
                raise OutsideWindow(f"{reason}: resume later (run the same pull again)")
            assert self.window is not None
            seconds = self.window.opens_in(self.now())
            if self.on_wait is not None and waited == 0.0:
                self._tell(f"{reason}: waiting", seconds)
            step = min(max(seconds, 1.0), 60.0)  # wake up now and then: the clock may jump
            if self.sleep(step):
                return -1.0
            waited += step
        return waited

    def before_retrieve(self, study: str, instances: int) -> float:
        """Pass the window and the rate limits before one retrieve of ``instances`` instances
        of ``study``; returns the seconds waited (-1: the pull is stopping meanwhile)."""
        waited = self.wait_for_window()
        if waited < 0:
            return waited
        delay = 0.0
        reasons = []
        with self._lock:
            first = study not in self._charged
            self._charged.add(study)
        if self.studies is not None and first:
            d = self.studies.reserve(1)
            if d > 0:
                reasons.append(f"{self.studies.rate * 3600:g} studies/hour")
            delay = max(delay, d)
        if self.instances is not None:
            d = self.instances.reserve(max(1, instances))
            if d > 0:
                reasons.append(f"{self.instances.rate:g} instances/s")
            delay = max(delay, d)
        if delay <= 0:
            return waited
        self._tell(f"rate limit ({', '.join(reasons)}): next retrieve in {duration_text(delay)}",
                   delay)  # fmt: skip
        if self.sleep(delay):
            return -1.0
        more = self.wait_for_window()  # the wait may have run past the window's end
        return -1.0 if more < 0 else waited + delay + more

    def _tell(self, reason: str, seconds: float) -> None:
        if self.on_wait is not None:
            self.on_wait(reason, seconds)
