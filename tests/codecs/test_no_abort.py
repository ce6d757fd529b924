"""No decoder can kill the process: frames that made a codec abort the interpreter are decoded or
refused with a documented error, in a process that lives.

Each file is crafted here from a frame encoded by imagecodecs, with the change that made a
backend abort (found by fuzzing every backend in a child process): gdcm, reached through
pydicom's decoders as the last fallback (JPEG-LS) or as pydicom's own plugin (colour JPEG),
raised C++ exceptions nothing caught (SIGABRT, exit 134) or crashed (SIGSEGV). Every decode
runs in a child process, so a crash fails the test instead of ending the run.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

from dicomflow.dicom import encode_part10

imagecodecs = pytest.importorskip("imagecodecs")

JPEG_LS = "1.2.840.10008.1.2.4.80"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"

_FRAMES = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import dicomflow as dfl
out = {}
for path in sys.argv[1:]:
    row = dfl.scan(path, workers=1).to_arrow().to_pylist()[0]
    try:
        out[path] = {"decoded": dfl.frames(row)[0].compute(scheduler="synchronous").tolist()}
    except dfl.PixelDataError as exc:
        out[path] = {"refused": type(exc).__name__, "message": str(exc)}
print(json.dumps(out))
"""

_TRANSCODE = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import pydicom
import dicomflow as dfl
from dicomflow.pipeline import transcode_dataset
out = {}
for path in sys.argv[1:]:
    try:
        ds = transcode_dataset(pydicom.dcmread(path), "explicit-vr-le")
        out[path] = {"decoded": ds.pixel_array.tolist()}
    except dfl.TranscodeError as exc:
        out[path] = {"refused": type(exc).__name__, "message": str(exc)}
print(json.dumps(out))
"""


def _in_child(script: str, *paths: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, paths)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"the decoding process died ({done.returncode}): {done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _segments(codestream: bytes) -> list[tuple[int, int]]:
    """(marker, offset) of every marker segment before the scan data, the SOS included."""
    found, pos = [], 2
    while codestream[pos] == 0xFF:
        marker = codestream[pos + 1]
        found.append((marker, pos))
        if marker == 0xDA:
            break
        pos += 2 + struct.unpack(">H", codestream[pos + 2 : pos + 4])[0]
    return found


def _part10(path: Path, syntax: str, codestream: bytes, shape: tuple, photometric: str) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(syntax)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.Rows, ds.Columns = shape[:2]
    ds.SamplesPerPixel = shape[2] if len(shape) == 3 else 1
    ds.PhotometricInterpretation = photometric
    if ds.SamplesPerPixel > 1:
        ds.PlanarConfiguration = 0
    bits = 16 if syntax == JPEG_LS else 8
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    ds.PixelData = encapsulate([codestream])
    path.write_bytes(encode_part10(ds))
    return path


def jpegls_with_a_second_bad_sof(image: np.ndarray) -> bytes:
    """A valid frame, then a second start-of-frame declaring 0 columns, and a scan that names a
    component the frame does not have: every other decoder refuses it, gdcm crashed on it."""
    stream = bytearray(imagecodecs.jpegls_encode(image))
    segments = dict(_segments(bytes(stream)))
    sof = segments[0xF7]
    (length,) = struct.unpack(">H", stream[sof + 2 : sof + 4])
    second = bytearray(stream[sof : sof + 2 + length])
    second[7:9] = b"\x00\x00"  # columns
    sos = segments[0xDA] + len(second)
    stream[sof + 2 + length : sof + 2 + length] = second
    stream[sos + 5] = 2  # the scan's first component selector: component 2
    return bytes(stream)


def jpeg_with_jfif_version(image: np.ndarray, major: int) -> bytes:
    """A baseline JPEG whose JFIF APP0 segment says version ``major``.01: pixels unchanged,
    libjpeg warns, and gdcm threw that warning as an exception."""
    stream = bytearray(imagecodecs.jpeg8_encode(image, level=90))
    app0 = dict(_segments(bytes(stream)))[0xE0]
    assert stream[app0 + 4 : app0 + 9] == b"JFIF\x00"
    stream[app0 + 9] = major
    return bytes(stream)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("crafted")
    grey = np.random.default_rng(11).integers(0, 4096, (16, 16), dtype=np.uint16)
    colour = np.random.default_rng(12).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    files = {
        "jpeg-ls": _part10(
            folder / "two_sofs.dcm",
            JPEG_LS,
            jpegls_with_a_second_bad_sof(grey),
            grey.shape,
            "MONOCHROME2",
        ),
        "jfif-2": _part10(
            folder / "jfif2.dcm",
            JPEG_BASELINE,
            jpeg_with_jfif_version(colour, 2),
            colour.shape,
            "YBR_FULL_422",
        ),
        "jfif-1": _part10(
            folder / "jfif1.dcm",
            JPEG_BASELINE,
            jpeg_with_jfif_version(colour, 1),
            colour.shape,
            "YBR_FULL_422",
        ),
    }
    assert all(p.stat().st_size < 2048 for p in files.values())  # about 1 KB each
    return files


def test_the_crafted_files_are_what_they_claim(crafted: dict[str, Path]) -> None:
    """The JPEG-LS frame passes the size guard (its first start-of-frame is the data set's
    16 x 16) and the safe decoders refuse it; the two JPEGs differ in one byte only."""
    from dicomflow.codecs import PixelFormat, check_frame, decode_frame
    from dicomflow.dicom import transfer_syntax

    ds = pydicom.dcmread(crafted["jpeg-ls"])
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    fmt = PixelFormat(JPEG_LS, rows=16, columns=16)
    check_frame(frame, fmt, transfer_syntax(JPEG_LS))
    for backend in ("imagecodecs", "pyjpegls"):
        with pytest.raises(Exception, match="(?i)invalid|component"):
            decode_frame(frame, fmt, JPEG_LS, backend=backend)
    one, two = (crafted[k].read_bytes() for k in ("jfif-1", "jfif-2"))
    assert len(one) == len(two) and sum(a != b for a, b in zip(one, two)) == 1


def test_frames_of_a_crafted_file_never_kill_the_process(crafted: dict[str, Path]) -> None:
    out = _in_child(_FRAMES, crafted["jpeg-ls"], crafted["jfif-2"], crafted["jfif-1"])
    refused = out[str(crafted["jpeg-ls"])]
    assert refused["refused"] == "FrameDecodeError"
    assert str(crafted["jpeg-ls"]) in refused["message"] and "frame 0" in refused["message"]
    # the JFIF version changes nothing in the pixels: both decode, to the same values
    decoded = np.array(out[str(crafted["jfif-2"])]["decoded"])
    assert decoded.shape == (16, 16, 3)
    assert np.array_equal(decoded, np.array(out[str(crafted["jfif-1"])]["decoded"]))


def test_transcode_of_a_crafted_file_never_kills_the_process(crafted: dict[str, Path]) -> None:
    """Transcode decodes with pydicom's decoders (backend "pydicom"): the same rule holds."""
    out = _in_child(_TRANSCODE, crafted["jpeg-ls"], crafted["jfif-2"])
    assert out[str(crafted["jpeg-ls"])]["refused"] == "TranscodeError"
    assert np.array(out[str(crafted["jfif-2"])]["decoded"]).shape == (16, 16, 3)


_GDCM_ABORTS = r"""
import os, sys, warnings
warnings.simplefilter("ignore")
from pydicom.pixels import get_decoder
import pydicom
from dicomflow.codecs import decode_frame, pixel_format, stored_frames

def abort(*args, **kwargs):
    os.abort()

for uid in sys.argv[1].split(","):
    decoder = get_decoder(uid)
    if "gdcm" in decoder.available_plugins:
        decoder._available["gdcm"] = abort  # pydicom's plugin table: gdcm now always aborts
for path in sys.argv[2:]:
    ds = pydicom.dcmread(path)
    fmt = pixel_format(ds, ds.file_meta.TransferSyntaxUID)
    for data in stored_frames(ds, fmt):
        decode_frame(data, fmt, fmt.transfer_syntax_uid, backend="pydicom")
print("alive")
"""


def test_pydicom_decoders_never_reach_gdcm(corpus: Path) -> None:
    """With gdcm made to abort on every call, dicomflow's pydicom decoder still decodes each
    syntax gdcm could decode (pydicom would try gdcm first for all of them)."""
    if "gdcm" not in pydicom.pixels.get_decoder(JPEG_BASELINE).available_plugins:
        pytest.skip("gdcm is not installed")
    files = [
        "transfer-syntax/jpeg-baseline/SC_rgb_jpeg_dcmtk.dcm",
        "transfer-syntax/jpeg-baseline/JPEGBaseline_1s_1f_u_08_08.dcm",
        "transfer-syntax/jpeg-extended/JPGExtended.dcm",
        "transfer-syntax/jpeg-lossless-sv1/SC_rgb_jpeg_gdcm.dcm",
        "transfer-syntax/jpeg-ls-lossless/MR_small_jpeg_ls_lossless.dcm",
        "transfer-syntax/jpeg2000-lossless/MR_small_jp2klossless.dcm",
        "transfer-syntax/jpeg2000/SC_rgb_gdcm_KY.dcm",
    ]
    syntaxes = {pydicom.dcmread(corpus / f).file_meta.TransferSyntaxUID for f in files}
    uids = ",".join(sorted(syntaxes))
    done = subprocess.run(
        [sys.executable, "-c", _GDCM_ABORTS, uids, *(str(corpus / f) for f in files)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "alive", done.stderr[-2000:]


# Found by the 100,000-mutant fuzz run (benchmarks/fuzz.py, flip class): one changed byte of a
# corpus file each. imagecodecs' lossless JPEG (liblj92) crashed (SIGSEGV) on a start-of-frame
# segment whose length is not 8 + 3 x components (T.81 B.2.2); pylibjpeg-rle, written in Rust,
# panicked ("index out of bounds"), and pyo3's PanicException is a BaseException that no
# ``except Exception`` caught: the process ended.
_FUZZ_FOUND = {
    "jpeg-lossless-sof-length": (
        "transfer-syntax/jpeg-lossless-p14/JPEGLossless_1s_1f_u_16_12.dcm",
        [(1613, 190)],
    ),
    "rle-segment-overrun": (
        "transfer-syntax/rle/MR_small_RLE.dcm",
        [(616, 119), (3614, 30), (4032, 29), (5832, 11), (6723, 67)],
    ),
}


@pytest.mark.parametrize("case", list(_FUZZ_FOUND))
def test_fuzz_found_frames_are_refused_in_a_process_that_lives(case, corpus, tmp_path) -> None:
    source, changes = _FUZZ_FOUND[case]
    data = bytearray((corpus / source).read_bytes())
    for at, value in changes:
        data[at] = value
    path = tmp_path / f"{case}.dcm"
    path.write_bytes(bytes(data))
    out = _in_child(_FRAMES, path)[str(path)]  # the process lived
    if case == "jpeg-lossless-sof-length":  # refused before any decoder sees it
        assert out["refused"] == "FrameDecodeError"
        assert "no valid JPEG start-of-frame marker" in out["message"]
    else:  # the Rust decoder's panic is one failure; another backend decodes the frame
        assert np.asarray(out["decoded"]).shape == (64, 64)
