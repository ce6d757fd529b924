"""Clean Pixel Data with OCR: which images are searched, and what is done with what is found.

Placeholder, filled in below.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from ..dicom import transfer_syntax
from ._pixels import _decode

__all__ = ["decoded_frames"]

_EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _syntax_of(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    found = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(found or _EXPLICIT_LE)


def _viewable(frames: np.ndarray, photometric: str, ds: Dataset) -> tuple[np.ndarray, str]:
    """Palette colour frames through their lookup tables (8-bit RGB); others unchanged."""
    if photometric != "PALETTE COLOR":
        return frames, photometric
    from pydicom.pixels import apply_color_lut

    rgb = apply_color_lut(frames, ds)
    if rgb.dtype != np.uint8:
        top = float(rgb.max()) or 1.0
        rgb = np.rint(rgb * (255.0 / max(top, 255.0))).astype(np.uint8)
    return rgb, "RGB"


def decoded_frames(ds: Dataset) -> tuple[np.ndarray, str]:
    """Every frame of ``ds`` as a reader sees it: ``(frames, rows, columns[, 3])`` and the
    Photometric Interpretation of the result.

    Colour (YCbCr, palette) comes back as RGB; grey stays in stored values (MONOCHROME1 or 2).
    """
    arr, fmt = _decode(ds, transfer_syntax(_syntax_of(ds)))
    if fmt.number_of_frames == 1:
        arr = arr[np.newaxis]
    return _viewable(arr, fmt.photometric_interpretation, ds)
