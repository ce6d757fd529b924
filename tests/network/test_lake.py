"""The lake as a store: its catalog, compacted record parts, and instances of any size."""

from __future__ import annotations

import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pyarrow as pa
import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import dicomflow as dfl
from dicomflow.dicom import split_part10
from dicomflow.network import (
    Lake,
    SCPOptions,
    StorageSCP,
    read_catalog,
    read_records,
    read_state,
)

from .conftest import PEER_ENV, free_port, lake_files, rss_growth, tree_rss, wait_until

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
P_DATA = 4


@pytest.fixture(autouse=True)
def _quiet_pydicom():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def sendable(files: list[Path]) -> list[Path]:
    """The corpus files storescu sends as they are (it does not offer SEG, and converts big
    endian to the first syntax we accept)."""
    return [p for p in files if "SEG" not in str(p) and "BigEnd" not in str(p)]


def storescu(port: int, files: list[Path], calling: str = "MODALITY") -> None:
    result = subprocess.run(
        ["/usr/bin/storescu", "-aet", calling, "-aec", "LAKE", "-xy", "127.0.0.1", str(port),
         *map(str, files)],
        env=PEER_ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def parts(lake: Path) -> list[Path]:
    return sorted((lake / "_lake").glob("received-*.parquet"))


def by_uid(table: pa.Table) -> pa.Table:
    return table.sort_by("sop_instance_uid")


def test_catalog_follows_landing_equal_to_a_scan_and_compacts(tmp_path, round_trip_files):
    """Many associations, a record part every few instances: the lake's catalog holds every
    instance once with the scan's columns, equal to ``dfl.scan`` of the landed files; closing
    the lake merges the parts into one with the same rows, which polars reads directly."""
    import polars as pl

    files = sendable(round_trip_files)
    root = tmp_path / "lake"
    lake = Lake(root, fsync="none", flush_every=4, flush_seconds=3600, compact_parts=1000)
    port = free_port()
    options = SCPOptions(ae_title="LAKE", host="127.0.0.1", port=port, calling_aes=("*",))
    with StorageSCP(lake, options) as scp:
        batches = [files[i : i + 5] for i in range(0, len(files), 5)]
        threads = [
            threading.Thread(target=storescu, args=(port, batch, f"SENDER{i}"))
            for i, batch in enumerate(batches)
        ]
        for t in threads[:3]:  # three at once, then one after another
            t.start()
        for t in threads[:3]:
            t.join()
        for t in threads[3:]:
            t.start()
            t.join()
        scp.wait_idle(idle=0.2, timeout=60)
    assert sum(a.stored for a in scp.associations) == len(files)
    lake.flush()
    assert len(parts(root)) > 2
    catalog = read_catalog(str(root))
    scanned = dfl.scan([str(p) for p in lake_files(root)], workers=1).to_arrow()
    assert catalog.num_rows == len(files) == scanned.num_rows
    assert catalog.schema == scanned.schema  # the scan's columns, in the scan's order
    same = [c for c in catalog.column_names if c not in ("uri", "modified")]
    assert by_uid(catalog).select(same).equals(by_uid(scanned).select(same))
    assert all(p.startswith(str(root)) for p in catalog["uri"].to_pylist())
    records = read_records(str(root))

    lake.close()  # compacts
    after = parts(root)
    assert len(after) == 1 and after[0].name.endswith("-c.parquet")
    assert by_uid(read_catalog(str(root))).equals(by_uid(catalog))
    assert by_uid(read_records(str(root))).equals(by_uid(records))
    raw = pl.read_parquet(str(root / "_lake" / "received-*.parquet"))
    assert raw.height == len(files) and raw["sop_instance_uid"].n_unique() == len(files)
    with Lake(root) as again:  # nothing to adopt, nothing to compact
        assert again.stats.adopted == 0
    assert parts(root) == after


def test_readers_see_every_row_once_while_parts_are_compacted(tmp_path, round_trip_files):
    """A reader running while parts are merged, and after a crash between the merged part's
    rename and the removal of the parts it replaces, reads each landed row exactly once."""
    instances = [split_part10(p.read_bytes()) for p in round_trip_files]
    root = tmp_path / "lake"
    lake = Lake(root, fsync="none", flush_every=10**6, flush_seconds=3600, compact_parts=10**6)
    landed: set[str] = set()
    problems: list[str] = []
    stop = threading.Event()

    def read_continuously() -> None:
        while not stop.is_set():
            before = set(landed)
            uids = read_state(str(root), "received").column("sop_instance_uid").to_pylist()
            if len(uids) != len(set(uids)):
                problems.append(f"a row twice among {len(uids)}")
            if not before <= set(uids):
                problems.append(f"{len(before - set(uids))} rows missing")

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        for start in range(0, len(instances), 6):
            for sop_class, sop, ts, body in instances[start : start + 6]:
                lake.receive(sop_class=sop_class, sop_instance=sop, transfer_syntax=ts,
                             dataset=body)  # fmt: skip
                lake.flush()  # a part per instance
                landed.add(sop)
            assert lake.compact(min_parts=2) >= 2
    finally:
        stop.set()
        reader.join()
    assert not problems, problems[:3]
    # a crash after the merged part is in place, before the parts it replaces are removed
    for sop_class, sop, ts, body in instances[:3]:
        lake.receive(sop_class=sop_class, sop_instance=sop, transfer_syntax=ts, dataset=body)
        lake.flush()
    saved = tmp_path / "saved"
    saved.mkdir()
    for part in parts(root):
        shutil.copy2(part, saved / part.name)
    lake.compact(min_parts=2)
    lake.close()
    for part in saved.iterdir():
        if not (root / "_lake" / part.name).exists():
            shutil.copy2(part, root / "_lake" / part.name)
    assert len(parts(root)) > 1
    uids = read_state(str(root), "received").column("sop_instance_uid").to_pylist()
    assert sorted(uids) == sorted(landed)
    with Lake(root, adopt=False):  # opening removes what the crash left
        pass
    assert len(parts(root)) == 1
    assert sorted(read_records(str(root))["sop_instance_uid"].to_pylist()) == sorted(landed)


# -- landing and hashing --------------------------------------------------------------------------


def small_instance(study: str, series: str) -> tuple[str, str, str, bytes]:
    """A small CT data set (no meta) with a new SOP Instance UID: its UIDs and bytes."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.Modality = "SMALL", "CT"
    body = io.BytesIO()
    ds.save_as(body, implicit_vr=False, little_endian=True)
    return CT_IMAGE, str(ds.SOPInstanceUID), ExplicitVRLittleEndian, body.getvalue()


def test_fsync_none_writes_the_file_before_the_acknowledgement(tmp_path):
    """``fsync="none"`` lands the file before ``receive`` returns (as ``"each"`` does, without
    the fsync): a receiver killed right after its acknowledgement has the file. It used to
    queue the write to a writer thread and return ``"queued"``."""
    with Lake(tmp_path / "lake", fsync="none", flush_seconds=3600) as lake:
        study, series = generate_uid(), generate_uid()
        for _ in range(20):
            sop_class, sop, ts, body = small_instance(study, series)
            landed = lake.receive(sop_class=sop_class, sop_instance=sop, transfer_syntax=ts,
                                  dataset=body)  # fmt: skip
            assert landed.status == "landed"
            data = Path(landed.path).read_bytes()  # there, whole, at once
            assert split_part10(data) == (sop_class, sop, ts, body)
        assert not [p.name for p in Path(landed.path).parent.iterdir() if p.name.startswith(".")]


def test_records_are_hashed_in_batches_by_whichever_thread_is_free(tmp_path, monkeypatch):
    """Written instances wait for a writer thread to hash them in a batch; when the writers
    do not come (a busy machine: here they never look), the receiving thread hashes once 64
    are waiting, so memory stays bounded, and ``flush`` hashes the rest. Every record has
    the SHA-256 and size of its file."""
    import hashlib

    import dicomflow.network._lake as lake_module

    monkeypatch.setattr(lake_module, "_HASH_EVERY", 3600.0)
    root = tmp_path / "lake"
    lake = Lake(root, fsync="none", flush_seconds=3600)
    try:
        study, series = generate_uid(), generate_uid()
        paths = {}
        for _ in range(70):
            sop_class, sop, ts, body = small_instance(study, series)
            landed = lake.receive(sop_class=sop_class, sop_instance=sop, transfer_syntax=ts,
                                  dataset=body)  # fmt: skip
            paths[sop] = landed.path
        assert lake.stats.landed == 64  # the receiving thread hashed the first 64
        records = lake.records()  # flush: the other 6 too
    finally:
        lake.close()
    assert sorted(records.column("sop_instance_uid").to_pylist()) == sorted(paths)
    for row in records.to_pylist():
        data = Path(paths[row["sop_instance_uid"]]).read_bytes()
        assert (row["sha256"], row["size"]) == (hashlib.sha256(data).hexdigest(), len(data))


# -- instances larger than memory -----------------------------------------------------------------


def write_big_instance(path: Path, size: int) -> str:
    """A CT image of about ``size`` bytes of pixels, written without holding them; its SOP
    Instance UID."""
    side = int((size // 2) ** 0.5)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "BIG", "Big^Image", "CT"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    head = io.BytesIO()
    ds.save_as(head, enforce_file_format=True)
    length = side * side * 2
    chunk = bytes(range(256)) * 65536  # 16 MiB
    with open(path, "wb") as f:
        f.write(head.getvalue())
        f.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, length))
        left = length
        while left:
            f.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
    return str(ds.SOPInstanceUID)


def test_a_large_instance_goes_to_its_file_as_it_arrives(tmp_path):
    """A 300 MB instance sent by DCMTK's storescu to ``dicomflow receive``: it lands whole
    and durable, and the receiver's peak memory stays far below the instance's size (its data
    set went to the incoming file fragment by fragment, then was linked into place)."""
    import hashlib

    big = tmp_path / "big.dcm"
    sop = write_big_instance(big, 300 * 10**6)
    root = tmp_path / "lake"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomflow.cli", "receive", "--ae", "LAKE", "--port", str(port),
         "--bind", "127.0.0.1", "--lake", str(root), "--allow", "MODALITY"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: _listening(port), 60, "receive", proc)
        idle = tree_rss(proc.pid)  # the parent and its workers
        storescu(port, [big])
        wait_until(lambda: read_records(str(root)).num_rows == 1, 60, "the record")
        grown = rss_growth(idle, tree_rss(proc.pid))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    (landed,) = lake_files(root)
    assert landed.stem == sop
    sent = big.read_bytes()
    _, _, _, body = split_part10(sent)
    data = landed.read_bytes()
    assert data.endswith(bytes(body)) and len(data) - len(body) < 1024  # as sent, new meta
    (row,) = read_records(str(root)).to_pylist()
    assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["size"] == len(data)
    assert list((root / "_lake" / "incoming").iterdir()) == []
    print(f"receiver peak RSS grew by {grown / 2**20:.0f} MiB (the most of any of its "
          f"processes) for a {len(body) / 1e6:.0f} MB instance")  # fmt: skip
    assert grown < 64 * 2**20, grown  # spool memory (4 MiB) + PDU buffers


def test_an_aborted_large_transfer_leaves_nothing(tmp_path):
    """A sender that aborts in the middle of a large data set: its incoming file is removed,
    nothing lands, nothing is recorded."""
    from dicomflow.network import AssociationOptions, Peer
    from dicomflow.network.protocol import c_store_rq, open_association

    root = tmp_path / "lake"
    options = SCPOptions(ae_title="LAKE", host="127.0.0.1", port=free_port(),
                         calling_aes=("MODALITY",))  # fmt: skip
    with StorageSCP(root, options) as scp:
        conn, accept = open_association(
            Peer("LAKE", "127.0.0.1", scp.port), AssociationOptions(calling_ae="MODALITY"),
            [(1, CT_IMAGE, [ExplicitVRLittleEndian])],
        )  # fmt: skip
        assert accept.results[1][0] == 0
        command = c_store_rq(1, CT_IMAGE, "1.2.3.4")
        conn.send_pdu(P_DATA, struct.pack(">LBB", len(command) + 2, 1, 0x03), command)
        fragment = b"\0" * 16378
        for _ in range(1000):  # 16 MB, never the last fragment
            conn.send_pdu(P_DATA, struct.pack(">LBB", len(fragment) + 2, 1, 0x00), fragment)
        incoming = root / "_lake" / "incoming"
        wait_until(lambda: any(incoming.iterdir()), 30, "the incoming file")
        conn.abort()
        wait_until(lambda: scp.associations, 30, "the association's end")
    assert list(incoming.iterdir()) == []
    assert lake_files(root) == [] and read_records(str(root)).num_rows == 0


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
