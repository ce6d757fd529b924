"""The pixel data of a pydicom ``Dataset`` in memory: its Image Pixel description and the bytes of
each frame, for the stages that hold a data set (Transcode, Clean Pixel Data)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import PixelDataError, PixelSizeError
from ._format import PixelFormat

__all__ = ["check_frame_count", "pixel_format", "stored_frames"]

_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_REQUIRED = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "PhotometricInterpretation")
_IMAGE_PIXEL = (
    *_REQUIRED, "BitsStored", "PixelRepresentation", "PlanarConfiguration", "NumberOfFrames",
)  # fmt: skip


def pixel_format(ds: Any, transfer_syntax_uid: str) -> PixelFormat:
    """The Image Pixel description of ``ds``, whose pixel data is in ``transfer_syntax_uid``.

    Raises
    ------
    PixelDataError
        No pixel data, or an Image Pixel attribute pydicom requires to decode it is missing
        (Bits Stored and Pixel Representation for Pixel Data, Planar Configuration for colour).
    PixelSizeError
        Number of Frames is more than the pixel data can hold (:func:`check_frame_count`).
    """
    keyword = next((k for k in _KEYWORDS if k in ds), None)
    if keyword is None:
        raise PixelDataError("the data set has no Pixel Data")
    required = list(_REQUIRED)
    if keyword == "PixelData":
        required += ["BitsStored", "PixelRepresentation"]
    samples = ds.get("SamplesPerPixel")
    if samples is not None and samples != "" and int(samples) > 1:
        required.append("PlanarConfiguration")
    missing = [k for k in required if ds.get(k) is None or ds.get(k) == ""]
    if missing:
        raise PixelDataError(f"missing required element(s): {', '.join(missing)}")
    row = {k: ds.get(k) for k in _IMAGE_PIXEL}
    row |= {"transfer_syntax_uid": transfer_syntax_uid, "pixel_keyword": keyword}
    fmt = PixelFormat.from_row(row)
    check_frame_count(ds, fmt)
    return fmt


def _fragments(value: bytes) -> int:
    """The fragments of encapsulated Pixel Data (its items after the Basic Offset Table), counted
    from the 8-byte item headers alone."""
    count, pos, end = -1, 0, len(value)
    while pos + 8 <= end and value[pos : pos + 4] == b"\xfe\xff\x00\xe0":
        count += 1
        pos += 8 + struct.unpack("<I", value[pos + 4 : pos + 8])[0]
    return max(count, 0)


def check_frame_count(ds: Any, fmt: PixelFormat) -> None:
    """Refuse a Number of Frames the pixel data of ``ds`` cannot hold, before any frame is
    enumerated or any array allocated.

    Native data must hold every frame (its value, padded to an even length, at least
    ``fmt.native_nbytes``); encapsulated data needs a fragment per frame at least.

    Raises
    ------
    PixelSizeError
        Naming the file (when ``ds`` was read from one) and the counts.
    """
    value = ds[fmt.pixel_keyword].value
    if value is None:
        value = b""
    where = f"{ds.filename}: " if isinstance(getattr(ds, "filename", None), str) else ""
    if fmt.is_encapsulated:
        fragments = _fragments(value)
        if fmt.number_of_frames > fragments:
            raise PixelSizeError(
                f"{where}Number of Frames {fmt.number_of_frames} cannot come from {fragments} "
                "fragment(s) of encapsulated pixel data (a frame needs one at least)"
            )
    elif fmt.native_nbytes > len(value):
        raise PixelSizeError(
            f"{where}{fmt.number_of_frames} frame(s) of {fmt.rows} x {fmt.columns} x "
            f"{fmt.samples_per_pixel} x {fmt.bits_allocated} bits need {fmt.native_nbytes:,} "
            f"bytes but only {len(value):,} bytes of pixel data are present"
        )


def _extended_offsets(ds: Any) -> tuple[bytes, bytes] | None:
    offsets, lengths = ds.get("ExtendedOffsetTable"), ds.get("ExtendedOffsetTableLengths")
    if not offsets or not lengths or len(offsets) != len(lengths):
        return None  # pydicom ignores a table whose lengths do not match
    return offsets, lengths


def stored_frames(ds: Any, fmt: PixelFormat) -> Iterator[bytes | np.ndarray]:
    """The encoded bytes of each frame of ``ds`` in turn (fragments joined; native frames exactly
    their own bytes, 1-bit frames realigned to start on a byte).

    Raises
    ------
    PixelSizeError
        Before the first frame: Number of Frames is more than the data holds.
    """
    check_frame_count(ds, fmt)
    element = ds[fmt.pixel_keyword]
    value = element.value
    count = fmt.number_of_frames
    if fmt.is_encapsulated:
        from pydicom.encaps import get_frame

        extended = _extended_offsets(ds)
        for index in range(count):  # as pydicom's decoder finds them
            yield get_frame(value, index, number_of_frames=count, extended_offsets=extended)
        return
    data = np.frombuffer(value, np.uint8)
    if not fmt.is_little_endian and fmt.bits_allocated == 8 and element.VR == "OW":
        data = data[: len(data) // 2 * 2].view(">u2").byteswap().view(np.uint8)
    bits = fmt.frame_bits
    for index in range(count):
        first = index * bits
        if first % 8 == 0:
            yield data[first // 8 : (first + bits + 7) // 8]
            continue
        start = first // 8
        window = np.unpackbits(data[start : (first + bits + 7) // 8 + 1], bitorder="little")
        offset = first - 8 * start
        yield np.packbits(window[offset : offset + bits], bitorder="little")
