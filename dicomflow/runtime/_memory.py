"""The peak memory of a process, as the memory budgets of the tests and benchmarks measure it,
and the garbage collector's pace during bulk work."""

from __future__ import annotations

import contextlib
import gc
import resource
from collections.abc import Iterator
from pathlib import Path


def peak_rss(pid: int | str = "self") -> int:
    """The peak resident set of process ``pid`` (this one by default), in bytes.

    Linux's ``VmHWM``: the high-water mark of the process's own memory since it started its
    program. ``getrusage(...).ru_maxrss`` is not that: Linux carries it over a fork and an exec,
    so a child started by a 1.5 GB test worker reports at least 1.5 GB whatever it does. Where
    ``/proc`` is missing (not Linux), ``ru_maxrss`` of this process is the best there is.

    Examples
    --------
    >>> peak_rss() > 0
    True
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    if pid != "self":
        raise ProcessLookupError(f"no peak memory known for process {pid}")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


#: The youngest generation's threshold while `fewer_collections` holds (Python's default: 700).
BULK_GC_THRESHOLD = 50_000


@contextlib.contextmanager
def fewer_collections(threshold: int = BULK_GC_THRESHOLD) -> Iterator[None]:
    """Run the cyclic garbage collector less often inside the block, as bulk work that makes
    many short-lived objects and little cyclic garbage wants: with the default threshold, a
    verifier that remembers what it has seen spends about a sixth of its time in collections
    that find nothing. Memory is still freed by reference counting; the old thresholds come
    back on leaving, and a threshold lower than the one in force is not applied.

    Examples
    --------
    >>> import gc
    >>> before = gc.get_threshold()
    >>> with fewer_collections():
    ...     gc.get_threshold()[0] >= before[0]
    True
    >>> gc.get_threshold() == before
    True
    """
    before = gc.get_threshold()
    if threshold > before[0]:
        gc.set_threshold(threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
