"""The Storage SCP: who may store, what lands where, records, stages, the ``receive`` command."""

from __future__ import annotations

import collections
import io
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian

from dicomflow.dicom import TMP_SUFFIX, split_part10
from dicomflow.network import (
    AssociationOptions,
    AssociationRejectedError,
    Lake,
    Peer,
    SCPOptions,
    StorageSCP,
    StoreSink,
    read_records,
)
from dicomflow.pipeline import Instance, Skip

from .conftest import PEER_ENV, dataset_bytes, free_port, lake_files, wait_until

SENDER = AssociationOptions(calling_ae="MODALITY")


def scp_options(port: int, **kw) -> SCPOptions:
    return SCPOptions(ae_title="LAKE", host="127.0.0.1", port=port,
                      calling_aes=kw.pop("calling_aes", ("MODALITY",)), **kw)  # fmt: skip


@pytest.fixture(autouse=True)
def _quiet_pydicom():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid UIDs on purpose, pydicom warns on reading
        yield


def crafted_instance(study: str, series: str, sop: str) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
    ds.PatientName, ds.PatientID, ds.Modality = "Doe^Jane", "CRAFTED", "OT"
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the UIDs are invalid on purpose
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def send(port: int, data: bytes, options: AssociationOptions = SENDER) -> None:
    inst = Instance("crafted")
    inst._raw = data
    sink = StoreSink(f"LAKE@127.0.0.1:{port}", options)
    try:
        sink.write(inst)
    finally:
        sink.close()


def test_unknown_calling_ae_is_refused(tmp_path, round_trip_files):
    port = free_port()
    with StorageSCP(tmp_path, scp_options(port)) as scp:
        with pytest.raises(AssociationRejectedError, match="calling AE title not recognized"):
            send(port, round_trip_files[0].read_bytes(), AssociationOptions(calling_ae="INTRUDER"))
        # DCMTK's storescu is refused the same way
        result = subprocess.run(
            ["storescu", "-aet", "INTRUDER", "-aec", "LAKE", "127.0.0.1", str(port),
             str(round_trip_files[0])],
            env=PEER_ENV, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode != 0 and "Rejected" in result.stderr
        # a wrong called AE title and a host not in the list are refused too
        with pytest.raises(AssociationRejectedError, match="called AE title not recognized"):
            sink = StoreSink(f"OTHER@127.0.0.1:{port}", SENDER)
            inst = Instance(str(round_trip_files[0]))
            sink.write(inst)
        assert all(not a.accepted for a in scp.associations)
    with StorageSCP(tmp_path, scp_options(port, hosts=("10.9.9.9",))):
        with pytest.raises(AssociationRejectedError):
            send(port, round_trip_files[0].read_bytes())
    assert lake_files(tmp_path) == []


SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
#: (Affected SOP Instance UID, data set SOP/Study/Series Instance UIDs, status, Error Comment);
#: a non-ASCII value is given as its UTF-8 bytes
HOSTILE = [
    ("1.2.3/4", None, 0x0117, "Affected SOP Instance UID has '/' (digits and dots only)"),
    ("1.2.3_4", None, 0x0117, "Affected SOP Instance UID has '_' (digits and dots only)"),
    ("1.2.3:4", None, 0x0117, "Affected SOP Instance UID has ':' (digits and dots only)"),
    (".1.2.3", None, 0x0117, "Affected SOP Instance UID starts with a dot"),
    ("1.2.3.", None, 0x0117, "Affected SOP Instance UID ends with a dot"),
    ("1..2", None, 0x0117, "Affected SOP Instance UID has an empty component ('..')"),
    ("1." + "2" * 63, None, 0x0117, "Affected SOP Instance UID has 65 characters (at most 64)"),
    ("1.2.\u00e9".encode(), None, 0x0117, "Affected SOP Instance UID has '?' (digits and dots"),
    ("1.2.9", ("1.2.8", "1.2", "1.2.3"), 0xA900,
     "SOP Instance UID differs from the Affected SOP Instance UID"),
    ("1.2.9", ("1.2.9", "../../escape", "1.2.3"), 0xA900,
     "Study Instance UID has '/' (digits and dots only)"),
    ("1.2.9", ("1.2.9", "1.2", ".hidden"), 0xA900,
     "Series Instance UID has 'h' (digits and dots only)"),
    ("1.2.9", ("1.2.9", "1.2.\u00e9".encode(), "1.2.3"), 0xA900,
     "Study Instance UID has '?' (digits and dots only)"),
]  # fmt: skip


def dataset_with(study: str | bytes, series: str | bytes, sop: str | bytes) -> bytes:
    """A data set (no meta) with these UIDs; bytes values are put in as they are."""
    swaps = {}
    texts = []
    for i, value in enumerate((study, series, sop)):
        if isinstance(value, bytes):  # pydicom would not write it: swapped in afterwards
            placeholder = f"{i + 7}" * len(value)
            swaps[placeholder.encode()] = value
            value = placeholder
        texts.append(value)
    data = dataset_bytes(crafted_instance(*texts))
    for placeholder, value in swaps.items():
        data = data.replace(placeholder, value)
    return data


def store_raw(conn, sop_class: str, sop: str | bytes, dataset: bytes) -> tuple[int, str]:
    """One C-STORE whose Affected SOP Instance UID goes on the wire as given."""
    from dicomflow.network.protocol import C_STORE_RQ, C_STORE_RSP, encode_command, text, us

    command = encode_command([
        (0x00000002, sop_class), (0x00000100, C_STORE_RQ), (0x00000110, 1),
        (0x00000700, 0), (0x00000800, 1), (0x00001000, sop),
    ])  # fmt: skip
    conn.send_message(1, command, dataset)
    for msg in conn.messages():
        assert msg.command_field == C_STORE_RSP
        return us(msg.command, 0x00000900), text(msg.command, 0x00000902)
    raise AssertionError("the receiver released instead of answering")


def test_hostile_uids_are_refused_before_anything_is_written(tmp_path):
    """Against a running ``dicomflow receive``: UIDs that are no UIDs (PS3.5 9.1), in the
    command or in the data set, or a data set that is not the instance the command names,
    get a failure status with the reason; nothing is written, nothing is recorded, and the
    association carries on (the valid instances after them land, each in its own file)."""
    from dicomflow.network.protocol import open_association

    port = free_port()
    lake = tmp_path / "lake"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomflow.cli", "receive", "--ae", "LAKE", "--port", str(port),
         "--bind", "127.0.0.1", "--lake", str(lake), "--allow", "MODALITY"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    answers = []
    try:
        wait_until(lambda: _listening(port), 30, "receive", proc)
        conn, accept = open_association(
            Peer("LAKE", "127.0.0.1", port), SENDER, [(1, SC_IMAGE, [EXPLICIT_LE])]
        )
        assert accept.results[1][0] == 0
        for sop, uids, _, _ in HOSTILE:
            data_sop, study, series = uids or (sop, "1.2", "1.2.3")
            answers.append(store_raw(conn, SC_IMAGE, sop, dataset_with(study, series, data_sop)))
        bad_class = store_raw(conn, "1.2.x", "1.2.7", dataset_with("1.2", "1.2.3", "1.2.7"))
        # the lake's old troubles: these were one file, and a hidden one; now three files
        valid = ["1.2.3.4", "1.2.3.40", "1.2.34", "1.2.03.4"]  # legacy leading zero: lands
        landed = [store_raw(conn, SC_IMAGE, u, dataset_with("1.2", "1.2.3", u)) for u in valid]
        conn.release()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    for (sop, _, status, comment), (got_status, got_comment) in zip(HOSTILE, answers):
        assert (hex(got_status), got_comment[: len(comment)]) == (hex(status), comment), sop
    assert bad_class == (0x0122, "Affected SOP Class UID has 'x' (digits and dots only)")
    assert landed == [(0x0000, "")] * 4
    assert "4 instances landed" in err and f"{len(HOSTILE) + 1} failed" in err
    files = lake_files(lake)
    assert sorted(p.name for p in files) == sorted(f"{u}.dcm" for u in valid)
    assert {p.parent.relative_to(lake).as_posix() for p in files} == {"1.2/1.2.3"}
    hidden = [p for p in tmp_path.rglob(".*")]
    assert hidden == [], hidden
    records = read_records(str(lake))
    assert sorted(records["sop_instance_uid"].to_pylist()) == sorted(valid)
    assert sorted(records["uri"].to_pylist()) == sorted(str(p) for p in files)


def test_instances_land_as_received_with_records(tmp_path, round_trip_files):
    port = free_port()
    # storescu does not offer SEG, and converts big endian to the first syntax we accept
    files = [p for p in round_trip_files if "SEG" not in str(p) and "BigEnd" not in str(p)]
    with StorageSCP(tmp_path, scp_options(port, calling_aes=("*",))) as scp:
        assert scp.options.fsync == "each"  # acknowledged only once durable
        procs = [  # four concurrent associations from DCMTK's storescu
            subprocess.Popen(
                [
                    "storescu",
                    "-aet",
                    f"SENDER{i}",
                    "-aec",
                    "LAKE",
                    "-xy",
                    "127.0.0.1",
                    str(port),
                    *[str(p) for p in files[i::4]],
                ],
                env=PEER_ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            for i in range(4)
        ]
        for p in procs:
            assert p.wait(60) == 0, p.stderr.read()
        scp.wait_idle(idle=0.2, timeout=30)
        assert sum(a.stored for a in scp.associations) == len(files)
    originals = {}
    for p in files:
        data = p.read_bytes()
        originals[dcmread(p, stop_before_pixels=True).SOPInstanceUID] = dataset_bytes(data)
    landed = {p.stem: p for p in lake_files(tmp_path)}
    assert set(landed) == set(originals)
    for sop, path in landed.items():
        assert dataset_bytes(path.read_bytes()) == originals[sop]
        ds = dcmread(path, stop_before_pixels=True)
        assert path.parent.name == ds.SeriesInstanceUID
        assert path.parent.parent.name == ds.StudyInstanceUID
        assert ds.file_meta.SourceApplicationEntityTitle.startswith("SENDER")
    records = read_records(str(tmp_path))
    assert sorted(records["sop_instance_uid"].to_pylist()) == sorted(originals)
    import hashlib

    for row in records.to_pylist():
        data = Path(row["uri"]).read_bytes()
        assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["size"] == len(data)


def test_stages_run_before_landing(tmp_path, round_trip_files):
    def rename(instance):
        instance.dataset.PatientName = "Anonymous"
        return instance

    def drop_sr(instance):
        if instance.dataset.get("Modality") == "SR":
            raise Skip("no reports")
        return instance

    port = free_port()
    with StorageSCP(tmp_path, scp_options(port), stages=[drop_sr, rename]) as scp:
        sink = StoreSink(f"LAKE@127.0.0.1:{port}", SENDER)
        for p in round_trip_files:
            sink.write(Instance(str(p)))
        sink.close()
        scp.wait_idle(idle=0.2, timeout=30)
        assert scp.lake.stats.dropped == 1
    landed = lake_files(tmp_path)
    assert len(landed) == len(round_trip_files) - 1
    assert {str(dcmread(p, stop_before_pixels=True).PatientName) for p in landed} == {"Anonymous"}


def _refuse_sr(instance):
    raise ValueError("no structured reports here")


def _full_disk(instance):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    ("stage", "status"), [(_refuse_sr, 0xC000), (_full_disk, 0xA700)], ids=["error", "enospc"]
)
def test_scp_and_pipeline_give_the_same_reason_for_a_failing_stage(tmp_path, stage, status):
    import dicomflow as dfl

    data = crafted_instance("1.2.3", "1.2.3.4", "1.2.3.4.5")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "one.dcm").write_bytes(data)
    report = (dfl.pipeline(dfl.scan(tmp_path / "src")) | dfl.map(stage)).execute(workers=1)
    (row,) = report.manifest.to_pylist()
    landed = []
    port = free_port()
    with StorageSCP(tmp_path / "lake", scp_options(port), stages=[dfl.map(stage)],
                    on_instance=lambda got, ae: landed.append(got)):  # fmt: skip
        sink = StoreSink(f"LAKE@127.0.0.1:{port}", SENDER)
        sop_class, sop, ts, body = split_part10(data)
        answer = sink.store(sop_class, sop, ts, body)
        sink.close()
    assert row["status"] == "failed" and row["stage"] == f"map({stage.__name__})"
    assert [(g.status, g.stage, g.reason) for g in landed] == [
        ("failed", row["stage"], row["reason"])
    ]
    assert answer == (status, row["reason"][:64])
    assert not lake_files(tmp_path / "lake")


def test_receive_command(tmp_path, round_trip_files):
    port = free_port()
    lake = tmp_path / "lake"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomflow.cli", "receive", "--ae", "LAKE", "--port", str(port),
         "--bind", "127.0.0.1", "--lake", str(lake), "--allow", "MODALITY"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: (lake / "_lake").is_dir() and _listening(port), 30, "receive", proc)
        result = subprocess.run(
            ["storescu", "-aet", "MODALITY", "-aec", "LAKE", "-xy", "127.0.0.1", str(port),
             *[str(p) for p in round_trip_files[:5]]],
            env=PEER_ENV, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "5 instances landed" in err
    assert len(lake_files(lake)) == 5
    assert read_records(str(lake)).num_rows == 5


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_lake_reconcile_adopts_and_removes(tmp_path, round_trip_files):
    """A file without a record is adopted if complete, removed if torn."""
    port = free_port()
    with StorageSCP(tmp_path, scp_options(port)):
        send(port, round_trip_files[0].read_bytes())
        send(port, round_trip_files[1].read_bytes())
    for part in (tmp_path / "_lake").glob("received-*"):
        part.unlink()  # as if the process had been killed before writing its records
    first, second = lake_files(tmp_path)
    second.write_bytes(second.read_bytes()[:2000])  # a torn write
    ds = dcmread(first, stop_before_pixels=True)
    with Lake(tmp_path, adopt=False) as lake:  # not on opening: reconcile does it here
        present, adopted = lake.reconcile(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert adopted >= 1 and ds.SOPInstanceUID in present
    assert not second.exists() or second.parent != first.parent or second.stem not in present
    records = read_records(str(tmp_path))
    assert "adopted" in records["source"].to_pylist()


def test_reconcile_while_records_are_being_written_adopts_nothing(
    tmp_path, round_trip_files, monkeypatch
):
    """Records taken from the pending list but not yet on disk when a series is reconciled:
    reconcile waits for them instead of taking the file for an unrecorded one and recording
    it a second time."""
    import threading

    import pyarrow as pa
    import pyarrow.parquet as pq

    sop_class, sop, ts, body = split_part10(round_trip_files[0].read_bytes())
    ds = dcmread(round_trip_files[0], stop_before_pixels=True)
    building, release = threading.Event(), threading.Event()
    build_table = pa.table

    def slow_table(*args, **kwargs):  # the records' table is built between those two places
        if threading.current_thread().name == "records-writer":
            building.set()
            release.wait(10)
        return build_table(*args, **kwargs)

    lake = Lake(tmp_path, fsync="none", flush_seconds=3600)
    try:
        lake.receive(sop_class=sop_class, sop_instance=sop, transfer_syntax=ts, dataset=body)
        lake._drain()  # the file is written, its record pending
        monkeypatch.setattr(pa, "table", slow_table)
        writer = threading.Thread(target=lake._write_records, name="records-writer")
        writer.start()
        assert building.wait(10)
        threading.Timer(0.3, release.set).start()
        present, adopted = lake.reconcile(ds.StudyInstanceUID, ds.SeriesInstanceUID)
        writer.join()
    finally:
        release.set()
        lake.close()
    assert (present, adopted) == ({sop}, 0)
    parts = sorted((tmp_path / "_lake").glob("received-*.parquet"))
    assert pq.read_table(parts).column("sop_instance_uid").to_pylist() == [sop]


def recorded_rows(lake: Path) -> collections.Counter:
    """SOP Instance UID -> rows in every readable record part (not deduplicated)."""
    import pyarrow.parquet as pq

    parts = sorted((lake / "_lake").glob("received-*.parquet"))
    return collections.Counter(pq.read_table(parts).column("sop_instance_uid").to_pylist())


def run_receive_once(lake: Path) -> str:
    """Start ``dicomflow receive`` on ``lake``, wait until it listens, stop it; its stderr."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomflow.cli", "receive", "--ae", "LAKE", "--port", str(port),
         "--bind", "127.0.0.1", "--lake", str(lake), "--allow", "MODALITY"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: _listening(port), 30, "receive", proc)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_receiver_start_records_files_whose_records_were_lost(tmp_path, round_trip_files, damage):
    """A crash after the acknowledgement and before the records' flush, or a record part torn:
    the next start adopts the files without a record, each exactly once; a torn file is not
    adopted, and the temporary file of a killed writer is removed."""
    lake = tmp_path / "lake"
    files = [p for p in round_trip_files if "SEG" not in str(p) and "BigEnd" not in str(p)][:6]
    port = free_port()
    with StorageSCP(lake, scp_options(port)) as scp:  # a record part per three instances
        for batch in (files[:3], files[3:]):
            result = subprocess.run(
                ["storescu", "-aet", "MODALITY", "-aec", "LAKE", "-xy", "127.0.0.1", str(port),
                 *map(str, batch)],
                env=PEER_ENV, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            scp.lake.flush()
    landed = {p.stem: p for p in lake_files(lake)}
    assert len(landed) == len(files)
    parts = sorted((lake / "_lake").glob("received-*.parquet"))
    last = parts[-1]
    lost = set(read_records(str(lake)).column("sop_instance_uid").to_pylist())
    if damage == "deleted":
        last.unlink()
    else:
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    lost -= set(read_records(str(lake)).column("sop_instance_uid").to_pylist())
    assert lost  # the last part's instances: files without a record now
    # a whole instance put in its place by hand, a writer's temporary file, a torn file
    extra = round_trip_files[-1]
    _, sop, _, _ = split_part10(extra.read_bytes())
    ds = dcmread(extra, stop_before_pixels=True)
    placed = lake / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{sop}.dcm"
    placed.parent.mkdir(parents=True, exist_ok=True)
    placed.write_bytes(extra.read_bytes())
    some = next(iter(landed.values()))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    temp = some.parent / f".{some.stem}9.dcm.{gone.stdout.strip()}-0123456789ab{TMP_SUFFIX}"
    temp.write_bytes(some.read_bytes()[:3000])
    torn = some.parent / f"{some.stem}9.dcm"
    torn.write_bytes(some.read_bytes()[:3000])

    err = run_receive_once(lake)

    assert f"adopted {len(lost) + 1} file(s) without a record" in err
    assert f"{torn} (" in err  # the warning names it
    rows = recorded_rows(lake)
    assert set(rows) == set(landed) | {sop} and max(rows.values()) == 1
    records = read_records(str(lake))
    adopted = {r["sop_instance_uid"] for r in records.to_pylist() if r["source"] == "adopted"}
    assert adopted == lost | {sop}
    assert torn.exists()  # left as it is, not recorded
    assert not temp.exists()  # the killed writer's temporary file is swept
    assert sorted((lake / "_lake").glob("*.unreadable")) == (
        [last.with_name(last.name + ".unreadable")] if damage == "truncated" else []
    )
    for row in records.to_pylist():
        data = Path(row["uri"]).read_bytes()
        assert row["size"] == len(data)
    # a second start finds nothing to adopt
    assert "adopted" not in run_receive_once(lake)
    assert recorded_rows(lake) == rows


def test_receive_logs_each_association_and_running_counts(tmp_path, round_trip_files):
    """Operators see it work: one line per association (calling AE, address, instances,
    bytes, outcome, duration) and running counts (instances/s, MB/s, failures), with the
    counts DCMTK's storescu sent."""
    import re

    files = [p for p in round_trip_files if "SEG" not in str(p) and "BigEnd" not in str(p)]
    batches = [files[:5], files[5:12], files[12:]]
    port = free_port()
    lake = tmp_path / "lake"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomflow.cli", "receive", "--ae", "LAKE", "--port", str(port),
         "--bind", "127.0.0.1", "--lake", str(lake), "--allow-any", "--log-every", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: _listening(port), 30, "receive", proc)
        for i, batch in enumerate(batches):
            result = subprocess.run(
                ["storescu", "-aet", f"SENDER{i}", "-aec", "LAKE", "-xy", "127.0.0.1",
                 str(port), *map(str, batch)],
                env=PEER_ENV, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
        wait_until(lambda: read_records(str(lake)).num_rows == len(files), 30, "the records")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = err.splitlines()
    logged = [line for line in lines if line.startswith("association ")]
    assert len(logged) == len(batches), err
    for i, (line, batch) in enumerate(zip(logged, batches, strict=True)):
        sent = sum(len(dataset_bytes(p.read_bytes())) for p in batch)
        assert line.startswith(f"association SENDER{i}@127.0.0.1: {len(batch)} instances, "
                               f"0 failed, {sent / 1e6:,.1f} MB in "), line  # fmt: skip
        assert re.search(r" in \d+\.\d s, released$", line), line
    counts = [line for line in lines if line.startswith("receiving: ")]
    assert counts and counts[-1].startswith(f"receiving: {len(files)} instances, "), err
    assert "finished in" in counts[-1] and "instances/s" in counts[-1] and "MB/s" in counts[-1]
