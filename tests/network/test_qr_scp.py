"""The Query/Retrieve SCP over a catalog, asked by DCMTK's findscu and getscu and by dicomflow."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread

import dicomflow as dfl
from dicomflow.network import (
    AssociationOptions,
    AssociationRejectedError,
    DimseStatusError,
    QueryRetrieveSCP,
    SCPOptions,
    echo,
    find,
    get,
)
from dicomflow.network.protocol import identifier, iter_find, match_value

from .conftest import PEER_ENV, dataset_bytes, free_port, lake_files, originals_by_uid

CT_SERIES_FILES = 28
ME = AssociationOptions(calling_ae="ASKER")


@pytest.fixture(scope="module")
def archive(tmp_path_factory, round_trip_files) -> Path:
    root = tmp_path_factory.mktemp("qr-archive")
    for i, path in enumerate(round_trip_files):
        shutil.copy(path, root / f"{i:03d}.dcm")
    return root


@pytest.fixture(scope="module")
def qr(archive):
    opts = SCPOptions(ae_title="QRSCP", host="127.0.0.1", port=free_port(), calling_aes=("*",))
    with QueryRetrieveSCP(dfl.scan(str(archive)), opts) as scp:
        yield scp


@pytest.fixture(scope="module")
def ct_study(qr) -> str:
    series = find(f"QRSCP@127.0.0.1:{qr.port}", "Modality=CT", level="series", options=ME)
    rows = [r for r in series.to_pylist() if r["NumberOfSeriesRelatedInstances"] == CT_SERIES_FILES]
    return rows[0]["study_instance_uid"]


def peer(qr) -> str:
    return f"QRSCP@127.0.0.1:{qr.port}"


def dcmtk(tool: str, qr, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [f"/usr/bin/{tool}", "-S", "-aet", "DCMTK", "-aec", "QRSCP", *args, "127.0.0.1",
         str(qr.port)],
        env=PEER_ENV, capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


def test_findscu_at_each_level(qr, ct_study, originals_by_level, tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    proc = dcmtk("findscu", qr, "-X", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                 "-k", "StudyInstanceUID", "-k", "PatientID", "-k", "ModalitiesInStudy",
                 "-k", "NumberOfStudyRelatedInstances", "-k", "StudyDate")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    answers = [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    assert {a.StudyInstanceUID for a in answers} == originals_by_level["STUDY"]
    ct = next(a for a in answers if a.StudyInstanceUID == ct_study)
    assert ct.NumberOfStudyRelatedInstances == CT_SERIES_FILES and ct.ModalitiesInStudy == "CT"
    out = tmp_path / "series"
    out.mkdir()
    proc = dcmtk("findscu", qr, "-X", "-od", str(out), "-k", "QueryRetrieveLevel=SERIES",
                 "-k", f"StudyInstanceUID={ct_study}", "-k", "SeriesInstanceUID",
                 "-k", "Modality", "-k", "NumberOfSeriesRelatedInstances")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (series,) = [dcmread(p) for p in out.glob("rsp*.dcm")]
    assert series.Modality == "CT" and series.StudyInstanceUID == ct_study
    out = tmp_path / "image"
    out.mkdir()
    proc = dcmtk("findscu", qr, "-X", "-od", str(out), "-k", "QueryRetrieveLevel=IMAGE",
                 "-k", f"StudyInstanceUID={ct_study}",
                 "-k", f"SeriesInstanceUID={series.SeriesInstanceUID}", "-k", "SOPInstanceUID",
                 "-k", "InstanceNumber", "-k", "Rows")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    images = [dcmread(p) for p in out.glob("rsp*.dcm")]
    assert len(images) == CT_SERIES_FILES
    assert {i.SOPInstanceUID for i in images} <= originals_by_level["IMAGE"]
    assert all(i.Rows == 512 for i in images)


@pytest.fixture(scope="module")
def originals_by_level(round_trip_files) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"STUDY": set(), "IMAGE": set()}
    for path in round_trip_files:
        ds = dcmread(path, stop_before_pixels=True)
        out["STUDY"].add(ds.StudyInstanceUID)
        out["IMAGE"].add(ds.SOPInstanceUID)
    return out


def test_getscu_receives_the_files_unchanged(qr, ct_study, round_trip_files, tmp_path):
    proc = dcmtk("getscu", qr, "-od", str(tmp_path), "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={ct_study}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    files = sorted(tmp_path.iterdir())
    assert len(files) == CT_SERIES_FILES
    originals = originals_by_uid(round_trip_files)
    for path in files:
        sop = dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert dataset_bytes(path.read_bytes()) == originals[sop]
    log = qr.associations[-1]
    assert log.calling_ae == "DCMTK" and log.stored == CT_SERIES_FILES and not log.failed


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_dicomflow_against_its_own_scp(qr, ct_study, round_trip_files, tmp_path):
    assert echo(peer(qr), options=ME) < 5
    studies = find(peer(qr), None, level="study", columns=["SOPClassesInStudy"], options=ME)
    assert studies.num_rows == len({r for r in studies.column("study_instance_uid").to_pylist()})
    row = next(r for r in studies.to_pylist() if r["study_instance_uid"] == ct_study)
    assert row["NumberOfStudyRelatedInstances"] == CT_SERIES_FILES
    assert row["SOPClassesInStudy"] == ["1.2.840.10008.5.1.4.1.1.2"]
    names = find(peer(qr), "PatientName=*", level="study", options=ME)
    assert names.num_rows == studies.num_rows
    assert find(peer(qr), "PatientID=NO-SUCH-PATIENT", level="study", options=ME).num_rows == 0
    with pytest.raises(dfl.ConfigError, match="'2024-13-99' is no real date"):
        find(peer(qr), "StudyDate=2024-13-99", level="study", options=ME)  # refused here
    unchecked = identifier("STUDY", {"StudyDate": "2024-13-99"})  # sent as it is
    with pytest.raises(DimseStatusError, match="0xA900: cannot match StudyDate"):
        list(iter_find(peer(qr), unchecked, options=ME))
    dated = find(peer(qr), "StudyDate=19000101-20991231", level="study", options=ME)
    assert 0 < dated.num_rows <= studies.num_rows
    russian = find(peer(qr), None, level="image", columns=["PatientName"], options=ME)
    assert any(n and not n.isascii() for n in russian.column("PatientName").to_pylist())
    result = get(peer(qr), {"StudyInstanceUID": ct_study}, tmp_path, options=ME)
    assert result.ok and result.received == result.completed == CT_SERIES_FILES
    originals = originals_by_uid(round_trip_files)
    for path in lake_files(tmp_path):
        assert dataset_bytes(path.read_bytes()) == originals[path.stem]


def test_get_of_a_class_the_requestor_did_not_offer(qr, ct_study, tmp_path):
    result = get(peer(qr), {"StudyInstanceUID": ct_study}, tmp_path, options=ME,
                 sop_classes=["1.2.840.10008.5.1.4.1.1.4"], check=False)  # fmt: skip
    assert (result.status, result.completed, result.failed) == (0xA702, 0, CT_SERIES_FILES)
    assert len(result.failed_uids) == CT_SERIES_FILES


def test_refusals(qr):
    with pytest.raises(DimseStatusError, match="0xA900"):
        get(peer(qr), {"StudyInstanceUID": ""}, "unused", level="study", sop_classes=["1.2"],
            options=ME)  # fmt: skip
    opts = SCPOptions(ae_title="QRSCP", host="127.0.0.1", port=free_port(), calling_aes=("ME",))
    with QueryRetrieveSCP(dfl.scan([]).to_arrow(), opts) as strict:
        with pytest.raises(AssociationRejectedError, match="calling AE title not recognized"):
            echo(f"QRSCP@127.0.0.1:{strict.port}", options=ME)


def test_scp_honours_c_cancel(qr):
    """A C-CANCEL sent right behind the C-FIND-RQ stops the answers: final status 0xFE00."""
    from dicomflow.network.protocol import (
        MODEL_UIDS,
        QR_SYNTAXES,
        c_cancel_rq,
        c_find_rq,
        encode_identifier,
        identifier,
        open_association,
    )  # fmt: skip

    uid = MODEL_UIDS[("study", "find")]
    conn, accept = open_association(
        dfl.network.Peer.parse(peer(qr)), ME, [(1, uid, list(QR_SYNTAXES))]
    )
    ts = accept.results[1][1]
    query = encode_identifier(identifier("IMAGE", {}, ["SOPInstanceUID"]), ts)
    conn.send_message(1, c_find_rq(1, uid), query)
    conn.send_message(1, c_cancel_rq(1))
    statuses = []
    for msg in conn.messages():
        statuses.append(msg.status)
        if msg.status != 0xFF00:
            break
    conn.release()
    images = dfl.network.find(peer(qr), "", level="image", options=ME).num_rows
    # cancelled (0xFE00) before the last answer: how many went out first depends on the load
    assert statuses[-1] == 0xFE00 and len(statuses) - 1 < images


def test_find_cancel(qr):
    from dicomflow.network.protocol import identifier, iter_find

    answers = iter_find(peer(qr), identifier("IMAGE", {}, ["SOPInstanceUID"]), options=ME)
    next(answers)
    answers.close()  # C-CANCEL; the SCP ends with 0xFE00 or success, the association is released
    assert echo(peer(qr), options=ME) < 5
    done = threading.Event()
    threading.Thread(target=lambda: (find(peer(qr), None, options=ME), done.set())).start()
    assert done.wait(10)


@pytest.mark.parametrize(
    ("vr", "query", "value", "expected"),
    [("LO", "PAT*", "PAT0001", True), ("LO", "PAT?", "PAT01", False),
     ("PN", "Doe^*", "Doe^J", True), ("UI", "1.2\\1.3", "1.3", True),
     ("UI", "1.2\\1.3", "1.4", False),
     ("LO", "a.b", "axb", False), ("LO", "x[1]", "x[1]", True)],
)  # fmt: skip
def test_matching(vr, query, value, expected):
    assert match_value(vr, query)(value) is expected


def test_date_range_matching():
    import datetime as dt

    day = dt.date(2024, 1, 15)
    assert match_value("DA", "20240101-20240131")(day)
    assert match_value("DA", "-20240115")(day) and match_value("DA", "20240115-")(day)
    assert not match_value("DA", "20240116-")(day)
    assert match_value("DA", "20240115")(day) and not match_value("DA", "20240114")(day)
    assert match_value("TM", "0800-1200")(dt.time(9, 30))


def test_answers_identifier_values(qr, ct_study):
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ct_study
    query.StudyDate = None
    query.PatientName = None
    query.NumberOfStudyRelatedSeries = None
    (answer,) = qr.answers(query, "STUDY")
    assert answer.NumberOfStudyRelatedSeries == 1 and answer.StudyInstanceUID == ct_study
    assert "StudyDate" in answer and answer.PatientName == "REMOVED"  # as the corpus has them
