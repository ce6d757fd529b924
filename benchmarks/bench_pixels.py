"""Pixel benchmark: decode throughput per transfer syntax, and a CT series to NIfTI.

Data: the 28 real 512x512 CT slices of the corpus (``series/dcm_qa_ct_ge``) are repeated into
a series of ``--slices`` single-frame files (new UIDs, regular 1 mm spacing, no tilt) and
re-encoded in each transfer syntax (RLE, JPEG-LS lossless, JPEG 2000 lossless; JPEG baseline
from an 8-bit windowed copy), under ``.bench/pixels``.

1. Decode throughput, MB/s of decoded pixels, best of ``--repeat``:

   * ``pydicom loop``: ``for f in files: dcmread(f).pixel_array`` with every codec package
     installed (pydicom picks its plugin);
   * ``dicomflow 1t / 2t``: ``frames(catalog).compute(scheduler="threads", num_workers=N)``
     (the catalog is built once beforehand and timed separately);
   * each decoder of the codec layer (``dicomflow.codecs.decoders_for``) alone on the encoded
     frames in memory, one thread.

2. Series to NIfTI (uncompressed ``.nii``), wall time over ``--rounds`` interleaved rounds
   (each contender once per round, in turn, after one untimed warm-up round), every contender
   writing into a freshly emptied folder, the removal of the previous output timed, as
   dcm2niix's always was: ``dcm2niix -z n`` (its process); dicomflow in process with the
   catalog given, and with the scan (``volumes(scan(folder))`` then ``to_nifti``: what dcm2niix
   does); for information, dicomflow writing over the previous round's file (ext4 starts
   writing a file back to disk when it is renamed over an existing one: about 0.1 s for these
   150 MB) and ``python -m dicomflow export --uncompressed`` as a process, Python's start and
   dicomflow's imports included. dicom2nifti runs in its own virtualenv, import excluded, best
   of the rounds (pass ``--dicom2nifti-python``). dicomflow's output is checked against
   dcm2niix's (same voxels and affine). Printed: median, min and max per contender, and per
   round the ratio dicomflow / dcm2niix (median and range).

Ratios are printed against the targets: decode >= 1.8x the loop with 2 threads (issue 4);
NIfTI with the scan <= 1.0x dcm2niix, median of the rounds (issue 15, item 6), and >= 5x faster
than dicom2nifti (issue 4).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_pixels.py
    .venv/bin/python benchmarks/bench_pixels.py --slices 300 --repeat 3 \\
        --dicom2nifti-python /tmp/d2n-venv/bin/python
    .venv/bin/python benchmarks/bench_pixels.py --quick
    .venv/bin/python benchmarks/bench_pixels.py --nifti-only --rounds 9
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _summary import record  # benchmarks/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = Path(os.environ.get("DICOMFLOW_CORPUS", ROOT.parent / "shared" / "corpus"))
OUT = ROOT / ".bench" / "pixels"

SYNTAXES = {
    "native": "1.2.840.10008.1.2.1",
    "rle": "1.2.840.10008.1.2.5",
    "jpeg-ls": "1.2.840.10008.1.2.4.80",
    "jpeg2000": "1.2.840.10008.1.2.4.90",
    "jpeg-baseline": "1.2.840.10008.1.2.4.50",
}
TARGET_DECODE = 1.8
TARGET_VS_DCM2NIIX = 1.0  # issue 15, item 6 (issue 4 asked for 1.5)
TARGET_VS_DICOM2NIFTI = 5.0


def _source_slices():
    import pydicom

    files = sorted((CORPUS / "series" / "dcm_qa_ct_ge").glob("*.dcm"))
    if not files:
        sys.exit(f"corpus not found at {CORPUS} (set DICOMFLOW_CORPUS)")
    return [pydicom.dcmread(f) for f in files]


def _make_series(name: str, count: int) -> Path:
    """``count`` single-frame CT files in transfer syntax ``name`` (made once, then reused)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, generate_uid

    folder = OUT / f"{name}-{count}"
    if folder.is_dir() and len(list(folder.glob("*.dcm"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sources = _source_slices()
    series_uid = generate_uid()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(count):
            ds = copy.deepcopy(sources[i % len(sources)])
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = i + 1
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [-125.0, -125.0, float(i)]
            ds.GantryDetectorTilt = 0
            ds.SliceThickness = 1.0
            if name == "jpeg-baseline":
                import imagecodecs

                hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(
                    ds.RescaleIntercept
                )
                img8 = np.clip((hu + 160) / 400 * 255, 0, 255).astype(np.uint8)
                ds.PixelData = encapsulate([imagecodecs.jpeg8_encode(img8, level=90)])
                ds["PixelData"].VR = "OB"
                ds.BitsAllocated = ds.BitsStored = 8
                ds.HighBit = 7
                ds.PixelRepresentation = 0
                ds.RescaleSlope, ds.RescaleIntercept = 400 / 255, -160
                ds.file_meta.TransferSyntaxUID = UID(SYNTAXES[name])
            elif name != "native":
                ds.compress(SYNTAXES[name])
            ds.save_as(folder / f"{i:05d}.dcm", enforce_file_format=True)
    return folder


def _best(func, repeat: int) -> float:
    func()  # warm-up, untimed: imports, thread pools, page cache
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def _warm(folder: Path) -> None:
    for f in folder.glob("*.dcm"):
        f.read_bytes()


def bench_decode(names, count: int, repeat: int) -> list[tuple]:
    import pydicom

    import dicomflow as dfl
    from dicomflow.codecs import decoders_for
    from dicomflow.pixels import PixelOptions, frames
    from dicomflow.pixels._frames import row_refs
    from dicomflow.pixels._locate import unwrap_fragments

    rows = []
    for name in names:
        folder = _make_series(name, count)
        files = sorted(folder.glob("*.dcm"))
        _warm(folder)
        mb = count * 512 * 512 * (1 if name == "jpeg-baseline" else 2) / 1e6

        def loop(files=files):
            for f in files:
                pydicom.dcmread(f).pixel_array  # noqa: B018 - the decode is the point

        t_loop = _best(loop, repeat)
        t_scan = _best(lambda folder=folder: dfl.scan(str(folder)).to_arrow(), repeat)
        catalog = dfl.scan(str(folder)).to_arrow()
        results = {}
        for threads in (1, 2):
            arr = frames(catalog)
            results[threads] = _best(
                lambda arr=arr, n=threads: arr.compute(scheduler="threads", num_workers=n),
                repeat,
            )
        rows.append((name, "pydicom loop (dcmread + pixel_array)", mb / t_loop, 1.0))
        rows.append((name, "dicomflow 1 thread", mb / results[1], t_loop / results[1]))
        rows.append((name, "dicomflow 2 threads", mb / results[2], t_loop / results[2]))
        if name == "jpeg-baseline":  # lossy: the fastest decoder, within one grey level
            arr = frames(catalog, options=PixelOptions(exact=False))
            t_fast = _best(lambda arr=arr: arr.compute(scheduler="threads", num_workers=2), repeat)
            rows.append((name, "dicomflow 2 threads, exact=False", mb / t_fast, t_loop / t_fast))
        rows.append((name, "  (catalog scan, once)", None, t_scan))
        if name == "native":
            continue
        tsuid = SYNTAXES[name]
        # each backend alone, one thread, on the frames already in memory
        table = catalog.to_pylist()
        encoded = []
        for row in table[: min(count, 56)]:
            (ref,) = row_refs(row)
            data = Path(ref.uri).read_bytes()[ref.start : ref.stop]
            encoded.append((unwrap_fragments(data), ref.fmt))
        one_mb = len(encoded) * 512 * 512 * (1 if name == "jpeg-baseline" else 2) / 1e6
        for decoder in decoders_for(tsuid):
            backend = f"{decoder.name} ({decoder.function})"
            try:
                decoder.decode(*encoded[0])
            except Exception as exc:
                rows.append((name, f"  backend {backend}: n/a ({exc})"[:90], None, None))
                continue
            t = _best(lambda d=decoder, enc=encoded: [d.decode(e, f) for e, f in enc], repeat)
            rows.append((name, f"  backend {backend}, 1 thread", one_mb / t, None))
    return rows


def _fresh(folder: Path) -> Path:
    """An empty output folder (the old output removed inside the timing, for every contender)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _same_voxels(ours: Path, theirs: Path) -> str:
    """Whether two NIfTI files hold the same voxels on the same grid (a benchmark of different
    outputs would be worthless)."""
    import nibabel as nib

    a, b = nib.load(ours), nib.load(theirs)
    if a.shape != b.shape:
        return f"DIFFERENT shapes {a.shape} / {b.shape}"
    if not np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)):
        return "DIFFERENT voxel values"
    if not np.allclose(a.affine, b.affine, atol=1e-3):
        return "DIFFERENT affines"
    return "same voxels (values after scl_slope/scl_inter) and affine"


def bench_nifti(
    count: int, rounds: int, dicom2nifti_python: str | None, cli: bool = True
) -> tuple[list[tuple], dict[str, list[float]]]:
    """Series to ``.nii``: every contender once per round, in turn, each into a freshly
    emptied folder (dcm2niix's own way: an existing file is never replaced), after one untimed
    warm-up round. Returns the rows to print and every round's seconds per contender."""
    import dicomflow as dfl
    from dicomflow.pixels import volumes

    folder = _make_series("native", count)
    _warm(folder)
    out = Path(tempfile.mkdtemp(prefix="bench-nifti-"))
    rows: list[tuple] = []
    contenders: dict = {}
    if shutil.which("dcm2niix"):

        def d2n():
            target = _fresh(out / "d2n")
            subprocess.run(
                ["dcm2niix", "-z", "n", "-b", "y", "-f", "ct", "-o", str(target), str(folder)],
                check=True,
                capture_output=True,
            )

        contenders["dcm2niix"] = d2n
    else:
        rows.append(("nifti", "dcm2niix: not installed", None, None))

    catalog = dfl.scan(str(folder)).to_arrow()

    def ours_from_catalog():
        (vol,) = volumes(catalog)
        vol.to_nifti(_fresh(out / "ours-catalog") / "ct.nii")

    def ours_from_folder():
        (vol,) = volumes(dfl.scan(str(folder)))
        vol.to_nifti(_fresh(out / "ours") / "ct.nii")

    def ours_over_previous():
        (vol,) = volumes(dfl.scan(str(folder)))
        vol.to_nifti(out / "over" / "ct.nii")  # renamed over the previous round's file

    contenders["dicomflow (catalog given)"] = ours_from_catalog
    contenders["dicomflow (scan + volumes + write)"] = ours_from_folder
    contenders["dicomflow, over the previous .nii"] = ours_over_previous
    if cli:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}

        def ours_cli():
            target = out / "cli"
            shutil.rmtree(target, ignore_errors=True)
            subprocess.run(
                [sys.executable, "-m", "dicomflow", "export", str(folder), str(target)]
                + ["--uncompressed"],
                check=True,
                capture_output=True,
                env=env,
            )

        contenders["dicomflow export CLI (process)"] = ours_cli

    times: dict[str, list[float]] = {label: [] for label in contenders}
    for _ in range(rounds + 1):  # the first round warms up (imports, page cache): untimed
        for label, func in contenders.items():
            start = time.perf_counter()
            func()
            times[label].append(time.perf_counter() - start)
    times = {label: t[1:] for label, t in times.items()}
    if "dcm2niix" in times:
        check = _same_voxels(out / "ours" / "ct.nii", out / "d2n" / "ct.nii")
        rows.append(("nifti", f"output check against dcm2niix: {check}", None, None))

    if dicom2nifti_python:  # another virtualenv: its process times itself, not interleaved
        code = (
            "import sys, time, tempfile, dicom2nifti, logging\n"
            "logging.disable(logging.CRITICAL)\n"
            "best = 1e9\n"
            f"for _ in range({rounds}):\n"
            "    d = tempfile.mkdtemp()\n"
            "    t = time.perf_counter()\n"
            f"    dicom2nifti.convert_directory({str(folder)!r}, d, compression=False)\n"
            "    best = min(best, time.perf_counter() - t)\n"
            "print(best)\n"
        )
        done = subprocess.run(
            [dicom2nifti_python, "-c", code], capture_output=True, text=True, check=True
        )
        times["dicom2nifti (best)"] = [float(done.stdout.strip().splitlines()[-1])]
    else:
        rows.append(("nifti", "dicom2nifti: pass --dicom2nifti-python", None, None))
    shutil.rmtree(out, ignore_errors=True)
    return rows, times


def _spread(values) -> str:
    v = np.asarray(values, float)
    return f"median {np.median(v):6.3f} s  min {v.min():6.3f}  max {v.max():6.3f}"


def report_nifti(rows: list[tuple], times: dict[str, list[float]]) -> None:
    for label, t in times.items():
        print(f"{label:44s} {_spread(t)}")
    for _, label, _, _ in rows:
        print(label)
    if "dcm2niix" not in times:
        return
    theirs = np.asarray(times["dcm2niix"])
    print("\nper round, dicomflow / dcm2niix of the same round:")
    for label, t in times.items():
        if not label.startswith("dicomflow"):
            continue
        r = np.asarray(t) / theirs
        verdict = ""
        if label == "dicomflow (scan + volumes + write)":
            verdict = "ok" if np.median(r) <= TARGET_VS_DCM2NIIX else "MISSED"
            verdict = f"(issue 15: median <= {TARGET_VS_DCM2NIIX}) {verdict}"
        print(
            f"  {label:42s} median {np.median(r):5.2f}  range {r.min():5.2f}-{r.max():5.2f}"
            f"  {verdict}"
        )
        headline = label == "dicomflow (scan + volumes + write)"
        record("pixels", f"CT to NIfTI time, median per round: {label}", float(np.median(r)),
               target=TARGET_VS_DCM2NIIX if headline else None, lower_is_better=True,
               unit="ratio", against="dcm2niix")  # fmt: skip
    if "dicom2nifti (best)" in times:
        best = min(times["dicomflow (scan + volumes + write)"])
        r = times["dicom2nifti (best)"][0] / best
        verdict = "ok" if r >= TARGET_VS_DICOM2NIFTI else "MISSED"
        print(
            f"dicom2nifti / dicomflow (scan + volumes + write), best of each = {r:5.2f}"
            f" (>= {TARGET_VS_DICOM2NIFTI}) {verdict}"
        )
        record("pixels", "CT to NIfTI speed, best of each", r, target=TARGET_VS_DICOM2NIFTI,
               against="dicom2nifti")  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--decode-frames", type=int, default=112)
    parser.add_argument("--repeat", type=int, default=3, help="decode: best of N")
    parser.add_argument("--rounds", type=int, default=7, help="NIfTI: interleaved rounds")
    parser.add_argument("--syntax", action="append", choices=sorted(SYNTAXES))
    parser.add_argument("--nifti-only", action="store_true", help="skip the decode part")
    parser.add_argument("--no-cli", action="store_true", help="NIfTI: skip the CLI process row")
    parser.add_argument("--dicom2nifti-python", default=os.environ.get("DICOM2NIFTI_PYTHON"))
    parser.add_argument("--quick", action="store_true", help="smoke run: small and once")
    args = parser.parse_args(argv)
    if args.quick:
        args.slices, args.decode_frames, args.repeat, args.rounds = 60, 28, 1, 1
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}, {args.decode_frames} frames per syntax, {args.slices}-slice "
        f"series, decode best of {args.repeat}, NIfTI {args.rounds} interleaved rounds"
    )
    ratios = {}
    if not args.nifti_only:
        names = args.syntax or ["native", "rle", "jpeg-ls", "jpeg2000", "jpeg-baseline"]
        print("\n== decode throughput (MB/s of decoded pixels) ==")
        for name, label, mbs, extra in bench_decode(names, args.decode_frames, args.repeat):
            if mbs is None and extra is not None:
                print(f"{name:14s} {label:44s} {extra:8.3f} s")
            elif mbs is None:
                print(f"{name:14s} {label}")
            elif extra is not None:
                print(f"{name:14s} {label:44s} {mbs:8.1f} MB/s  x{extra:.2f} vs loop")
                if "2 threads" in label:
                    ratios[name + (" (exact=False)" if "exact" in label else "")] = extra
            else:
                print(f"{name:14s} {label:44s} {mbs:8.1f} MB/s")
    print("\n== series to NIfTI (.nii, wall time, each contender once per round, in turn) ==")
    rows, times = bench_nifti(
        args.slices, args.rounds, args.dicom2nifti_python, cli=not args.no_cli
    )
    report_nifti(rows, times)
    print(f"(load average after: {os.getloadavg()[0]:.2f})")
    if ratios:
        print("\n== decode against the targets of issue 4 ==")
    for name, ratio in ratios.items():
        if name == "native":
            continue
        verdict = "ok" if ratio >= TARGET_DECODE else "MISSED"
        print(f"decode {name:28s} dicomflow 2t / pydicom loop = {ratio:5.2f} (>= 1.8) {verdict}")
        record("pixels", f"decode {name}, 2 threads", ratio, target=TARGET_DECODE,
               against="pydicom loop")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
