"""The peak memory of a process, as the memory budgets of the tests and benchmarks measure it."""

from __future__ import annotations

import resource
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
