"""Bulk pulls: plan, fetch, check, resume, and survive a killed process or a killed peer."""

from __future__ import annotations

import collections
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydicom import dcmread

from dicomflow.network import PullOptions, plan, pull, read_records, read_state
from dicomflow.runtime import read_progress

from .conftest import dataset_bytes, free_port, lake_files

CT_SERIES_FILES = 28


def digests(paths) -> dict[str, str]:
    """SOP Instance UID (the file name in a lake) -> SHA-256 of the data set bytes."""
    return {Path(p).stem: hashlib.sha256(dataset_bytes(Path(p).read_bytes())).hexdigest()
            for p in paths}  # fmt: skip


@pytest.fixture(scope="module")
def synth_sources(synth_archive) -> dict[str, Path]:
    """SOP Instance UID -> the synthetic file Orthanc was loaded with."""
    from dicomflow.dicom import split_part10

    return {split_part10(p.read_bytes())[1]: p for p in synth_archive.rglob("*.dcm")}


def assert_once(lake: Path, expected: set[str]) -> list[Path]:
    """Every expected instance exactly once, in files and in records; records match files."""
    files = lake_files(lake)
    names = collections.Counter(p.stem for p in files)
    assert set(names) == expected and max(names.values()) == 1
    parts = sorted((lake / "_lake").glob("received-*.parquet"))
    raw = pq.read_table(parts)
    counts = collections.Counter(raw.column("sop_instance_uid").to_pylist())
    assert set(counts) == expected and max(counts.values()) == 1, "duplicate records"
    for row in read_records(str(lake)).to_pylist():
        assert row["sha256"] == hashlib.sha256(Path(row["uri"]).read_bytes()).hexdigest()
    return files


def assert_same_instances(files: list[Path], sources: dict[str, Path]) -> None:
    """Element for element the instances Orthanc was loaded with (Orthanc's DICOM side
    re-encodes undefined-length sequences, so these bytes cannot be compared)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            assert dcmread(path) == dcmread(sources[path.stem]), path.stem


def assert_complete(lake: Path, expected: dict[str, str]) -> None:
    """Every instance exactly once, data set bytes equal to the originals."""
    files = assert_once(lake, set(expected))
    assert digests(files) == expected


def test_plan_and_pull_by_get_then_rerun(orthanc, tmp_path):
    opts = PullOptions(ae_title="LAKE", method="auto", concurrency=2)
    planned = plan(orthanc.peer, "Modality=CT", options=opts)
    assert planned.num_rows == 1
    assert planned.column("NumberOfSeriesRelatedInstances").to_pylist() == [CT_SERIES_FILES]
    events = []
    report = pull(orthanc.peer, "Modality=CT", tmp_path, opts, progress=events.append)
    assert report.method == "get" and report.complete and report.fetched == CT_SERIES_FILES
    assert {e.kind for e in events} >= {"planned", "series-start", "series-done"}
    assert len(lake_files(tmp_path)) == CT_SERIES_FILES
    assert Path(report.path).exists()
    again = pull(orthanc.peer, "Modality=CT", tmp_path, opts)
    assert again.complete and again.fetched == 0
    assert again.table.column("status").to_pylist() == ["already complete"]
    assert read_state(str(tmp_path), "pull").num_rows == 2


def test_pull_events_feed_any_progress_consumer(orthanc, tmp_path):
    import io

    from dicomflow.runtime import ProgressEvent, ProgressLog

    out = io.StringIO()
    log = ProgressLog(out, interval=3600)  # only the final line within the hour
    events = []

    def both(event):
        events.append(event)
        log(event)

    opts = PullOptions(ae_title="LAKE", method="get")
    report = pull(orthanc.peer, "Modality=CT", tmp_path, opts, progress=both)
    assert report.complete and all(isinstance(e, ProgressEvent) for e in events)
    last = events[-1]
    assert last.kind == "finished" and last.finished and last.done == last.total == 1
    assert last.bytes == report.bytes and last.failed == 0
    (line,) = out.getvalue().splitlines()
    assert line.startswith("pulling: 1/1 series (100%), ") and "finished in" in line


def test_pull_everything_by_move(orthanc, round_trip_files, tmp_path):
    port = free_port()
    orthanc.register("MOVER", port)
    opts = PullOptions(ae_title="MOVER", port=port, host="127.0.0.1", method="move")
    report = pull(orthanc.peer, None, tmp_path, opts)
    assert report.complete, report.table.to_pylist()
    assert report.method == "move"
    expected = {}
    from dicomflow.dicom import split_part10

    for p in round_trip_files:
        _, sop, _, body = split_part10(p.read_bytes())
        expected[sop] = hashlib.sha256(body).hexdigest()
    assert_complete(tmp_path, expected)


@pytest.mark.parametrize("method", ["get", "move"])
def test_pull_from_dcmqrscp_uses_image_level_find(dcmqrscp, tmp_path, method):
    """dcmqrscp gives no instance counts: the plan falls back to image-level C-FIND."""
    opts = PullOptions(ae_title="LAKE", port=dcmqrscp.lake_port, host="127.0.0.1",
                       method=method)  # fmt: skip
    report = pull(dcmqrscp.peer, "Modality=CT", tmp_path, opts)
    rows = report.table.to_pylist()
    assert len(rows) == 1 and rows[0]["expected"] == CT_SERIES_FILES, rows
    assert report.complete and len(lake_files(tmp_path)) == CT_SERIES_FILES


def test_partial_lake_fetches_only_what_is_missing(orthanc, tmp_path):
    opts = PullOptions(ae_title="LAKE")
    pull(orthanc.peer, "Modality=CT", tmp_path, opts)
    files = lake_files(tmp_path)
    for p in files[::4]:
        p.unlink()
    files[1].write_bytes(files[1].read_bytes()[:5000])  # and one torn write
    with pytest.warns(UserWarning, match=r"1 file\(s\) .* not whole instances .*truncated"):
        report = pull(orthanc.peer, "Modality=CT", tmp_path, opts)  # not adopted on opening
    row = report.table.to_pylist()[0]
    missing = len(files[::4]) + 1
    assert row["present_before"] == CT_SERIES_FILES - missing
    assert row["fetched"] == missing and row["status"] == "complete"
    assert len(lake_files(tmp_path)) == CT_SERIES_FILES


def _wait_for_files(lake: Path, count: int, proc=None, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = len(lake_files(lake)) if lake.exists() else 0
        if n >= count or (proc is not None and proc.poll() is not None):
            return n
        time.sleep(0.01)
    raise TimeoutError(f"fewer than {count} files in {lake}")


def test_killed_pull_resumes(orthanc_synth, synth_sources, tmp_path):
    """SIGKILL a ``dicomflow pull`` midway; the same command again completes the lake."""
    lake = tmp_path / "lake"
    cmd = [sys.executable, "-m", "dicomflow.cli", "pull", "--pacs", str(orthanc_synth.peer),
           "--ae", "KILLED", "--query", "PatientID=*", "--lake", str(lake), "--concurrency", "1",
           "--method", "get", "-q"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        landed = _wait_for_files(lake, 40, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    assert landed < len(synth_sources), "the pull ended before it could be killed"
    # the lake's progress file (what `dicomflow serve LAKE` shows) says where the pull was
    killed = read_progress(lake / "_lake" / "progress.json")
    assert killed["state"] == "running" and killed["task"] == "pulling"
    assert killed["total"] and killed["done"] < killed["total"]
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "series complete" in rerun.stderr
    ended = read_progress(lake / "_lake" / "progress.json")
    assert ended["state"] == "finished" and ended["done"] == ended["total"] == killed["total"]
    assert_same_instances(assert_once(lake, set(synth_sources)), synth_sources)
    report = read_state(str(lake), "pull").to_pylist()
    assert sum(r["fetched"] for r in report) < len(synth_sources)  # the rerun fetched the rest


def test_killed_peer_then_rerun(orthanc_synth, synth_sources, tmp_path):
    """The peer dies midway: the pull reports what is incomplete; after a restart a rerun
    finishes with every instance exactly once."""
    lake = tmp_path / "lake"
    opts = PullOptions(ae_title="RESUME", method="get", concurrency=1, retries=0)
    result = {}

    def run():
        result["report"] = pull(orthanc_synth.peer, "PatientID=*", lake, opts)

    thread = threading.Thread(target=run)
    thread.start()
    _wait_for_files(lake, 40)
    orthanc_synth.kill()
    thread.join(120)
    assert not thread.is_alive()
    first = result["report"]
    assert not first.complete
    assert any(s in ("failed", "incomplete") for s in first.table.column("status").to_pylist())
    orthanc_synth.start()
    second = pull(orthanc_synth.peer, "PatientID=*", lake, opts)
    assert second.complete, second.table.to_pylist()
    assert_same_instances(assert_once(lake, set(synth_sources)), synth_sources)
    assert os.path.isdir(lake / "_lake")


def test_retry_after_failed_sub_operations_with_stages(orthanc, tmp_path):
    """A stage that fails one instance the first time: the C-GET reports a failed
    sub-operation, the series is retried after a backoff and only the missing one is fetched.
    With stages, presence is decided from the records (stages may change UIDs)."""
    from pydicom.uid import generate_uid

    failed = []

    def remap(instance):
        ds = instance.dataset
        if not failed:
            failed.append(ds.SOPInstanceUID)
            raise RuntimeError("transient")
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            setattr(ds, key, generate_uid(entropy_srcs=[str(ds[key].value)]))
        return instance

    remap.name = "remap"
    opts = PullOptions(ae_title="LAKE", retries=2, backoff=0.05)
    events = []
    report = pull(orthanc.peer, "Modality=CT", tmp_path, opts, stages=[remap],
                  progress=events.append)  # fmt: skip
    row = report.table.to_pylist()[0]
    assert row["status"] == "complete" and row["attempts"] == 2, row
    assert row["fetched"] == CT_SERIES_FILES
    assert any(e.kind == "series-retry" for e in events)
    assert [e.status for e in events if e.kind == "study-done"] == ["complete"]
    records = read_records(str(tmp_path))
    assert records.num_rows == CT_SERIES_FILES
    assert failed[0] in records.column("source_sop_instance_uid").to_pylist()
    assert failed[0] not in records.column("sop_instance_uid").to_pylist()  # remapped
    again = pull(orthanc.peer, "Modality=CT", tmp_path, opts, stages=[remap])
    assert again.fetched == 0 and again.complete
    assert len(lake_files(tmp_path)) == CT_SERIES_FILES


# -- settings no retry can fix: stop at once, say the fix ---------------------------------------


def pull_command(orthanc, lake: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomflow.cli", "pull", "--pacs", str(orthanc.peer),
         "--lake", str(lake), "--bind", "127.0.0.1", "--method", "move", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_unknown_move_destination_stops_the_pull_once(orthanc, tmp_path):
    """Orthanc does not know the AE title: the first C-MOVE fails (0xC000) and the pull stops
    there with the fix, instead of retrying every series (it took ~30 s for 8 series)."""
    from dicomflow.network import MoveDestinationError, NetworkConfigError

    assert plan(orthanc.peer, None).num_rows > 1  # several series it could have retried
    events = []
    opts = PullOptions(ae_title="NOBODY", port=free_port(), host="127.0.0.1", method="move",
                       concurrency=1, retries=3, backoff=0.01)  # fmt: skip
    with pytest.raises(MoveDestinationError) as info:
        pull(orthanc.peer, None, tmp_path / "api", opts, progress=events.append)
    assert isinstance(info.value, NetworkConfigError) and info.value.status == 0xC000
    message = str(info.value)
    assert "does not know 'NOBODY' as a destination" in message
    assert "PUT /modalities/NOBODY" in message and "--method get" in message
    assert [e.kind for e in events if e.kind.startswith("series")] == ["series-start"]
    assert lake_files(tmp_path / "api") == []
    # the command: exit code 2, the same message, not one retry
    result = pull_command(orthanc, tmp_path / "cli", "--ae", "NOBODY", "--port",
                          str(free_port()), "--retries", "3")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "error: " in result.stderr and "does not know 'NOBODY'" in result.stderr
    assert "retrying" not in result.stderr
    assert not list((tmp_path / "cli" / "_lake").glob("pull-*"))  # no report: nothing ran


def test_port_in_use_stops_the_pull_once(orthanc, tmp_path):
    import socket

    from dicomflow.network import NetworkConfigError

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        events = []
        opts = PullOptions(ae_title="NOBODY", port=port, host="127.0.0.1", method="move",
                           concurrency=2, retries=3, backoff=0.01)  # fmt: skip
        with pytest.raises(NetworkConfigError, match="another program listens there") as info:
            pull(orthanc.peer, None, tmp_path / "api", opts, progress=events.append)
        assert f"127.0.0.1:{port}" in str(info.value) and "--method get" in str(info.value)
        starts = [e for e in events if e.kind == "series-start"]
        assert 1 <= len(starts) <= 2 and not [e for e in events if e.kind == "series-retry"]
        result = pull_command(orthanc, tmp_path / "cli", "--ae", "NOBODY", "--port", str(port))
    assert result.returncode == 2 and "another program listens there" in result.stderr
    assert "retrying" not in result.stderr
