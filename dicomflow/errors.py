"""The dicomflow exception tree.

::

    DicomflowError                      root of everything dicomflow raises
    +-- SourceError(DicomflowError, OSError)        a source cannot be listed or reached
    |   +-- SourceNotFoundError(FileNotFoundError)  it does not exist
    +-- InvalidDicomError(DicomflowError, ValueError) bytes that are not a readable DICOM object
    |   +-- TruncatedError                          the object ends inside an element
    +-- ConfigError(DicomflowError, ValueError)     bad options, column names, pipeline files
    +-- PixelDataError(DicomflowError, ValueError)  pixel data that cannot be described or decoded
        +-- PixelSizeError                          declared sizes do not fit the bytes present,
        |                                           the codestream, or the decode budget
        +-- FrameDecodeError                        one frame of one file cannot be read or decoded
        +-- EncodeError                             a frame cannot be encoded in a transfer syntax

Per-item failures inside a batch are values (the catalog's ``error`` column, the manifest's
``reason``), not exceptions: these classes are raised only where a caller asked for one thing.
Each class also derives from the builtin a caller would naturally catch.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DicomflowError",
    "EncodeError",
    "FrameDecodeError",
    "InvalidDicomError",
    "PixelDataError",
    "PixelSizeError",
    "SourceError",
    "SourceNotFoundError",
    "TruncatedError",
]


class DicomflowError(Exception):
    """Root of every exception dicomflow raises on purpose."""


class SourceError(DicomflowError, OSError):
    """A source (path, glob, URL) cannot be listed or reached."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """A path, glob or object named as a source does not exist."""


class InvalidDicomError(DicomflowError, ValueError):
    """Bytes that cannot be read as a DICOM object."""


class TruncatedError(InvalidDicomError):
    """The object ends inside an element or before its declared end."""


class ConfigError(DicomflowError, ValueError):
    """Invalid options: unknown columns, bad pipeline files, conflicting settings."""


class PixelDataError(DicomflowError, ValueError):
    """Pixel data that cannot be described, located or decoded."""


class PixelSizeError(PixelDataError):
    """Declared sizes that do not fit: Rows x Columns x Frames x bits more than the bytes present,
    a codestream header that disagrees with the Image Pixel attributes, or a frame larger than
    the decode budget."""


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


class EncodeError(PixelDataError):
    """A frame cannot be encoded in a transfer syntax: the syntax cannot hold the image, no
    encoder for it is installed, or the encoder failed."""
