"""Progress: one event type, its consumers, and what the scan, the pipeline and the CLI emit."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dicomflow as dfl
from dicomflow.catalog import ScanEvent
from dicomflow.network import PullEvent
from dicomflow.runtime import (
    Progress,
    ProgressCallback,
    ProgressEvent,
    ProgressFile,
    ProgressLog,
    as_consumer,
    progress_for,
    read_progress,
)
from dicomflow.sample import make_sample


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def event(done: int, elapsed: float, **kw) -> ProgressEvent:
    return ProgressEvent("running", unit="instances", done=done, elapsed=elapsed, **kw)


def test_log_lines_come_at_their_interval_with_count_total_rate_and_eta() -> None:
    out, clock = io.StringIO(), Clock()
    log = ProgressLog(out, interval=10, clock=clock)
    for t, done in [(0, 40), (4, 80), (9.9, 120), (10, 160), (15, 200), (20.5, 400)]:
        clock.now = 100 + t
        log(event(done, elapsed=t + 1, total=1000, failed=2))
    clock.now = 130
    log(event(1000, elapsed=31, total=1000, failed=2, finished=True))
    assert out.getvalue().splitlines() == [
        # 160 of 1000 in 11 s: 14.5/s, 840 left: 58 s
        "running: 160/1,000 instances (16%), 2 failed, 14.5 instances/s, ETA 0:00:58",
        "running: 400/1,000 instances (40%), 2 failed, 18.6 instances/s, ETA 0:00:32",
        "running: 1,000/1,000 instances (100%), 2 failed, 32.3 instances/s, finished in 0:00:31",
    ]


def test_log_lines_without_a_total_and_to_a_logger(caplog) -> None:
    logger = logging.getLogger("dicomflow.test")
    log = ProgressLog(logger, interval=0)
    with caplog.at_level(logging.INFO, logger="dicomflow.test"):
        log(ProgressEvent("scanning", unit="files", done=2048, bytes=5_000_000, elapsed=2.0))
    assert caplog.messages == ["scanning: 2,048 files, 5.0 MB, 1,024.0 files/s, 2.5 MB/s"]


def test_each_task_has_its_own_interval() -> None:
    out, clock = io.StringIO(), Clock()
    log = ProgressLog(out, interval=5, clock=clock)
    log(ProgressEvent("scanning", done=1, elapsed=1))
    clock.now += 6
    log(ProgressEvent("running", done=1, elapsed=1))  # first of its task: the clock starts
    log(ProgressEvent("scanning", done=9, elapsed=7))
    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == ["scanning"]


def test_a_plain_callback_is_throttled_but_always_sees_the_end() -> None:
    seen: list[ProgressEvent] = []
    clock = Clock()
    callback = ProgressCallback(seen.append, every=1.0, clock=clock)
    for i in range(10):
        clock.now = 100 + i * 0.3
        callback(event(i + 1, elapsed=i * 0.3))
    callback(event(10, elapsed=3.0, finished=True))
    assert [e.done for e in seen] == [1, 5, 9, 10] and seen[-1].finished


def test_a_progress_file_is_replaced_whole_at_its_interval(tmp_path: Path) -> None:
    path, clock = tmp_path / "run" / "progress.json", Clock()
    out = ProgressFile(path, every=5, clock=clock)
    out(event(10, elapsed=2.0, total=100, failed=1, bytes=2048))
    first = json.loads(path.read_text())
    assert {k: first[k] for k in ("task", "unit", "done", "total", "failed", "bytes", "rate",
                                  "eta", "elapsed", "state", "pid")} == {
        "task": "running", "unit": "instances", "done": 10, "total": 100, "failed": 1,
        "bytes": 2048, "rate": 5.0, "eta": 18.0, "elapsed": 2.0, "state": "running",
        "pid": os.getpid(),
    }  # fmt: skip
    assert dt.datetime.fromisoformat(first["updated"]).tzinfo is not None
    clock.now += 4.9
    out(event(20, elapsed=4.0, total=100))
    assert json.loads(path.read_text())["done"] == 10  # not yet: every 5 s
    clock.now += 0.1
    out(event(30, elapsed=5.0, total=100))
    assert json.loads(path.read_text())["done"] == 30
    out(event(100, elapsed=9.0, total=100, finished=True))  # the end is always written
    last = json.loads(path.read_text())
    assert (last["done"], last["state"], last["eta"]) == (100, "finished", None)
    assert [p.name for p in path.parent.iterdir()] == ["progress.json"]  # no temporary left
    out.close("stopped")  # a finished task stays finished
    assert read_progress(path)["state"] == "finished"


def test_a_progress_file_says_how_the_task_ended(tmp_path: Path) -> None:
    ended = {}
    for name, raised in (("error", ValueError), ("interrupt", KeyboardInterrupt)):
        path = tmp_path / f"{name}.json"
        with pytest.raises(raised):
            with ProgressFile(path, every=60) as out:
                out(event(1, elapsed=1.0))
                out(event(2, elapsed=2.0))  # kept, not yet written: the interval
                raise raised()
        ended[name] = read_progress(path)
    with ProgressFile(tmp_path / "early.json", every=60) as out:  # no finished event
        out(event(2, elapsed=2.0))
    ended["early"] = read_progress(tmp_path / "early.json")
    assert {k: (d["state"], d["done"]) for k, d in ended.items()} == {
        "error": ("failed", 2), "interrupt": ("stopped", 2), "early": ("stopped", 2),
    }  # fmt: skip


def test_reading_a_progress_file(tmp_path: Path) -> None:
    assert read_progress(tmp_path / "none.json") is None
    (tmp_path / "junk.json").write_text('{"state": "dancing"}')
    with pytest.raises(dfl.ConfigError, match="not a dicomflow progress file"):
        read_progress(tmp_path / "junk.json")
    ProgressFile(tmp_path / "p.json")(event(1, elapsed=1.0))
    assert 0 <= read_progress(tmp_path / "p.json")["age"] < 60


def test_a_run_leaves_its_progress_beside_its_manifest(sample: Path, tmp_path: Path) -> None:
    """``dicomflow run`` (any pipeline with a manifest folder) keeps progress.json there,
    which ``dicomflow serve --progress`` shows."""
    from dicomflow.cli import main

    toml = tmp_path / "copy.toml"
    toml.write_text(f'[source]\nscan = "{sample}"\n[[sinks]]\ntype = "folder"\n'
                    f'root = "{tmp_path / "out"}"\n')  # fmt: skip
    assert main(["run", str(toml), "--workers", "1", "-q"]) == 1  # the 3 broken files
    doc = read_progress(tmp_path / "out.manifests" / "progress.json")
    assert doc["state"] == "finished" and doc["task"] == "running"
    assert (doc["done"], doc["total"], doc["failed"]) == (132, 132, 3)
    assert main(["run", str(toml), "--workers", "1", "-q", "--dry-run"]) == 0
    assert (
        read_progress(tmp_path / "out.manifests" / "progress.json")["updated"] == (doc["updated"])
    )  # a dry run writes nothing


def test_what_progress_arguments_mean() -> None:
    assert as_consumer(None) is None and as_consumer(False) is None
    assert isinstance(as_consumer(True), Progress)
    fn = print
    assert as_consumer(fn) is fn
    with pytest.raises(TypeError):
        as_consumer("yes")
    assert isinstance(progress_for(io.StringIO()), ProgressLog)  # not a terminal: log lines
    quiet = progress_for(quiet=True)
    with quiet:
        quiet(event(1, 1.0))  # shows nothing, anywhere
    assert not quiet.enabled


def test_the_bar_without_a_terminal_is_silent(capsys) -> None:
    with Progress("running") as bar:
        bar(event(3, 1.0, total=10))
        bar.update(5)
    assert capsys.readouterr() == ("", "")


def test_emitters_extend_the_event() -> None:
    scan = ScanEvent("scanning", unit="files", done=10, failed=2, bytes=300, elapsed=2.0)
    assert (scan.files, scan.errors, scan.instances, scan.bytes_read) == (10, 2, 8, 300)
    assert scan.seconds == 2.0 and scan.files_per_second == 5.0
    pull = PullEvent(kind="series-done", done=1, total=4, series_done=1, series_total=4)
    assert isinstance(pull, ProgressEvent) and (pull.task, pull.unit) == ("pulling", "series")
    assert ProgressLog.line(pull).startswith("pulling: 1/4 series (25%)")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    make_sample(root)
    return root


def test_the_scan_emits_events_a_stats_callback_still_reads(sample: Path) -> None:
    seen: list[ScanEvent] = []
    catalog = dfl.scan(sample, batch_size=50, workers=1)
    rows = sum(b.num_rows for b in catalog.iter_batches(seen.append))
    assert [e.files for e in seen] == [50, 100, 132, 132] and rows == 132
    assert [e.finished for e in seen] == [False, False, False, True]
    assert seen[-1].errors == catalog.stats.errors == 3 and seen[-1].task == "scanning"


def test_the_pipeline_emits_running_events(sample: Path, tmp_path: Path) -> None:
    seen: list[ProgressEvent] = []
    table = dfl.scan(sample).to_arrow()
    report = dfl.pipeline(table).write(dfl.writers.Part10Folder(str(tmp_path / "out")))
    report = report.execute(workers=1, batch_size=40, progress=seen.append)
    last = seen[-1]
    assert last.finished and (last.task, last.unit) == ("running", "instances")
    assert last.done == last.total == report.manifest.num_rows == 132
    assert last.failed == report.failed == 3 and last.detail == {"done": 129, "failed": 3}
    assert [e.done for e in seen[:-1]] == sorted(e.done for e in seen[:-1])


def test_the_cli_logs_lines_when_stderr_is_not_a_terminal(sample: Path, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "dicomflow.cli", "scan", str(sample), "-o",
         str(tmp_path / "c.parquet"), "--workers", "1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("scanning: ")]
    assert len(lines) == 1 and lines[0].startswith("scanning: 132/132 files (100%), 3 failed, ")
    assert "finished in" in lines[0]


#: A progress line while the task runs: count of total, percentage, rate, ETA.
RUNNING = re.compile(
    r"^(\w+): ([\d,]+)/([\d,]+) (\w+) \(\d+%\), (.*, )?[\d,.]+ \4/s, (.*, )?ETA \d+:\d\d:\d\d$"
)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DICOMFLOW_PROGRESS_EVERY": "0"}  # a line per batch
    return subprocess.run([sys.executable, "-m", "dicomflow.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)  # fmt: skip


def test_long_commands_log_count_total_rate_and_eta_without_a_terminal(
    sample: Path, tmp_path: Path
) -> None:
    """scan, deid, verify-deid and transcode in a log (stderr not a terminal): lines while they
    run with count/total, rate and ETA (the scan and the pipelines used to give no total, so no
    ETA), and a last line with the time they took."""
    (tmp_path / "key").write_text("a project secret of some length\n")
    commands = {
        "scanning": ["scan", str(sample), "-o", "c.parquet", "--batch-size", "32"],
        "running": ["deid", str(sample), "share", "--secret-file", "key", "--batch-size", "32"],
        "verifying": ["verify-deid", str(sample), "share", "--workers", "1"],
        "transcoding": ["transcode", str(sample), "tc", "--to", "explicit-vr-le",
                        "--batch-size", "32"],
    }  # fmt: skip
    for task, args in commands.items():
        run = _cli(*args, cwd=tmp_path)
        assert run.returncode in (0, 1), run.stderr  # 1: the sample's 3 broken files
        task = "running" if task == "transcoding" else task
        lines = [line for line in run.stderr.splitlines() if line.startswith(f"{task}: ")]
        assert len(lines) >= 3, (args[0], run.stderr)
        running = [RUNNING.match(line) for line in lines[:-1]]
        assert all(running), (args[0], lines)
        totals = {m.group(3) for m in running if m}
        assert len(totals) == 1 and int(totals.pop().replace(",", "")) >= 129, lines
        assert "finished in" in lines[-1], lines


def test_the_interval_setting_is_checked(sample: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DICOMFLOW_PROGRESS_EVERY": "soon"}
    run = subprocess.run([sys.executable, "-m", "dicomflow.cli", "scan", str(sample), "-o",
                          str(tmp_path / "c.parquet")],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert run.returncode != 0 and "DICOMFLOW_PROGRESS_EVERY" in run.stderr
    assert "Traceback" not in run.stderr
