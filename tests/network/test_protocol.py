"""Pieces that need no peer: addresses, queries, command sets, association PDUs, the meta group."""

from __future__ import annotations

import io
import pickle

import pyarrow as pa
import pytest
from pydicom import Dataset, dcmread

from dicomflow.dicom import file_meta_bytes, read_meta, resolve_columns
from dicomflow.errors import ConfigError, DicomflowError
from dicomflow.network import (
    AssociationRejectedError,
    MoveDestinationError,
    NetworkTimeoutError,
    Peer,
    SubOperationsFailedError,
)
from dicomflow.network.dicomweb import iter_multipart
from dicomflow.network.protocol import (
    AssociateAccept,
    AssociateRequest,
    decode_command,
    encode_command,
    level_keys,
    parse_query,
    results_table,
    text,
    us,
)


def test_peer_parse_and_print():
    assert Peer.parse("PACS@10.0.0.5:104") == Peer("PACS", "10.0.0.5", 104)
    assert str(Peer.parse("A@[::1]:11112")) == "A@[::1]:11112"
    for bad in ("PACS10.0.0.5:104", "PACS@host", "@h:1", "THIS_AE_TITLE_IS_TOO_LONG@h:1", "A@h:0"):
        with pytest.raises(ConfigError):
            Peer.parse(bad)


def test_query_parsing_and_levels():
    q = parse_query(
        "Modality=CT StudyDate=20240101-20240131 'StudyDescription=CT CHEST' PatientName"
    )
    assert q == {
        "Modality": "CT",
        "StudyDate": "20240101-20240131",
        "StudyDescription": "CT CHEST",
        "PatientName": None,
    }
    study = level_keys(q, "STUDY")
    assert study["ModalitiesInStudy"] == "CT" and "StudyDate" in study
    assert parse_query({"SOPInstanceUID": ["1.2", "1.3"]}) == {"SOPInstanceUID": "1.2\\1.3"}
    with pytest.raises(ConfigError, match="not a DICOM keyword"):
        parse_query("Modalty=CT")


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("StudyDate=20240131", "20240131"),
        ("StudyDate=2024-01-31", "20240131"),
        ("StudyDate=2024-01-01..2024-01-31", "20240101-20240131"),
        ("StudyDate=20240101-20240131", "20240101-20240131"),
        ("StudyDate=2024-01-01..", "20240101-"),
        ("StudyDate=..2024-01-31", "-20240131"),
        ("StudyDate=-20240131", "-20240131"),
        ("StudyDate=*", ""),
        ("StudyTime=08:30", "0830"),
        ("StudyTime=08:30:15.25", "083015.25"),
        ("StudyTime=08:00..12:30", "0800-1230"),
        ("StudyTime=0800-1230", "0800-1230"),
        ("AcquisitionDateTime=2024-01-31T08:30", "202401310830"),
        ("AcquisitionDateTime=2024-01-31T08:30..2024-02-01", "202401310830-20240201"),
    ],
)
def test_dates_and_times_are_sent_as_dicom_matches_them(given, sent):
    key = given.split("=")[0]
    assert parse_query(given)[key] == sent


def test_date_objects_are_dates():
    import datetime as dt

    query = parse_query({
        "StudyDate": dt.date(2024, 1, 31), "StudyTime": dt.time(8, 30),
        "AcquisitionDateTime": dt.datetime(2024, 1, 31, 8, 30),
    })  # fmt: skip
    assert query == {
        "StudyDate": "20240131", "StudyTime": "083000",
        "AcquisitionDateTime": "20240131083000",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("StudyDate=2024-01-01-2024-01-31", "write the range as A..B"),
        ("StudyDate=2024-02-30", "is no real date"),
        ("StudyDate=20240131-20240101", "ends before it starts"),
        ("StudyDate=2024", "'2024' is not a date"),
        ("StudyDate=yesterday", "'yesterday' is not a date"),
        ("StudyDate=..", "at least one end"),
        ("StudyDate=2024-01-01..2024-01-02..2024-01-03", "two ends"),
        ("StudyTime=24:00", "is no real time"),
        ("StudyTime=8:30", "'8:30' is not a time"),
    ],
)
def test_dates_and_times_that_match_nothing_are_refused(given, why):
    with pytest.raises(ConfigError, match="expected a") as info:
        parse_query(given)
    assert why in str(info.value)


def test_keys_are_checked_against_the_level():
    from dicomflow.network.protocol import keys_at_level

    assert keys_at_level({"Modality": "CT", "StudyDate": "2024"}, "STUDY") == {
        "ModalitiesInStudy": "CT",
        "StudyDate": "2024",
    }
    assert keys_at_level({"SOPClassUID": "1.2"}, "STUDY") == {"SOPClassesInStudy": "1.2"}
    assert keys_at_level({"PatientID": "P", "Modality": "CT"}, "SERIES") == {
        "PatientID": "P",
        "Modality": "CT",
    }
    assert keys_at_level({"PatientComments": "x"}, "STUDY") == {"PatientComments": "x"}
    with pytest.raises(ConfigError, match=r"SeriesNumber is a series-level .*: .*StudyDate"):
        keys_at_level({"SeriesNumber": "3"}, "STUDY")
    with pytest.raises(ConfigError, match="Modality is a series-level"):
        keys_at_level({"Modality": "CT"}, "PATIENT")
    with pytest.raises(ConfigError, match="disagree"):
        keys_at_level({"Modality": "CT", "ModalitiesInStudy": "MR"}, "STUDY")


def test_pull_refuses_image_level_keys():
    from dicomflow.network import plan

    with pytest.raises(ConfigError, match="a pull fetches whole series: Rows"):
        plan("PACS@127.0.0.1:9", "Rows=512")


def test_results_are_typed_like_the_catalog():
    ds = Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.4"
    ds.Modality, ds.SeriesNumber, ds.SeriesDate = "CT", "7", "20240102"
    ds.NumberOfSeriesRelatedInstances = "120"
    table = results_table("SERIES", [ds, Dataset()])
    specs = {s.name: s.arrow_type for s in resolve_columns(["SeriesNumber", "SeriesDate"])}
    assert table.schema.field("SeriesNumber").type == specs["SeriesNumber"] == pa.int64()
    assert table.schema.field("SeriesDate").type == specs["SeriesDate"] == pa.date32()
    row = table.to_pylist()[0]
    assert row["series_instance_uid"] == "1.2.3.4" and row["NumberOfSeriesRelatedInstances"] == 120
    assert table.to_pylist()[1]["Modality"] is None


def test_command_set_round_trip():
    raw = encode_command(
        [(0x0100, 0x8001), (0x0120, 7), (0x0900, 0), (0x0002, "1.2.840.10008.5.1.4.1.1.2")]
    )
    cmd = decode_command(raw)
    assert us(cmd, 0x0100) == 0x8001 and us(cmd, 0x0120) == 7 and us(cmd, 0x0900) == 0
    assert text(cmd, 0x0002) == "1.2.840.10008.5.1.4.1.1.2"
    assert int.from_bytes(cmd[0x0000], "little") == len(raw) - 12  # group length
    # the same bytes as pydicom would write for the command set
    from pydicom.filereader import read_dataset

    ds = read_dataset(io.BytesIO(raw), True, True)
    assert ds.CommandField == 0x8001 and ds.MessageIDBeingRespondedTo == 7


def test_association_pdus_round_trip():
    rq = AssociateRequest(
        "ORTHANC", "LAKE",
        [(1, "1.2.840.10008.5.1.4.1.2.2.3", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])],
        1 << 20, "1.2.3.4", "DICOMFLOW", {"1.2.840.10008.5.1.4.1.1.2": (0, 1)},
    )  # fmt: skip
    back = AssociateRequest.decode(rq.encode())
    assert (back.called_ae, back.calling_ae, back.max_pdu) == ("ORTHANC", "LAKE", 1 << 20)
    assert back.contexts == rq.contexts and back.roles == rq.roles
    assert back.implementation_uid == "1.2.3.4"
    ac = AssociateAccept("ORTHANC", "LAKE", {1: (0, "1.2.840.10008.1.2.1"), 3: (3, "1.2")}, 16384)
    again = AssociateAccept.decode(ac.encode())
    assert again.results == ac.results and again.max_pdu == 16384


def test_pdus_are_read_whatever_the_reads_bring():
    """A Connection reads the socket in blocks: PDUs that arrive together, one split over
    many reads, and one larger than its buffer are each returned whole, in order; bytes
    received but not read as a PDU yet count as pending."""
    import socket
    import struct
    import threading

    from dicomflow.network.protocol import P_DATA, RELEASE_RQ, Connection

    def pdu(kind: int, body: bytes) -> bytes:
        return struct.pack(">BxL", kind, len(body)) + body

    bodies = [bytes([i]) * n for i, n in enumerate([10, 17000, 3, 200_000, 65536, 1])]
    wire = b"".join(pdu(P_DATA, b) for b in bodies) + pdu(RELEASE_RQ, b"\0\0\0\0")
    ours, theirs = socket.socketpair()
    conn = Connection(ours, max_pdu=0, timeout=10)  # no maximum: a 64 KiB buffer that grows

    def send() -> None:  # the first three at once, then in pieces of every size
        theirs.sendall(wire[: 6 * 3 + 17013])
        pos, step = 6 * 3 + 17013, 1
        while pos < len(wire):
            theirs.sendall(wire[pos : pos + step])
            pos, step = pos + step, step * 3 + 1

    sender = threading.Thread(target=send)
    sender.start()
    try:
        first = conn.recv_pdu()
        assert first[0] == P_DATA and bytes(first[1]) == bodies[0]
        assert conn.pending()  # the next two are in the buffer already
        for body in bodies[1:]:
            kind, got = conn.recv_pdu()
            assert (kind, bytes(got)) == (P_DATA, body)
        assert conn.recv_pdu()[0] == RELEASE_RQ
    finally:
        sender.join()
        conn.close()
        theirs.close()


def test_the_network_timeout_ends_a_read_and_a_write_that_wait_too_long():
    """After negotiation the network timeout holds for every read and write (on Linux the
    kernel's, on a blocking socket: no poll before each read); a peer that sends nothing, or
    takes nothing, fails the wait with NetworkTimeoutError, not a socket error."""
    import socket
    import sys
    import time

    from dicomflow.network.protocol import P_DATA, Connection

    with socket.create_server(("127.0.0.1", 0)) as server:
        peer = socket.create_connection(server.getsockname())
        ours, _ = server.accept()
    conn = Connection(ours, max_pdu=0, timeout=30)
    try:
        conn.set_timeout(0.3)
        if sys.platform.startswith("linux"):
            assert ours.gettimeout() is None  # the kernel keeps the timeout
        started = time.monotonic()
        with pytest.raises(NetworkTimeoutError, match="no data from the peer"):
            conn.recv_pdu()
        assert 0.2 < time.monotonic() - started < 10
        with pytest.raises(NetworkTimeoutError, match="did not take our data"):
            for _ in range(10_000):  # the peer reads nothing: the buffers fill, then a wait
                conn.send_pdu(P_DATA, bytes(1 << 20))
    finally:
        conn.close()
        peer.close()


def test_file_meta_is_valid_part10():
    meta = file_meta_bytes(
        "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4.5", "1.2.840.10008.1.2.1", "ORTHANC"
    )
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4.5"
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    parsed = dcmread(io.BytesIO(meta + buf.getvalue()))
    assert parsed.file_meta.SourceApplicationEntityTitle == "ORTHANC"
    assert parsed.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4.5"
    values, start = read_meta(meta)
    assert start == len(meta) and values[0x00020010] == "1.2.840.10008.1.2.1"


def test_multipart_parser_streams_parts():
    body = (
        b"preamble\r\n--XyZ\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n--XyZ\r\n"
        b"Content-Type: application/dicom\r\n\r\nsec\r\n--ond\r\n--XyZ--\r\n"
    )
    chunks = [body[i : i + 5] for i in range(0, len(body), 5)]
    assert list(iter_multipart(chunks, b"XyZ")) == [b"first", b"sec\r\n--ond"]


def test_error_tree():
    assert issubclass(AssociationRejectedError, ConnectionRefusedError)
    assert issubclass(NetworkTimeoutError, TimeoutError)
    assert issubclass(MoveDestinationError, LookupError)
    assert issubclass(SubOperationsFailedError, DicomflowError)
    err = SubOperationsFailedError("x", status=0xB000, completed=3, failed=2, failed_uids=("1.2",))
    back = pickle.loads(pickle.dumps(err))
    assert (back.completed, back.failed, back.failed_uids) == (3, 2, ("1.2",))


def test_public_namespace():
    import dicomflow.network as net

    for name in net.__all__:
        assert getattr(net, name) is not None


def test_lake_on_an_fsspec_url(corpus):
    """A lake can be any fsspec URL: files, records and reconciliation go through fsspec."""
    import uuid

    from dicomflow.dicom import split_part10
    from dicomflow.network import Lake, read_records

    root = f"memory://lake-{uuid.uuid4().hex[:8]}"
    path = corpus / "series" / "dcm_qa_ct_ge" / "01.dcm"
    sop_class, sop, ts, body = split_part10(path.read_bytes())
    with Lake(root) as lake:
        landed = lake.receive(sop_class=sop_class, sop_instance=sop, transfer_syntax=ts,
                              dataset=body, calling_ae="TEST")  # fmt: skip
        assert landed.status == "landed" and landed.path.startswith(root)
    records = read_records(root)
    assert records.column("sop_instance_uid").to_pylist() == [sop]
    with Lake(root) as lake:
        row = records.to_pylist()[0]
        present, adopted = lake.reconcile(row["study_instance_uid"], row["series_instance_uid"])
    assert present == {sop} and adopted == 0


def test_a_url_lake_lands_a_spooled_data_set_by_uploading_its_file(corpus):
    """A data set that outgrew the spool's memory lands in a URL lake from its local file (it
    used to be refused a spool: the whole data set stayed in memory); the record's SHA-256 and
    size are those of the landed object, and the local file is gone."""
    import hashlib
    import os
    import uuid

    import fsspec

    from dicomflow.dicom import split_part10
    from dicomflow.network import Lake, read_records
    from dicomflow.network.protocol import Message, c_store_rq, decode_command

    root = f"memory://lake-{uuid.uuid4().hex[:8]}"
    path = corpus / "series" / "dcm_qa_ct_ge" / "01.dcm"
    sop_class, sop, ts, body = split_part10(path.read_bytes())
    with Lake(root, spool_memory=4096) as lake:
        spooler = lake.spooler({1: ts}, "TEST")
        assert spooler is not None  # None on main: URL lakes took data sets in memory
        spool = spooler(Message(1, decode_command(c_store_rq(1, sop_class, sop))))
        assert spool is not None
        for start in range(0, len(body), 1000):
            spool.write(memoryview(body)[start : start + 1000])
        assert spool.spilled and spool.path is not None
        local = spool.path
        landed = lake.receive(sop_class=sop_class, sop_instance=sop, transfer_syntax=ts,
                              dataset=spool, calling_ae="TEST")  # fmt: skip
        assert landed.status == "landed" and landed.path.startswith(root), landed
        assert not os.path.exists(local)
    data = fsspec.open(landed.path, "rb").open().read()
    assert data.endswith(body)
    row = read_records(root).to_pylist()[0]
    assert (row["sha256"], row["size"]) == (hashlib.sha256(data).hexdigest(), len(data))
