"""The dicomflow exception tree.

::

    DicomflowError                      root of everything dicomflow raises
    +-- SourceError(DicomflowError, OSError)        a source cannot be listed or reached
    +-- InvalidDicomError(DicomflowError, ValueError) bytes that are not a readable DICOM object
    |   +-- TruncatedError                          the object ends inside an element
    +-- ConfigError(DicomflowError, ValueError)     bad options, column names, pipeline files

Per-item failures inside a batch are values (the catalog's ``error`` column, the manifest's
``reason``), not exceptions: these classes are raised only where a caller asked for one thing.
Each class also derives from the builtin a caller would naturally catch.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DicomflowError", "InvalidDicomError", "SourceError", "TruncatedError"]


class DicomflowError(Exception):
    """Root of every exception dicomflow raises on purpose."""


class SourceError(DicomflowError, OSError):
    """A source (path, glob, URL) cannot be listed or reached."""


class InvalidDicomError(DicomflowError, ValueError):
    """Bytes that cannot be read as a DICOM object."""


class TruncatedError(InvalidDicomError):
    """The object ends inside an element or before its declared end."""


class ConfigError(DicomflowError, ValueError):
    """Invalid options: unknown columns, bad pipeline files, conflicting settings."""
