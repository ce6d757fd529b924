"""Deflated Image Frame Compression (PS3.5 A.4.13): each frame one raw deflate stream."""

from __future__ import annotations

import zlib

import numpy as np

from ..errors import PixelDataError
from . import _native
from ._format import PixelFormat
from ._registry import Decoder

__all__ = ["decode"]

DECODERS = (Decoder("zlib", ("1.2.840.10008.1.2.8.1",), "decode", priority=10),)


def decode(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    """Inflate one frame (never more than one frame's bytes) and read it as native data."""
    need = (fmt.frame_bits + 7) // 8
    inflater = zlib.decompressobj(-15)
    data = inflater.decompress(src, need)  # never inflates more than one frame
    if len(data) < need:
        raise PixelDataError(f"deflated frame inflates to {len(data)} bytes, need {need}")
    return _native.decode(data, fmt)
