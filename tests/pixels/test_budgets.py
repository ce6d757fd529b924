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


def test_transcode_refuses_more_frames_than_the_bytes_hold(tmp_path: Path) -> None:
    """The data set path (Transcode, Clean Pixel Data) checks the count before any frame: it
    decoded all 1,000,000 frames that were there, then failed on the next one."""
    import pydicom

    from dicomflow.pipeline import TranscodeError, transcode_dataset

    path = _native(tmp_path / "short.dcm", 4_000_000, 1, 1, 1_000_000)
    with pytest.raises(TranscodeError) as info:
        transcode_dataset(pydicom.dcmread(path), "rle")
    assert str(path) in str(info.value)
    assert "4000000 frame(s)" in str(info.value) and "only 1,000,000 bytes" in str(info.value)


def test_an_offset_table_cannot_give_frames_without_fragments(tmp_path: Path) -> None:
    """An Extended Offset Table of 100,000 frames one byte apart, over one fragment: a frame
    needs a fragment (an 8-byte item at least), so the table is not used and the frames cannot
    be assigned, before any per-frame task exists."""
    import dicomflow as dfl

    n = 100_000
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.5")  # RLE: encapsulated
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4.5"
    ds.Rows = ds.Columns = 1
    ds.NumberOfFrames = n
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    fragment = bytes(8 * n)
    ds.ExtendedOffsetTable = np.arange(n, dtype="<u8").tobytes()
    ds.ExtendedOffsetTableLengths = np.ones(n, dtype="<u8").tobytes()
    item = b"\xfe\xff\x00\xe0"
    ds.PixelData = item + b"\0\0\0\0" + item + len(fragment).to_bytes(4, "little") + fragment
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    path = tmp_path / "eot.dcm"
    path.write_bytes(encode_part10(ds))
    row = dfl.scan(str(path), workers=1).to_arrow().to_pylist()[0]
    row["ExtendedOffsetTable"] = ds.ExtendedOffsetTable  # as a catalog column carries it
    with pytest.raises(dfl.PixelDataError, match="1 fragments cannot be assigned to 100000"):
        dfl.frames(row)


_PNG = r"""
import json, resource, sys, warnings
warnings.simplefilter("ignore")
import dicomflow as dfl
run = dfl.pipeline(dfl.scan(sys.argv[1], workers=1)).write(
    dfl.writers.PngFolder(sys.argv[2])).execute(workers=1)
rows = run.manifest.select(["status", "reason"]).to_pylist()
print(json.dumps({"rows": rows,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def test_the_middle_frame_png_of_a_million_frames_costs_one_plane(tmp_path: Path) -> None:
    """PngFolder (frames="middle") built an image plane per frame to write one: 1.1 GB and
    45 s for the 1 MB file; now only the middle frame's plane."""
    imagecodecs = pytest.importorskip("imagecodecs")
    n = 1_000_000
    path = _native(tmp_path / "million.dcm", n, 1, 1, n)
    out = _child(_PNG, str(path), str(tmp_path / "png"))
    assert out["rows"] == [{"status": "done", "reason": None}]
    (png,) = (tmp_path / "png").rglob("*.png")
    assert imagecodecs.png_decode(png.read_bytes()).shape == (1, 1)
    assert out["rss"] < 2**30, (
        f"peak RSS {out['rss'] / 2**20:.0f} MiB"
    )  # 1.1 GB before; 0.4-0.75 now
