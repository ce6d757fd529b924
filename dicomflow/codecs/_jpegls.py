"""JPEG-LS (ISO 14495-1): decoders (imagecodecs' CharLS, pyjpegls) and the imagecodecs encoder.

imagecodecs codes at the container's precision only; pyjpegls (a pydicom plugin, in
``_pydicom``) codes at Bits Stored. Codec call alone on a 512x512 int16 CT frame, one core:
imagecodecs 4.7 ms, pyjpegls 5.9 ms.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._format import PixelFormat
from ._headers import jpeg_header
from ._registry import Decoder, Encoder
from ._samples import as_dataset_dtype, shift, storable

__all__ = ["decode_imagecodecs", "decode_pyjpegls", "encode_imagecodecs", "full_precision"]

LOSSLESS = "1.2.840.10008.1.2.4.80"
NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
JPEG_LS = (LOSSLESS, NEAR_LOSSLESS)

DECODERS = (
    Decoder("imagecodecs", JPEG_LS, "decode_imagecodecs", priority=30, requires=("imagecodecs",)),
    Decoder("pyjpegls", JPEG_LS, "decode_pyjpegls", priority=20, requires=("jpeg_ls",)),
)
ENCODERS = (
    Encoder(
        "imagecodecs",
        JPEG_LS,
        "encode_imagecodecs",
        priority=30,
        requires=("imagecodecs",),
        accepts="full_precision",
    ),
)


def jls_storable(fmt: PixelFormat) -> bool:
    """What the JPEG-LS encoders here store exactly: the PS3.5 table, YCbCr at 8 bits only."""
    return storable(fmt) and not (
        fmt.photometric_interpretation == "YBR_FULL" and fmt.bits_allocated != 8
    )


def full_precision(fmt: PixelFormat) -> bool:
    """imagecodecs' CharLS codes whole containers: Bits Stored must equal Bits Allocated."""
    return jls_storable(fmt) and fmt.bits_stored == fmt.bits_allocated


def _finish(arr: np.ndarray, info: dict, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    arr = as_dataset_dtype(arr.reshape(fmt.frame_shape), fmt)
    if fmt.pixel_representation == 1:
        arr = shift(arr, info.get("precision", fmt.bits_stored))
    photometric = fmt.photometric_interpretation
    if fmt.samples_per_pixel == 3:
        if info.get("component_ids") in ([82, 71, 66], [114, 103, 98]):
            photometric = "RGB"
        elif any(v.startswith(b"JFIF") for v in info.get("app", {}).values()):
            if "YBR" not in photometric:
                photometric = "YBR_FULL"
    return arr, photometric


def decode_imagecodecs(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    import imagecodecs

    return _finish(np.asarray(imagecodecs.jpegls_decode(src)), jpeg_header(src), fmt)


def decode_pyjpegls(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    import jpeg_ls

    buffer, meta = jpeg_ls.decode_buffer(src)
    dtype = np.dtype("u1" if meta["bits_per_sample"] <= 8 else "<u2")
    arr = np.frombuffer(buffer, dtype)
    if meta["components"] > 1 and meta["interleave_mode"] == 0:  # colour-by-plane
        arr = arr.reshape(meta["components"], fmt.rows, fmt.columns).transpose(1, 2, 0)
    return _finish(np.ascontiguousarray(arr), jpeg_header(src), fmt)


def encode_imagecodecs(frame: np.ndarray, fmt: PixelFormat, options: Mapping[str, Any]) -> bytes:
    import imagecodecs

    unsigned = frame.view(frame.dtype.str.replace("i", "u"))  # JPEG-LS codes unsigned samples
    return bytes(imagecodecs.jpegls_encode(unsigned, level=options.get("near")))
