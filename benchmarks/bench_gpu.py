"""The GPU decode path (nvImageCodec) against the CPU path: the same pixels, and batch MB/s.

One short script for a machine with an NVIDIA GPU (``pip install -e '.[gpu]'``)::

    python benchmarks/bench_gpu.py                 # equality over the corpus, then MB/s
    python benchmarks/bench_gpu.py --device cpu    # the same code on nvImageCodec's CPU codecs

1. **Equality**: every frame of every JPEG 2000, HTJ2K and baseline JPEG file of the corpus is
   decoded by the CPU path (``decode_frame``, exact) and by ``decode_frames(...,
   backend="nvimgcodec")`` in one batch per file; it prints, per file, the frames equal, those
   that differ (with the largest difference) and those the GPU path refused (with why).
   Lossless frames that differ are a failure (exit 1); lossy ones are reported.
2. **Throughput**: for a few corpus files (16-bit CT JPEG 2000 lossless, HTJ2K, lossy JPEG
   2000), a batch of ``--batch`` frames (the file's frames repeated) decoded on the GPU in one
   call, against the best CPU decoder (imagecodecs, which releases the GIL) on a thread per
   core; best of ``--repeat`` after a warm-up, decoded MB/s and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

LOSSLESS = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201"}
FOLDERS = ("jpeg2000-lossless", "jpeg2000", "htj2k-lossless", "htj2k", "jpeg-baseline")
SPEED_FILES = (
    "jpeg2000-lossless/JPEG2KLossless_1s_1f_u_16_16.dcm",
    "jpeg2000-lossless/TOSHIBA_J2K_SIZ0_PixRep1.dcm",
    "htj2k-lossless/HTJ2KLossless_08_RGB.dcm",
    "jpeg2000/MAROTECH_CT_JP2Lossy.dcm",
)


def corpus_root() -> Path:
    shared = os.environ.get("DICOMFLOW_SHARED", str(ROOT.parent / "shared"))
    return Path(shared) / "corpus" / "transfer-syntax"


def _frames(path: Path):
    import pydicom

    from dicomflow.codecs import pixel_format, stored_frames

    ds = pydicom.dcmread(path)
    fmt = pixel_format(ds, ds.file_meta.TransferSyntaxUID)
    return fmt, [bytes(f) for f in stored_frames(ds, fmt)]


def compare(root: Path) -> list[dict]:
    """Per file: frames, equal, differ (largest difference), refused (reasons), lossless."""
    from dicomflow.codecs import decode_frame, decode_frames

    rows = []
    for folder in FOLDERS:
        for path in sorted((root / folder).glob("*")):
            try:
                fmt, frames = _frames(path)
                cpu = [decode_frame(f, fmt, fmt.transfer_syntax_uid) for f in frames]
            except Exception as exc:  # noqa: BLE001 - a file the CPU path refuses is not compared
                rows.append({"file": f"{folder}/{path.name}", "skipped": f"CPU path: {exc}"})
                continue
            gpu = decode_frames(frames, fmt, fmt.transfer_syntax_uid, backend="nvimgcodec")
            equal, differ, refused, worst = 0, 0, set(), 0
            for want, got in zip(cpu, gpu, strict=True):
                if not isinstance(got, np.ndarray):
                    refused.add(str(got)[:120])
                elif got.dtype == want.dtype and np.array_equal(got, want):
                    equal += 1
                else:
                    differ += 1
                    if got.shape == want.shape:
                        diff = np.abs(got.astype(np.int64) - want.astype(np.int64)).max()
                        worst = max(worst, int(diff))
            rows.append(
                {
                    "file": f"{folder}/{path.name}",
                    "frames": len(frames),
                    "equal": equal,
                    "differ": differ,
                    "max_diff": worst,
                    "refused": sorted(refused),
                    "lossless": fmt.transfer_syntax_uid in LOSSLESS,
                }
            )
    return rows


def _rates(name: str, fmt, frames: list[bytes], repeat: int) -> tuple[float, float]:
    """Best seconds of a GPU batch and of the CPU decoders on a thread per core."""
    from dicomflow.codecs import decode_frame, decode_frames

    uid = fmt.transfer_syntax_uid

    def gpu() -> None:
        got = decode_frames(frames, fmt, uid, backend="nvimgcodec")
        bad = [g for g in got if not isinstance(g, np.ndarray)]
        if bad:
            raise SystemExit(f"{name}: the GPU path refused a frame: {bad[0]}")

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:

        def cpu() -> None:
            list(pool.map(lambda f: decode_frame(f, fmt, uid), frames))

        gpu(), cpu()  # warm-up: codec state, CUDA context, thread start
        best = {gpu: float("inf"), cpu: float("inf")}
        for _ in range(repeat):
            for run in (gpu, cpu):
                start = time.perf_counter()
                run()
                best[run] = min(best[run], time.perf_counter() - start)
    return best[gpu], best[cpu]


def throughput(root: Path, batch: int, repeat: int) -> list[tuple[str, float, float]]:
    """(file, GPU MB/s, CPU MB/s) for batches of ``batch`` frames."""
    out = []
    for name in SPEED_FILES:
        path = root / name
        if not path.exists():
            continue
        fmt, frames = _frames(path)
        frames = (frames * (-(-batch // len(frames))))[:batch]
        mb = batch * fmt.frame_nbytes / 1e6
        gpu_s, cpu_s = _rates(name, fmt, frames, repeat)
        out.append((name, mb / gpu_s, mb / cpu_s))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--batch", type=int, default=256, help="frames per batch")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args(argv)
    os.environ["DICOMFLOW_NVIMGCODEC_DEVICE"] = args.device

    from _summary import record

    from dicomflow.codecs import available_backends

    reason = available_backends().get("1.2.840.10008.1.2.4.90", {}).get("nvimgcodec", "absent")
    print(f"nvImageCodec on the {args.device}: {reason}; {os.cpu_count()} CPUs")
    if reason != "ok":
        print("the GPU path cannot run here; nothing measured")
        return 2
    root = corpus_root()
    failed = False
    rows = compare(root)
    for row in rows:
        if "skipped" in row:
            print(f"  {row['file']:58s} skipped ({row['skipped'][:60]})")
            continue
        bad = row["differ"] and row["lossless"]
        failed |= bool(bad)
        print(
            f"  {row['file']:58s} {row['equal']:3d}/{row['frames']:<3d} equal"
            + (f", {row['differ']} differ (max {row['max_diff']})" if row["differ"] else "")
            + (f", refused: {'; '.join(row['refused'])}" if row["refused"] else "")
            + ("  LOSSLESS MISMATCH" if bad else "")
        )
    compared = [r for r in rows if "frames" in r]
    equal = sum(r["equal"] for r in compared)
    total = sum(r["frames"] for r in compared)
    print(f"equal frames: {equal}/{total}; lossless mismatches: {failed}")
    record(
        "gpu",
        f"share of frames equal to the CPU path ({args.device})",
        equal / max(total, 1),
        unit="ratio",
    )
    if not args.skip_speed:
        print(f"batch of {args.batch} frames, best of {args.repeat}:")
        for name, gpu_mbs, cpu_mbs in throughput(root, args.batch, args.repeat):
            ratio = gpu_mbs / cpu_mbs
            print(f"  {name:58s} {gpu_mbs:9.1f} MB/s vs CPU {cpu_mbs:9.1f} MB/s: {ratio:6.2f}x")
            record("gpu", f"decode MB/s, {name}", ratio, against="imagecodecs, thread per core")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
