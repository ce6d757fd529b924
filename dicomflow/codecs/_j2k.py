"""JPEG 2000 and HTJ2K (ISO 15444-1, -15): the imagecodecs decoder (OpenJPEG, also for HTJ2K:
lossy HTJ2K decoded by OpenJPH differs from pydicom's OpenJPEG) and the imagecodecs lossless
encoders (OpenJPEG for JPEG 2000, OpenJPH for HTJ2K).

Codec call alone on a 512x512 int16 CT frame, one core: JPEG 2000 imagecodecs 27.9 ms,
pylibjpeg-openjpeg 28.5 (both OpenJPEG; imagecodecs releases the GIL); HTJ2K imagecodecs 1.9.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import EncodeError
from ._format import PixelFormat
from ._headers import j2k_header
from ._registry import Decoder, Encoder
from ._samples import as_dataset_dtype, shift, storable

__all__ = ["as_stored", "decode_imagecodecs", "encode_htj2k", "encode_imagecodecs", "storable"]

J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K = ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203")

DECODERS = (
    Decoder(
        "imagecodecs",
        (J2K_LOSSLESS, J2K, *HTJ2K),
        "decode_imagecodecs",
        priority=30,
        requires=("imagecodecs",),
    ),
)
ENCODERS = (
    Encoder(
        "imagecodecs",
        (J2K_LOSSLESS,),
        "encode_imagecodecs",
        priority=30,
        requires=("imagecodecs",),
        accepts="storable",
    ),
    Encoder(
        "imagecodecs",
        (HTJ2K_LOSSLESS,),
        "encode_htj2k",
        priority=30,
        requires=("imagecodecs",),
        accepts="storable",
    ),
)


def decode_imagecodecs(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    import imagecodecs

    return as_stored(np.ascontiguousarray(imagecodecs.jpeg2k_decode(src)), src, fmt)


def as_stored(decoded: np.ndarray, src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    """A JPEG 2000 decoder's samples as pydicom gives them (the data set's dtype, signed samples
    of an unsigned codestream sign-extended) and their photometric interpretation (the codec
    inverts the component transform)."""
    info = j2k_header(src)
    arr = as_dataset_dtype(decoded.reshape(fmt.frame_shape), fmt)
    photometric = fmt.photometric_interpretation
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if info.get("signed", bool(fmt.pixel_representation)) != bool(fmt.pixel_representation):
            arr = shift(arr, info.get("precision", fmt.bits_stored))
    if photometric in ("YBR_ICT", "YBR_RCT"):
        photometric = "RGB"  # the codec inverts the component transform
    return arr, photometric


def _check_range(frame: np.ndarray, fmt: PixelFormat) -> None:
    """Codecs that store Bits Stored bits need the values to fit in them."""
    if fmt.bits_stored >= 8 * frame.dtype.itemsize:
        return
    lo, hi = (-(1 << (fmt.bits_stored - 1)), (1 << (fmt.bits_stored - 1)) - 1)
    if not fmt.pixel_representation:
        lo, hi = 0, (1 << fmt.bits_stored) - 1
    if frame.size and (int(frame.min()) < lo or int(frame.max()) > hi):
        raise EncodeError(
            f"pixel values {int(frame.min())}..{int(frame.max())} do not fit in Bits Stored "
            f"{fmt.bits_stored}; the image cannot be stored losslessly at that precision"
        )


def colour_transform(fmt: PixelFormat) -> bool:
    """Whether the JPEG 2000 Lossless encoder here applies the reversible colour transform to
    these frames (RGB ones: then the Photometric Interpretation is ``YBR_RCT``, PS3.5 8.2.4;
    dciodvfy refuses RGB in an Ultrasound image stored as JPEG 2000)."""
    return fmt.samples_per_pixel == 3 and fmt.photometric_interpretation == "RGB"


def encode_imagecodecs(frame: np.ndarray, fmt: PixelFormat, options: Mapping[str, Any]) -> bytes:
    import imagecodecs

    _check_range(frame, fmt)
    return bytes(
        imagecodecs.jpeg2k_encode(
            frame,
            level=0,
            codecformat="J2K",
            reversible=True,
            mct=colour_transform(fmt),
            bitspersample=fmt.bits_stored,
            numthreads=1,
        )
    )


def encode_htj2k(frame: np.ndarray, fmt: PixelFormat, options: Mapping[str, Any]) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.htj2k_encode(frame, reversible=True, rgb=False))
