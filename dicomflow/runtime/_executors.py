"""Where tasks run: in this process, in a process pool, or on a dask.distributed cluster.

An executor maps a picklable module-level function over items and yields the results in input
order, keeping only a bounded number of tasks in flight, so memory stays bounded however many
items there are. Stage and reader code never imports an executor: they only write functions.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import platform
import re
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Protocol, TypeVar

from ..errors import ConfigError

__all__ = [
    "DaskExecutor",
    "Executor",
    "InProcessExecutor",
    "ProcessExecutor",
    "fork_is_safe",
    "make_executor",
]

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Maps ``fn`` over ``items``; results come back in input order."""

    workers: int

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]: ...

    def close(self) -> None: ...


class InProcessExecutor:
    """Runs every task in the calling process: for notebooks, debugging and small inputs."""

    workers = 1

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        for item in items:
            yield fn(item)

    def close(self) -> None:
        pass


def _ordered(submit: Callable[[T], Any], items: Iterable[T], window: int) -> Iterator[Any]:
    pending: deque[Any] = deque()
    for item in items:
        pending.append(submit(item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


#: glibc's ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: a worker's heap: blocks up to 32 MiB from the heap (glibc's own ceiling for the threshold it
#: moves), and up to 64 MiB free at its top kept for the next instance
_HEAP_BLOCKS = 32 << 20
_HEAP_KEPT = 64 << 20


def steady_heap() -> bool:
    """Let this process keep the memory one instance freed for the next (glibc; a worker's
    initializer). Returns whether it could.

    An instance's buffers (the file read whole, its pixels, the encoded output: a few hundred
    KB to MB each) are freed at its end; glibc hands the top of its heap back to the kernel
    once more than twice its mmap threshold is free there, and where that threshold is still
    low, each instance takes it again, a page fault per 4 KB. Seen in a script that ran a
    transcode pipeline: ~480 faults per 512 x 512 CT file, a quarter of the CPU for RLE (the
    benchmark's child, whose earlier frees had raised the threshold, had none). Kept, the
    faults are gone whatever the process did before. Only in the worker processes this module
    starts: the calling process's allocator is left as its user set it.
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, _HEAP_BLOCKS) == 1
    return mallopt(_M_TRIM_THRESHOLD, _HEAP_KEPT) == 1 and ok


class ProcessExecutor:
    """A pool of worker processes (started with ``forkserver``, safe beside threads)."""

    def __init__(self, workers: int | None = None, *, start_method: str = "forkserver"):
        self.workers = workers or os.cpu_count() or 1
        context = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # the fork server imports dicomflow once; each worker then starts in milliseconds
            context.set_forkserver_preload(["dicomflow", "dicomflow.catalog"])
        self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=steady_heap)
        if start_method == "fork":
            # fork every worker now, while this process is in the state fork_is_safe() saw
            # (later, planning may start thread pools: polars', Arrow's): the first submit
            # forks them all before it returns; its result is not waited for (the workers
            # come up while the caller lists its input)
            #
            # gc.freeze(): the objects this process holds go to the collector's permanent
            # generation for the fork, so a worker's collections never write to their
            # headers, which would copy their pages one by one (copy-on-write)
            gc.freeze()
            try:
                self._pool.submit(int)
            finally:
                gc.unfreeze()

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        def submit(item: T) -> Future[R]:
            return self._pool.submit(fn, item)

        # results are taken in input order: a deeper window keeps the other workers busy
        # while the oldest task is still running (2 per worker left them idle at times)
        return _ordered(submit, items, 4 * self.workers)

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


class DaskExecutor:
    """Tasks on a ``dask.distributed`` cluster, through the client the user passes."""

    def __init__(self, client: Any):
        self.client = client
        info = client.scheduler_info()
        threads = sum(w.get("nthreads", 1) for w in info.get("workers", {}).values())
        self.workers = max(threads, 1)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        def submit(item: T) -> Any:
            return self.client.submit(fn, item, pure=False)

        return _ordered(submit, items, 2 * self.workers)

    def close(self) -> None:
        pass  # the client belongs to the caller


def make_executor(
    workers: int | None = None, client: Any = None, *, start_method: str = "forkserver"
) -> Executor:
    """The executor for ``workers`` (``1``: in process; ``None``: one per core) or a client."""
    if client is not None:
        return DaskExecutor(client)
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        return InProcessExecutor()
    return ProcessExecutor(workers, start_method=start_method)


#: native thread pools that do not survive a fork (the child would hang on first use): polars'
#: compute pool ("polars-0", "polars-1"...; its spill cleaner "polars-ooc-clea..." that
#: ``import polars`` starts holds no pool) and async runtime
_FORK_UNSAFE_THREADS = re.compile(r"polars-\d|tokio-")


def fork_is_safe() -> bool:
    """Whether plain ``fork`` may start workers: Linux, no Python thread but this one, and no
    thread pool known not to survive a fork (polars' and its async runtime).

    ``fork`` starts a worker in milliseconds where ``forkserver`` needs a fresh interpreter
    (about half a second here). The native threads a plain session has (OpenBLAS, jemalloc,
    Arrow's pools) re-create themselves in the child (they register fork handlers); polars'
    does not, and a Jupyter kernel runs Python threads: there ``forkserver`` is used.
    """
    import sys
    import threading

    if not sys.platform.startswith("linux") or threading.active_count() != 1:
        return False
    try:
        tasks = os.listdir("/proc/self/task")
        names = []
        for task in tasks:
            with open(f"/proc/self/task/{task}/comm") as f:
                names.append(f.read().strip())
    except OSError:
        return False
    return not any(_FORK_UNSAFE_THREADS.match(name) for name in names)
