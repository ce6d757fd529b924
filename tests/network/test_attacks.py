"""The receiver under attack on loopback: hostile PDUs against a running `dicomflow receive`.

Each test starts the real command in its own process, attacks it over TCP, and asserts that the
receiver stays up, its peak memory stays bounded (read from /proc), and the allowed sender can
still store afterwards (DCMTK's storescu).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomflow.network.protocol import P_DATA, AssociateRequest

from .conftest import PEER_ENV, free_port, lake_files, rss_growth, tree_rss, wait_until

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Receiver:
    def __init__(self, lake: Path) -> None:
        self.lake, self.port = lake, free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dicomflow.cli", "receive", "--ae", "LAKE", "--port",
             str(self.port), "--bind", "127.0.0.1", "--lake", str(lake), "--allow", "MODALITY"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        wait_until(lambda: _listening(self.port), 30, "receive", self.proc)

    def store(self, files: list[Path]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["storescu", "-aet", "MODALITY", "-aec", "LAKE", "127.0.0.1", str(self.port),
             *map(str, files)],
            env=PEER_ENV, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def stop(self) -> str:
        os.killpg(self.proc.pid, signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return err


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(tmp_path / "lake")
    try:
        yield r
    finally:
        if r.proc.poll() is None:
            r.stop()


def _answer(sock: socket.socket, wait: float = 10.0) -> bytes:
    """What the receiver sends back before it closes the connection."""
    sock.settimeout(wait)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return got


def _associated(port: int) -> socket.socket:
    """A raw socket with an accepted association (CT Image Storage, explicit VR LE)."""
    rq = AssociateRequest("LAKE", "MODALITY", [(1, CT_IMAGE, [EXPLICIT_LE])], 16384)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    body = rq.encode()
    sock.sendall(struct.pack(">BxL", 1, len(body)) + body)
    head = sock.recv(6)
    assert head[:1] == b"\x02", f"not accepted: {head!r}"  # A-ASSOCIATE-AC
    length = struct.unpack(">L", head[2:6])[0]
    while length:
        length -= len(sock.recv(length))
    return sock


@pytest.mark.parametrize("when", ["before association", "after association"])
def test_a_pdu_announcing_4_gb_is_aborted_without_buffering_it(
    receiver: Receiver, round_trip_files: list[Path], when: str
) -> None:
    """6 bytes (``01 00 FF FF FF FF``) took 4.2 GB per connection: now an A-ABORT at once."""
    before = tree_rss(receiver.proc.pid)  # the parent and its workers
    socks = []
    for _ in range(5):  # five of them exhausted a 24 GB host
        if when == "before association":
            sock = socket.create_connection(("127.0.0.1", receiver.port), timeout=10)
            sock.sendall(b"\x01\x00\xff\xff\xff\xff")
        else:
            sock = _associated(receiver.port)
            sock.sendall(struct.pack(">BxL", P_DATA, 0xFFFFFFF0))
        socks.append(sock)
    for sock in socks:
        answer = _answer(sock)
        assert answer[:1] in (b"\x07", b"")  # an A-ABORT, or the connection closed
        sock.close()
    time.sleep(0.5)
    assert receiver.proc.poll() is None, "the receiver died"
    assert rss_growth(before, tree_rss(receiver.proc.pid)) < 200 * 2**20
    result = receiver.store(round_trip_files[:3])  # the allowed sender still gets in
    assert result.returncode == 0, result.stderr
    receiver.stop()
    assert len(lake_files(receiver.lake)) == 3


def test_idle_and_slow_sockets_do_not_lock_the_allowed_sender_out(
    receiver: Receiver, round_trip_files: list[Path]
) -> None:
    """17 idle sockets and 20 that drip a byte a second kept the allowed sender out before."""
    import threading

    idle = [socket.create_connection(("127.0.0.1", receiver.port)) for _ in range(17)]
    stop = threading.Event()
    drips = [socket.create_connection(("127.0.0.1", receiver.port)) for _ in range(20)]

    def drip() -> None:
        request = b"\x01\x00\x00\x00\x10\x00" + b"\x00" * 4096
        for i in range(len(request)):
            if stop.wait(1.0):
                return
            for s in drips:
                try:
                    s.send(request[i : i + 1])
                except OSError:
                    pass

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        time.sleep(1.5)
        result = receiver.store(round_trip_files[:2])
        assert result.returncode == 0, result.stderr
        assert receiver.proc.poll() is None
    finally:
        stop.set()
        dripper.join()
        for s in idle + drips:
            s.close()
    receiver.stop()
    assert len(lake_files(receiver.lake)) == 2


def test_a_data_set_that_never_ends_is_aborted_at_the_instance_limit(
    tmp_path: Path, round_trip_files: list[Path]
) -> None:
    """P-DATA fragments without the last-fragment bit were buffered without limit."""
    from dicomflow.network import SCPOptions, StorageSCP
    from dicomflow.network.protocol import c_store_rq

    options = SCPOptions(ae_title="LAKE", host="127.0.0.1", port=free_port(),
                         calling_aes=("MODALITY",), max_instance_bytes=2**20)  # fmt: skip
    with StorageSCP(tmp_path / "lake", options) as scp:
        sock = _associated(scp.port)
        command = c_store_rq(1, CT_IMAGE, "1.2.3.4")
        pdv = struct.pack(">LBB", len(command) + 2, 1, 0x03) + command
        sock.sendall(struct.pack(">BxL", P_DATA, len(pdv)) + pdv)
        fragment = b"\0" * 8000
        pdv = struct.pack(">LBB", len(fragment) + 2, 1, 0x00) + fragment  # never the last
        pdu = struct.pack(">BxL", P_DATA, len(pdv)) + pdv
        sent = 0
        try:
            while sent < 64 * 2**20:
                sock.sendall(pdu)
                sent += len(fragment)
        except OSError:
            pass  # the receiver aborted and closed: what we want
        assert _answer(sock)[:1] in (b"\x07", b"")
        sock.close()
        wait_until(lambda: scp.associations and scp.associations[-1].reason, 10, "the log")
        assert "longer than 1,048,576 bytes" in scp.associations[-1].reason
        # the receiver closed: sending stopped once the kernel buffers (a few MB) were full
        assert sent < 64 * 2**20
        result = subprocess.run(  # the same SCP serves the next sender
            ["storescu", "-aet", "MODALITY", "-aec", "LAKE", "127.0.0.1", str(scp.port),
             str(round_trip_files[0])],
            env=PEER_ENV, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
