"""C-ECHO and C-FIND on dicomflow's Upper Layer: the messages byte by byte, then statuses,
cancel and errors against a pynetdicom SCP (a test peer that answers as a test tells it)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from csv import DictReader

import pyarrow.parquet as pq
import pytest
from pydicom import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomflow.errors import ConfigError
from dicomflow.network import (
    AssociationAbortedError,
    AssociationOptions,
    AssociationRejectedError,
    DimseStatusError,
    echo,
    find,
)
from dicomflow.network.protocol import (
    C_FIND_RSP,
    MODEL_UIDS,
    Message,
    c_cancel_rq,
    c_echo_rq,
    c_find_rq,
    c_get_rq,
    c_move_rq,
    c_store_rq,
    decode_command,
    encode_identifier,
    identifier,
    identifier_header,
    iter_find,
    response,
    results_table,
    status_category,
)

from .conftest import free_port

STUDY_FIND = MODEL_UIDS[("study", "find")]
FAST = AssociationOptions(calling_ae="TESTER", acse_timeout=5, dimse_timeout=5)


def command_dataset(raw: bytes) -> Dataset:
    """A command set read back by pydicom (implicit VR little endian, as PS3.7 6.3.1 says)."""
    return read_dataset(io.BytesIO(raw), True, True)


# -- the messages ------------------------------------------------------------------------------


def test_c_find_rq_fields():
    ds = command_dataset(c_find_rq(7, STUDY_FIND))
    assert ds.CommandGroupLength == len(c_find_rq(7, STUDY_FIND)) - 12
    assert ds.AffectedSOPClassUID == STUDY_FIND
    assert (ds.CommandField, ds.MessageID, ds.Priority) == (0x0020, 7, 0)
    assert ds.CommandDataSetType != 0x0101  # the identifier follows
    assert set(ds.keys()) == {0x0, 0x2, 0x100, 0x110, 0x700, 0x800}


def test_other_requests_fields():
    echo_rq = command_dataset(c_echo_rq(3))
    assert (echo_rq.CommandField, echo_rq.MessageID, echo_rq.CommandDataSetType) == (
        0x0030, 3, 0x0101,
    )  # fmt: skip
    assert echo_rq.AffectedSOPClassUID == "1.2.840.10008.1.1"
    move_rq = command_dataset(c_move_rq(1, MODEL_UIDS[("study", "move")], "LAKE"))
    assert move_rq.CommandField == 0x0021 and move_rq.MoveDestination == "LAKE"
    assert command_dataset(c_get_rq(1, MODEL_UIDS[("patient", "get")])).CommandField == 0x0010
    store = command_dataset(
        c_store_rq(9, "1.2.840.10008.5.1.4.1.1.2", "1.2.3", move_originator=("QR", 4))
    )
    assert (store.CommandField, store.AffectedSOPInstanceUID) == (0x0001, "1.2.3")
    assert (store.MoveOriginatorApplicationEntityTitle, store.MoveOriginatorMessageID) == ("QR", 4)
    cancel = command_dataset(c_cancel_rq(7))
    assert (cancel.CommandField, cancel.MessageIDBeingRespondedTo) == (0x0FFF, 7)
    assert cancel.CommandDataSetType == 0x0101 and "AffectedSOPClassUID" not in cancel


def test_c_find_responses():
    request = decode_command(c_find_rq(5, STUDY_FIND))
    pending = command_dataset(response(request, 0xFF00, dataset=True))
    assert (pending.CommandField, pending.MessageIDBeingRespondedTo) == (C_FIND_RSP, 5)
    assert pending.Status == 0xFF00 and pending.CommandDataSetType != 0x0101
    assert pending.AffectedSOPClassUID == STUDY_FIND
    final = Message(1, decode_command(response(request, 0xC001, comment="no such key " * 9)))
    assert final.command_field == C_FIND_RSP and final.status == 0xC001
    assert not final.has_dataset
    assert command_dataset(response(request, 0xC001, comment="x" * 99)).ErrorComment == "x" * 64
    get_rq = decode_command(c_get_rq(2, MODEL_UIDS[("study", "get")]))
    counts = command_dataset(response(get_rq, 0xFF00, counts=(3, 1, 0), remaining=6))
    assert (counts.NumberOfRemainingSuboperations, counts.NumberOfCompletedSuboperations) == (6, 3)
    final_get = command_dataset(response(get_rq, 0xB000, counts=(3, 1, 0)))
    assert "NumberOfRemainingSuboperations" not in final_get
    assert final_get.NumberOfFailedSuboperations == 1


@pytest.mark.parametrize(
    ("status", "category"),
    [(0x0000, "success"), (0xFF00, "pending"), (0xFF01, "pending"), (0xFE00, "cancel"),
     (0xB000, "warning"), (0x0107, "warning"), (0xA700, "failure"), (0xC001, "failure"),
     (0xA900, "failure"), (0x0122, "failure")],
)  # fmt: skip
def test_status_categories(status, category):
    assert status_category(status) == category


def answer() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.PatientName = "Müller^Jürgen"
    ds.PatientID = "PAT1"
    ds.StudyDate = "20240131"
    ds.ModalitiesInStudy = ["CT", "SR"]
    ds.NumberOfStudyRelatedInstances = "28"
    ds.StudyDescription = ""
    return ds


@pytest.mark.parametrize(
    "ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_identifier_round_trip_gives_the_same_table(ts):
    """An answer read by the header parser (no pydicom) types exactly like the pydicom path."""
    ds = answer()
    header = identifier_header(encode_identifier(ds, ts), ts)
    assert header.implicit == (ts == ImplicitVRLittleEndian)
    assert header.value(0x0020000D).rstrip(b"\0") == b"1.2.826.0.1.3680043.8.498.1"
    ours = results_table("STUDY", [header])
    assert ours.equals(results_table("STUDY", [ds]))
    row = ours.to_pylist()[0]
    assert row["PatientName"] == "Müller^Jürgen" and row["NumberOfStudyRelatedInstances"] == 28
    assert row["StudyDescription"] is None
    empty = identifier_header(b"", ts)
    assert results_table("STUDY", [empty]).to_pylist()[0]["study_instance_uid"] is None


def test_identifier_of_a_query():
    ds = identifier("SERIES", {"StudyInstanceUID": "1.2.3", "Modality": "CT"}, ["SeriesNumber"])
    header = identifier_header(
        encode_identifier(ds, ImplicitVRLittleEndian), ImplicitVRLittleEndian
    )
    assert header.value(0x00080052) == b"SERIES"
    assert header.value(0x00200011) == b""  # an empty return key is sent, zero length


# -- against a peer ----------------------------------------------------------------------------


class FindSCP:
    """A pynetdicom Q/R and Verification SCP whose C-FIND answers come from ``answers``: a list of
    (status, identifier or None) pairs; a status may be a Dataset (to carry ErrorComment)."""

    def __init__(self, answers=(), echo_status: int = 0x0000, contexts=None) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification

        self.answers = list(answers)
        self.cancelled = threading.Event()
        self.requests: list[Dataset] = []
        self.wait_for_cancel = False
        self.echo_status = echo_status
        self.port = free_port()
        ae = AE(ae_title="FINDSCP")
        for uid in contexts or (STUDY_FIND, MODEL_UIDS[("patient", "find")], Verification):
            ae.add_supported_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        handlers = [(evt.EVT_C_FIND, self._find), (evt.EVT_C_ECHO, lambda e: self.echo_status)]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=handlers)  # fmt: skip

    @property
    def peer(self) -> str:
        return f"FINDSCP@127.0.0.1:{self.port}"

    def _find(self, event):
        self.requests.append(event.identifier)
        for status, ds in self.answers:
            yield status, ds
            deadline = time.monotonic() + 5 if self.wait_for_cancel else 0
            while True:
                if event.is_cancelled:  # True once: pynetdicom forgets the C-CANCEL then
                    self.cancelled.set()
                    yield 0xFE00, None
                    return
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.01)

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def scp():
    servers: list[FindSCP] = []

    def start(*args, **kw) -> FindSCP:
        servers.append(FindSCP(*args, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def failure(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment
    return status


def test_find_pending_then_success(scp):
    peer = scp([(0xFF00, answer()), (0xFF01, answer()), (0x0000, None)])
    table = find(peer.peer, "PatientID=PAT1 StudyDate=20240101-20240131", options=FAST)
    assert table.num_rows == 2 and table.column("PatientID").to_pylist() == ["PAT1", "PAT1"]
    sent = peer.requests[0]
    assert sent.QueryRetrieveLevel == "STUDY" and sent.StudyDate == "20240101-20240131"
    assert "PatientName" in sent and not sent.PatientName  # a return key, empty


def test_find_warning_ends_with_the_answers(scp):
    peer = scp([(0xFF00, answer()), (0xB000, None)])
    assert find(peer.peer, None, options=FAST).num_rows == 1


def test_find_failure_raises_with_the_comment(scp):
    peer = scp([(0xFF00, answer()), (failure(0xC001, "cannot match on that"), None)])
    with pytest.raises(DimseStatusError, match="0xC001: cannot match on that") as info:
        find(peer.peer, None, options=FAST)
    assert info.value.status == 0xC001
    assert echo(peer.peer, options=FAST) < 5  # the association was released, the peer is fine


def test_find_cancel_when_the_caller_stops(scp):
    peer = scp([(0xFF00, answer()), (0xFF00, answer()), (0xFF00, answer())])
    peer.wait_for_cancel = True
    ds = identifier("STUDY", {}, ["StudyInstanceUID"])
    answers = iter_find(peer.peer, ds, options=FAST)
    first = next(answers)
    assert first.value(0x00100020) == b"PAT1"
    answers.close()  # C-CANCEL, then the peer's final response, then A-RELEASE
    assert peer.cancelled.wait(5)


def test_find_model_not_accepted(scp):
    peer = scp(contexts=["1.2.840.10008.1.1"])
    with pytest.raises(AssociationRejectedError, match="does not accept C-FIND"):
        find(peer.peer, None, options=FAST)
    with pytest.raises(AssociationRejectedError, match="does not accept C-ECHO"):
        echo(scp(contexts=[STUDY_FIND]).peer, options=FAST)


def test_echo_status(scp):
    with pytest.raises(DimseStatusError, match="0x0122") as info:
        echo(scp(echo_status=0x0122).peer, options=FAST)
    assert info.value.status == 0x0122


def test_find_peer_aborts_or_stays_silent():
    """No response: the peer aborts after the request, or never answers within the timeout."""
    import socket

    from dicomflow.network.protocol import ABORT, ASSOCIATE_AC, AssociateAccept, AssociateRequest

    for behaviour in ("abort", "silent"):
        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]

        def serve(server=server, behaviour=behaviour):
            conn, _ = server.accept()
            with conn:
                head = conn.recv(6)
                rq = AssociateRequest.decode(conn.recv(int.from_bytes(head[2:], "big"),
                                                       socket.MSG_WAITALL))  # fmt: skip
                ac = AssociateAccept(rq.called_ae, rq.calling_ae,
                                     {1: (0, ExplicitVRLittleEndian)}, 16384).encode()  # fmt: skip
                conn.sendall(bytes([ASSOCIATE_AC, 0]) + len(ac).to_bytes(4, "big") + ac)
                conn.recv(65536)  # the C-FIND-RQ
                if behaviour == "abort":
                    conn.sendall(bytes([ABORT, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
                else:
                    time.sleep(1.5)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        opts = AssociationOptions(acse_timeout=2, dimse_timeout=0.5)
        with pytest.raises(AssociationAbortedError, match="gave no C-FIND response"):
            find(f"QUIET@127.0.0.1:{port}", None, options=opts)
        thread.join(5)
        server.close()


# -- query keys and values, against Orthanc ----------------------------------------------------

SEG_STUDY = "modality/SEG/highdicom_seg_image_ct_binary.dcm"  # StudyDate 19950903, 173032


def find_command(orthanc, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomflow.cli", "find", "--pacs", str(orthanc.peer),
         "--ae", "FINDER", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def answers(orthanc, tmp_path, *args: str) -> list[dict]:
    out = tmp_path / f"answers-{len(list(tmp_path.iterdir()))}.parquet"
    result = find_command(orthanc, *args, "-o", str(out))
    assert result.returncode == 0, result.stderr
    return pq.read_table(out).to_pylist()


def test_find_modality_at_study_level_is_modalities_in_study(orthanc, tmp_path):
    """``--level study --query Modality=CT`` used to answer 0 rows: studies have no Modality,
    they have ModalitiesInStudy."""
    series = find(orthanc.peer, "Modality=CT", level="series", options=FAST)
    ct_studies = set(series.column("study_instance_uid").to_pylist())
    assert ct_studies
    rows = answers(orthanc, tmp_path, "--level", "study", "--query", "Modality=CT")
    assert {r["study_instance_uid"] for r in rows} == ct_studies
    assert all("CT" in r["ModalitiesInStudy"] for r in rows)
    # the same as a column: asked for as ModalitiesInStudy
    table = find(orthanc.peer, None, level="study", columns=("Modality",), options=FAST)
    assert "ModalitiesInStudy" in table.column_names and "Modality" not in table.column_names


def test_find_refuses_a_key_the_level_does_not_have(orthanc):
    result = find_command(orthanc, "--level", "study", "--query", "SeriesDescription=AX*")
    assert result.returncode == 2
    assert "SeriesDescription is a series-level attribute" in result.stderr
    assert "StudyDate" in result.stderr and "ModalitiesInStudy" in result.stderr  # valid keys
    result = find_command(orthanc, "--level", "patient", "--model", "patient", "--query",
                          "Modality=CT")  # fmt: skip
    assert result.returncode == 2 and "Modality is a series-level attribute" in result.stderr
    with pytest.raises(ConfigError, match="column Rows is a image-level attribute"):
        find(orthanc.peer, None, level="series", columns=("Rows",), options=FAST)


def test_find_with_iso_dates_and_times(orthanc, corpus, tmp_path):
    """ISO dates and times, single or as ranges with ``..``, find what the compact DICOM
    forms find; a form that cannot be matched is refused instead of answering nothing."""
    from pydicom import dcmread

    seg = dcmread(corpus / SEG_STUDY, stop_before_pixels=True)
    assert (seg.StudyDate, seg.StudyTime) == ("19950903", "173032")

    def studies(query: str) -> set[str]:
        rows = find(orthanc.peer, query, level="study", options=FAST)
        return set(rows.column("study_instance_uid").to_pylist())

    compact = studies("StudyDate=19950903")
    assert seg.StudyInstanceUID in compact
    assert studies("StudyDate=1995-09-03") == compact
    assert studies("StudyDate=1995-09-01..1995-09-30") == studies("StudyDate=19950901-19950930")
    assert seg.StudyInstanceUID in studies("StudyDate=1995-09-01..1995-09-30")
    assert seg.StudyInstanceUID in studies("StudyDate=..1995-09-03")
    assert seg.StudyInstanceUID not in studies("StudyDate=1995-09-04..")
    timed = studies("StudyDate=1995-09-03 StudyTime=17:00..18:00")
    assert seg.StudyInstanceUID in timed and timed == studies(
        "StudyDate=19950903 StudyTime=1700-1800"
    )
    assert seg.StudyInstanceUID not in studies("StudyDate=1995-09-03 StudyTime=17:31..")
    for bad, why in [
        ("StudyDate=1995-09-01-1995-09-30", "with ISO values, write the range as A..B"),
        ("StudyDate=1995-13-01", "'1995-13-01' is no real date"),
        ("StudyDate=1995-09-30..1995-09-01", "the range ends before it starts"),
        ("StudyDate=last-week", "'last-week' is not a date or a range of them"),
        ("StudyTime=17:00-18:00", "with ISO values, write the range as A..B"),
        ("StudyTime=25:00", "'25:00' is no real time"),
    ]:
        with pytest.raises(ConfigError, match="expected a") as info:
            find(orthanc.peer, bad, level="study", options=FAST)
        assert why in str(info.value), bad
    # the command: the same answers for ISO dates, and the reason, exit code 2, for the others
    rows = answers(orthanc, tmp_path, "--level", "study", "--query", "StudyDate=1995-09-03")
    assert {r["study_instance_uid"] for r in rows} == compact
    result = find_command(orthanc, "--query", "StudyDate=1995-09-01-1995-09-30")
    assert result.returncode == 2
    assert "write the range as A..B" in result.stderr and "2024-01-01..2024-01-31" in result.stderr


def test_find_formats(orthanc, tmp_path):
    """``--format table`` prints every series UID whole on one line (they used to wrap over four
    lines); csv and json give the same answers as ``-o`` to programs, on stdout alone."""
    expected = answers(orthanc, tmp_path, "--level", "series")
    uids = {r["series_instance_uid"] for r in expected}
    assert uids and max(map(len, uids)) > 40
    table = find_command(orthanc, "--level", "series")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    for uid in uids:  # whole, on the line of its row
        assert sum(uid in line for line in lines) == 1, uid
    assert f"{len(expected)} answers" in table.stderr
    assert table.stdout == find_command(orthanc, "--level", "series", "--format", "table").stdout
    csv = find_command(orthanc, "--level", "series", "--format", "csv")
    assert csv.returncode == 0, csv.stderr
    rows = list(DictReader(io.StringIO(csv.stdout)))
    assert [r["series_instance_uid"] for r in rows] == [r["series_instance_uid"] for r in expected]
    assert rows[0].keys() == expected[0].keys()
    doc = find_command(orthanc, "--level", "series", "--format", "json")
    assert doc.returncode == 0, doc.stderr
    records = json.loads(doc.stdout)
    assert [r["series_instance_uid"] for r in records] == [
        r["series_instance_uid"] for r in expected
    ]
    assert {k: str(v) for k, v in records[0].items() if v is not None} == {
        k: str(v) for k, v in expected[0].items() if v is not None
    }
