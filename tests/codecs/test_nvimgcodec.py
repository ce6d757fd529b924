"""The GPU decode path (nvImageCodec, ``backend="nvimgcodec"``): opt-in only, batched behind
the frame API, the CPU path's pixels.

Three kinds of test: the registry rules (everywhere); the module on nvImageCodec's own CPU codecs
(``DICOMFLOW_NVIMGCODEC_DEVICE=cpu``, where the package is installed: it checks this module's
batching and sample handling, not the GPU); and the GPU itself, which skips with the reason
unless an NVIDIA GPU is usable here (``benchmarks/bench_gpu.py`` is the check to run there).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate

import dicomflow as dfl
from dicomflow.codecs import decode_frame, decode_frames, decoders_for, pixel_format, stored_frames
from dicomflow.errors import PixelDataError

ROOT = Path(__file__).resolve().parents[2]
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
INSTALLED = importlib.util.find_spec("nvidia") is not None and (
    importlib.util.find_spec("nvidia.nvimgcodec") is not None
)
needs_package = pytest.mark.skipif(
    not INSTALLED, reason="nvidia-nvimgcodec-cu12 is not installed (pip install 'dicomflow[gpu]')"
)


def test_the_gpu_decoder_is_never_chosen_unless_named():
    for syntax in ("jpeg2000-lossless", "jpeg2000", "htj2k-lossless", "jpeg-baseline"):
        assert "nvimgcodec" not in [d.name for d in decoders_for(syntax)]
        assert "nvimgcodec" not in [d.name for d in decoders_for(syntax, exact=False)]


def test_decode_frames_without_a_batch_backend_is_decode_frame_per_frame(corpus):
    ds = pydicom.dcmread(corpus / "transfer-syntax/jpeg2000-lossless/liver_j2k.dcm")
    fmt = pixel_format(ds, ds.file_meta.TransferSyntaxUID)
    frames = list(stored_frames(ds, fmt))
    got = decode_frames([*frames, b"\xff\x4f\xff\x51 not a frame"], fmt, fmt.transfer_syntax_uid)
    assert len(got) == 4
    for want, arr in zip(ds.pixel_array, got[:3], strict=True):
        assert np.array_equal(arr, want)
    assert isinstance(got[3], PixelDataError)  # one bad frame, the others kept


def _run(device: str, code: str) -> dict:
    env = {**os.environ, "DICOMFLOW_NVIMGCODEC_DEVICE": device}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


COMPARE = """
import json, sys
sys.path.insert(0, "benchmarks")
from bench_gpu import compare, corpus_root
print(json.dumps(compare(corpus_root())))
"""


def _compared(device: str, corpus: Path) -> list[dict]:
    os.environ.setdefault("DICOMFLOW_SHARED", str(corpus.parent))
    return [r for r in _run(device, COMPARE) if "frames" in r]


@needs_package
def test_on_nvimgcodecs_cpu_codecs_every_decoded_frame_is_the_cpu_paths(corpus):
    rows = _compared("cpu", corpus)
    assert not [r for r in rows if r["differ"]]  # no frame decoded to other values
    equal = {r["file"] for r in rows if r["equal"] == r["frames"]}
    # its CPU codecs (OpenCV's OpenJPEG) decode these; unsigned and signed, grey and colour,
    # lossless and lossy, 8 and 16 bits, HTJ2K
    assert {
        "jpeg2000-lossless/JPEG2KLossless_1s_1f_u_16_16.dcm",
        "jpeg2000-lossless/TOSHIBA_J2K_SIZ0_PixRep1.dcm",
        "jpeg2000/MAROTECH_CT_JP2Lossy.dcm",
        "htj2k-lossless/HTJ2KLossless_08_RGB.dcm",
        "jpeg-baseline/JPEGBaseline_1s_1f_u_08_08.dcm",
    } <= equal
    colour_jpeg = [r for r in rows if r["file"].startswith("jpeg-baseline/SC_rgb")]
    assert colour_jpeg and all("colour JPEG" in r["refused"][0] for r in colour_jpeg)


FRAMES = """
import json, sys
import numpy as np
import dicomflow as dfl
from dicomflow.pixels import PixelOptions
cat = dfl.scan(sys.argv[1], workers=1)
cpu = dfl.frames(cat).compute()
gpu = dfl.frames(cat, options=PixelOptions(frames_per_chunk=4, backend="nvimgcodec"))
print(json.dumps({"chunks": gpu.numblocks[0], "equal": bool(np.array_equal(cpu, gpu.compute())),
                  "dtype": str(gpu.dtype), "shape": list(gpu.shape)}))
"""


@needs_package
def test_a_frame_array_decodes_each_chunk_as_one_batch(corpus, tmp_path):
    src = pydicom.dcmread(corpus / "transfer-syntax/jpeg2000-lossless/TOSHIBA_J2K_SIZ0_PixRep1.dcm")
    fmt = pixel_format(src, src.file_meta.TransferSyntaxUID)
    (frame,) = stored_frames(src, fmt)
    src.PixelData = encapsulate([bytes(frame)] * 8)
    src.NumberOfFrames = 8
    src.save_as(tmp_path / "multi.dcm")
    code = FRAMES.replace("sys.argv[1]", repr(str(tmp_path)))
    got = _run("cpu", code)
    assert got["equal"] and got["chunks"] == 2 and got["shape"][0] == 8
    want = decode_frame(bytes(frame), fmt, fmt.transfer_syntax_uid)
    assert got["dtype"] == str(want.dtype)


def _gpu_reason() -> str | None:
    if not INSTALLED:
        return "nvidia-nvimgcodec-cu12 is not installed (pip install 'dicomflow[gpu]')"
    code = (
        "from dicomflow.codecs import available_backends as a; "
        f"print(a()['{J2K_LOSSLESS}'].get('nvimgcodec', 'absent'))"
    )
    env = {**os.environ, "DICOMFLOW_NVIMGCODEC_DEVICE": "gpu"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    answer = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    return None if answer == "ok" else f"no usable NVIDIA GPU here: {answer}"


@pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))
def test_on_the_gpu_lossless_frames_equal_the_cpu_path(corpus):
    rows = _compared("gpu", corpus)
    lossless = [r for r in rows if r["lossless"]]
    assert lossless and not [r for r in lossless if r["differ"] or r["refused"]]


def test_naming_the_gpu_backend_where_it_cannot_run_says_why():
    if not INSTALLED:
        with pytest.raises(PixelDataError, match="backend 'nvimgcodec'"):
            decoders_for("jpeg2000-lossless", "nvimgcodec")
        return
    report = dfl.codecs.available_backends()[J2K_LOSSLESS]["nvimgcodec"]
    assert report == "ok" or "nvImageCodec cannot start" in report
