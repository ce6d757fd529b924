"""SEG to label volume: dicomflow's ``read_seg`` against highdicom's own volume reader.

Writes a synthetic CT series (``--slices`` x 256 x 256) and a BINARY SEG of three segments on
it (highdicom), then times, best of ``--repeat``: ``dfl.read_seg(seg, volume)`` (labels on the
series' grid plus the segment table) and highdicom's ``segread(seg).get_volume(combine_segments=
True)`` (its volume of the same SEG). Both read the file from disk each time. Prints the times
and the ratio (highdicom / dicomflow: above 1 means dicomflow is faster). The series is
written by the synthetic-series helper of ``tests/derived/conftest.py``, under ``.bench/seg``::

    python benchmarks/bench_seg.py --slices 120
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from _summary import record  # benchmarks/ is on sys.path when run as a script

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "derived"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import highdicom as hd

    import dicomflow as dfl

    folder = Path(__file__).resolve().parents[1] / ".bench" / "seg"
    shutil.rmtree(folder, ignore_errors=True)
    # everything generated goes under .bench/ (git-ignored)
    paths = _series(folder / "ct", args.slices)
    vol = dfl.volumes(dfl.scan([str(p) for p in paths], workers=1))[0]
    z, y, x = np.ogrid[: vol.shape[0], : vol.shape[1], : vol.shape[2]]
    lab = np.zeros(vol.shape, dtype=np.uint8)
    lab[(z - vol.shape[0] / 2) ** 2 / 4 + (y - 128) ** 2 + (x - 128) ** 2 < 70**2] = 1
    lab[:, ((y - 100) ** 2 + (x - 90) ** 2 < 20**2)[0]] = 2
    lab[:, 200:230, 30:60] = 3
    seg_path = dfl.write_seg(lab, vol, folder / "seg.dcm")

    def ours():
        return dfl.read_seg(seg_path, vol).labels

    def theirs():
        return hd.seg.segread(seg_path).get_volume(combine_segments=True).array

    a, b = ours(), theirs()
    assert a.shape == b.shape == vol.shape, (a.shape, b.shape)
    t_ours = min(_time(ours) for _ in range(args.repeat))
    t_theirs = min(_time(theirs) for _ in range(args.repeat))
    print(f"SEG {args.slices}x256x256, 3 segments, {seg_path.stat().st_size:,} bytes")
    print(f"dicomflow read_seg:           {t_ours:.3f} s")
    print(f"highdicom get_volume:         {t_theirs:.3f} s")
    print(f"ratio highdicom / dicomflow:  {t_theirs / t_ours:.2f}x")
    record("seg", "SEG to label volume", t_theirs / t_ours, target=1.0, against="highdicom")


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _series(folder: Path, slices: int) -> list[Path]:
    import conftest  # tests/derived/conftest.py: the synthetic series writer

    conftest.SLICES, conftest.ROWS, conftest.COLUMNS = slices, 256, 256
    return conftest.write_ct_series(folder, shuffle=False)


if __name__ == "__main__":
    main()
