"""C-ECHO, C-FIND, C-GET, C-MOVE and C-STORE against a real Orthanc and DCMTK dcmqrscp."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from dicomflow.network import (
    AssociationOptions,
    AssociationRejectedError,
    Lake,
    MoveDestinationError,
    NetworkTimeoutError,
    SCPOptions,
    StorageSCP,
    StoreSink,
    echo,
    find,
    get,
    move,
    read_records,
)
from dicomflow.pipeline import Instance

from .conftest import dataset_bytes, free_port, lake_files, originals_by_uid

LAKE = AssociationOptions(calling_ae="LAKE")
CT_SERIES_FILES = 28  # series/dcm_qa_ct_ge


@pytest.fixture(scope="module")
def originals(round_trip_files) -> dict[str, bytes]:
    return originals_by_uid(round_trip_files)


@pytest.fixture(scope="module")
def ct_study(orthanc) -> str:
    table = find(orthanc.peer, "Modality=CT", level="series", options=LAKE)
    rows = [r for r in table.to_pylist() if r["NumberOfSeriesRelatedInstances"] == CT_SERIES_FILES]
    assert rows, table
    return rows[0]["study_instance_uid"]


def assert_lake_holds(root: Path, originals: dict[str, bytes], expected: set[str]) -> None:
    """Every expected instance exactly once, its data set byte for byte the original's."""
    files = lake_files(root)
    seen = {}
    for path in files:
        data = path.read_bytes()
        sop = path.stem
        assert sop not in seen, f"{sop} landed twice"
        seen[sop] = data
        assert path.is_relative_to(root)
    assert set(seen) == expected
    for sop, data in seen.items():
        assert dataset_bytes(data) == originals[sop], f"{sop} differs from the original"


def test_echo(orthanc, dcmqrscp):
    assert echo(orthanc.peer) < 5
    assert echo(str(dcmqrscp.peer), options=LAKE) < 5


def test_echo_refused_and_timeout(tmp_path):
    port = free_port()  # nothing listens there
    with pytest.raises(AssociationRejectedError, match="connection refused") as info:
        echo(f"NOBODY@127.0.0.1:{port}")
    assert isinstance(info.value, ConnectionRefusedError)
    with socket.socket() as silent:  # accepts TCP, never answers the A-ASSOCIATE
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        opts = AssociationOptions(acse_timeout=0.5)
        with pytest.raises(NetworkTimeoutError) as info:
            echo(f"SILENT@127.0.0.1:{silent.getsockname()[1]}", options=opts)
        assert isinstance(info.value, TimeoutError)
        with pytest.raises(NetworkTimeoutError):
            silent_peer = f"SILENT@127.0.0.1:{silent.getsockname()[1]}"
            get(
                silent_peer,
                {"StudyInstanceUID": "1.2"},
                tmp_path,
                sop_classes=["1.2"],
                options=opts,
            )


@pytest.mark.parametrize("model", ["study", "patient"])
def test_find_each_level(orthanc, ct_study, originals, model):
    levels = ["study", "series", "image"] if model == "study" else ["patient", "study", "series"]
    for level in levels:
        table = find(orthanc.peer, None, level=level, model=model, options=LAKE)
        assert table.num_rows > 0, level
    studies = find(orthanc.peer, {"StudyInstanceUID": ct_study}, level="study", model=model)
    row = studies.to_pylist()[0]
    assert row["NumberOfStudyRelatedInstances"] == CT_SERIES_FILES
    assert studies.schema.field("StudyDate").type == pa.date32()
    images = find(orthanc.peer, {"StudyInstanceUID": ct_study}, level="image",
                  columns=["InstanceNumber"])  # fmt: skip
    assert images.num_rows == CT_SERIES_FILES
    assert images.schema.field("InstanceNumber").type == pa.int64()
    assert set(images.column("sop_instance_uid").to_pylist()) <= set(originals)
    patients = find(orthanc.peer, "PatientID=*", level="patient", model="patient")
    assert patients.num_rows >= 1 and "PatientID" in patients.column_names


def test_find_dcmqrscp_level_by_level(dcmqrscp, ct_study):
    studies = find(dcmqrscp.peer, {"StudyInstanceUID": ct_study}, level="study", options=LAKE)
    assert studies.num_rows == 1
    series = find(dcmqrscp.peer, {"StudyInstanceUID": ct_study}, level="series")
    assert series.num_rows == 1 and series.column("Modality").to_pylist() == ["CT"]
    assert series.column("NumberOfSeriesRelatedInstances").null_count == 1  # not computed
    uid = series.column("series_instance_uid")[0].as_py()
    images = find(dcmqrscp.peer, {"StudyInstanceUID": ct_study, "SeriesInstanceUID": uid},
                  level="image")  # fmt: skip
    assert images.num_rows == CT_SERIES_FILES


def test_get_study_from_orthanc(orthanc, ct_study, originals, tmp_path):
    expected = set(find(orthanc.peer, {"StudyInstanceUID": ct_study}, level="image")
                   .column("sop_instance_uid").to_pylist())  # fmt: skip
    progress = []
    with Lake(tmp_path) as lake:
        result = get(orthanc.peer, {"StudyInstanceUID": ct_study}, lake, options=LAKE,
                     progress=progress.append)  # fmt: skip
    assert result.ok and result.completed == result.received == CT_SERIES_FILES
    assert progress and progress[-1].remaining >= 0
    assert_lake_holds(tmp_path, originals, expected)
    records = read_records(str(tmp_path))
    assert records.num_rows == CT_SERIES_FILES
    assert set(records.column("source").to_pylist()) == {"c-get"}


def test_get_every_corpus_file_unchanged(orthanc, originals, tmp_path):
    """Compressed, big endian, SR, SEG...: each arrives in the syntax it is stored in."""
    studies = find(orthanc.peer, None, level="study").column("study_instance_uid").to_pylist()
    with Lake(tmp_path, fsync="batch") as lake:
        for study in studies:
            get(orthanc.peer, {"StudyInstanceUID": study}, lake)
    assert_lake_holds(tmp_path, originals, set(originals))


def test_get_from_dcmqrscp(dcmqrscp, ct_study, originals, tmp_path):
    with Lake(tmp_path) as lake:
        result = get(dcmqrscp.peer, {"StudyInstanceUID": ct_study}, lake, options=LAKE)
    assert result.received == CT_SERIES_FILES
    ct = {sop for sop, _ in originals.items()}
    landed = {p.stem for p in lake_files(tmp_path)}
    assert len(landed) == CT_SERIES_FILES and landed <= ct
    assert_lake_holds(tmp_path, originals, landed)


def test_move_study_into_lake(orthanc, ct_study, originals, tmp_path):
    port = free_port()
    orthanc.register("LAKE", port)
    opts = SCPOptions(ae_title="LAKE", host="127.0.0.1", port=port, calling_aes=(orthanc.aet,))
    expected = set(find(orthanc.peer, {"StudyInstanceUID": ct_study}, level="image")
                   .column("sop_instance_uid").to_pylist())  # fmt: skip
    with StorageSCP(tmp_path, opts) as scp:
        result = move(orthanc.peer, {"StudyInstanceUID": ct_study}, scp, options=LAKE)
        assert result.ok and result.completed == CT_SERIES_FILES
        scp.wait_idle(idle=0.2, timeout=30)
    assert_lake_holds(tmp_path, originals, expected)
    records = read_records(str(tmp_path))
    assert records.num_rows == CT_SERIES_FILES
    assert set(records.column("calling_ae").to_pylist()) == {orthanc.aet}


def test_move_from_dcmqrscp(dcmqrscp, ct_study, originals, tmp_path):
    opts = SCPOptions(ae_title="LAKE", host="127.0.0.1", port=dcmqrscp.lake_port,
                      calling_aes=(dcmqrscp.aet,))  # fmt: skip
    with StorageSCP(tmp_path, opts) as scp:
        result = move(dcmqrscp.peer, {"StudyInstanceUID": ct_study}, "LAKE", options=LAKE)
        assert result.completed == CT_SERIES_FILES
        scp.wait_idle(idle=0.2, timeout=30)
    landed = {p.stem for p in lake_files(tmp_path)}
    assert len(landed) == CT_SERIES_FILES
    assert_lake_holds(tmp_path, originals, landed)


def test_move_to_unknown_destination(orthanc, dcmqrscp, ct_study):
    for peer, status in ((orthanc.peer, 0xC000), (dcmqrscp.peer, 0xA801)):
        with pytest.raises(MoveDestinationError, match="NOWHERE") as info:
            move(peer, {"StudyInstanceUID": ct_study}, "NOWHERE", options=LAKE)
        assert info.value.status == status
        assert isinstance(info.value, LookupError)


def test_store_sink_round_trip(orthanc, round_trip_files, tmp_path):
    """C-STORE (as a sink) into our own SCP, from several threads at once."""
    port = free_port()
    opts = SCPOptions(ae_title="LAKE", host="127.0.0.1", port=port, calling_aes=("SENDER",))
    sink = StoreSink(f"LAKE@127.0.0.1:{port}", AssociationOptions(calling_ae="SENDER"))
    files = round_trip_files
    with StorageSCP(tmp_path, opts) as scp:
        chunks = [files[i::4] for i in range(4)]
        errors = []

        def send(paths):
            try:
                for p in paths:
                    (out,) = sink.write(Instance(str(p)))
                    assert out.size == p.stat().st_size
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(c,)) for c in chunks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sink.close()
        scp.wait_idle(idle=0.2, timeout=30)
        assert not errors
        assert sum(a.stored for a in scp.associations) == len(files)
        assert len({a.calling_ae for a in scp.associations}) == 1
    originals = originals_by_uid(files)
    assert_lake_holds(tmp_path, originals, set(originals))


def test_store_sink_to_orthanc(orthanc, corpus):
    path = corpus / "modality" / "MR" / "tcia_acrin-flt-breast_3.dcm"
    sink = StoreSink(orthanc.peer, LAKE)
    (out,) = sink.write(Instance(str(path)))
    sink.close()
    sop = out.path.rsplit("/", 1)[-1]
    try:
        found = find(orthanc.peer, {"SOPInstanceUID": sop, "StudyInstanceUID": None},
                     level="image")  # fmt: skip
        assert found.num_rows == 1
    finally:
        orthanc.delete_instance(sop)


def test_associations_have_tcp_nodelay(orthanc):
    """dicomflow's associations turn Nagle off on their own socket (no global setting) and
    announce the maximum PDU of their options."""
    from dicomflow.network.protocol import QR_SYNTAXES, VERIFICATION, open_association

    conn, accept = open_association(orthanc.peer, LAKE, [(1, VERIFICATION, QR_SYNTAXES)])
    try:
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert accept.results[1][0] == 0 and conn.max_pdu == LAKE.max_pdu
    finally:
        conn.release()
    assert conn.closed


def test_cli_echo_and_find(orthanc, tmp_path, capsys):
    from dicomflow.cli import main

    assert main(["echo", "--pacs", str(orthanc.peer)]) == 0
    assert "C-ECHO ok" in capsys.readouterr().out
    out = tmp_path / "series.parquet"
    assert main(["find", "--pacs", str(orthanc.peer), "--level", "series", "--query",
                 "Modality=CT", "--columns", "SeriesNumber", "-o", str(out)]) == 0  # fmt: skip
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert table.num_rows == 1 and table.schema.field("SeriesNumber").type == pa.int64()
    assert main(["echo", "--pacs", f"NOBODY@127.0.0.1:{free_port()}"]) == 2
    assert "connection refused" in capsys.readouterr().err
