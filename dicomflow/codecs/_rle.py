"""RLE Lossless (PS3.5 Annex G): decoders (imagecodecs, pylibjpeg-rle) and the imagecodecs
encoder (PackBits segments assembled here)."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import PixelDataError
from ._format import PixelFormat
from ._registry import Decoder, Encoder
from ._samples import reshape, unused_bits

__all__ = ["decode_imagecodecs", "decode_pylibjpeg", "encode_imagecodecs", "storable"]

RLE = "1.2.840.10008.1.2.5"

DECODERS = (
    Decoder("imagecodecs", (RLE,), "decode_imagecodecs", priority=30, requires=("imagecodecs",)),
    Decoder("pylibjpeg-rle", (RLE,), "decode_pylibjpeg", priority=20, requires=("rle",)),
)
# The codec call alone on a 512x512 int16 CT frame, one core, best of 12: imagecodecs (PackBits,
# assembled here) 0.61 ms, gdcm 1.16, pylibjpeg-rle 5.5, pydicom's numpy encoder 78 (those three
# are pydicom plugins, in ``_pydicom``). ``benchmarks/bench_transcode.py --codecs`` times them.
ENCODERS = (
    Encoder(
        "imagecodecs",
        (RLE,),
        "encode_imagecodecs",
        priority=30,
        requires=("imagecodecs",),
        accepts="storable",
    ),
)


def storable(fmt: PixelFormat) -> bool:
    """What the RLE encoders here store exactly: the PS3.5 table, 8- or 16-bit samples, YCbCr
    at 8 bits only."""
    from ._samples import storable as table_allows

    return table_allows(fmt) and not (
        fmt.photometric_interpretation == "YBR_FULL" and fmt.bits_allocated != 8
    )


def _check(src: bytes, fmt: PixelFormat) -> int:
    """Check the RLE header against the declared layout; return bytes per sample."""
    if len(src) < 64:
        raise PixelDataError("RLE frame shorter than its 64-byte header")
    (segments,) = struct.unpack("<I", src[:4])
    nbytes = max(fmt.bits_allocated // 8, 1)  # Bits Allocated 1: one segment of packed bits
    expected = fmt.samples_per_pixel * nbytes
    if segments != expected:
        raise PixelDataError(f"RLE frame has {segments} segments, expected {expected}")
    return nbytes


def _finish(raw: bytes | bytearray, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    if fmt.bits_allocated == 1:
        bits = np.unpackbits(np.frombuffer(raw, "u1"), bitorder="little")
        return bits[: fmt.frame_pixels].reshape(fmt.frame_shape), fmt.photometric_interpretation
    dtype = np.dtype(fmt.dtype).newbyteorder("<")
    arr = np.frombuffer(raw, dtype, count=fmt.frame_pixels).astype(fmt.dtype)
    arr = unused_bits(arr, fmt)
    return reshape(arr, fmt, planar=True), fmt.photometric_interpretation


def decode_imagecodecs(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    import imagecodecs

    _check(src, fmt)
    dtype = "u1" if fmt.bits_allocated == 1 else np.dtype(fmt.dtype).newbyteorder("<")
    return _finish(imagecodecs.dicomrle_decode(src, dtype), fmt)


def decode_pylibjpeg(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    from rle.rle import decode_frame

    nbytes = _check(src, fmt)
    if fmt.bits_allocated == 1:  # decode the packed segment as 8-bit samples
        packed_columns = (fmt.rows * fmt.columns + 7) // 8
        return _finish(bytes(decode_frame(src, packed_columns, 8, "<")), fmt)
    return _finish(bytes(decode_frame(src, fmt.rows * fmt.columns, 8 * nbytes, "<")), fmt)


def encode_imagecodecs(frame: np.ndarray, fmt: PixelFormat, options: Mapping[str, Any]) -> bytes:
    """Per sample, byte planes most significant first, each a PackBits segment with every row
    encoded on its own."""
    import imagecodecs

    nbytes = frame.dtype.itemsize
    little = frame.astype(frame.dtype.newbyteorder("<"), copy=False)
    planes = np.ascontiguousarray(little).view(np.uint8)
    samples = fmt.samples_per_pixel
    planes = planes.reshape(fmt.rows, fmt.columns, samples, nbytes)[..., ::-1]
    planes = planes.reshape(fmt.rows, fmt.columns, -1).transpose(2, 0, 1).copy()
    segments = []
    for plane in planes:  # sample by sample, most significant byte first
        segment = imagecodecs.packbits_encode(plane, axis=-1)
        segments.append(segment + b"\x00" if len(segment) % 2 else segment)
    offsets, position = [], 64
    for segment in segments:
        offsets.append(position)
        position += len(segment)
    header = struct.pack("<16L", len(segments), *offsets, *[0] * (15 - len(segments)))
    return b"".join([header, *segments])
