"""Transcode benchmark: dicomflow against the pydicom loop a user would write and ``gdcmconv``.

One run generates (or reuses) a synthetic CT archive (``benchmarks/synth.py``: 512 x 512 int16
slices with ~10 KB headers, explicit VR little endian), warms the page cache, then measures
files/s and MB/s (of decoded pixels) for RLE Lossless, JPEG-LS lossless and JPEG 2000 lossless:

* ``pydicom``: the loop a user would write, one process: ``dcmread(path)``,
  ``ds.compress(uid)`` (pydicom picks its first installed plugin), ``ds.save_as(out)``;
* ``dicomflow-1w`` / ``dicomflow-2w``: ``dfl.scan(src, workers=W)`` into a catalog, then
  ``(pipeline(catalog) | Transcode(target)).write(Part10Folder(dst)).execute(workers=W)``:
  the catalog scan (also printed on its own), the manifest, atomic writes (renamed into place,
  not fsync'ed: the default; a resumed run re-checks outputs) and the
  process pool are all inside the clock;
* ``gdcmconv``: Debian's libgdcm-tools, one process per file (``--rle``, ``--jpegls``,
  ``--j2k``), as a shell loop would run it.

Every timed run of a Python method is a fresh process (imports are done before the clock
starts); methods take turns within each repeat and the best of ``--repeat`` counts. Outputs are
checked: one file per input, the right transfer syntax, and pixels equal to the source for a
sample of them. Then the ratios are printed with PASS/FAIL against the issue's targets:
dicomflow with 2 workers at least 1.8x the pydicom loop, and faster than gdcmconv.

``--codecs`` instead times every installed encoder of each syntax on one CT frame (what the
encoder order in the codec modules of ``dicomflow/codecs/`` rests on).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_transcode.py              # N=500, best of 2
    .venv/bin/python benchmarks/bench_transcode.py --n 200 --repeat 3
    .venv/bin/python benchmarks/bench_transcode.py --codecs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _summary import record  # benchmarks/ is on sys.path when run as a script
from synth import ensure_archive, list_dicom  # benchmarks/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PIXEL_BYTES = 512 * 512 * 2  # per synthetic CT file
SYNTAXES = {  # name: (UID, gdcmconv option)
    "rle": ("1.2.840.10008.1.2.5", "--rle"),
    "jpeg-ls-lossless": ("1.2.840.10008.1.2.4.80", "--jpegls"),
    "jpeg2000-lossless": ("1.2.840.10008.1.2.4.90", "--j2k"),
}
METHODS = ("pydicom", "dicomflow-1w", "dicomflow-2w", "gdcmconv")
TARGETS = {"dicomflow-2w / pydicom": 1.8, "dicomflow-2w / gdcmconv": 1.0}


# -- the timed runs (each in a fresh process) --------------------------------------------------


def child(method: str, syntax: str, src: str, dst: str) -> None:
    """Runs in a fresh interpreter: imports first, then the clock.

    Both methods get the same libraries imported beforehand, including the ones pydicom and
    dicomflow would import lazily on first use (the codecs; pandas and polars, which pyarrow
    and the pipeline's planning load), and one untimed warm-up transcode of the first file:
    import time is the same whatever N, not throughput.
    """
    import imagecodecs  # noqa: F401
    import pandas  # noqa: F401
    import polars  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    uid, _ = SYNTAXES[syntax]
    first = list_dicom(Path(src))[0]
    if method == "pydicom":
        import pydicom

        pydicom.dcmread(first).compress(uid)  # warm-up, untimed: pydicom loads its encoder
        cpu0 = _cpu_split()
        start = time.perf_counter()
        os.makedirs(dst, exist_ok=True)
        for i, path in enumerate(list_dicom(Path(src))):
            ds = pydicom.dcmread(path)
            ds.compress(uid)
            ds.save_as(os.path.join(dst, f"{i:06d}.dcm"))
        seconds = time.perf_counter() - start
    else:
        import dicomflow as dfl
        from dicomflow.pipeline import Instance, Transcode, pipeline
        from dicomflow.writers import Part10Folder

        Transcode(syntax)(Instance(first))  # warm-up, untimed: the encoder is loaded
        workers = int(method.split("-")[1].rstrip("w"))
        cpu0 = _cpu_split()
        start = time.perf_counter()
        catalog = dfl.scan(src, workers=workers).to_arrow()
        scanned = time.perf_counter()
        job = (pipeline(catalog) | Transcode(syntax)).write(Part10Folder(dst))
        report = job.execute(workers=workers)
        seconds = time.perf_counter() - start
        if report.failed:
            raise SystemExit(f"{report.failed} instances failed: {report.manifest}")
        print(json.dumps({"seconds": seconds, "scan": scanned - start, **_cpu_since(cpu0)}))
        return
    print(json.dumps({"seconds": seconds, "scan": 0.0, **_cpu_since(cpu0)}))


def _cpu_split() -> tuple[float, float]:
    """CPU seconds (user + system) of this process, and of the children it has waited for."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _cpu_since(cpu0: tuple[float, float]) -> dict[str, float]:
    """The CPU seconds spent since ``cpu0``: load-independent, unlike the wall clock."""
    own, children = _cpu_split()
    return {"cpu_parent": own - cpu0[0], "cpu_workers": children - cpu0[1]}


def timed(method: str, syntax: str, files: list[str], src: Path, dst: Path) -> dict[str, float]:
    shutil.rmtree(dst, ignore_errors=True)
    if method == "gdcmconv":
        option = SYNTAXES[syntax][1]
        dst.mkdir(parents=True)
        cpu0 = _cpu_split()
        start = time.perf_counter()
        for i, path in enumerate(files):
            out = str(dst / f"{i:06d}.dcm")
            subprocess.run(["gdcmconv", option, path, out], check=True, capture_output=True)
        seconds = time.perf_counter() - start
        spent = _cpu_since(cpu0)  # this process's share is the loop and the process starts
        return {"seconds": seconds, "scan": 0.0, **spent}
    command = [sys.executable, __file__, "--child", method, syntax, str(src), str(dst)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{method} {syntax} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def verify(method: str, syntax: str, files: list[str], dst: Path, sample: int = 12) -> str:
    """One output per input, the right syntax, pixels equal to the source on a sample.

    The pydicom loop and gdcmconv name outputs by input order (and ``ds.compress`` gives a new
    SOP Instance UID); dicomflow names them by SOP Instance UID."""
    import numpy as np
    import pydicom

    outputs = list_dicom(dst)
    if len(outputs) != len(files):
        return f"FAIL: {len(outputs)} outputs for {len(files)} inputs"
    by_uid = {}
    if method.startswith("dicomflow"):
        for path in outputs:
            by_uid[pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID] = path
    step = max(1, len(files) // sample)
    for i in range(0, len(files), step):
        source = pydicom.dcmread(files[i])
        path = by_uid.get(source.SOPInstanceUID) if by_uid else outputs[i]
        if path is None:
            return f"FAIL: no output for {files[i]}"
        out = pydicom.dcmread(path)
        if out.file_meta.TransferSyntaxUID != SYNTAXES[syntax][0]:
            return f"FAIL: {path} is {out.file_meta.TransferSyntaxUID.name}"
        if not np.array_equal(out.pixel_array, source.pixel_array):
            return f"FAIL: {path} pixels differ from {files[i]}"
    return f"ok ({len(outputs)} files, {len(range(0, len(files), step))} compared pixel for pixel)"


def bench(args: argparse.Namespace) -> int:
    archive = Path(args.archive or ROOT / ".bench" / f"transcode-ct512-n{args.n}")
    files, _ = ensure_archive(archive, args.n, seed=args.seed, pixels="ct512")
    for path in files:  # warm the page cache
        Path(path).read_bytes()
    methods = [m for m in METHODS if m != "gdcmconv" or shutil.which("gdcmconv")]
    print(describe_machine(files))
    results: dict[tuple[str, str], float] = {}
    scans: dict[tuple[str, str], float] = {}
    cpu: dict[tuple[str, str], list[float]] = {}  # CPU seconds of each run
    cpu_parent: dict[tuple[str, str], list[float]] = {}
    for syntax in args.syntax:
        for _ in range(args.repeat):
            for method in methods:
                dst = archive.with_name(f"transcode-out-{method}")
                run = timed(method, syntax, files, archive, dst)
                key = (syntax, method)
                cpu.setdefault(key, []).append(run["cpu_parent"] + run["cpu_workers"])
                cpu_parent.setdefault(key, []).append(run["cpu_parent"])
                if run["seconds"] < results.get(key, float("inf")):
                    results[key], scans[key] = run["seconds"], run["scan"]
        print(f"\n== {syntax} ({len(files)} files, best of {args.repeat})")
        print(f"{'method':14s} {'seconds':>8s} {'(scan)':>7s} {'files/s':>8s} {'MB/s':>7s}  output")
        for method in methods:
            dst = archive.with_name(f"transcode-out-{method}")
            check = verify(method, syntax, files, dst)
            seconds = results[(syntax, method)]
            rate = len(files) / seconds
            mbps = len(files) * PIXEL_BYTES / seconds / 1e6
            scan = f"{scans[(syntax, method)]:7.2f}" if method.startswith("dicomflow") else " " * 7
            print(f"{method:14s} {seconds:8.2f} {scan} {rate:8.1f} {mbps:7.1f}  {check}")
        print(
            "CPU ms per file (load-independent: user + system of the process and the workers "
            "it waited for; median over runs): "
            + ", ".join(
                f"{m} {1e3 * _mid(cpu[(syntax, m)]) / len(files):.2f}"
                f" (parent {1e3 * _mid(cpu_parent[(syntax, m)]) / len(files):.2f})"
                for m in methods
            )
        )
        one, two = _mid(cpu[(syntax, "dicomflow-1w")]), _mid(cpu[(syntax, "dicomflow-2w")])
        loop = _mid(cpu[(syntax, "pydicom")])
        print(
            f"  on 2 idle cores with no serial part, dicomflow-2w could reach at most "
            f"{2 * one / two:.2f}x dicomflow-1w and {2 * loop / two:.2f}x the pydicom loop"
        )
        print(where_time_goes(syntax, files[:50], archive.with_name("transcode-out-steps")))
    print(f"\n== ratios (files/s), targets: {TARGETS}")
    verdicts = []
    for syntax in args.syntax:
        for name, target in TARGETS.items():
            top, bottom = (part.strip() for part in name.split("/"))
            if (syntax, bottom) not in results:
                print(f"{syntax:18s} {name:26s} n/a ({bottom} not installed)")
                continue
            ratio = results[(syntax, bottom)] / results[(syntax, top)]
            ok = ratio >= target if target > 1 else ratio > target
            verdicts.append(ok)
            verdict = "PASS" if ok else "FAIL"
            print(f"{syntax:18s} {name:26s} {ratio:6.2f}x  (target {target}x)  {verdict}")
            record("transcode", f"{syntax}: {top}", ratio, target=target, against=bottom)
        one = results[(syntax, "pydicom")] / results[(syntax, "dicomflow-1w")]
        print(f"{syntax:18s} {'dicomflow-1w / pydicom':26s} {one:6.2f}x  (no target)")
        key = (syntax, "dicomflow-2w")
        two = results[(syntax, "pydicom")] / (results[key] - scans[key])
        print(f"{syntax:18s} {'same, 2w without the scan':26s} {two:6.2f}x  (no target)")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0 if all(verdicts) else 1


def _mid(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def where_time_goes(syntax: str, files: list[str], dst: Path) -> str:
    """Per file, in this process: dicomflow's steps against the pydicom loop's (ms, best of 2)."""
    import pydicom

    from dicomflow.dicom import encode_part10
    from dicomflow.pipeline import Instance, Transcode
    from dicomflow.writers import Part10Folder

    uid = SYNTAXES[syntax][0]
    stage = Transcode(syntax)
    best: dict[str, float] = {}
    for round_ in range(2):
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        sink = Part10Folder(str(dst / "dicomflow"))
        spent = dict.fromkeys(["read", "transcode", "encode", "write"], 0.0)
        spent |= dict.fromkeys(["dcmread", "compress", "save_as"], 0.0)
        for i, path in enumerate(files):
            t0 = time.perf_counter()
            instance = Instance(path)
            instance.dataset  # noqa: B018 - parses
            t1 = time.perf_counter()
            stage(instance)
            t2 = time.perf_counter()
            encode_part10(instance.dataset)  # the sink encodes again: timed apart here
            t3 = time.perf_counter()
            sink.write(instance)
            t4 = time.perf_counter()
            ds = pydicom.dcmread(path)
            t5 = time.perf_counter()
            ds.compress(uid)
            t6 = time.perf_counter()
            ds.save_as(dst / f"{round_}-{i}.dcm")
            t7 = time.perf_counter()
            steps = [t1 - t0, t2 - t1, t3 - t2, t4 - t3 - (t3 - t2), t5 - t4, t6 - t5, t7 - t6]
            for key, seconds in zip(spent, steps):
                spent[key] += seconds
        for key, seconds in spent.items():
            best[key] = min(best.get(key, float("inf")), 1000 * seconds / len(files))
    ours = " + ".join(f"{k} {best[k]:.2f}" for k in ("read", "transcode", "encode", "write"))
    theirs = " + ".join(f"{k} {best[k]:.2f}" for k in ("dcmread", "compress", "save_as"))
    total = sum(best[k] for k in ("read", "transcode", "encode", "write"))
    loop = sum(best[k] for k in ("dcmread", "compress", "save_as"))
    return (
        f"where the time goes, ms per file in one process ({len(files)} files):\n"
        f"  dicomflow: {ours} = {total:.2f} (write: atomic, SHA-256)\n"
        f"  pydicom:   {theirs} = {loop:.2f}"
    )


def describe_machine(files: list[str]) -> str:
    import importlib.metadata as md

    def version(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "-"

    packages = ["pydicom", "imagecodecs", "pylibjpeg-rle", "pyjpegls", "pylibjpeg-openjpeg"]
    gdcm = version("python-gdcm")
    size = sum(os.path.getsize(f) for f in files) / 1e6
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}; Python {platform.python_version()}\n"
        f"packages: {', '.join(f'{p} {version(p)}' for p in packages)}, python-gdcm {gdcm} "
        f"(pydicom's RLE encoder uses gdcm when it is installed)\n"
        f"archive: {len(files)} files, {size:.0f} MB, 512x512 int16 CT, explicit VR LE"
    )


def codecs(args: argparse.Namespace) -> int:
    """Every installed encoder of each syntax on one CT frame, best of --repeat x 5 runs."""
    import pydicom

    from dicomflow.pipeline import encoders, transcode_dataset

    archive = Path(args.archive or ROOT / ".bench" / f"transcode-ct512-n{args.n}")
    files, _ = ensure_archive(archive, args.n, seed=args.seed, pixels="ct512")
    ds = pydicom.dcmread(files[0])
    print(f"one 512x512 int16 CT frame ({files[0]}); ms per frame, best of {args.repeat} x 5")
    for syntax in [*args.syntax, "htj2k-lossless"]:
        for name in encoders(syntax):
            best = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                for _ in range(5):
                    transcode_dataset(ds, syntax, encoder=name)
                best = min(best, (time.perf_counter() - start) / 5)
            print(f"{syntax:18s} {name:12s} {best * 1000:8.2f} ms  {1 / best:7.0f} frames/s")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        child(*argv[1:5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500, help="files in the archive")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs")
    parser.add_argument("--archive", help="folder of the synthetic archive")
    parser.add_argument("--syntax", nargs="+", choices=sorted(SYNTAXES), default=list(SYNTAXES))
    parser.add_argument("--codecs", action="store_true", help="time each encoder instead")
    args = parser.parse_args(argv)
    return codecs(args) if args.codecs else bench(args)


if __name__ == "__main__":
    sys.exit(main())
