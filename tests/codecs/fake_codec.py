"""A codec module for a made-up transfer syntax, registered by the tests only: the recipe of
``dicomflow.codecs`` (one table row, one module) for a syntax dicomflow does not ship.

Its "compression" stores a frame's native little endian bytes in reverse order.
"""

from __future__ import annotations

import numpy as np

from dicomflow.codecs import Decoder, Encoder, PixelFormat
from dicomflow.dicom import parse_syntaxes

UID = "2.25.305419896305419896305419896305419896"

# the one table row, in the layout of dicomflow/dicom/data/transfer-syntaxes.csv
SYNTAXES = parse_syntaxes(
    "uid,name,keyword,short_name,vr,byte_order,pixel_data_encoding,dataset_deflated,"
    "pixel_compression,retired,codestream\n"
    f"{UID},Reversed Bytes (test only),ReversedBytes,reversed-bytes,explicit,little,"
    "encapsulated,N,lossless,N,\n"
)
DECODERS = (Decoder("reverser", (UID,), "decode", priority=10),)
ENCODERS = (Encoder("reverser", (UID,), "encode", priority=10),)
CALLS: list[str] = []


def decode(data: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    CALLS.append("decode")
    stored = np.frombuffer(bytes(data)[::-1], fmt.dtype.newbyteorder("<"), fmt.frame_pixels)
    return stored.astype(fmt.dtype).reshape(fmt.frame_shape), fmt.photometric_interpretation


def encode(frame: np.ndarray, fmt: PixelFormat, options) -> bytes:
    CALLS.append("encode")
    return frame.astype(frame.dtype.newbyteorder("<")).tobytes()[::-1]
