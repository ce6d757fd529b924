"""Ingest benchmark: M concurrent DCMTK ``storescu`` senders into three Storage SCPs.

The same N synthetic instances (``benchmarks/synth.py``, ``--pixels small`` by default: 64 x 64
CT/MR with ~10 KB headers) are sent by M ``storescu`` processes at once (``TCP_NODELAY=1``, the
files dealt round robin, one association each) to, in turn:

* ``storescp``: DCMTK's ``storescp -od DIR`` (``--fork`` when M > 1, so it serves the senders
  at once, as the others do); it writes each file without fsync;
* ``orthanc``: Orthanc storing into its own storage area and SQLite index;
* ``dicomflow-none``: ``dicomflow receive --fsync none`` (no fsync, like storescp: the headline),
  with its default ``--workers`` (the number of cores; ``--workers`` here sets it);
* ``dicomflow-1w``: the same with ``--workers 1`` (every association in one process);
* ``dicomflow-each``: ``dicomflow receive`` with its default durability (every file and its
  folder fsync'ed before the acknowledgement);
* ``dicomflow-nocat``: ``--fsync none --workers 1`` without the lake's catalog
  (``Lake(catalog=False)``: what the catalog costs, against ``dicomflow-1w``).
* ``dicomflow-base`` (with ``--base TREE``): ``dicomflow-none`` run from another checkout
  (``PYTHONPATH=TREE``, e.g. a worktree of an earlier commit): before and after, alternating
  in the same rounds.

A run is timed from the start of the first sender to the exit of the last (every instance
acknowledged), then checked: every instance is on the receiver's disk (and in the lake's
records). Each receiver starts fresh (empty folder, new process) for each run; the runs go in
rounds (every receiver once, then again), and the median of ``--repeat`` is reported with the
receiver's CPU ms per instance (from ``/proc``; not for ``storescp --fork``, whose children are
gone) and the ratios to ``storescp`` measured in the same session. Targets: dicomflow-none
>= 1.0 x storescp and >= orthanc.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_receive.py                  # N=2000, M=1,4, median of 3
    .venv/bin/python benchmarks/bench_receive.py --n 500 --senders 4 --repeat 1
    .venv/bin/python benchmarks/bench_receive.py --receivers dicomflow-none,storescp

``dicomflow`` is imported as the environment says (``PYTHONPATH``), so one script times two
checkouts; archives and outputs go under ``.bench/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _summary import record  # benchmarks/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCH = ROOT / ".bench"
ENV = {**os.environ, "TCP_NODELAY": "1"}
RECEIVERS = (
    "storescp", "orthanc", "dicomflow-none", "dicomflow-1w", "dicomflow-each", "dicomflow-nocat"
)  # fmt: skip
WORKERS: list[str] = []  # --workers N for the dicomflow receivers but dicomflow-1w
BASE: list[str] = []  # --base TREE: the checkout dicomflow-base runs from
STORESCU = "/usr/bin/storescu"  # pynetdicom's console scripts shadow DCMTK's in a venv
STORESCP = "/usr/bin/storescp"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process, its threads and its running children so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        total += cpu_seconds(int(child)) or 0.0
    return total


# -- the receivers --------------------------------------------------------------------------------


class Receiver:
    """One receiver process on a fresh folder; ``count()`` says how many instances it holds."""

    def __init__(self, kind: str, out: Path, senders: int) -> None:
        self.kind = kind
        self.out = out
        self.port = free_port()
        self.ae = {"storescp": "STORESCP", "orthanc": "ORTHANC"}.get(kind, "LAKE")
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        self.proc = self._start(senders)
        deadline = time.monotonic() + 60
        while not listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{kind} did not start: see {out.parent / (kind + '.log')}")
            time.sleep(0.05)
        time.sleep(0.2)  # Orthanc answers on its port a moment before it takes associations

    def _start(self, senders: int) -> subprocess.Popen:
        log = open(self.out.parent / f"{self.kind}.log", "wb")
        if self.kind == "storescp":
            cmd = [STORESCP, "-aet", self.ae, "-od", str(self.out), str(self.port)]
            if senders > 1:
                cmd[1:1] = ["--fork"]
        elif self.kind == "orthanc":
            config = {
                "Name": "bench", "StorageDirectory": str(self.out), "IndexDirectory": str(self.out),
                "HttpServerEnabled": False, "DicomAet": self.ae, "DicomPort": self.port,
                "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
                "DicomAlwaysAllowEcho": True, "RemoteAccessAllowed": False,
                "SyncStorageArea": False, "SaveJobs": False, "StorageCompression": False,
            }  # fmt: skip
            path = self.out.parent / "orthanc.json"
            path.write_text(json.dumps(config))
            cmd = ["Orthanc", "--no-jobs", str(path)]
        else:
            fsync = "each" if self.kind == "dicomflow-each" else "none"
            code = (
                "import sys, dicomflow.network._lake as lake, dicomflow.cli as cli; "
                "lake.Lake.__init__.__kwdefaults__['catalog'] = False; sys.exit(cli.main())"
            )  # the benchmark's own switch: the command has no option to drop the catalog
            head = [sys.executable, "-c", code] if self.kind == "dicomflow-nocat" else [
                sys.executable, "-m", "dicomflow.cli"]  # fmt: skip
            cmd = [*head, "receive", "--ae", self.ae, "--port", str(self.port), "--bind",
                   "127.0.0.1", "--lake", str(self.out), "--allow-any", "--fsync", fsync,
                   "-q"]  # fmt: skip
            one = self.kind in ("dicomflow-1w", "dicomflow-nocat")  # the switch is this process's
            cmd += ["--workers", "1"] if one else WORKERS
        env = {**ENV, "PYTHONPATH": BASE[0]} if self.kind == "dicomflow-base" else ENV
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip

    def count(self) -> int:
        if self.kind == "storescp":
            return sum(1 for p in self.out.iterdir() if p.is_file())
        if self.kind == "orthanc":
            return sum(1 for p in self.out.rglob("*") if p.is_file() and len(p.name) == 36)
        from dicomflow.network import read_records

        files = sum(1 for p in self.out.rglob("*.dcm") if "_lake" not in p.parts)
        return min(files, read_records(str(self.out)).num_rows)

    def stop(self) -> None:
        if self.kind.startswith("dicomflow"):
            self.proc.send_signal(signal.SIGTERM)  # writes the last records, compacts
            try:
                self.proc.wait(60)
                return
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def run_once(kind: str, chunks: list[list[str]], work: Path) -> dict:
    receiver = Receiver(kind, work / f"out-{kind}", len(chunks))
    try:
        cpu0 = cpu_seconds(receiver.proc.pid)
        t0 = time.perf_counter()
        senders = [
            subprocess.Popen(
                [
                    STORESCU,
                    "-aet",
                    f"SENDER{i}",
                    "-aec",
                    receiver.ae,
                    "127.0.0.1",
                    str(receiver.port),
                    *chunk,
                ],
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            for i, chunk in enumerate(chunks)
        ]
        errors = [p.communicate()[1] for p in senders]
        seconds = time.perf_counter() - t0
        cpu1 = cpu_seconds(receiver.proc.pid)
        failed = [
            e.decode(errors="replace")[-500:] for p, e in zip(senders, errors) if p.returncode
        ]
        expected = sum(len(c) for c in chunks)
        deadline = time.monotonic() + 60
        while (held := receiver.count()) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        receiver.stop()
    if failed or held != expected:
        raise SystemExit(f"{kind}: {held}/{expected} instances held; senders: {failed[:1]}")
    cpu = None
    if cpu0 is not None and cpu1 is not None and not (kind == "storescp" and len(chunks) > 1):
        cpu = cpu1 - cpu0
    return {"seconds": seconds, "cpu": cpu}


# -- the session ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="instances sent per run")
    parser.add_argument("--senders", default="1,4", help="concurrent storescu processes (M)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per receiver, median kept")
    parser.add_argument("--pixels", default="small", choices=["small", "ct512", "none"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--receivers", default=",".join(RECEIVERS))
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="dicomflow receive --workers (default: the command's, the cores)",
    )
    parser.add_argument(
        "--base",
        default=None,
        metavar="TREE",
        help="another checkout (an earlier commit's worktree): adds dicomflow-base, run from it",
    )
    args = parser.parse_args()
    if args.base is not None:
        BASE[:] = [str(Path(args.base).resolve())]
        if "dicomflow-base" not in args.receivers:
            args.receivers += ",dicomflow-base"
    if args.workers is not None:
        WORKERS[:] = ["--workers", str(args.workers)]
    sys.path.insert(0, str(HERE))
    from synth import ensure_archive

    archive = BENCH / f"receive-archive-{args.n}-{args.pixels}"
    files, how = ensure_archive(archive, args.n, seed=args.seed, pixels=args.pixels)
    size = sum(os.path.getsize(f) for f in files)
    for f in files:  # every run starts with the files in the page cache
        Path(f).read_bytes()
    work = BENCH / "receive-work"
    receivers = [r for r in args.receivers.split(",") if r]
    import dicomflow

    print(f"{args.n} instances ({size / 1e6:.1f} MB, {how}), dicomflow from "
          f"{Path(dicomflow.__file__).parent}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    for m in (int(x) for x in args.senders.split(",")):
        chunks = [files[i::m] for i in range(m)]
        results: dict[str, list[dict]] = {r: [] for r in receivers}
        for r in range(args.repeat):
            for kind in receivers:
                res = run_once(kind, chunks, work)
                results[kind].append(res)
                print(f"  M={m} run {r + 1} {kind:<16} {res['seconds']:6.2f} s "
                      f"{args.n / res['seconds']:7.0f} inst/s", flush=True)  # fmt: skip
        print_table(results, m, args.n, size)
    shutil.rmtree(work, ignore_errors=True)


def print_table(results: dict[str, list[dict]], m: int, n: int, size: int) -> None:
    runs = len(next(iter(results.values())))
    print(f"\n{n} instances from {m} concurrent storescu, median of {runs}")
    print(f"{'receiver':<17}{'inst/s':>8}{'MB/s':>8}{'CPU ms/inst':>13}{'x storescp':>12}"
          f"{'x orthanc':>11}")  # fmt: skip
    rates = {}
    for kind, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        cpus = [r["cpu"] for r in runs if r["cpu"] is not None]
        rates[kind] = (n / seconds, size / seconds / 1e6, statistics.median(cpus) / n * 1e3
                       if cpus else None)  # fmt: skip
    for kind, (rate, mbs, cpu) in rates.items():
        vs = [f"{rate / rates[b][0]:.2f}" if b in rates else "-" for b in ("storescp", "orthanc")]
        cpu_text = f"{cpu:.2f}" if cpu is not None else "-"
        print(f"{kind:<17}{rate:8.0f}{mbs:8.1f}{cpu_text:>13}{vs[0]:>12}{vs[1]:>11}")
    # the same ratios round by round (each round's runs are neighbours in time: the load
    # other programs put on the machine moves less between them than over the session)
    for kind in results:
        for base in ("storescp", "orthanc"):
            if kind == base or base not in results or not kind.startswith("dicomflow"):
                continue
            pairs = zip(results[kind], results[base])
            ratios = sorted(b["seconds"] / r["seconds"] for r, b in pairs)
            print(
                f"  {kind} / {base} by round: {ratios[0]:.2f} .. {ratios[-1]:.2f} "
                f"(median {statistics.median(ratios):.2f})"
            )
    if "dicomflow-none" in rates:
        head = rates["dicomflow-none"][0]
        for base, target in (("storescp", 1.0), ("orthanc", 1.0)):
            if base in rates:
                ratio = head / rates[base][0]
                verdict = "PASS" if ratio >= target else "FAIL"
                print(f"target dicomflow-none >= {target:.1f} x {base}: {ratio:.2f} {verdict}")
                record("receive", f"inst/s, {m} sender(s)", ratio, target=target, against=base)
    print()


if __name__ == "__main__":
    main()
