"""Post-processing every decoder shares, mirroring pydicom 3's decoders, so that the choice of
decoder never changes the array."""

from __future__ import annotations

import numpy as np

from ._format import PixelFormat

__all__ = ["as_dataset_dtype", "reshape", "shift", "storable", "to_rgb", "unused_bits"]

_YBR = ("YBR_FULL", "YBR_FULL_422")


def unused_bits(arr: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """Clear (or sign-extend) the bits above Bits Stored, in place, as pydicom does."""
    shift = fmt.bits_allocated - fmt.bits_stored
    if shift and fmt.pixel_keyword == "PixelData" and fmt.bits_allocated > 1:
        np.left_shift(arr, shift, out=arr)
        np.right_shift(arr, shift, out=arr)
    return arr


def shift(arr: np.ndarray, precision: int) -> np.ndarray:
    """Sign-extend samples of ``precision`` bits to the whole dtype, in place."""
    amount = 8 * arr.dtype.itemsize - precision
    if amount > 0:
        np.left_shift(arr, amount, out=arr)
        np.right_shift(arr, amount, out=arr)
    return arr


def to_rgb(arr: np.ndarray, photometric: str) -> np.ndarray:
    """Convert YBR_FULL / YBR_FULL_422 samples to RGB as pydicom does (other spaces pass)."""
    if photometric in _YBR and arr.ndim == 3:
        from pydicom.pixels.processing import convert_color_space

        return convert_color_space(arr, "YBR_FULL", "RGB")
    return arr


def as_dataset_dtype(arr: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """Reinterpret decoded samples with the data set's signedness, then cast to its dtype."""
    kind = "i" if fmt.pixel_representation else "u"
    arr = arr.view(np.dtype(f"{kind}{arr.dtype.itemsize}"))
    return arr.astype(fmt.dtype, copy=arr.dtype != fmt.dtype or not arr.flags.writeable)


def reshape(arr: np.ndarray, fmt: PixelFormat, *, planar: bool) -> np.ndarray:
    """Samples in stored order to ``fmt.frame_shape`` (colour-by-plane when ``planar``)."""
    if fmt.samples_per_pixel == 1:
        return arr.reshape(fmt.rows, fmt.columns)
    if planar:
        return arr.reshape(fmt.samples_per_pixel, fmt.rows, fmt.columns).transpose(1, 2, 0)
    return arr.reshape(fmt.rows, fmt.columns, fmt.samples_per_pixel)


def storable(fmt: PixelFormat, photometric: str | None = None) -> bool:
    """Whether PS3.5 allows this decoded frame in ``fmt``'s syntax as the encoders here take it.

    Encoders here take 8- or 16-bit samples whose photometric interpretation describes the
    samples themselves (not YBR_RCT / YBR_ICT, colour transforms inside a JPEG 2000
    codestream). ``photometric`` is the one the frame is stored with when the encoder changes it
    (JPEG baseline: YBR_FULL_422).
    """
    syntax = fmt.syntax
    if syntax is None or fmt.bits_allocated not in (8, 16):
        return False
    photometric = photometric or fmt.photometric_interpretation
    if photometric in ("YBR_RCT", "YBR_ICT"):
        return False
    reason = syntax.can_hold(
        photometric,
        fmt.samples_per_pixel,
        fmt.bits_allocated,
        fmt.bits_stored,
        bool(fmt.pixel_representation),
    )
    return reason is None
