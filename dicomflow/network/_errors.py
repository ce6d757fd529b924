"""The network's exceptions; defined, with the whole tree, in :mod:`dicomflow.errors`."""

from __future__ import annotations

from ..errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    DicomWebError,
    DimseStatusError,
    MoveDestinationError,
    NetworkConfigError,
    NetworkError,
    NetworkTimeoutError,
    SubOperationsFailedError,
    TLSError,
)

__all__ = [
    "AssociationAbortedError",
    "AssociationRejectedError",
    "DicomWebError",
    "DimseStatusError",
    "MoveDestinationError",
    "NetworkConfigError",
    "NetworkError",
    "NetworkTimeoutError",
    "SubOperationsFailedError",
    "TLSError",
]
