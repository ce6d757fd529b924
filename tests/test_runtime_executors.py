"""The process pool's map with its caller working too (``ProcessExecutor.map_sharing``)."""

from __future__ import annotations

import os
import time

from dicomflow.runtime import ProcessExecutor


def _in_worker(x: int) -> tuple[str, int]:
    time.sleep(0.02)  # long enough that the worker has two in hand when the next comes
    return "worker", x * x


def _here(x: int) -> tuple[str, int]:
    return f"caller-{os.getpid()}", x * x


def test_map_sharing_keeps_input_order_and_the_caller_takes_items() -> None:
    pool = ProcessExecutor(1, start_method="fork")
    try:
        out = list(pool.map_sharing(_in_worker, range(40), _here))
    finally:
        pool.close()
    assert [value for _, value in out] == [x * x for x in range(40)]
    where = {who for who, _ in out}
    assert where == {"worker", f"caller-{os.getpid()}"}


def test_map_sharing_of_nothing_is_nothing() -> None:
    pool = ProcessExecutor(1, start_method="fork")
    try:
        assert list(pool.map_sharing(_in_worker, [], _here)) == []
    finally:
        pool.close()
