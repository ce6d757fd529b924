"""Native (uncompressed) frames: the bytes of exactly one frame to pydicom's array.

Also Encapsulated Uncompressed Explicit VR Little Endian (PS3.5 A.4.11): each fragment holds one
frame exactly as Explicit VR Little Endian would.
"""

from __future__ import annotations

import numpy as np

from ..dicom import TRANSFER_SYNTAXES
from ._format import PixelFormat
from ._registry import Decoder
from ._samples import reshape, unused_bits

__all__ = ["decode"]

_NATIVE = tuple(uid for uid, ts in TRANSFER_SYNTAXES.items() if ts.is_native)
_ENCAPSULATED_UNCOMPRESSED = "1.2.840.10008.1.2.1.98"

DECODERS = (Decoder("native", (*_NATIVE, _ENCAPSULATED_UNCOMPRESSED), "decode", priority=100),)


def decode(data: bytes | bytearray | np.ndarray, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    """One natively stored frame (its bytes from the first; more may follow) as pydicom reads it.

    YBR_FULL_422 samples are expanded to full YBR_FULL, 1-bit samples unpacked to 0/1, bits
    above Bits Stored cleared or sign-extended.
    """
    if fmt.bits_allocated == 1:
        bits = np.unpackbits(np.frombuffer(data, "u1"), bitorder="little")
        return bits[: fmt.frame_pixels].reshape(fmt.frame_shape), fmt.photometric_interpretation
    stored = np.dtype(fmt.dtype).newbyteorder("<" if fmt.is_little_endian else ">")
    count = fmt.frame_bits // fmt.bits_allocated
    arr = np.frombuffer(data, stored, count=count)
    if arr.dtype != fmt.dtype or not arr.flags.writeable:
        arr = arr.astype(fmt.dtype)  # byte swap, or a private copy to work in place
    photometric = fmt.photometric_interpretation
    if photometric == "YBR_FULL_422" and fmt.samples_per_pixel == 3:
        full = np.empty(count // 2 * 3, fmt.dtype)
        full[0::6], full[3::6] = arr[0::4], arr[1::4]
        full[1::6], full[4::6] = arr[2::4], arr[2::4]
        full[2::6], full[5::6] = arr[3::4], arr[3::4]
        arr = full
        photometric = "YBR_FULL"
    arr = unused_bits(arr, fmt)
    return reshape(arr, fmt, planar=fmt.planar_configuration == 1), photometric
