"""Pipelines end to end: stages, sinks, manifest, executors, resume, kills, full disks."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydicom import dcmread

import dicomflow as dfl
from dicomflow.sample import make_sample

sys.path.insert(0, str(Path(__file__).parent))
import stages_for_tests as st  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    make_sample(root)
    return root


def _tree(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every visible file (hidden records excluded)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _pipeline(sample: Path, dest: Path, *stages) -> dfl.Pipeline:
    p = dfl.pipeline(dfl.scan(sample))
    for s in stages:
        p = p | s
    return p.write(dfl.writers.Part10Folder(str(dest)))


def test_every_input_is_one_manifest_row(sample: Path, tmp_path: Path) -> None:
    n_inputs = dfl.scan(sample).to_arrow().num_rows
    report = _pipeline(sample, tmp_path, dfl.filter("Modality = 'CT'"), dfl.map(st.stamp)).execute(
        workers=1
    )
    m = report.manifest
    assert m.num_rows == n_inputs
    assert sorted(m["source_uri"].to_pylist()) == sorted(set(m["source_uri"].to_pylist()))
    rows = m.to_pylist()
    assert {r["status"] for r in rows} == {"done", "skipped", "failed"}
    assert all(r["stage"] == "scan" for r in rows if r["status"] == "failed")
    assert all(
        "filtered out by Modality = 'CT'" == r["reason"] for r in rows if r["status"] == "skipped"
    )
    done = [r for r in rows if r["status"] == "done"]
    assert len(done) == len(_tree(tmp_path))
    for r in done:
        (out,) = r["outputs"]
        data = Path(out["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == out["sha256"] and len(data) == out["size"]
        ds = dcmread(out["path"])
        assert ds.ImageComments == "through dicomflow" and ds.Modality == "CT"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.ImplementationClassUID.startswith("2.25.")
    # the manifest on disk is the same table, with the pipeline's configuration in it
    on_disk = pq.read_table(report.manifest_path)
    assert on_disk.num_rows == n_inputs
    assert b"dicomflow.pipeline" in on_disk.schema.metadata


def test_stage_failures_skips_and_drops_are_recorded(sample: Path, tmp_path: Path) -> None:
    report = _pipeline(sample, tmp_path, dfl.map(st.fail_on_mr), dfl.map(st.skip_odd)).execute(
        workers=1
    )
    rows = [r for r in report.manifest.to_pylist() if r["stage"] != "scan"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed and all(r["stage"] == "map(fail_on_mr)" for r in failed)
    assert all(r["reason"] == "RuntimeError: no MR today" for r in failed)
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert skipped and all(r["reason"] == "odd instance number" for r in skipped)
    dropped = _pipeline(sample, tmp_path / "d", dfl.map(st.drop_all)).execute(workers=1)
    assert {r["reason"] for r in dropped.manifest.to_pylist() if r["stage"] != "scan"} == {
        "dropped by map(drop_all)"
    }
    assert not _tree(tmp_path / "d")


def test_executors_give_byte_identical_outputs(sample: Path, tmp_path: Path, dask_client) -> None:
    _pipeline(sample, tmp_path / "inproc", dfl.map(st.stamp)).execute(workers=1)
    _pipeline(sample, tmp_path / "pool", dfl.map(st.stamp)).execute(workers=2, batch_size=8)
    report = _pipeline(sample, tmp_path / "dask", dfl.map(st.stamp)).execute(
        client=dask_client, batch_size=8
    )
    assert report.failed == 3  # the sample's broken files
    reference = _tree(tmp_path / "inproc")
    assert len(reference) == 129
    assert _tree(tmp_path / "pool") == reference
    assert _tree(tmp_path / "dask") == reference


def test_a_run_has_one_pool_its_scan_included(sample: Path, tmp_path: Path, monkeypatch) -> None:
    """The scan of a lazy catalog runs on the pipeline's pool, not on a second one."""
    from dicomflow.runtime import _executors

    pools = []

    class CountedPool(_executors.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.functions: set[str] = set()
            self.pids: set[int] = set()
            pools.append(self)

        def submit(self, fn, /, *args, **kwargs):
            self.functions.add(fn.__name__)
            return super().submit(fn, *args, **kwargs)

        def shutdown(self, *args, **kwargs) -> None:
            self.pids = set(self._processes or ())
            super().shutdown(*args, **kwargs)

    monkeypatch.setattr(_executors, "ProcessPoolExecutor", CountedPool)
    catalog = dfl.scan(sample, workers=2, batch_size=16)  # alone, it would start its own pool
    run = (dfl.pipeline(catalog) | dfl.map(st.stamp) | dfl.map(st.note_pid)).write(
        dfl.writers.Part10Folder(str(tmp_path / "pool"))
    )
    report = run.execute(workers=2, batch_size=8)
    assert report.done == 129 and catalog.stats.files == 132
    assert len(pools) == 1, "one pool per run"
    (pool,) = pools
    assert {"_scan_task_wired", "_run_task"} <= pool.functions
    pids = {json.loads(r["counts"])["worker_pid"] for r in report.manifest.to_pylist()
            if r["counts"]}  # fmt: skip
    assert pids and pids <= pool.pids and len(pool.pids) == 2
    _pipeline(sample, tmp_path / "inproc", dfl.map(st.stamp)).execute(workers=1)
    assert _tree(tmp_path / "pool") == _tree(tmp_path / "inproc")


def test_a_worker_unpacks_the_stages_once(sample: Path, tmp_path: Path) -> None:
    """Each worker process unpickles the stages once for all its tasks: what they cache (a
    de-identifier's compiled scrubbers and UIDs) lasts the run, as in one process."""
    report = _pipeline(sample, tmp_path / "pool", st.CountsUnpickling()).execute(
        workers=2, batch_size=4
    )
    counts = [json.loads(r["counts"]) for r in report.manifest.to_pylist() if r["counts"]]
    assert len(counts) == 129 and len({c["pid"] for c in counts}) >= 1
    assert {c["copies"] for c in counts} == {1}  # 30-odd tasks, one copy per worker


def test_the_last_tasks_shrink_so_that_workers_finish_together() -> None:
    """With several workers, the rows left once the input ends go out in smaller and smaller
    tasks (a full last task left the other worker idle for half a task on average); in one
    process tasks keep their size. Every row is sent once, in order."""
    from dicomflow.pipeline._pipeline import _chunks

    rows = [{"uri": str(i)} for i in range(500)]
    one = [len(c) for c in _chunks(iter(rows), 32, 1)]
    assert one == [32] * 15 + [20]
    tasks = list(_chunks(iter(rows), 32, 2))
    assert [r for task in tasks for r in task] == rows
    sizes = [len(t) for t in tasks]
    assert max(sizes) == 32 and sizes[:10] == [32] * 10
    tail = sizes[sizes.index(min(s for s in sizes if s < 32)) - 1 :]
    assert tail == sorted(tail, reverse=True)  # shrinking to the end
    assert sum(sizes[-4:]) <= 32  # the last 4 tasks (2 per worker) hold less than one
    assert [len(t) for t in _chunks(iter(rows[:10]), 32, 2)] == [4, 4, 2]
    assert list(_chunks(iter([]), 32, 2)) == []


@pytest.mark.parametrize("seconds", [0.0, 1e9], ids=["part-per-task", "one-part"])
def test_manifest_parts_hold_a_task_and_half_a_second_at_least(
    sample: Path, tmp_path: Path, monkeypatch, seconds: float
) -> None:
    """A manifest part is written once a task's worth of rows has finished and PART_SECONDS
    have passed since the last (each costs the parent a Parquet write): the small last tasks
    add no parts of their own, a fast run writes few. Every row is in the manifest."""
    from dicomflow.pipeline import _manifest
    from dicomflow.pipeline import _pipeline as running

    parts: list[int] = []
    append = _manifest.ManifestWriter.append

    def counted(self, rows) -> None:
        parts.append(len(rows))
        append(self, rows)

    monkeypatch.setattr(_manifest.ManifestWriter, "append", counted)
    monkeypatch.setattr(running, "PART_SECONDS", seconds)
    report = _pipeline(sample, tmp_path / "out", dfl.map(st.stamp)).execute(
        workers=2, batch_size=16
    )
    assert report.manifest.num_rows == 132 and sum(parts) == 132
    written = pq.read_table(report.manifest_path)
    assert sorted(written["source_uri"].to_pylist()) == report.manifest["source_uri"].to_pylist()
    if seconds:
        assert parts == [132]  # all at the end
    else:
        assert all(n >= 16 for n in parts[:-1]) and len(parts) <= 132 // 16 + 1, parts


_FORKED_RUN = """
import json, os, sys
sys.path.insert(0, sys.argv[3])
import dicomflow as dfl
from dicomflow.runtime import fork_is_safe
import stages_for_tests as st
assert fork_is_safe()
catalog = dfl.scan(sys.argv[1], batch_size=int(sys.argv[4]))
run = (dfl.pipeline(catalog) | dfl.map(st.stamp) | dfl.map(st.note_parent))
report = run.write(dfl.writers.Part10Folder(sys.argv[2])).execute(workers=2, batch_size=8)
parents = {json.loads(r["counts"])["worker_parent"] for r in report.manifest.to_pylist()
           if r["counts"]}
print(json.dumps({"pid": os.getpid(), "parents": sorted(parents), "done": report.done}))
"""


@pytest.mark.parametrize("scan_batch", [256, 16], ids=["scan-in-process", "scan-on-the-pool"])
def test_pool_forks_from_a_single_threaded_parent(
    sample: Path, tmp_path: Path, scan_batch: int
) -> None:
    """A plain script (no threads, no polars pool) forks its workers (no fork server start):
    their parent is the script itself, and outputs are the in-process ones. A scan large
    enough for workers runs on that pool (a second pool, started beside the first, broke)."""
    _pipeline(sample, tmp_path / "inproc", dfl.map(st.stamp)).execute(workers=1)
    dest = tmp_path / "forked"
    done = subprocess.run(
        [sys.executable, "-c", _FORKED_RUN, str(sample), str(dest), str(Path(__file__).parent),
         str(scan_batch)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["parents"] == [result["pid"]]  # every worker is a child of the script
    assert result["done"] == 129
    assert _tree(dest) == _tree(tmp_path / "inproc")


def test_fork_is_refused_where_threads_run() -> None:
    import threading

    from dicomflow.runtime import fork_is_safe

    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        assert not fork_is_safe()
    finally:
        stop.set()
        worker.join()


def test_fork_is_refused_once_polars_compute_pool_runs() -> None:
    """Importing polars starts no compute pool (fork stays possible); using it does."""
    code = (
        "import polars as pl\n"
        "from dicomflow.runtime import fork_is_safe\n"
        "before = fork_is_safe()\n"
        "pl.DataFrame({'a': list(range(1000))}).filter(pl.col('a') > 5).height\n"
        "print(before, fork_is_safe())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "False"]


def test_rerun_resumes_instead_of_redoing(sample: Path, tmp_path: Path) -> None:
    first = _pipeline(sample, tmp_path, dfl.map(st.stamp)).execute(workers=1)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.dcm")}
    second = _pipeline(sample, tmp_path, dfl.map(st.stamp)).execute(workers=1)
    assert second.done == first.done
    resumed = [r for r in second.manifest.to_pylist() if r["resumed_from"]]
    assert len(resumed) == first.done and {r["resumed_from"] for r in resumed} == {first.run_id}
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.dcm")} == mtimes
    # a different configuration is not "done": it runs (and refuses to overwrite what differs)
    third = _pipeline(sample, tmp_path).execute(workers=1)
    assert third.failed > 100
    assert all("CollisionError" in r["reason"] for r in third.manifest.to_pylist()
               if r["status"] == "failed" and r["stage"] == "folder")  # fmt: skip


def test_resume_redoes_an_input_whose_output_went_missing(sample: Path, tmp_path: Path) -> None:
    first = _pipeline(sample, tmp_path, dfl.map(st.stamp)).execute(workers=1)
    done = [r for r in first.manifest.to_pylist() if r["status"] == "done"]
    lost = Path(done[0]["outputs"][0]["path"])
    lost.unlink()
    cut = Path(done[1]["outputs"][0]["path"])
    cut.write_bytes(cut.read_bytes()[:100])  # as a power loss could leave it
    second = _pipeline(sample, tmp_path, dfl.map(st.stamp)).execute(workers=1)
    redone = [
        r for r in second.manifest.to_pylist() if r["status"] == "done" and not r["resumed_from"]
    ]
    assert sorted(r["source_uri"] for r in redone) == sorted(
        [done[0]["source_uri"], done[1]["source_uri"]]
    )
    assert lost.exists() and cut.exists()
    assert _tree(tmp_path) == _tree_of(first)


def _tree_of(report: dfl.RunReport) -> dict[str, str]:
    root = Path(str(Path(report.manifest_path).parent).removesuffix(".manifests"))
    return {
        str(Path(o["path"]).relative_to(root)): o["sha256"]
        for r in report.manifest.to_pylist()
        for o in r["outputs"]
    }


def test_sigkill_midway_then_rerun_gives_exactly_the_full_output(
    sample: Path, tmp_path: Path
) -> None:
    reference = tmp_path / "reference"
    _pipeline(sample, reference, dfl.map(st.stamp)).execute(workers=1)
    dest = tmp_path / "killed"
    script = (
        "import sys; sys.path.insert(0, sys.argv[3]);"
        "import dicomflow as dfl, stages_for_tests as st\n"
        "if __name__ == '__main__':\n"
        "    (dfl.pipeline(dfl.scan(sys.argv[1])) | dfl.map(st.stamp) | dfl.map(st.slow))"
        ".write(dfl.writers.Part10Folder(sys.argv[2])).execute(workers=2, batch_size=4)\n"
    )
    env = {**os.environ, "DICOMFLOW_TEST_DELAY": "0.05"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(sample), str(dest), str(Path(__file__).parent)],
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(dest.rglob("*.dcm"))) < 30:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list(dest.rglob("*.dcm")))
    assert 30 <= written < 129, written  # really killed in the middle
    report = _pipeline(sample, dest, dfl.map(st.stamp)).execute(workers=2, batch_size=4)
    assert report.done == 129 and report.failed == 3
    assert _tree(dest) == _tree(reference)  # exactly the full output, same bytes
    leftovers = [p for p in dest.rglob("*") if p.name.endswith(".dfltmp")]
    assert not leftovers


def test_full_disk_stops_cleanly_and_accounts_for_every_input(sample: Path, tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        report = _pipeline(sample, mount / "out").execute(
            workers=1, batch_size=4, manifest=tmp_path / "manifests"
        )
        assert report.stopped and "no space left" in report.stopped
        assert report.manifest.num_rows == 132
        rows = report.manifest.to_pylist()
        assert any(r["reason"].startswith("not processed: the run stopped early")
                   for r in rows if r["reason"])  # fmt: skip
        for r in rows:  # what was written is whole and valid
            for out in r["outputs"]:
                assert hashlib.sha256(Path(out["path"]).read_bytes()).hexdigest() == out["sha256"]
        assert not [p for p in mount.rglob("*") if p.name.endswith(".dfltmp")]
    finally:
        subprocess.run(["umount", str(mount)])


def test_paths_are_sanitized_and_collisions_refused(corpus: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ds = dcmread(corpus / "transfer-syntax" / "explicit-vr-le" / sorted(
        os.listdir(corpus / "transfer-syntax" / "explicit-vr-le"))[0])  # fmt: skip
    ds.PatientID = "../../escape"
    ds.save_as(src / "a.dcm")
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.save_as(src / "b.dcm")
    out = tmp_path / "out"
    report = (dfl.pipeline(dfl.scan(src))
              .write(dfl.writers.Part10Folder(str(out), template="{PatientID}/{StudyID}.dcm"))
              .execute(workers=1))  # fmt: skip
    written = [p for p in tmp_path.rglob("*.dcm") if not p.is_relative_to(src)]
    assert written and all(p.is_relative_to(out) for p in written)
    assert [p.parent.name for p in written] == [".._.._escape"]
    statuses = sorted(report.manifest["status"].to_pylist())
    assert statuses == ["done", "failed"]
    failed = [r for r in report.manifest.to_pylist() if r["status"] == "failed"][0]
    assert "CollisionError" in failed["reason"]


def test_pipeline_is_picklable_and_described_by_a_file(sample: Path, tmp_path: Path) -> None:
    p = _pipeline(sample, tmp_path / "a", dfl.filter("Modality = 'MR'"), dfl.map(st.stamp))
    assert pickle.loads(pickle.dumps(p)).config() == p.config()
    toml = tmp_path / "run.toml"
    toml.write_text(
        f'[source]\nscan = "{sample}"\n\n'
        '[[stages]]\ntype = "filter"\nexpr = "Modality = \'MR\'"\n\n'
        '[[stages]]\ntype = "map"\nfn = "stages_for_tests:stamp"\n\n'
        f'[[sinks]]\ntype = "folder"\nroot = "{tmp_path / "b"}"\n'
    )
    from_file = dfl.Pipeline.from_file(toml)
    a = p.execute(workers=1)
    b = from_file.execute(workers=1)
    assert a.done == b.done > 0
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert from_file.config_hash() != p.config_hash()  # the sink root differs


def test_dry_run_writes_nothing(sample: Path, tmp_path: Path) -> None:
    report = _pipeline(sample, tmp_path, dfl.filter("Modality = 'CT'")).execute(dry_run=True)
    assert report.count("planned") == 73 and report.skipped == 56
    assert not list(tmp_path.rglob("*"))


NOTEBOOK_CELL = """
import threading, time
import dicomflow as dfl
from dicomflow.writers import Part10Folder

threading.Thread(target=time.sleep, args=(60,), daemon=True).start()  # a kernel runs threads

SITE = "NOTEBOOK SITE"

def tag(instance):  # defined in __main__, as in a notebook cell
    instance.dataset.InstitutionName = SITE
    return instance

report = (dfl.pipeline(dfl.scan({src!r})) | tag).write(Part10Folder({dst!r})).execute(workers=2)
print(report.summary())
assert report.failed == 0 and report.done == {n}, report.summary()
"""


def test_a_stage_defined_in_a_notebook_runs_on_worker_processes(corpus, tmp_path):
    """A function defined in ``__main__`` (a notebook, ``python -c``) with the default pool:
    it broke the pool (BrokenProcessPool) because workers cannot import ``__main__``; it is
    now sent by value."""
    src = corpus / "modality" / "MR"
    n = len(list(src.glob("*.dcm")))
    code = NOTEBOOK_CELL.format(src=str(src), dst=str(tmp_path / "out"), n=n)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    written = list((tmp_path / "out").rglob("*.dcm"))
    assert len(written) == n
    assert {dcmread(p).InstitutionName for p in written} == {"NOTEBOOK SITE"}
