"""Memory budgets that hold: what a small file declares cannot make dicomflow take gigabytes.

Each case runs in a child process that reports its own peak RSS (`dicomflow.runtime.peak_rss`,
``VmHWM``: ``ru_maxrss`` would start at the test process's size, which Linux carries over a fork
and exec): a bound on memory, measured where nothing else runs. The files are
generated here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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


_PEAK = "from dicomflow.runtime import peak_rss\n"


def _child(script: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PEAK + script, *args], capture_output=True, text=True, timeout=900
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
                  "rss": peak_rss()}))
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
                  "rss": peak_rss()}))
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
    # 1.1 GB before; 0.4-0.75 GB now, depending on the machine's allocator
    assert out["rss"] < 2**30, f"peak RSS {out['rss'] / 2**20:.0f} MiB"


def _big_j2k(path: Path, side: int = 8000) -> Path:
    """A genuine, small (about 45 KB) JPEG 2000 Lossless object of side x side 12-bit pixels."""
    imagecodecs = pytest.importorskip("imagecodecs")
    from pydicom.encaps import encapsulate

    ramp = np.arange(side, dtype=np.uint16) // 32
    image = np.add.outer(ramp, ramp)
    stream = imagecodecs.jpeg2k_encode(
        image, level=0, codecformat="J2K", reversible=True, mct=False, bitspersample=12
    )
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.90")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.PatientID, ds.Modality = "BUDGET", "OT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4.6", "1.2.3.4.7"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = encapsulate([bytes(stream)])
    path.write_bytes(encode_part10(ds))
    assert path.stat().st_size < 200_000
    return path


_VOLUME_PNG = r"""
import json, resource, sys, warnings
warnings.simplefilter("ignore")
import dicomflow as dfl
(volume,) = dfl.volumes(dfl.scan(sys.argv[1], workers=1))
volume.to_png(sys.argv[2])
print(json.dumps({"rss": peak_rss()}))
"""


@pytest.fixture(scope="module")
def big_j2k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _big_j2k(tmp_path_factory.mktemp("j2k") / "big.dcm")


def test_png_export_of_an_8000_squared_jpeg2000_stays_near_the_decode(
    big_j2k: Path, tmp_path: Path
) -> None:
    """The frame decodes to 128 MB; windowing it through float64 copies peaked at 2.8 GB, for
    PngFolder and for Volume.to_png alike. Now a table of its levels: the peak is the JPEG 2000
    decoder's own (about 4x the frame), and the PNG holds the same 0.5-99.5 percentile window."""
    imagecodecs = pytest.importorskip("imagecodecs")
    out = _child(_PNG, str(big_j2k), str(tmp_path / "png"))
    assert out["rows"] == [{"status": "done", "reason": None}]
    assert out["rss"] < GB, f"PngFolder peak RSS {out['rss'] / 2**20:.0f} MiB"
    (png,) = (tmp_path / "png").rglob("*.png")
    image = imagecodecs.png_decode(png.read_bytes())
    ramp = np.arange(8000, dtype=np.uint16) // 32
    values = np.add.outer(ramp, ramp)  # the window of the whole image
    low, high = np.percentile(values, [0.5, 99.5])
    from dicomflow.pixels import apply_window

    expected = apply_window(values, (low + high) / 2, max(high - low, 1.0))
    assert image.shape == (8000, 8000) and np.array_equal(image, expected)
    out = _child(_VOLUME_PNG, str(big_j2k), str(tmp_path / "volume.png"))
    assert out["rss"] < GB, f"Volume.to_png peak RSS {out['rss'] / 2**20:.0f} MiB"


def test_a_frame_over_the_png_decode_budget_fails_its_instance(
    big_j2k: Path, tmp_path: Path
) -> None:
    import dicomflow as dfl

    sink: Any = dfl.writers.PngFolder(str(tmp_path / "png"), max_frame_bytes=64 * 2**20)
    assert sink.config()["max_frame_bytes"] == 64 * 2**20
    run = dfl.pipeline(dfl.scan(str(big_j2k), workers=1)).write(sink).execute(workers=1)
    (row,) = run.manifest.select(["status", "reason"]).to_pylist()
    assert row["status"] == "failed"
    assert "128,000,000 bytes" in row["reason"] and "decode budget of 67,108,864" in row["reason"]
    assert not list((tmp_path / "png").rglob("*.png"))


def _reference_display(raw: np.ndarray, slope: float, intercept: float, window) -> np.ndarray:
    """The windowing as it was, through a float64 copy of every pixel: the values to keep."""
    from dicomflow.pixels import apply_window

    values = raw.astype(np.float64)
    if raw.dtype.kind in "iu":
        values = values * slope + intercept
    if window is None:
        finite = values[np.isfinite(values)]
        low, high = np.percentile(finite, [0.5, 99.5])
        window = ((low + high) / 2, max(high - low, 1.0))
    return apply_window(values, *window)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "float32"])
@pytest.mark.parametrize("slope,intercept", [(1.0, 0.0), (0.5, -1024.0), (-1.0, 7.3)])
@pytest.mark.parametrize("window", [None, (40.0, 80.0)])
def test_windowing_by_levels_gives_the_float64_values(dtype, slope, intercept, window) -> None:
    """Levels windowed once and looked up, or strips: the same bytes as a whole-frame float64
    conversion, percentile windows included."""
    from types import SimpleNamespace

    from dicomflow.pixels import display_frame

    rng = np.random.default_rng(len(dtype) * 7 + int(slope * 4))
    if dtype == "float32":
        raw = (rng.normal(size=(37, 53)) * 300).astype(dtype)
        raw[0, :3] = np.nan
    elif dtype == "int32":
        raw = rng.integers(-(2**30), 2**30, (37, 53)).astype(dtype)  # a range past the table
    else:
        info = np.iinfo(dtype)
        raw = rng.integers(max(info.min, -3000), min(info.max, 5000), (37, 53)).astype(dtype)
    plane = SimpleNamespace(slope=slope, intercept=intercept, window=(None, None), row={})
    expected = _reference_display(raw, slope, intercept, window)
    assert np.array_equal(display_frame(raw, plane, window), expected)
