"""Verifier benchmark: ``dicomflow verify-deid`` files/s against ``dicomflow deid`` on the same set.

One run takes a folder of originals (a synthetic archive from ``benchmarks/synth.py``, made or
reused under ``.bench/``, or ``--originals DIR``, e.g. the shared corpus), warms the page cache,
then times, each in a fresh process started once the CPUs are idle (``--idle-wait``), with
1 and 2 workers:

* ``deid-Nw``: what ``dicomflow deid SRC DST --secret-file F --workers N`` runs (the catalog
  scan, the ``Deidentify`` stage, the Part 10 sink, the manifest beside DST; the pool's start
  inside the clock), as in ``bench_deid.py``; the outputs of ``deid-1w`` are what is verified;
* ``verify-Nw``: what ``dicomflow verify-deid SRC DST --workers N`` runs:
  ``verify_folders(SRC, DST, workers=N)`` (listing, pairing by the manifest, every pair
  verified, the pool's start inside the clock).

Imports are done before each clock starts. Files/s count the outputs (instances the
de-identification refused are not outputs). It prints one table (seconds and files/s of the
best run, the median and range of all runs, and the verify/deid ratio per worker count, of the
best runs and of the medians: on a loaded machine the best run is whichever caught a quiet
moment) and exits 1 when verification is slower than de-identification with the same workers
(best runs), or when it reports a leak or a problem on this clean
output (a false positive).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_verify.py                 # 1000 files, best of 2
    .venv/bin/python benchmarks/bench_verify.py --n 300 --repeat 1
    .venv/bin/python benchmarks/bench_verify.py --originals ../shared/corpus
    git archive COMMIT | tar -x -C /tmp/before       # the verifier as it was, for comparison
    .venv/bin/python benchmarks/bench_verify.py --before /tmp/before
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _summary import record  # benchmarks/ is on sys.path when run as a script
from bench_deid import wait_for_idle  # benchmarks/ is on sys.path when run as a script
from synth import ensure_archive

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECRET = b"benchmark secret: 32 bytes long!"
WORKERS = (1, 2)


def child(method: str, src: str, dst: str) -> None:
    """Runs in a fresh interpreter: imports first, then the clock; prints JSON."""
    import warnings

    import polars  # noqa: F401 - what the pipeline and the manifests import on first use
    import pyarrow.dataset  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import dicomflow as dfl
    import dicomflow.runtime  # noqa: F401
    from dicomflow.anonymize import Deidentify, verify_folders

    warnings.simplefilter("ignore")
    kind, workers = method.split("-")[0], int(method.split("-")[1].rstrip("w"))
    if kind == "deid":
        stage = Deidentify(secret=SECRET)
        start = time.perf_counter()
        catalog = dfl.scan(src, columns=["SOPInstanceUID"], workers=1 if workers == 1 else None)
        job = (dfl.pipeline(catalog) | stage).write(dfl.writers.Part10Folder(dst))
        report = job.execute(workers=workers, manifest=dst + ".manifests")
        seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "files": report.done}))
        return
    import inspect

    # an earlier checkout (--before) may have no pool: it then runs on one core
    extra = (
        {"workers": workers} if "workers" in inspect.signature(verify_folders).parameters else {}
    )
    start = time.perf_counter()
    found = verify_folders(src, dst, **extra)
    seconds = time.perf_counter() - start
    kept = len(getattr(found, "kept", ()))
    print(json.dumps({"seconds": seconds, "files": found.pairs, "leaks": len(found.findings),
                      "kept": kept, "problems": len(found.problems)}))  # fmt: skip


def timed(method: str, src: Path, dst: Path, idle_wait: float, tree: str | None = None) -> dict:
    wait_for_idle(idle_wait)
    command = [sys.executable, __file__, "--child", method, str(src), str(dst)]
    env = dict(os.environ, PYTHONPATH=tree) if tree else None
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode:
        raise SystemExit(f"{method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench(args: argparse.Namespace) -> int:
    if args.originals:
        src = Path(args.originals).resolve()
        files = [str(p) for p in src.rglob("*") if p.is_file()]
        how = "given"
    else:
        src = Path(args.archive or ROOT / ".bench" / f"verify-{args.pixels}-n{args.n}")
        files, how = ensure_archive(src, args.n, seed=args.seed, pixels=args.pixels)
    for path in files:  # warm the page cache
        Path(path).read_bytes()
    size = sum(os.path.getsize(f) for f in files)
    print(f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs; "
          f"originals: {src} ({how}), {len(files)} files, {size / 1e6:.1f} MB")  # fmt: skip
    # every de-identification writes a folder of its own, all removed after the clocks: files
    # made just after a tree was deleted cost ~0.3 ms more CPU each here (ext4 with online
    # discard), which would slow de-identification, the figure the verifier is held to
    outs = ROOT / ".bench" / f"{src.name}-verify-out"
    shutil.rmtree(outs, ignore_errors=True)
    made = itertools.count()
    best: dict[str, dict] = {}
    every: dict[str, list[float]] = {}  # each run's seconds: the median and range under load
    for _ in range(args.repeat):
        out = outs / "none"  # the latest output of deid-1w: what the verifier checks
        for workers in WORKERS:
            for kind in ("deid", "verify"):
                method = f"{kind}-{workers}w"
                dst = out if kind == "verify" else outs / f"run-{next(made)}"
                run = timed(method, src, dst, args.idle_wait)
                if method == "deid-1w":
                    out = dst
                every.setdefault(method, []).append(run["seconds"])
                if method not in best or run["seconds"] < best[method]["seconds"]:
                    best[method] = run
                if kind == "verify" and args.before:
                    name = f"{method} ({Path(args.before).name})"
                    run = timed(method, src, dst, args.idle_wait, args.before)
                    every.setdefault(name, []).append(run["seconds"])
                    if name not in best or run["seconds"] < best[name]["seconds"]:
                        best[name] = run
    shutil.rmtree(outs, ignore_errors=True)
    print(f"\n== best of {args.repeat}")
    width = max(len(m) for m in best)
    print(f"{'method':{width}s} {'seconds':>8s} {'files':>6s} {'files/s':>8s} "
          f"{'median s':>8s} {'range s':>11s}  notes")  # fmt: skip
    for method, run in best.items():
        rate = run["files"] / run["seconds"]
        notes = ""
        if method.startswith("verify"):
            notes = f"{run['leaks']} leaks, {run['kept']} kept, {run['problems']} problems"
        times = every[method]
        spread = f"{min(times):.2f}-{max(times):.2f}"
        print(f"{method:{width}s} {run['seconds']:8.2f} {run['files']:6d} {rate:8.1f} "
              f"{statistics.median(times):8.2f} {spread:>11s}  {notes}")  # fmt: skip
    print("\n== verify against deid (files/s ratio; >= 1: verifying is at least as fast)")
    verdicts = []
    for workers in WORKERS:
        deid, verify = best[f"deid-{workers}w"], best[f"verify-{workers}w"]
        ratio = (verify["files"] / verify["seconds"]) / (deid["files"] / deid["seconds"])
        ok = ratio >= 1.0
        verdicts.append(ok)
        median = statistics.median(every[f"deid-{workers}w"]) / statistics.median(
            every[f"verify-{workers}w"]
        )  # the same files on both sides: the ratio of the times is the ratio of files/s
        print(f"{workers} worker{'s' if workers > 1 else ''}: {ratio:5.2f}x  "
              f"{'PASS' if ok else 'FAIL'}  (medians: {median:.2f}x)")  # fmt: skip
        record("verify", f"files/s, {workers} worker(s)", ratio, target=1.0, against="deid")
    clean = all(best[f"verify-{w}w"]["leaks"] == best[f"verify-{w}w"]["problems"] == 0
                for w in WORKERS)  # fmt: skip
    print(f"no leak and no problem reported on the clean output: {'PASS' if clean else 'FAIL'}")
    return 0 if all(verdicts) and clean else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(*argv[1:4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="files in the archive (1000)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per method, best kept (2)")
    parser.add_argument("--pixels", choices=("small", "ct512", "none"), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--archive", help="archive folder (default .bench/verify-<pixels>-n<N>)")
    parser.add_argument("--originals", help="a folder of originals instead of an archive")
    parser.add_argument(
        "--before",
        metavar="TREE",
        help="also time verify with this earlier checkout on PYTHONPATH (e.g. a git archive)",
    )
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=20.0,
        help="seconds to wait at most for idle CPUs before each timed run (20)",
    )
    return bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
