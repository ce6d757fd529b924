"""The process pool's workers: their heap keeps what one instance freed for the next."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: run in a fresh interpreter: a pytest process's allocator has a history of its own (glibc
#: moves its thresholds as blocks are freed) that a forked worker would inherit
_POOL = """
import json, resource, sys
from dicomflow.runtime import ProcessExecutor

def faults(rounds):
    # glibc moves its mmap threshold up to a freed block's size (and the heap top it gives
    # back to twice that): as a worker's first CT file leaves it
    bytearray(600_000)  # made and freed
    # then one CT file's buffers per round (its file, pixels, output), alive together, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        buffers = [bytearray(n) for n in (524_288, 524_288, 524_288, 266_240, 266_240)]
        for buffer in buffers:
            buffer[::4096] = b"\x01" * len(range(0, len(buffer), 4096))  # every page
        del buffers
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

executor = ProcessExecutor(2, start_method=sys.argv[1])
try:
    print(json.dumps(list(executor.map(faults, [100, 100]))))
finally:
    executor.close()
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="the heap settings are glibc's",
)
def test_workers_reuse_freed_memory_instead_of_faulting_it_in_again() -> None:
    """glibc gave the top of its heap back once an instance freed its buffers, and took it
    again (a page fault per 4 KB) for the next one: 100 files' buffers (2 MB) faulted 100 x
    500 pages. A worker keeps them: the first file faults, the next 99 barely."""
    done = subprocess.run(
        [sys.executable, "-c", _POOL, "fork"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    faults = json.loads(done.stdout.strip().splitlines()[-1])
    pages = (3 * 524_288 + 2 * 266_240) // 4096
    assert all(f < 10 * pages for f in faults), faults
