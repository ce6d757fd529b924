"""Exceptions raised by the pixel layer.

::

    DicomflowError
    +-- PixelDataError(DicomflowError, ValueError)  pixel data that cannot be turned into an array
        +-- PixelSizeError                          declared sizes do not fit the bytes present
        +-- FrameDecodeError                        one frame cannot be read or decoded
        +-- GeometryError                           positions/orientations that give no volume

Each error names the file (and frame) it is about, so a failed chunk of a dask array points at
the object to look at.
"""

from __future__ import annotations

from ..errors import DicomflowError

__all__ = ["FrameDecodeError", "GeometryError", "PixelDataError", "PixelSizeError"]


class PixelDataError(DicomflowError, ValueError):
    """Pixel data that cannot be described, located or decoded."""


class PixelSizeError(PixelDataError):
    """Rows x Columns x Frames x bits declare more than the bytes that are present."""


class FrameDecodeError(PixelDataError):
    """One frame of one file could not be read or decoded.

    Parameters
    ----------
    uri : str
        The file the frame belongs to.
    frame : int
        The 0-based frame index in that file.
    reason : str
        What went wrong.
    """

    def __init__(self, uri: str, frame: int, reason: str) -> None:
        super().__init__(f"{uri}: frame {frame}: {reason}")
        self.uri = uri
        self.frame = frame
        self.reason = reason

    def __reduce__(self):  # keep the three fields through pickling (dask workers)
        return (type(self), (self.uri, self.frame, self.reason))


class GeometryError(PixelDataError):
    """Positions or orientations from which no volume geometry can be derived."""
