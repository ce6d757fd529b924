"""The pull's time window and rate limits as units, on an injected clock (no waiting)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from dicomflow.errors import ConfigError
from dicomflow.network import Gate, OutsideWindow, PullOptions, TokenBucket, Window


class FakeClock:
    """Monotonic seconds and local time that move only when something sleeps."""

    def __init__(self, start: dt.datetime = dt.datetime(2024, 3, 1, 12, 0)) -> None:
        self.t = 0.0
        self.start = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def now(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=self.t)

    def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.t += seconds
        return False  # not stopping


# -- the token bucket --------------------------------------------------------------------------


def test_bucket_spaces_requests_by_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, capacity=1.0, clock=clock)
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.5, 1.0, 1.5]  # a schedule, at once
    clock.t = 10.0  # idle: the bucket refills, but only up to its capacity
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.5, 1.0]


def test_bucket_burst_then_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, capacity=3.0, clock=clock)
    assert [bucket.reserve() for _ in range(5)] == [0.0, 0.0, 0.0, 1.0, 2.0]


def test_a_request_larger_than_the_bucket_leaves_a_debt():
    clock = FakeClock()
    bucket = TokenBucket(rate=10.0, capacity=10.0, clock=clock)
    assert bucket.reserve(25) == 0.0  # starts at once: the bucket was full
    assert bucket.reserve(5) == pytest.approx(2.0)  # 15 owed + 5 = 20 tokens at 10/s
    clock.t = 1.0
    assert bucket.reserve(1) == pytest.approx(1.1)  # behind the previous one (at 2.0 s)


def test_bucket_over_a_long_run_keeps_the_rate():
    """Simulated: requests as fast as allowed for an hour; starts <= capacity + rate * T."""
    clock = FakeClock()
    bucket = TokenBucket(rate=50 / 3600, capacity=1.0, clock=clock)
    starts = []
    while clock.t < 3600:
        clock.sleep(bucket.reserve())
        starts.append(clock.t)
    within = [t for t in starts if t < 3600]
    assert len(within) == 50


def test_bucket_is_thread_safe_each_caller_gets_its_own_slot():
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, capacity=1.0, clock=clock)
    waits: list[float] = []
    lock = threading.Lock()

    def take():
        w = bucket.reserve()
        with lock:
            waits.append(w)

    threads = [threading.Thread(target=take) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == [float(i) for i in range(20)]


def test_bucket_refuses_a_rate_of_zero():
    with pytest.raises(ConfigError):
        TokenBucket(rate=0)


# -- the window --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "time", "open_"),
    [
        ("20:00-06:00", "20:00", True), ("20:00-06:00", "23:59", True),
        ("20:00-06:00", "00:00", True), ("20:00-06:00", "05:59", True),
        ("20:00-06:00", "06:00", False), ("20:00-06:00", "12:00", False),
        ("20:00-06:00", "19:59", False), ("08:00-17:30", "17:29", True),
        ("08:00-17:30", "17:30", False), ("12:00-13:00,22:00-24:00", "12:30", True),
        ("12:00-13:00,22:00-24:00", "23:59", True), ("12:00-13:00,22:00-24:00", "00:10", False),
        ("00:00-24:00", "00:00", True), ("00:00-24:00", "23:59", True),
    ],
)  # fmt: skip
def test_window_is_open(text, time, open_):
    h, m = map(int, time.split(":"))
    assert Window.parse(text).is_open(dt.datetime(2024, 3, 1, h, m)) is open_


def test_window_opens_in():
    w = Window.parse("20:00-06:00")
    assert w.opens_in(dt.datetime(2024, 3, 1, 19, 30)) == 1800
    assert w.opens_in(dt.datetime(2024, 3, 1, 6, 0)) == 14 * 3600
    assert w.opens_in(dt.datetime(2024, 3, 1, 23, 0)) == 0
    two = Window.parse("12:00-13:00, 20:00-06:00")
    assert two.opens_in(dt.datetime(2024, 3, 1, 13, 0)) == 7 * 3600
    assert two.next_opening(dt.datetime(2024, 3, 1, 9, 0)) == dt.datetime(2024, 3, 1, 12, 0)
    assert str(two) == "12:00-13:00,20:00-06:00"


@pytest.mark.parametrize("bad", ["20-06", "20:00", "25:00-06:00", "20:00-20:00", "8:60-9:00",
                                 "20:00-06:00;", ""])  # fmt: skip
def test_window_refuses_what_it_cannot_read(bad):
    with pytest.raises(ConfigError, match="window"):
        Window.parse(bad)


# -- the gate: window, then rates --------------------------------------------------------------


def test_gate_outside_the_window_stops_when_told():
    clock = FakeClock(dt.datetime(2024, 3, 1, 12, 0))
    gate = Gate(Window.parse("20:00-06:00"), "stop", now=clock.now, sleep=clock.sleep)
    with pytest.raises(OutsideWindow, match=r"outside the window 20:00-06:00 .*resume later"):
        gate.before_retrieve("1.2.3", 10)
    assert clock.sleeps == []


def test_gate_outside_the_window_waits_for_it_and_says_so():
    clock = FakeClock(dt.datetime(2024, 3, 1, 19, 0))
    told = []
    gate = Gate(Window.parse("20:00-06:00"), "wait", now=clock.now, sleep=clock.sleep,
                on_wait=lambda why, s: told.append((why, s)))  # fmt: skip
    waited = gate.before_retrieve("1.2.3", 10)
    assert waited == pytest.approx(3600) and clock.now().hour == 20
    ((why, seconds),) = told
    assert "opens at 20:00, in 1 h 00 min" in why and why.endswith("waiting") and seconds == 3600
    assert gate.before_retrieve("1.2.3", 10) == 0  # open now


def test_gate_charges_a_study_once():
    clock = FakeClock()
    gate = Gate(studies=TokenBucket(3600 / 3600, 1.0, clock=clock), now=clock.now,
                sleep=clock.sleep)  # fmt: skip
    schedule = []
    for study in ["A", "A", "B", "B", "B", "C"]:  # series of three studies
        gate.before_retrieve(study, 1)
        schedule.append((study, clock.t))
    assert schedule == [("A", 0), ("A", 0), ("B", 1), ("B", 1), ("B", 1), ("C", 2)]


def test_gate_instances_limit_spaces_retrieves_by_their_size():
    clock = FakeClock()
    gate = Gate(instances=TokenBucket(10.0, 10.0, clock=clock), now=clock.now, sleep=clock.sleep)
    starts = []
    for size in (30, 30, 5):
        gate.before_retrieve("A", size)
        starts.append(clock.t)
    assert starts == pytest.approx([0.0, 3.0, 5.5])  # 20 owed each time, then 10 (or 5) needed


def test_gate_rate_wait_past_the_window_end_stops():
    """A rate limit wait that runs past the window's end: the retrieve does not start."""
    clock = FakeClock(dt.datetime(2024, 3, 1, 5, 59, 30))
    gate = Gate(Window.parse("20:00-06:00"), "stop",
                studies=TokenBucket(1 / 60, 1.0, clock=clock), now=clock.now,
                sleep=clock.sleep)  # fmt: skip
    gate.before_retrieve("A", 1)
    with pytest.raises(OutsideWindow):
        gate.before_retrieve("B", 1)  # its slot is at 06:00:30


def test_gate_stops_waiting_when_the_pull_stops():
    stop = threading.Event()
    stop.set()
    gate = Gate(Window.parse("20:00-06:00"), "wait",
                now=lambda: dt.datetime(2024, 3, 1, 12, 0), sleep=stop.wait)  # fmt: skip
    assert gate.before_retrieve("A", 1) == -1


def test_pull_options_build_the_gate():
    opts = PullOptions(window=" 20:00-06:00 ", outside_window="stop", max_studies_per_hour=120,
                       max_instances_per_second=50)  # fmt: skip
    assert opts.window == "20:00-06:00"
    gate = opts.gate()
    assert gate.outside == "stop" and str(gate.window) == "20:00-06:00"
    assert gate.studies is not None and gate.studies.rate == pytest.approx(120 / 3600)
    assert gate.instances is not None and gate.instances.rate == 50
    for bad in ({"window": "night"}, {"outside_window": "skip"}, {"max_studies_per_hour": 0},
                {"max_instances_per_second": -1}):  # fmt: skip
        with pytest.raises(ConfigError):
            PullOptions(**bad)
