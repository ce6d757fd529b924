"""Memory budgets that hold: what a small file declares cannot make dicomflow take gigabytes.

Each case runs in a child process that reports its own peak RSS (``ru_maxrss``): a bound on
memory, measured where nothing else runs. The files are generated here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from dicomflow.dicom import encode_part10

GB = 2**30


def _native(path: Path, frames: int, rows: int, columns: int, pixel_bytes: int) -> Path:
    """An 8-bit grey object declaring ``frames`` frames, with ``pixel_bytes`` of Pixel Data."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.PatientID, ds.Modality = "BUDGET", "OT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4.6", "1.2.3.4.7"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = (np.arange(pixel_bytes) % 251).astype(np.uint8).tobytes()
    path.write_bytes(encode_part10(ds))
    return path


def _child(script: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"the child died ({done.returncode}): {done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


_FRAMES = r"""
import json, resource, sys, warnings
warnings.simplefilter("ignore")
import dicomflow as dfl
row = dfl.scan(sys.argv[1], workers=1).to_arrow().to_pylist()[0]
arr = dfl.frames(row)
middle = arr[arr.shape[0] // 2].compute(scheduler="synchronous")
print(json.dumps({"shape": list(arr.shape), "chunks": len(arr.chunks[0]),
                  "middle": middle.tolist(),
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def test_a_million_1x1_frames_of_one_megabyte_stay_small(tmp_path: Path) -> None:
    """1 MB of native data holding 1,000,000 frames of one pixel: dfl.frames() took 3.4 GB and
    five minutes (a dask task and a tokenized object per frame); now tiny frames share chunks."""
    n = 1_000_000
    path = _native(tmp_path / "million.dcm", n, 1, 1, n)
    out = _child(_FRAMES, str(path))
    assert out["shape"] == [n, 1, 1]
    assert out["middle"] == [[(n // 2) % 251]]
    assert out["chunks"] <= n // 4096 + 1  # 4 KiB of frames per task at least
    assert out["rss"] < GB, f"peak RSS {out['rss'] / 2**20:.0f} MiB"


@pytest.mark.parametrize("pixel_bytes", [999_998, 2])
def test_more_frames_than_the_bytes_hold_are_refused_before_any_task(
    tmp_path: Path, pixel_bytes: int
) -> None:
    path = _native(tmp_path / "short.dcm", 1_000_000, 1, 1, pixel_bytes)
    script = _FRAMES.replace(
        "arr = dfl.frames(row)",
        "try:\n    dfl.frames(row)\nexcept dfl.PixelSizeError as exc:\n"
        "    print(json.dumps({'refused': str(exc)})); sys.exit(0)\narr = None",
    )
    out = _child(script, str(path))
    assert "1000000 frame(s)" in out["refused"] and str(path) in out["refused"]
