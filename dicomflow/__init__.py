"""dicomflow: DICOM archives to analysis-ready data and back."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import ConfigError, DicomflowError, InvalidDicomError, SourceError, TruncatedError

__all__ = [
    "ConfigError",
    "DicomflowError",
    "InvalidDicomError",
    "SourceError",
    "TruncatedError",
    "__version__",
]
