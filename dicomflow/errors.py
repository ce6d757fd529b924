"""The dicomflow exception tree.

::

    DicomflowError                      root of everything dicomflow raises
    +-- SourceError(DicomflowError, OSError)        a source cannot be listed or reached
    |   +-- SourceNotFoundError(FileNotFoundError)  it does not exist
    +-- InvalidDicomError(DicomflowError, ValueError) bytes that are not a readable DICOM object
    |   +-- TruncatedError                          the object ends inside an element
    +-- ConfigError(DicomflowError, ValueError)     bad options, column names, pipeline files

Per-item failures inside a batch are values (the catalog's ``error`` column, the manifest's
``reason``), not exceptions: these classes are raised only where a caller asked for one thing.
Each class also derives from the builtin a caller would naturally catch.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DicomflowError",
    "InvalidDicomError",
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
