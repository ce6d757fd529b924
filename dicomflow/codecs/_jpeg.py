"""JPEG (ISO 10918): decoders (imagecodecs' libjpeg-turbo and ljpeg, pylibjpeg-libjpeg) and
the imagecodecs baseline encoder.

Lossy JPEG decoders may differ by one grey level (their inverse DCTs round differently, which ISO
10918 allows), so for lossy syntaxes these decoders are not ``exact``: pydicom's own plugin
(gdcm, pylibjpeg, pillow: whichever is installed; in gdcm's place, which can abort the
interpreter and is never called, Pillow: see ``_pydicom``) comes first, except for 8-bit grey
frames when that plugin is an IJG libjpeg (gdcm, Pillow), which libjpeg-turbo decodes
identically and faster (its accurate integer IDCT and upsampling are libjpeg 6b's; checked
over the corpus in the tests). ``exact=False`` tries libjpeg-turbo first: within one grey level
of any other conforming decoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import PixelDataError
from ._format import PixelFormat
from ._headers import jpeg_header
from ._registry import Decoder, Encoder
from ._samples import as_dataset_dtype, storable, unused_bits

__all__ = ["decode_8bit", "decode_imagecodecs", "decode_libjpeg", "encode_baseline"]

BASELINE = "1.2.840.10008.1.2.4.50"
LOSSY = (BASELINE, "1.2.840.10008.1.2.4.51")
LOSSLESS = ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")

DECODERS = (
    Decoder("imagecodecs", LOSSLESS, "decode_imagecodecs", priority=30, requires=("imagecodecs",)),
    Decoder("pylibjpeg-libjpeg", LOSSLESS, "decode_libjpeg", priority=20, requires=("libjpeg",)),
    Decoder(
        "imagecodecs",
        LOSSY,
        "decode_imagecodecs",
        priority=30,
        requires=("imagecodecs",),
        exact=False,
    ),
    Decoder(
        "imagecodecs",
        LOSSY,
        "decode_8bit",
        priority=25,
        requires=("imagecodecs",),
        condition="ijg_plugin",
        exact_only=True,
    ),
    Decoder(
        "pylibjpeg-libjpeg",
        LOSSY,
        "decode_libjpeg",
        priority=20,
        requires=("libjpeg",),
        exact=False,
    ),
)
ENCODERS = (
    Encoder(
        "imagecodecs",
        (BASELINE,),
        "encode_baseline",
        priority=30,
        requires=("imagecodecs",),
        accepts="baseline_storable",
    ),
)


def ijg_plugin(syntax: str) -> str | None:
    """Why libjpeg-turbo does not give pydicom's values exactly here (``None``: it does)."""
    from ._pydicom import jpeg_plugin

    plugin = jpeg_plugin()
    if plugin in ("gdcm", "pillow"):
        return None
    return (
        f"equals pydicom only where pydicom decodes lossy JPEG with an IJG libjpeg (gdcm, "
        f"Pillow); here it uses {plugin or 'no plugin'}"
    )


def _grey(src: bytes, fmt: PixelFormat) -> dict:
    info = jpeg_header(src)
    if not info:
        raise PixelDataError("no JPEG start-of-frame marker")
    if fmt.samples_per_pixel != 1:
        raise PixelDataError("colour JPEG is left to pydicom's decoder")  # colour handling
    return info


def decode_imagecodecs(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    import imagecodecs

    info = _grey(src, fmt)
    if info["marker"] == 0xC3 and info["precision"] > 8:
        decoded = imagecodecs.ljpeg_decode(src)
    else:
        decoded = imagecodecs.jpeg8_decode(src)
    arr = as_dataset_dtype(np.asarray(decoded).reshape(fmt.rows, fmt.columns), fmt)
    return unused_bits(arr, fmt), fmt.photometric_interpretation


def decode_8bit(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    """8-bit grey JPEG only: where libjpeg-turbo gives IJG libjpeg's values exactly."""
    info = jpeg_header(src)
    if info and (info["precision"] != 8 or info["marker"] == 0xC3):
        raise PixelDataError(f"{info['precision']}-bit JPEG is left to pydicom's own plugin")
    return decode_imagecodecs(src, fmt)


def decode_libjpeg(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    import libjpeg

    _grey(src, fmt)
    decoded = libjpeg.decode(src, colour_transform=0)
    arr = as_dataset_dtype(np.asarray(decoded).reshape(fmt.rows, fmt.columns), fmt)
    return unused_bits(arr, fmt), fmt.photometric_interpretation


def baseline_storable(fmt: PixelFormat) -> bool:
    """Grey or colour 8-bit frames; colour is stored as YBR_FULL_422."""
    if fmt.samples_per_pixel == 3:
        colour = fmt.photometric_interpretation in ("RGB", "YBR_FULL")
        return colour and storable(fmt, "YBR_FULL_422")
    return storable(fmt)


def encode_baseline(frame: np.ndarray, fmt: PixelFormat, options: Mapping[str, Any]) -> bytes:
    import imagecodecs

    if fmt.photometric_interpretation == "YBR_FULL":
        from pydicom.pixels.processing import convert_color_space

        frame = convert_color_space(frame, "YBR_FULL", "RGB")
    subsampling = "422" if fmt.samples_per_pixel == 3 else None
    return bytes(imagecodecs.jpeg8_encode(frame, level=options["quality"], subsampling=subsampling))
