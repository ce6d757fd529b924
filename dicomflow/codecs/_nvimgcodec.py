"""NVIDIA nvImageCodec: JPEG 2000, HTJ2K and 8-bit grey baseline JPEG frames decoded on the GPU,
in batches (``pip install 'dicomflow[gpu]'``, an NVIDIA GPU and driver).

Opt-in only: it decodes when a caller names it (``backend="nvimgcodec"``, e.g.
``dfl.frames(catalog, backend="nvimgcodec")``), never as a default or fallback. A frame array's
chunk is one batch: the chunk's frames go to the GPU in one ``Decoder.decode`` call. The arrays
are what the CPU path gives (same dtype, shape and samples, signed samples of an unsigned
codestream sign-extended, the colour transform inverted): lossless frames must be equal, which
``benchmarks/bench_gpu.py`` checks over the corpus on a GPU machine with the batch MB/s against
the best CPU decoder. Lossy JPEG 2000 and JPEG are marked inexact (another inverse wavelet or
DCT may round differently), so ``exact=True`` callers get them only by naming the backend.

``DICOMFLOW_NVIMGCODEC_DEVICE=cpu`` runs the same code on nvImageCodec's own CPU codecs (OpenCV's
OpenJPEG, libjpeg-turbo): how the tests check this module where no GPU is lent. It is not the GPU
path and proves nothing about the GPU's pixels.
"""

from __future__ import annotations

import os
import threading
from functools import cache
from typing import Any

import numpy as np

from ..errors import PixelDataError
from ._format import PixelFormat
from ._j2k import HTJ2K, HTJ2K_LOSSLESS, J2K, J2K_LOSSLESS, as_stored
from ._jpeg import BASELINE
from ._registry import Decoder
from ._samples import as_dataset_dtype, unused_bits

__all__ = ["decode", "decode_batch", "device", "unusable"]

#: one batch at a time per process: a decoder used from two threads at once (dask's threaded
#: scheduler runs chunks in parallel) fails frames and then hangs; the batch is parallel inside
_ONE_BATCH = threading.Lock()

_COMMON: dict[str, Any] = {
    "requires": ("nvidia.nvimgcodec",),
    "condition": "unusable",
    "opt_in": True,
    "batch": "decode_batch",
}
DECODERS = (
    Decoder("nvimgcodec", (J2K_LOSSLESS, HTJ2K_LOSSLESS), "decode", priority=40, **_COMMON),
    Decoder(
        "nvimgcodec",
        (J2K, *[uid for uid in HTJ2K if uid != HTJ2K_LOSSLESS], BASELINE),
        "decode",
        priority=40,
        exact=False,
        **_COMMON,
    ),
)


def device() -> str:
    """Where it decodes: ``"gpu"`` (default) or ``"cpu"`` (``DICOMFLOW_NVIMGCODEC_DEVICE``)."""
    chosen = os.environ.get("DICOMFLOW_NVIMGCODEC_DEVICE", "gpu").strip().lower() or "gpu"
    if chosen not in ("gpu", "cpu"):
        raise PixelDataError(f"DICOMFLOW_NVIMGCODEC_DEVICE is 'gpu' or 'cpu', not {chosen!r}")
    return chosen


@cache
def _decoder(where: str) -> tuple[Any, Any]:
    """The nvImageCodec decoder (one per process: it holds the device's codec state) and the
    decode parameters: samples as stored, any bit depth, no EXIF rotation."""
    from nvidia import nvimgcodec

    if where == "cpu":
        decoder = nvimgcodec.Decoder(
            device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
            backends=[nvimgcodec.Backend(nvimgcodec.CPU_ONLY)],
        )
    else:
        decoder = nvimgcodec.Decoder(
            backends=[
                nvimgcodec.Backend(nvimgcodec.GPU_ONLY),
                nvimgcodec.Backend(nvimgcodec.HYBRID_CPU_GPU),
            ]
        )
    params = nvimgcodec.DecodeParams(
        color_spec=nvimgcodec.UNCHANGED, allow_any_depth=True, apply_exif_orientation=False
    )
    return decoder, params


def unusable(syntax: str) -> str | None:
    """Why it cannot decode here (``None``: it can): no GPU, no driver, no codec library."""
    try:
        _decoder(device())
    except Exception as exc:  # noqa: BLE001 - CUDA and loader errors have no common type
        return f"nvImageCodec cannot start on the {device()}: {type(exc).__name__}: {exc}"
    return None


def _refuse(fmt: PixelFormat) -> str | None:
    if fmt.transfer_syntax_uid == BASELINE and fmt.samples_per_pixel != 1:
        return "colour JPEG is left to the CPU decoders (their YCbCr conversion is pydicom's)"
    return None


def _stored(host: np.ndarray, data: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    if fmt.transfer_syntax_uid == BASELINE:
        arr = as_dataset_dtype(np.ascontiguousarray(host).reshape(fmt.frame_shape), fmt)
        return unused_bits(arr, fmt), fmt.photometric_interpretation
    return as_stored(np.ascontiguousarray(host), data, fmt)


def decode_batch(frames: list[bytes], fmt: PixelFormat) -> list[Any]:
    """Each frame's ``(array, photometric)`` or the exception that refused it: one call."""
    from nvidia import nvimgcodec

    reason = _refuse(fmt)
    if reason:
        return [PixelDataError(reason) for _ in frames]
    decoder, params = _decoder(device())
    streams = [nvimgcodec.CodeStream(data) for data in frames]
    with _ONE_BATCH:
        images = decoder.decode(streams, params=params) if streams else []
        hosts = [None if image is None else np.asarray(image.cpu()) for image in images]
    results: list[Any] = []
    for data, host in zip(frames, hosts, strict=True):
        if host is None:
            results.append(PixelDataError("nvImageCodec could not decode the frame"))
            continue
        try:
            results.append(_stored(host, data, fmt))
        except Exception as exc:  # noqa: BLE001 - handed back for this frame alone
            results.append(exc)
    return results


def decode(data: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    """One frame (a batch of one)."""
    result = decode_batch([bytes(data)], fmt)[0]
    if isinstance(result, BaseException):
        raise result
    return result
