"""Exceptions raised by dicomflow's DIMSE and DICOMweb code.

::

    DicomflowError
    +-- NetworkError(DicomflowError, OSError)             a peer could not do what was asked
        +-- AssociationRejectedError(ConnectionRefusedError)  no TCP connection, A-ASSOCIATE-RJ,
        |                                                     or no accepted presentation context
        +-- AssociationAbortedError(ConnectionAbortedError)   the association ended mid-operation
        +-- NetworkTimeoutError(TimeoutError)                 a connection, ACSE or DIMSE timeout
        +-- DimseStatusError                                  a DIMSE operation ended in failure
        |   +-- MoveDestinationError(LookupError)             the peer does not know the C-MOVE
        |   |                                                 destination (0xA801; Orthanc: 0xC000)
        |   +-- SubOperationsFailedError                      C-MOVE/C-GET sub-operations failed
        +-- DicomWebError                                     an HTTP error from a DICOMweb service

Each class also derives from the builtin a caller would catch, so ``except TimeoutError`` or
``except ConnectionRefusedError`` work as expected.
"""

from __future__ import annotations

from ..errors import DicomflowError

__all__ = [
    "AssociationAbortedError",
    "AssociationRejectedError",
    "DicomWebError",
    "DimseStatusError",
    "MoveDestinationError",
    "NetworkError",
    "NetworkTimeoutError",
    "SubOperationsFailedError",
]


class NetworkError(DicomflowError, OSError):
    """A DICOM peer could not be reached or did not do what was asked."""


class AssociationRejectedError(NetworkError, ConnectionRefusedError):
    """The peer refused the connection or the association, or accepted no context we need."""


class AssociationAbortedError(NetworkError, ConnectionAbortedError):
    """The association was aborted or the connection dropped during an operation."""


class NetworkTimeoutError(NetworkError, TimeoutError):
    """No answer within the connection, ACSE or DIMSE timeout."""


class DimseStatusError(NetworkError):
    """A DIMSE operation ended with a failure status.

    ``status`` is the final status code (e.g. ``0xC000``); for C-MOVE and C-GET the
    sub-operation counts of the final response are kept too.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        completed: int = 0,
        failed: int = 0,
        warning: int = 0,
        failed_uids: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.completed = completed
        self.failed = failed
        self.warning = warning
        self.failed_uids = failed_uids

    def __reduce__(self):  # keep the counts when pickled (worker processes)
        return (
            _rebuild,
            (
                type(self),
                self.args[0] if self.args else "",
                self.status,
                self.completed,
                self.failed,
                self.warning,
                self.failed_uids,
            ),
        )


def _rebuild(cls, message, status, completed, failed, warning, failed_uids):
    return cls(
        message,
        status=status,
        completed=completed,
        failed=failed,
        warning=warning,
        failed_uids=failed_uids,
    )


class MoveDestinationError(DimseStatusError, LookupError):
    """The peer does not know the C-MOVE destination AE title (register it on the peer)."""


class SubOperationsFailedError(DimseStatusError):
    """Some C-MOVE/C-GET sub-operations (C-STOREs) failed; the counts say how many."""


class DicomWebError(NetworkError):
    """A DICOMweb request failed; ``status_code`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
