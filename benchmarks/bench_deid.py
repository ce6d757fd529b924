"""De-identification benchmark: dicomflow against ``deid``, ``dicognito`` and ``dicom-anonymizer``.

One run generates (or reuses) a synthetic archive (``benchmarks/synth.py``: CT/MR headers of
about 165 elements with private blocks, a private sequence, nested sequences and identifying
values planted where archives carry them; ``--pixels small``: 64 x 64 pixels), warms the page
cache, then times each method de-identifying every file into its own output folder, in files/s:

* ``dicomflow-1w`` / ``dicomflow-2w``: what ``dicomflow deid SRC DST --secret-file F
  --workers W`` runs: ``scan(SRC, columns=["SOPInstanceUID"]) | Deidentify(secret)`` written by
  a ``Part10Folder`` sink, with the catalog scan, the manifest (beside DST), the atomic writes
  and the process pool (its start and each worker's first loading of the standard's tables
  included) inside the clock;
* ``dicomflow-loop``: the engine alone in the loop the other tools run (``dcmread``,
  ``Deidentifier.deidentify``, ``save_as``), for a like-for-like comparison;
* ``deid`` (default recipe: ``replace_identifiers`` then ``save_as``), ``dicognito``
  (``Anonymizer().anonymize(ds)``) and ``dicom-anonymizer`` (``anonymize_dicom_file``), each
  with its defaults, run with the interpreter of a separate virtual environment
  (``--tools-venv``, default ``.bench/venv-tools``) so that they do not touch the project's.

Every timed run is a fresh process, started once the CPUs are idle (``--idle-wait``): imports
are done, and the de-identifier is built (the ``Deidentify`` stage, dicognito's
``Anonymizer``), before its clock starts; each method times its own loop. The standard's tables
dicomflow loads on first use are loaded inside the clock.

Then each output folder is searched for the planted values read from the inputs (the
standard attributes of ``synth.PLANTED_KEYWORDS``, the string values inside their sequences,
and the private planted values of ``dicomflow.sample.PLANTED_PRIVATE``): the count is of (file,
value) pairs whose value is still in the output file's bytes (UTF-8 or Latin-1). Inside the
planted sequences only names, IDs and instance UIDs count (their code items, class UIDs and
issuers identify no one).

Usage (from the repository root)::

    python3 -m venv .bench/venv-tools
    .bench/venv-tools/bin/pip install deid dicognito dicom-anonymizer
    .venv/bin/python benchmarks/bench_deid.py              # N=500, best of 2
    .venv/bin/python benchmarks/bench_deid.py --n 200 --repeat 1
"""

from __future__ import annotations

import argparse
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
from synth import ensure_archive, list_dicom

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECRET = b"benchmark secret: 32 bytes long!"
DICOMFLOW = ("dicomflow-1w", "dicomflow-2w", "dicomflow-loop")
TOOLS = ("deid", "dicognito", "dicom-anonymizer")
TARGET_RATIO = 3.0
#: issue 13: dicomflow on one core against dicognito, round by round
DICOGNITO_RATIO = 10.0
#: issue 17: de-identification with 2 workers against 1
WORKERS_RATIO = 1.8

#: Runs in the tools' environment: ``python -c TOOL_LOOP TOOL SRC DST``; prints JSON.
TOOL_LOOP = r"""
import json, logging, os, sys, time, warnings
warnings.simplefilter("ignore")
logging.disable(logging.CRITICAL)
tool, src, dst = sys.argv[1:4]
paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs if f.endswith(".dcm"))
outs = [os.path.join(dst, os.path.relpath(p, src)) for p in paths]
for o in outs:
    os.makedirs(os.path.dirname(o), exist_ok=True)
import pydicom
if tool == "deid":
    from deid.dicom import replace_identifiers
    from deid.logger import bot
    bot.level = 0
    def one(path, out):
        replace_identifiers([path])[0].save_as(out)
elif tool == "dicognito":
    from dicognito.anonymizer import Anonymizer
    anonymizer = Anonymizer()
    def one(path, out):
        ds = pydicom.dcmread(path)
        anonymizer.anonymize(ds)
        ds.save_as(out)
elif tool == "dicom-anonymizer":
    from dicomanonymizer import anonymize_dicom_file
    def one(path, out):
        anonymize_dicom_file(path, out)
else:
    raise SystemExit(f"unknown tool {tool}")
start, cpu0 = time.perf_counter(), time.process_time()
for path, out in zip(paths, outs):
    one(path, out)
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
versions = {}
for name in ("deid", "dicognito", "dicom_anonymizer", "pydicom"):
    try:
        from importlib.metadata import version
        versions[name] = version(name)
    except Exception:
        pass
print(json.dumps({"seconds": seconds, "cpu": cpu, "files": len(paths), "versions": versions}))
"""


# -- the timed runs (each in a fresh process) --------------------------------------------------


def child(method: str, src: str, dst: str) -> None:
    """Runs in a fresh interpreter: imports first, then the clock."""
    import dicomflow as dfl
    from dicomflow.anonymize import Deidentifier, Deidentify

    if method == "dicomflow-loop":
        import pydicom

        engine = Deidentifier(SECRET)
        paths = list_dicom(Path(src))
        outs = [os.path.join(dst, os.path.relpath(p, src)) for p in paths]
        for out in outs:
            os.makedirs(os.path.dirname(out), exist_ok=True)
        start, cpu0 = time.perf_counter(), _cpu()
        for path, out in zip(paths, outs, strict=True):
            deidentified, _ = engine.deidentify(pydicom.dcmread(path))
            deidentified.save_as(out, enforce_file_format=True)
        print(json.dumps({"seconds": time.perf_counter() - start, "cpu": _cpu_since(cpu0)}))
        return
    # what the pipeline imports on first use (planning, manifests): before the clock
    import polars  # noqa: F401
    import pyarrow.dataset  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import dicomflow.runtime  # noqa: F401

    workers = int(method.split("-")[1].rstrip("w"))
    stage = Deidentify(secret=SECRET)  # like the tools' Anonymizer(): built before the clock
    start, cpu0 = time.perf_counter(), _cpu()
    catalog = dfl.scan(src, columns=["SOPInstanceUID"], workers=1 if workers == 1 else None)
    job = (dfl.pipeline(catalog) | stage).write(dfl.writers.Part10Folder(dst))
    report = job.execute(workers=workers, manifest=dst + ".manifests")
    seconds = time.perf_counter() - start
    cpu = _cpu_since(cpu0)  # with the workers' where they were forked from here and have ended
    if report.failed:
        raise SystemExit(f"{report.failed} instances failed: {report.manifest}")
    print(json.dumps({"seconds": seconds, "cpu": cpu}))


def _cpu() -> float:
    """CPU seconds (user and system) of this process and of its children it has reaped."""
    children = os.times()
    return time.process_time() + children.children_user + children.children_system


def _cpu_since(before: float) -> float:
    return _cpu() - before


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)  # idle + iowait, total


def wait_for_idle(limit: float, share: float = 0.9) -> None:
    """Wait (at most ``limit`` seconds) until the CPUs were ``share`` idle for half a second:
    other processes on the machine otherwise make short timed runs noisy."""
    if limit <= 0 or not os.path.exists("/proc/stat"):
        return
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        idle0, total0 = _cpu_times()
        time.sleep(0.5)
        idle1, total1 = _cpu_times()
        if total1 > total0 and (idle1 - idle0) / (total1 - total0) >= share:
            return


def timed(method: str, src: Path, dst: Path, python: str, idle_wait: float = 0.0) -> dict:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.rmtree(f"{dst}.manifests", ignore_errors=True)
    wait_for_idle(idle_wait)
    if method in TOOLS:
        command = [python, "-c", TOOL_LOOP, method, str(src), str(dst)]
    else:
        command = [sys.executable, __file__, "--child", method, str(src), str(dst)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- what each tool left behind -----------------------------------------------------------------


def planted_values(path: str) -> set[str]:
    """The planted identifying values of one input file, read from the file itself."""
    import pydicom

    sys.path.insert(0, str(HERE))
    from synth import PLANTED_KEYWORDS

    from dicomflow.sample import PLANTED_PRIVATE

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    values: set[str] = set()

    def strings(elem, nested: bool) -> None:
        if elem.VR == "SQ":
            for item in elem.value:
                for inner in item:
                    strings(inner, True)
            return
        keyword = elem.keyword or ""
        # inside the planted sequences only names, IDs and instance UIDs were planted (codes,
        # class UIDs and issuers there identify no one)
        if nested and (
            not (elem.VR == "PN" or keyword.endswith(("ID", "UID")))
            or keyword.startswith(("IssuerOf", "TypeOf"))
        ):
            return
        if keyword.endswith("ClassUID"):
            return
        if isinstance(elem.value, str | pydicom.valuerep.PersonName) and str(elem.value):
            values.add(str(elem.value))

    for keyword in PLANTED_KEYWORDS:
        if keyword in ds:
            strings(ds[keyword], False)
    for group, creator, offset, _where in PLANTED_PRIVATE:
        block = ds.private_block(group, creator)
        for elem in ds.iterall():
            if elem.tag.group == group and elem.tag.element & 0xFF == offset:
                if elem.tag.element >> 8 == block.block_start >> 8 and isinstance(elem.value, str):
                    values.add(elem.value)
    return {v for v in values if len(v) >= 3}


def pairs_for(method: str, files: list[str], src: Path, dst: Path) -> dict[str, str]:
    """input -> output path (dicomflow through its manifest, the tools by mirrored paths)."""
    if method in ("dicomflow-1w", "dicomflow-2w"):
        from dicomflow.pipeline import read_manifests

        table = read_manifests(f"{dst}.manifests").to_pylist()
        return {r["source_uri"]: r["outputs"][0]["path"] for r in table if r["outputs"]}
    return {f: os.path.join(dst, os.path.relpath(f, src)) for f in files}


def leaks(method: str, files: list[str], src: Path, dst: Path, planted: dict) -> tuple[int, int]:
    """(values left, files with a value left) over all inputs."""
    pairs = pairs_for(method, files, src, dst)
    left = with_leak = 0
    for path in files:
        out = pairs.get(path)
        if out is None or not os.path.exists(out):
            continue
        data = Path(out).read_bytes()
        found = 0
        for value in planted[path]:
            forms = {value.encode("utf-8"), value.encode("latin-1", "ignore")}
            found += any(form and form in data for form in forms)
        left += found
        with_leak += found > 0
    return left, with_leak


def describe_machine(files: list[str]) -> str:
    size = sum(os.path.getsize(f) for f in files)
    return (
        f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs; "
        f"archive: {len(files)} files, {size / 1e6:.1f} MB"
    )


def bench(args: argparse.Namespace) -> int:
    archive = Path(args.archive or ROOT / ".bench" / f"deid-{args.pixels}-n{args.n}")
    files, _ = ensure_archive(archive, args.n, seed=args.seed, pixels=args.pixels)
    for path in files:  # warm the page cache
        Path(path).read_bytes()
    python = str(Path(args.tools_venv) / "bin" / "python")
    tools = list(TOOLS) if os.path.exists(python) and not args.skip_tools else []
    if args.tools:
        tools = [t for t in tools if t in args.tools.split(",")]
    if not tools:
        print(f"competitors skipped: no interpreter at {python} (see the docstring)")
    methods = [*DICOMFLOW, *tools]
    print(describe_machine(files))
    best: dict[str, float] = {}
    rounds: dict[str, list[float]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}  # CPU seconds of each round
    versions: dict[str, str] = {}
    # each round writes into a folder of its own, and every earlier one is removed only once
    # the clocks have stopped: on this kind of disk (ext4 with online discard) files made just
    # after a tree was deleted cost several times the CPU (~0.3 ms more each, measured), which
    # would fall on whichever method ran next, most on the fastest
    for old in archive.parent.glob("deid-out-*"):
        shutil.rmtree(old, ignore_errors=True)

    def out_folder(method: str, round_: int) -> Path:
        return archive.with_name(f"deid-out-{method}-{round_}")

    for round_ in range(args.repeat):
        # alternate the order, so that neither side always runs first after the idle wait
        for method in methods if round_ % 2 == 0 else methods[::-1]:
            dst = out_folder(method, round_)
            run = timed(method, archive, dst, python, args.idle_wait)
            best[method] = min(best.get(method, float("inf")), run["seconds"])
            rounds[method].append(run["seconds"])
            cpu[method].append(run.get("cpu", float("nan")))
            versions.update(run.get("versions", {}))
    for round_ in range(args.repeat - 1):  # the last round's outputs are searched and kept
        for method in methods:
            shutil.rmtree(out_folder(method, round_), ignore_errors=True)
            shutil.rmtree(f"{out_folder(method, round_)}.manifests", ignore_errors=True)
    planted = {path: planted_values(path) for path in files}
    total = sum(len(v) for v in planted.values())
    fastest = max(tools, key=lambda m: len(files) / best[m]) if tools else None
    print(f"\n== de-identifying {len(files)} files (best of {args.repeat}); planted values in "
          f"the inputs: {total:,} ({total / len(files):.1f} per file)")  # fmt: skip
    if versions:
        print("competitors: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    print(f"{'method':18s} {'seconds':>8s} {'files/s':>8s} {'vs fastest':>10s} "
          f"{'planted left':>13s} {'files leaking':>14s} {'CPU ms/file':>12s}")  # fmt: skip
    left_by: dict[str, int] = {}
    for method in methods:
        dst = out_folder(method, args.repeat - 1)
        left, leaking = leaks(method, files, archive, dst, planted)
        left_by[method] = left
        rate = len(files) / best[method]
        ratio = f"{best[fastest] / best[method]:9.2f}x" if fastest else "       n/a"
        per_file = statistics.median(cpu[method]) / len(files) * 1e3  # median round
        print(f"{method:18s} {best[method]:8.2f} {rate:8.1f} {ratio} {left:13,} {leaking:14,} "
              f"{per_file:12.2f}")  # fmt: skip
    print("\n== targets")
    verdicts = []
    if fastest:
        ratio = best[fastest] / best["dicomflow-1w"]
        ok = ratio >= TARGET_RATIO
        verdicts.append(ok)
        print(f"dicomflow-1w >= {TARGET_RATIO:.0f}x the fastest competitor ({fastest}): "
              f"{ratio:.2f}x  {'PASS' if ok else 'FAIL'}")  # fmt: skip
        record("deid", "files/s dicomflow-1w, fastest competitor", ratio, target=TARGET_RATIO,
               against=fastest)  # fmt: skip
    if "dicognito" in tools:
        ratios = [d / f for d, f in zip(rounds["dicognito"], rounds["dicomflow-1w"], strict=True)]
        ok = best["dicognito"] / best["dicomflow-1w"] >= DICOGNITO_RATIO
        verdicts.append(ok)
        overall = best["dicognito"] / best["dicomflow-1w"]
        print(f"dicomflow-1w >= {DICOGNITO_RATIO:.0f}x dicognito per core: best {overall:.2f}x, "
              f"rounds {min(ratios):.2f}x-{max(ratios):.2f}x (median "
              f"{statistics.median(ratios):.2f}x)  {'PASS' if ok else 'FAIL'}")  # fmt: skip
        record("deid", "files/s dicomflow-1w, best", overall, target=DICOGNITO_RATIO,
               against="dicognito")  # fmt: skip
        record("deid", "files/s dicomflow-1w, worst round", min(ratios), against="dicognito")
        record("deid", "files/s dicomflow-1w, median round", statistics.median(ratios),
               against="dicognito")  # fmt: skip
        # per core in CPU time (user and system, the loop only): what other processes on the
        # machine change least
        by_cpu = [d / f for d, f in zip(cpu["dicognito"], cpu["dicomflow-1w"], strict=True)]
        print(f"  in CPU time per file: median round {statistics.median(by_cpu):.2f}x, "
              f"rounds {min(by_cpu):.2f}x-{max(by_cpu):.2f}x")  # fmt: skip
        record("deid", "files per CPU-second dicomflow-1w, median round",
               statistics.median(by_cpu), against="dicognito")  # fmt: skip
    # issue 17: 2 workers against 1, round by round (each pair ran back to back)
    scaling = [one / two for one, two in zip(rounds["dicomflow-1w"], rounds["dicomflow-2w"],
                                             strict=True)]  # fmt: skip
    two = best["dicomflow-1w"] / best["dicomflow-2w"]
    ok = two >= WORKERS_RATIO
    verdicts.append(ok)
    print(f"dicomflow-2w >= {WORKERS_RATIO}x dicomflow-1w: best {two:.2f}x, rounds "
          f"{min(scaling):.2f}x-{max(scaling):.2f}x (median {statistics.median(scaling):.2f}x)  "
          f"{'PASS' if ok else 'FAIL'}")  # fmt: skip
    record("deid", "files/s dicomflow-2w / dicomflow-1w, best", two, target=WORKERS_RATIO)
    record("deid", "files/s dicomflow-2w / dicomflow-1w, median round",
           statistics.median(scaling))  # fmt: skip
    for method in ("dicomflow-1w", "dicomflow-2w", "dicomflow-loop"):
        ok = left_by[method] == 0
        verdicts.append(ok)
        print(f"{method} leaves 0 planted values: {left_by[method]}  {'PASS' if ok else 'FAIL'}")
        record("deid", f"planted values left, {method}", left_by[method], target=0,
               lower_is_better=True, unit="values")  # fmt: skip
    return 0 if all(verdicts) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(*argv[1:4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500, help="files in the archive (500)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per method, best kept (2)")
    parser.add_argument("--pixels", choices=("small", "ct512", "none"), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--archive", help="archive folder (default .bench/deid-<pixels>-n<N>)")
    parser.add_argument("--tools-venv", default=str(ROOT / ".bench" / "venv-tools"))
    parser.add_argument("--skip-tools", action="store_true", help="time dicomflow only")
    parser.add_argument("--tools", help="comma-separated competitors to time (default: all)")
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=20.0,
        help="seconds to wait at most for idle CPUs before each timed run (20)",
    )
    return bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
