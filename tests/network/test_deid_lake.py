"""A shareable lake: ``pull --deid`` and ``receive --deid`` write nothing that names an original.

Every byte of every file under the lake (DICOM files, record and catalog parts, reports), and
every value of its Parquet tables once decompressed, is searched for the originals' Patient ID,
Patient Name, Study/Series/SOP Instance UIDs, Accession Number and Study Date; dicomflow's
``verify_folders`` checks each landed instance against its original too.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydicom import dcmread

from dicomflow.anonymize import read_crosswalk, verify_folders
from dicomflow.network import read_catalog, read_records, read_state

from .conftest import PEER_ENV, free_port, lake_files, wait_until

SECRET = b"a project secret of 32 bytes...."
KEYWORDS = ("PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID",
            "SOPInstanceUID", "AccessionNumber", "StudyDate")  # fmt: skip
#: values the profile itself writes (a corpus CT's Patient Name is already "REMOVED", which is
#: also the defined term of Longitudinal Temporal Information Modified)
DEFINED_TERMS = {"REMOVED", "MODIFIED", "UNMODIFIED"}


@pytest.fixture(autouse=True)
def _quiet_pydicom():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture
def keyfile(tmp_path) -> Path:
    path = tmp_path / "project.key"
    path.write_bytes(SECRET)
    return path


def identifying(files: list[Path]) -> tuple[set[bytes], set[str], set[dt.date]]:
    """The originals' values of :data:`KEYWORDS` (at least 4 characters): as encoded in the
    files and as text, and their study dates as dates."""
    raw: set[bytes] = set()
    texts: set[str] = set()
    dates: set[dt.date] = set()
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        for keyword in KEYWORDS:
            if keyword not in ds:
                continue
            value = ds.get_item(keyword).value
            encoded = value if isinstance(value, bytes) else str(value).encode()
            encoded = encoded.strip(b"\0 ")
            text = str(ds[keyword].value).strip()
            if len(text) >= 4 and text not in DEFINED_TERMS:
                raw.add(encoded)
                texts.add(text)
                raw.add(text.encode("utf-8"))
            if keyword == "StudyDate" and len(text) == 8:
                dates.add(dt.date(int(text[:4]), int(text[4:6]), int(text[6:])))
    return raw, texts, dates


def assert_nothing_identifying(root: Path, files: list[Path]) -> int:
    """Search every file under ``root`` byte by byte, and every Parquet table's values."""
    raw, texts, dates = identifying(files)
    assert raw and texts
    pattern = re.compile(b"|".join(re.escape(v) for v in sorted(raw, key=len, reverse=True)))
    searched = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        found = pattern.search(path.read_bytes())
        assert found is None, f"{path.relative_to(root)} holds {found.group()!r}"
        searched += 1
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            for name in table.column_names:
                for value in table.column(name).to_pylist():
                    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
                        assert value not in dates, f"{path.name}: {name} = {value}"
                    elif value is not None:
                        shown = str(value)
                        hits = [t for t in texts if t in shown]
                        assert not hits, f"{path.name}: {name} = {shown!r} holds {hits}"
    return searched


def of_modality(files: list[Path], *modalities: str) -> list[Path]:
    return [p for p in files if dcmread(p, stop_before_pixels=True).get("Modality") in modalities]


def deid_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomflow.cli", *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_pull_deid_writes_a_shareable_lake(orthanc, round_trip_files, keyfile, tmp_path):
    """Everything in Orthanc, pulled with --deid: the instances that can be de-identified
    land, the others (burned-in text possible) fail closed; nothing in the lake names an
    original, the report that does is beside the lake; a rerun fetches nothing; the crosswalk
    is written only where asked, and never inside the lake."""
    lake = tmp_path / "lake"
    crosswalk = tmp_path / "private" / "crosswalk.parquet"
    inside = deid_command(
        "pull", "--pacs", str(orthanc.peer), "--lake", str(lake), "--method", "get",
        "--deid", str(keyfile), "--crosswalk", str(lake / "cw.parquet"),
    )  # fmt: skip
    assert inside.returncode == 2 and "inside the output" in inside.stderr, inside.stderr
    result = deid_command(
        "pull", "--pacs", str(orthanc.peer), "--lake", str(lake), "--method", "get",
        "--retries", "0", "--deid", str(keyfile), "--crosswalk", str(crosswalk),
    )  # fmt: skip
    # SC, OT and US images may show burned-in text: refused, so the pull is incomplete
    assert result.returncode == 1, result.stderr
    landed = lake_files(lake)
    deidentifiable = of_modality(round_trip_files, "CT", "MR", "SR", "SEG")
    assert len(landed) == len(deidentifiable)
    assert assert_nothing_identifying(lake, round_trip_files) > len(landed)
    originals = tmp_path / "originals"
    originals.mkdir()
    for p in round_trip_files:
        (originals / f"{p.parent.name}-{p.name}").symlink_to(p)
    report = verify_folders(originals, lake, secret=SECRET)
    assert report.ok and report.pairs == len(landed), (report.findings[:3], report.problems)
    assert report.paired_by == "keyed UID"

    # the lake's own records, catalog and report: de-identified values only
    records = read_records(str(lake))
    assert records.num_rows == len(landed)
    landed_uids = records["sop_instance_uid"].to_pylist()
    assert records["source_sop_instance_uid"].to_pylist() == landed_uids
    assert set(records["calling_ae"].to_pylist()) == {""}
    catalog = read_catalog(str(lake))
    assert sorted(catalog["uri"].to_pylist()) == sorted(map(str, landed))
    assert {v[:4] for v in catalog["PatientName"].to_pylist()} == {"ANON"}
    assert {v[:4] for v in catalog["PatientID"].to_pylist()} == {"ANON", ""}  # SR: empty
    shared = read_state(str(lake), "pull").to_pylist()
    assert {r["status"] for r in shared} == {"complete", "failed"}  # the refused ones: failed
    for row in shared:
        if row["status"] == "complete":
            assert row["series_instance_uid"].startswith("2.25."), row
        else:  # nothing of it landed: no values; its error by kind only
            assert row["series_instance_uid"] is None and ":" not in row["error"], row
    # the report naming the originals is beside the lake, not in it
    (private,) = (tmp_path / "lake.private").glob("pull-*.parquet")
    planned = pq.read_table(private)
    studies = {dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in deidentifiable}
    assert studies <= set(planned["study_instance_uid"].to_pylist())
    assert "keep it private" in result.stderr and str(private) in result.stderr
    # the crosswalk, where it was asked for: every original SOP Instance UID and its pseudonym
    pairs = read_crosswalk(crosswalk)
    uids = dict(zip(pairs["original"].to_pylist(), pairs["replacement"].to_pylist()))
    for path in deidentifiable:
        assert uids[dcmread(path, stop_before_pixels=True).SOPInstanceUID] in landed_uids

    again = deid_command(
        "pull", "--pacs", str(orthanc.peer), "--lake", str(lake), "--method", "get",
        "--retries", "0", "--deid", str(keyfile),
    )  # fmt: skip
    assert re.search(r"\(0 fetched now", again.stderr), again.stderr
    assert len(lake_files(lake)) == len(landed)
    assert_nothing_identifying(lake, round_trip_files)


def test_receive_deid_from_storescu(round_trip_files, keyfile, tmp_path):
    """``receive --deid`` fed by DCMTK's storescu: nothing in the lake names an original."""
    files = of_modality(round_trip_files, "CT", "MR", "SR")
    lake = tmp_path / "lake"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomflow.cli", "receive", "--ae", "LAKE", "--port", str(port),
         "--bind", "127.0.0.1", "--lake", str(lake), "--allow", "MODALITY", "--deid",
         str(keyfile)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: _listening(port), 60, "receive", proc)
        sent = subprocess.run(
            ["/usr/bin/storescu", "-aet", "MODALITY", "-aec", "LAKE", "-xy", "127.0.0.1",
             str(port), *map(str, files)],
            env=PEER_ENV, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"{len(files)} instances landed" in err
    assert len(lake_files(lake)) == len(files)
    assert assert_nothing_identifying(lake, round_trip_files) > len(files)
    assert not (tmp_path / "lake.private").exists()  # a receiver has no plan to keep


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_receive_deid_of_a_large_instance_keeps_memory_bounded(keyfile, tmp_path, peers_available):
    """A 320 MiB CT sent by storescu into ``receive --deid``: it lands de-identified with its
    pixels as sent, and no receiving process grows by more than a fraction of the instance
    (the stages read it from its spool file, beside the lake, and the result is streamed to
    its file); the spool file is gone afterwards."""
    from .conftest import rss_growth, tree_rss
    from .test_url_lake_spool import _large_ct

    sent = tmp_path / "large.dcm"
    _large_ct(sent)
    original = dcmread(sent, stop_before_pixels=True)
    lake = tmp_path / "lake"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomflow.cli", "receive", "--ae", "LAKE", "--port", str(port),
         "--bind", "127.0.0.1", "--lake", str(lake), "--allow", "MODALITY", "--deid",
         str(keyfile), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: _listening(port), 60, "receive", proc)
        before = tree_rss(proc.pid)  # the parent and its workers
        result = subprocess.run(
            ["/usr/bin/storescu", "-aet", "MODALITY", "-aec", "LAKE", "127.0.0.1", str(port),
             str(sent)],
            env=PEER_ENV, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        wait_until(lambda: read_records(str(lake)).num_rows == 1, 60, "the record")
        grown = rss_growth(before, tree_rss(proc.pid))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    (landed,) = lake_files(lake)
    ds = dcmread(landed, stop_before_pixels=True)
    assert ds.PatientID != original.PatientID and ds.SOPInstanceUID != original.SOPInstanceUID
    assert landed.read_bytes()[-(1 << 20) :] == sent.read_bytes()[-(1 << 20) :]  # pixels as sent
    (row,) = read_records(str(lake)).to_pylist()
    assert row["size"] == landed.stat().st_size and row["sop_instance_uid"] == ds.SOPInstanceUID
    assert not list((tmp_path / "lake.private" / "incoming").glob("*.part"))
    assert not list((lake / "_lake").rglob("*.part"))  # the original never went inside the lake
    print(f"receiver peak RSS grew by {grown / 2**20:.0f} MiB for a "
          f"{sent.stat().st_size / 2**20:.0f} MiB instance with --deid")  # fmt: skip
    assert grown < 100 * 2**20, f"the receiver held the instance: +{grown / 2**20:.0f} MiB"


def test_staged_from_the_spool_file_lands_the_bytes_staged_in_memory(
    round_trip_files, keyfile, tmp_path, peers_available
):
    """The same instances into two de-identifying lakes, one keeping every data set in memory,
    one sending each to its spool file (``spool_memory`` of 1 KiB): the landed files and
    their records are the same, byte for byte."""
    from dicomflow.anonymize import Deidentify
    from dicomflow.network import Lake, SCPOptions, StorageSCP

    files = of_modality(round_trip_files, "CT", "MR", "SR")
    landed = {}
    for name, memory in (("memory", 1 << 30), ("file", 1024)):
        deid = Deidentify(secret_file=str(keyfile))
        lake = Lake(tmp_path / name, fsync="none", stages=[deid], deidentified=deid.uid,
                    spool_memory=memory)  # fmt: skip
        port = free_port()
        options = SCPOptions(ae_title="LAKE", host="127.0.0.1", port=port, calling_aes=("*",))
        with StorageSCP(lake, options):
            sent = subprocess.run(
                ["/usr/bin/storescu", "-aet", "MODALITY", "-aec", "LAKE", "-xy", "127.0.0.1",
                 str(port), *map(str, files)],
                env=PEER_ENV, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert sent.returncode == 0, sent.stderr
        lake.close()
        root = tmp_path / name
        landed[name] = {p.relative_to(root): p.read_bytes() for p in lake_files(root)}
        records = read_records(str(root)).sort_by("sop_instance_uid")
        landed[name + " records"] = records.select(["sop_instance_uid", "sha256", "size"])
    assert len(landed["memory"]) == len(files)
    assert landed["file"] == landed["memory"]
    assert landed["file records"].equals(landed["memory records"])
    spooled = tmp_path / "file.private" / "incoming"
    assert spooled.is_dir() and not list(spooled.glob("*.part"))  # they went there, then left
    assert not (tmp_path / "memory.private").exists()
