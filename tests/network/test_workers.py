"""``dicomflow receive --workers N``: one port, N receiving processes, limits for all of them
together, one lake whose records stay whole through a kill."""

from __future__ import annotations

import collections
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dicomflow.network import read_records
from dicomflow.network.protocol import AssociateRequest

from .conftest import PEER_ENV, free_port, lake_files, wait_until

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@pytest.fixture(autouse=True)
def _quiet_pydicom():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _receive(lake: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomflow.cli", "receive", "--ae", "LAKE", "--port", str(port),
         "--bind", "127.0.0.1", "--lake", str(lake), "--allow", "MODALITY", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    wait_until(lambda: _listening(port), 60, "receive", proc)
    return proc


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    return err


def _workers_of(pid: int) -> list[int]:
    """The receiving workers of a receiver (not multiprocessing's resource tracker)."""
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [
        c for c in children if b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()
    ]


def _associate(port: int) -> tuple[socket.socket, int]:
    """A raw association request; the socket and the PDU type answered (2 AC, 3 RJ)."""
    rq = AssociateRequest("LAKE", "MODALITY", [(1, CT_IMAGE, [EXPLICIT_LE])], 16384)
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    body = rq.encode()
    sock.sendall(struct.pack(">BxL", 1, len(body)) + body)
    head = sock.recv(6)
    length = struct.unpack(">L", head[2:6])[0]
    while length:
        length -= len(sock.recv(length))
    return sock, head[0]


def _storescu(port: int, files: list[Path], calling: str = "MODALITY") -> None:
    result = subprocess.run(
        ["/usr/bin/storescu", "-aet", calling, "-aec", "LAKE", "-xy", "127.0.0.1", str(port),
         *map(str, files)],
        env=PEER_ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def _sendable(files: list[Path]) -> list[Path]:
    return [p for p in files if "SEG" not in str(p) and "BigEnd" not in str(p)]


def test_the_association_limit_holds_for_all_workers_together(tmp_path: Path) -> None:
    """``--max-associations 2 --workers 3``: two associations are accepted, the third is
    rejected although a worker has none (a limit per worker would have taken it), and once one
    ends another is accepted."""
    port = free_port()
    proc = _receive(tmp_path / "lake", port, "--workers", "3", "--max-associations", "2")
    try:
        assert len(_workers_of(proc.pid)) == 3
        first, kind1 = _associate(port)
        second, kind2 = _associate(port)
        third, kind3 = _associate(port)
        assert (kind1, kind2, kind3) == (2, 2, 3)  # A-ASSOCIATE-AC, AC, RJ
        third.close()
        first.close()  # its worker sees the end and frees the slot
        deadline = time.monotonic() + 20
        while True:
            again, kind = _associate(port)
            again.close()
            if kind == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert kind == 2
        second.close()
    finally:
        err = _stop(proc)
    assert proc.returncode == 0, err
    assert "too many associations" in err


def test_senders_at_once_land_in_one_lake_and_a_kill_loses_nothing(
    tmp_path: Path, round_trip_files: list[Path]
) -> None:
    """Three storescu at once into ``--workers 2``: every instance lands, each association is
    logged once by the parent; then SIGKILL of the whole group (parent and workers) right after
    the acknowledgements: the next start adopts what had no record, each instance is recorded
    exactly once, in one part."""
    files = _sendable(round_trip_files)
    batches = [files[i::3] for i in range(3)]
    lake = tmp_path / "lake"
    port = free_port()
    proc = _receive(lake, port, "--workers", "2")
    try:
        senders = [
            subprocess.Popen(
                [
                    "/usr/bin/storescu",
                    "-aet",
                    "MODALITY",
                    "-aec",
                    "LAKE",
                    "-xy",
                    "127.0.0.1",
                    str(port),
                    *map(str, batch),
                ],
                env=PEER_ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for batch in batches
        ]
        for sender in senders:
            _, err = sender.communicate(timeout=120)
            assert sender.returncode == 0, err
    finally:
        _stop(proc, signal.SIGKILL)  # no worker writes its last records
    landed = {p.stem for p in lake_files(lake)}
    expected = {_sop_of(p) for p in files}  # the SOP Instance UIDs sent
    assert landed == expected
    port = free_port()
    proc = _receive(lake, port, "--workers", "2")
    err = _stop(proc)
    assert proc.returncode == 0, err
    parts = sorted((lake / "_lake").glob("received-*.parquet"))
    rows = collections.Counter(pq.read_table(parts).column("sop_instance_uid").to_pylist())
    assert set(rows) == expected and max(rows.values()) == 1
    assert len(parts) == 1  # the adopted records (or those and the workers', compacted)
    assert read_records(str(lake)).num_rows == len(expected)


def _sop_of(path: Path) -> str:
    from dicomflow.dicom import split_part10

    return split_part10(path.read_bytes())[1]


def test_each_association_is_logged_once_and_the_counts_are_summed(
    tmp_path: Path, round_trip_files: list[Path]
) -> None:
    """Two senders one after the other into ``--workers 2``: two association lines, with the
    counts each sent, the total at the stop, and the workers' record parts compacted into one
    by the parent."""
    files = _sendable(round_trip_files)[:6]
    lake = tmp_path / "lake"
    port = free_port()
    proc = _receive(lake, port, "--workers", "2", "--log-every", "0.5")
    try:
        _storescu(port, files[:2], "MODALITY")
        _storescu(port, files[2:], "MODALITY")
        wait_until(lambda: read_records(str(lake)).num_rows == len(files), 60, "the records")
    finally:
        err = _stop(proc)
    assert proc.returncode == 0, err
    logged = [line for line in err.splitlines() if line.startswith("association ")]
    assert len(logged) == 2, err
    assert logged[0].startswith("association MODALITY@127.0.0.1: 2 instances, 0 failed")
    assert logged[1].startswith(f"association MODALITY@127.0.0.1: {len(files) - 2} instances")
    assert f"stopped: {len(files)} instances landed" in err
    assert "(2 workers)" in err
    assert len(list((lake / "_lake").glob("received-*.parquet"))) == 1  # compacted at the stop


def test_a_killed_worker_leaves_the_others_serving_and_none_left_stops_the_receiver(
    tmp_path: Path, round_trip_files: list[Path]
) -> None:
    """SIGKILL one of two workers: the other serves the next sender; SIGKILL it too: the
    receiver stops by itself with an error (for a supervisor to start it again) and what was
    acknowledged is in the lake, recorded at the next start."""
    files = _sendable(round_trip_files)[:4]
    lake = tmp_path / "lake"
    port = free_port()
    proc = _receive(lake, port, "--workers", "2")
    try:
        first, second = _workers_of(proc.pid)
        os.kill(first, signal.SIGKILL)
        time.sleep(1.0)
        _storescu(port, files)
        os.kill(second, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            _stop(proc)
    assert proc.returncode not in (0, None), err
    assert "every receiving worker died" in err
    assert {p.stem for p in lake_files(lake)} == {_sop_of(p) for p in files}
    proc = _receive(lake, free_port(), "--workers", "2")
    assert _stop(proc) and proc.returncode == 0
    assert read_records(str(lake)).num_rows == len(files)


def test_workers_keep_the_lake_table(tmp_path: Path, round_trip_files: list[Path]) -> None:
    """``--workers 2 --table-format delta``: the parent brings the Delta table up to date (the
    workers never write it); after the stop it holds every instance sent, each once."""
    from dicomflow import read_table

    files = _sendable(round_trip_files)
    lake = tmp_path / "lake"
    port = free_port()
    proc = _receive(lake, port, "--workers", "2", "--table-format", "delta")
    try:
        _storescu(port, files[: len(files) // 2])
        _storescu(port, files[len(files) // 2 :])
    finally:
        err = _stop(proc)
    assert proc.returncode == 0, err
    table = read_table(str(lake / "_lake" / "table.delta"), "delta", table="dicomflow.lake")
    rows = collections.Counter(table.column("sop_instance_uid").to_pylist())
    assert set(rows) == {_sop_of(p) for p in files}
    assert max(rows.values()) == 1
