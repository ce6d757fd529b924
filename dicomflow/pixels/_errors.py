"""Exceptions raised by the pixel layer.

::

    DicomflowError
    +-- PixelDataError(DicomflowError, ValueError)  pixel data that cannot be turned into an array
        +-- PixelSizeError                          declared sizes do not fit the bytes present
        +-- FrameDecodeError                        one frame cannot be read or decoded
        +-- GeometryError                           positions/orientations that give no volume

``PixelDataError``, ``PixelSizeError`` and ``FrameDecodeError`` are defined in
:mod:`dicomflow.errors` (the codec layer raises them too) and re-exported here. Each error names
the file (and frame) it is about, so a failed chunk of a dask array points at the object to look
at.
"""

from __future__ import annotations

from ..errors import FrameDecodeError, PixelDataError, PixelSizeError

__all__ = ["FrameDecodeError", "GeometryError", "PixelDataError", "PixelSizeError"]


class GeometryError(PixelDataError):
    """Positions or orientations from which no volume geometry can be derived."""
