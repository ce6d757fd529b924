"""Pull benchmark: the same studies from Orthanc into a folder, by every route we have.

Starts an Orthanc (``TCP_NODELAY=1``, DICOMweb plugin) on free ports, loads a synthetic archive
(``benchmarks/synth.py``, 512 x 512 CT/MR) with DCMTK's storescu, then times, best of
``--repeat`` (each run a fresh process writing into a fresh folder):

* ``dcmtk-move``: DCMTK ``movescu`` (one association, every study) into ``storescp -od``;
* ``dcmtk-get``: DCMTK ``getscu -od`` of every study;
* ``pynetdicom-get``: the receiver a user writes with pynetdicom's defaults: ``AE.associate``,
  ``send_c_get``, an ``EVT_C_STORE`` handler writing ``event.encoded_dataset()``;
* ``dicomflow-get`` / ``dicomflow-move``: :func:`dicomflow.network.get` into a lake, and
  :func:`~dicomflow.network.move` to an embedded :class:`~dicomflow.network.StorageSCP`
  (``fsync="none"``, like storescp);
* ``pull-get`` / ``pull-move``: ``dicomflow pull`` end to end (C-FIND plan, 2 concurrent
  series, completeness check, report) with its default durability (``fsync="batch"``: every
  file fsync'ed before the series is recorded);
* ``wado-rs``: :meth:`~dicomflow.network.DicomWeb.retrieve_into` of every study;
* ``dicomflow-find`` / ``pynetdicom-find``: ``--finds`` C-FIND queries at study level, one
  association each (:func:`dicomflow.network.find`, against ``AE.associate`` and
  ``send_c_find`` with pynetdicom's defaults), reported as queries/s and ms per query.

It prints instances/s, MB/s and CPU ms per instance of the receiving process, the ratios to
``dcmtk-move``, and with ``--profile`` where pynetdicom's receive time goes (cProfile of its
two threads) against dicomflow's receive path.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_pull.py               # 1000 instances, best of 3
    .venv/bin/python benchmarks/bench_pull.py --n 500 --repeat 1 --profile
    .venv/bin/python benchmarks/bench_pull.py --n 100 --methods dicomflow-find --finds 200

A worker imports ``dicomflow`` as the environment says (``PYTHONPATH``), so one script times two
checkouts against the same recipe; each result says which ``dicomflow`` it ran.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _summary import record  # benchmarks/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENV = {**os.environ, "TCP_NODELAY": "1"}
METHODS = (
    "dcmtk-move", "dcmtk-get", "pynetdicom-get", "dicomflow-get", "dicomflow-move", "pull-get",
    "pull-move", "wado-rs", "dicomflow-find", "pynetdicom-find",
)  # fmt: skip
CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the peer ---------------------------------------------------------------------------------


def start_orthanc(work: Path, lake_port: int, storescp_port: int) -> tuple[subprocess.Popen, dict]:
    import requests

    ports = {"dicom": free_port(), "http": free_port()}
    (work / "db").mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "bench", "StorageDirectory": str(work / "db"), "IndexDirectory": str(work / "db"),
        "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        "HttpPort": ports["http"], "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "OrthancExplorerEnabled": False, "DicomAet": "ORTHANC", "DicomPort": ports["dicom"],
        "DicomCheckCalledAet": False, "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True, "DicomAlwaysAllowGet": True, "DicomAlwaysAllowMove": True,
        "DicomModalities": {
            "LAKE": {"AET": "LAKE", "Host": "127.0.0.1", "Port": lake_port},
            "STORESCP": {"AET": "STORESCP", "Host": "127.0.0.1", "Port": storescp_port},
        },
        "SyncStorageArea": False, "SaveJobs": False,
    }  # fmt: skip
    (work / "orthanc.json").write_text(json.dumps(config))
    proc = subprocess.Popen(
        ["Orthanc", "--no-jobs", f"--logfile={work / 'orthanc.log'}", str(work / "orthanc.json")],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    for _ in range(300):
        try:
            if requests.get(f"http://127.0.0.1:{ports['http']}/system", timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.1)
    return proc, ports


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# -- one timed run (in a fresh process) -------------------------------------------------------


def run_method(method: str, args: argparse.Namespace, out: Path) -> dict:
    """Time ``method`` into ``out``; returns seconds, instances, bytes, CPU seconds."""
    import pyarrow.parquet  # noqa: F401 - imports are not part of the timed run
    import pynetdicom  # noqa: F401
    import requests  # noqa: F401

    import dicomflow.network

    studies = args.studies.split(",")
    pacs = f"ORTHANC@127.0.0.1:{args.dicom_port}"
    out.mkdir(parents=True, exist_ok=True)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if method.startswith("dcmtk"):
        _run_dcmtk(method, args, studies, out)
    elif method.endswith("-find"):
        answers = _run_find(method, args, studies, pacs)
    elif method.startswith("pynetdicom"):
        _run_pynetdicom(method, args, studies, out)
    elif method in ("dicomflow-get", "dicomflow-move"):
        _run_dicomflow(method, args, studies, out, pacs)
    elif method.startswith("pull"):
        from dicomflow.network import AssociationOptions, PullOptions, pull

        opts = PullOptions(
            ae_title="LAKE", port=args.lake_port, host="127.0.0.1", method=method[5:],
            concurrency=2, fsync="batch", association=AssociationOptions(calling_ae="LAKE"),
        )  # fmt: skip
        report = pull(pacs, None, out, opts)
        assert report.complete, report.table.to_pylist()
    elif method == "wado-rs":
        from dicomflow.network import DicomWeb, Lake

        web = DicomWeb(f"http://127.0.0.1:{args.http_port}/dicom-web")
        with Lake(out, fsync="none") as lake:
            for study in studies:
                web.retrieve_into(lake, study)
    seconds = time.perf_counter() - t0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    files = [p for p in out.rglob("*") if p.is_file() and "_lake" not in p.parts]
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    result = {
        "method": method,
        "seconds": seconds,
        "instances": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "cpu": cpu if not method.startswith("dcmtk") else None,
        "dicomflow": str(Path(dicomflow.network.__file__).parents[2]),
    }
    if method.endswith("-find"):
        result.update(queries=args.finds, instances=answers)
    return result


def _run_find(method: str, args, studies: list[str], pacs: str) -> int:
    """``args.finds`` study-level C-FINDs, one association each; returns the answers."""
    answers = 0
    if method == "dicomflow-find":
        from dicomflow.network import AssociationOptions, find

        opts = AssociationOptions(calling_ae="LAKE")
        for i in range(args.finds):
            query = {"StudyInstanceUID": studies[i % len(studies)]}
            answers += find(pacs, query, level="study", options=opts).num_rows
        return answers
    from pydicom import Dataset
    from pynetdicom import AE

    model = "1.2.840.10008.5.1.4.1.2.2.1"
    ae = AE(ae_title="LAKE")
    ae.add_requested_context(model)
    for i in range(args.finds):
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = studies[i % len(studies)]
        for key in ("PatientID", "PatientName", "StudyDate", "ModalitiesInStudy",
                    "NumberOfStudyRelatedInstances"):  # fmt: skip
            setattr(ds, key, None)
        assoc = ae.associate("127.0.0.1", args.dicom_port, ae_title="ORTHANC")
        answers += sum(1 for status, ident in assoc.send_c_find(ds, model) if ident is not None)
        assoc.release()
    return answers


def _run_dcmtk(method: str, args, studies: list[str], out: Path) -> None:
    uids = "\\".join(studies)
    base = ["-S", "-aet", "LAKE", "-aec", "ORTHANC", "-k", "QueryRetrieveLevel=STUDY",
            "-k", f"StudyInstanceUID={uids}"]  # fmt: skip
    if method == "dcmtk-get":
        subprocess.run(["getscu", *base, "-od", str(out), "127.0.0.1", str(args.dicom_port)],
                       env=ENV, check=True, capture_output=True)  # fmt: skip
        return
    scp = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(out),
                            str(args.storescp_port)], env=ENV, start_new_session=True)  # fmt: skip
    try:
        time.sleep(0.3)
        subprocess.run(["movescu", *base, "-aem", "STORESCP", "127.0.0.1", str(args.dicom_port)],
                       env=ENV, check=True, capture_output=True)  # fmt: skip
    finally:
        kill(scp)


def _run_pynetdicom(method: str, args, studies: list[str], out: Path) -> None:
    from pydicom import Dataset
    from pynetdicom import AE, build_role, evt
    from pynetdicom.presentation import build_context

    get_model = "1.2.840.10008.5.1.4.1.2.2.3"
    out.mkdir(parents=True, exist_ok=True)

    def handle_store(event):
        with open(out / event.request.AffectedSOPInstanceUID, "wb") as f:
            f.write(event.encoded_dataset())
        return 0x0000

    contexts = [build_context(get_model), build_context(CT), build_context(MR)]
    roles = [build_role(CT, scp_role=True), build_role(MR, scp_role=True)]
    handlers = [(evt.EVT_C_STORE, handle_store)]
    ae = AE(ae_title="LAKE")
    assoc = ae.associate("127.0.0.1", args.dicom_port, contexts=contexts, ae_title="ORTHANC",
                         ext_neg=roles, evt_handlers=handlers)  # fmt: skip
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = studies
    for _status, _ in assoc.send_c_get(ds, get_model):
        pass
    assoc.release()


def _run_dicomflow(method: str, args, studies: list[str], out: Path, pacs: str) -> None:
    from dicomflow.network import AssociationOptions, Lake, SCPOptions, StorageSCP, get, move

    opts = AssociationOptions(calling_ae="LAKE")
    query = {"StudyInstanceUID": studies}
    if method == "dicomflow-get":
        with Lake(out, fsync="none") as lake:
            get(pacs, query, lake, sop_classes=[CT, MR], options=opts)
        return
    scp_opts = SCPOptions(ae_title="LAKE", host="127.0.0.1", port=args.lake_port,
                          calling_aes=("ORTHANC",), fsync="none")  # fmt: skip
    with StorageSCP(out, scp_opts) as scp:
        move(pacs, query, scp, options=opts)


# -- profiling --------------------------------------------------------------------------------


def profile(args: argparse.Namespace, out: Path) -> str:
    """cProfile of pynetdicom's receiving threads, then of dicomflow's, on the same C-GET."""
    from pynetdicom import dul

    from dicomflow.network import _retrieve

    report = io.StringIO()
    profiles: list[cProfile.Profile] = []
    original = dul.DULServiceProvider.run_reactor

    def run_reactor(self):  # the DUL thread: every PDU goes through it
        p = cProfile.Profile()
        profiles.append(p)
        p.enable()
        try:
            original(self)
        finally:
            p.disable()

    dul.DULServiceProvider.run_reactor = run_reactor
    main = cProfile.Profile()
    main.enable()
    _run_pynetdicom("pynetdicom-get", args, args.studies.split(","), out / "pynetdicom")
    main.disable()
    dul.DULServiceProvider.run_reactor = original
    for title, prof in (("pynetdicom: DUL reactor thread", profiles[0]),
                        ("pynetdicom: C-GET thread (handler)", main)):  # fmt: skip
        report.write(f"\n--- {title} (top 12 by own time)\n")
        pstats.Stats(prof, stream=report).sort_stats("tottime").print_stats(12)
    collect = _retrieve._collect
    prof = cProfile.Profile()

    def profiled(*a, **k):
        prof.enable()
        try:
            return collect(*a, **k)
        finally:
            prof.disable()

    _retrieve._collect = profiled
    _run_dicomflow("dicomflow-get", args, args.studies.split(","), out / "dicomflow",
                   f"ORTHANC@127.0.0.1:{args.dicom_port}")  # fmt: skip
    _retrieve._collect = collect
    report.write("\n--- dicomflow: C-GET receive loop (top 12 by own time)\n")
    pstats.Stats(prof, stream=report).sort_stats("tottime").print_stats(12)
    text = report.getvalue()
    return "\n".join(line for line in text.splitlines() if line.strip())


# -- driver -----------------------------------------------------------------------------------


def worker_main(args: argparse.Namespace) -> None:
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    out = Path(args.out)
    if args.worker == "profile":
        print(profile(args, out))
        return
    print(json.dumps(run_method(args.worker, args, out)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="synthetic instances")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--finds", type=int, default=200, help="C-FIND queries of *-find")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--profile", action="store_true", help="where pynetdicom's time goes")
    parser.add_argument("--cpu", type=int, default=None, help="pin the receiver to this core")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    for hidden in ("out", "studies", "dicom_port", "http_port", "lake_port", "storescp_port"):
        parser.add_argument(f"--{hidden.replace('_', '-')}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        for key in ("dicom_port", "http_port", "lake_port", "storescp_port"):
            setattr(args, key, int(getattr(args, key)))
        worker_main(args)
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-pull-"))
    archive = work / f"archive-{args.n}"
    if not archive.exists():
        subprocess.run([sys.executable, str(HERE / "synth.py"), str(archive), "-n", str(args.n)],
                       check=True)  # fmt: skip
    lake_port, storescp_port = free_port(), free_port()
    orthanc, ports = start_orthanc(work / "orthanc", lake_port, storescp_port)
    try:
        t0 = time.perf_counter()
        subprocess.run(["storescu", "-aet", "LOADER", "-aec", "ORTHANC", "+sd", "+r", "127.0.0.1",
                        str(ports["dicom"]), str(archive)], env=ENV, check=True,
                       capture_output=True)  # fmt: skip
        print(f"loaded {args.n} instances into Orthanc in {time.perf_counter() - t0:.1f} s")
        sys.path.insert(0, str(ROOT))
        from dicomflow.network import find

        studies = find(f"ORTHANC@127.0.0.1:{ports['dicom']}", None, level="study")
        uids = studies.column("study_instance_uid").to_pylist()
        common = [
            "--studies", ",".join(uids), "--dicom-port", str(ports["dicom"]),
            "--http-port", str(ports["http"]), "--lake-port", str(lake_port),
            "--storescp-port", str(storescp_port), "--finds", str(args.finds),
        ]  # fmt: skip
        if args.cpu is not None:
            common += ["--cpu", str(args.cpu)]
        methods = [m for m in args.methods.split(",") if m]
        results: dict[str, list[dict]] = {m: [] for m in methods}
        for r in range(args.repeat):
            for method in methods:
                out = work / f"out-{method}"
                shutil.rmtree(out, ignore_errors=True)
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", method, "--out", str(out), *common],
                    capture_output=True,
                    text=True,
                )
                shutil.rmtree(out, ignore_errors=True)
                if proc.returncode != 0:
                    print(f"{method}: FAILED\n{proc.stderr[-2000:]}")
                    continue
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                results[method].append(res)
                count, unit = (
                    res.get("queries", res["instances"]),
                    "queries" if "queries" in res else "inst",
                )
                print(f"  run {r + 1} {method:<17} {res['seconds']:6.2f} s "
                      f"{count / res['seconds']:7.0f} {unit}/s  ({res['dicomflow']})",
                      flush=True)  # fmt: skip
        print_table(results, args)
        if args.profile:
            out = work / "out-profile"
            shutil.rmtree(out, ignore_errors=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", "profile", "--out", str(out), *common],
                capture_output=True,
                text=True,
            )
            shutil.rmtree(out, ignore_errors=True)
            print(proc.stdout or proc.stderr[-3000:])
    finally:
        kill(orthanc)
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def print_table(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    print(f"\nPull of {args.n} synthetic instances from Orthanc, median of {args.repeat} "
          f"(cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    print(f"{'method':<18}{'inst/s':>9}{'MB/s':>9}{'CPU ms/inst':>13}{'x dcmtk-move':>14}")
    base = None
    rows = []
    finds = {m: r for m, r in results.items() if r and "queries" in r[0]}
    for method, runs in results.items():
        if not runs or method in finds:
            continue
        seconds = statistics.median(r["seconds"] for r in runs)
        inst = runs[0]["instances"]
        mb = runs[0]["bytes"] / 1e6
        cpus = [r["cpu"] for r in runs if r["cpu"] is not None]
        cpu = statistics.median(cpus) / inst * 1000 if cpus and inst else None
        rate = inst / seconds
        if method == "dcmtk-move":
            base = rate
        rows.append((method, rate, mb / seconds, cpu))
    for method, rate, mbs, cpu in rows:
        ratio = f"{rate / base:.2f}" if base else "-"
        cpu_text = f"{cpu:.2f}" if cpu is not None else "-"
        print(f"{method:<18}{rate:9.0f}{mbs:9.1f}{cpu_text:>13}{ratio:>14}")
        if base and method.startswith(("dicomflow", "pull", "wado")):
            record("pull", f"inst/s {method}", rate / base, target=1.0, against="dcmtk-move")
    if base:
        print("\ntarget: dicomflow pull >= 1.0 x dcmtk-move (issue 12)")
    if finds:
        print(
            f"\n{'method':<18}{'queries/s':>10}{'ms/query':>10}{'CPU ms/query':>14}{'answers':>9}"
        )
    for method, runs in finds.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        queries = runs[0]["queries"]
        cpu = statistics.median(r["cpu"] for r in runs) / queries * 1000
        print(f"{method:<18}{queries / seconds:10.0f}{seconds / queries * 1000:10.2f}"
              f"{cpu:14.2f}{runs[0]['instances']:9d}")  # fmt: skip


if __name__ == "__main__":
    main()
