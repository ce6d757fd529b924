"""The dicomflow exception tree: every exception dicomflow raises on purpose, in one place.

::

    DicomflowError                                   root of everything dicomflow raises
    +-- SourceError(OSError)                         a source cannot be listed or reached
    |   +-- SourceNotFoundError(FileNotFoundError)   it does not exist
    +-- InvalidDicomError(ValueError)                bytes that are not a readable DICOM object
    |   +-- TruncatedError                           the object ends inside an element
    +-- ConfigError(ValueError)                      bad options, column names, pipeline files
    +-- CollisionError(FileExistsError)              two different objects, one output path
    +-- DiskFullError(OSError)                       a sink ran out of space; the run stopped
    +-- FileMetaError(ValueError)                    no valid File Meta for an object: a UID
    |                                                missing or not a valid UID (PS3.5 9.1)
    +-- PixelDataError(ValueError)                   pixel data that cannot become an array
    |   +-- PixelSizeError                           declared sizes do not fit the bytes present,
    |   |                                            the codestream, or the decode budget
    |   +-- FrameDecodeError                         one frame cannot be read or decoded
    |   +-- EncodeError                              a frame cannot be encoded in a syntax
    |   +-- GeometryError                            positions/orientations that give no volume
    +-- DerivedObjectError(ValueError)               a SEG, RTSTRUCT or SR that does not fit
    +-- TranscodeError(ValueError)                   an instance that cannot be transcoded
    +-- DeidentificationError(ValueError)            an instance not de-identifiable with certainty
    |   +-- TextDetectionError                       burned-in text cannot be searched for (OCR)
    +-- MediaSetError(ValueError)                    an instance that cannot join a media set
    +-- TableError(ValueError)                       a batch a lake table (Delta, Iceberg) cannot
    |                                                take, or commits that kept conflicting
    +-- NetworkError(OSError)                        a DICOM peer could not do what was asked
    |   +-- AssociationRejectedError(ConnectionRefusedError)  no connection, A-ASSOCIATE-RJ,
    |   |                                                     or no accepted context
    |   +-- AssociationAbortedError(ConnectionAbortedError)   the association ended mid-way
    |   +-- NetworkTimeoutError(TimeoutError)        a connection, ACSE or DIMSE timeout
    |   +-- TLSError(ConnectionError)                the TLS handshake or channel failed: an
    |   |                                            untrusted or refused certificate, no TLS
    |   +-- DimseStatusError                         a DIMSE operation ended in failure
    |   |   +-- MoveDestinationError(NetworkConfigError, LookupError)  the peer does not know
    |   |   |                                        the C-MOVE destination
    |   |   +-- SubOperationsFailedError             C-MOVE/C-GET sub-operations failed
    |   +-- NetworkConfigError(ConfigError)          a network setting no retry can fix: an
    |   |                                            unknown C-MOVE destination, a port in use
    |   +-- DicomWebError                            an HTTP error from a DICOMweb service
    +-- Skip                                         raised by a stage to drop an instance

Each class also derives from the builtin in brackets, the one a caller would naturally catch
(``except FileNotFoundError``, ``except TimeoutError`` work as expected). Per-item failures
inside a batch are values (the catalog's ``error`` column, the manifest's ``reason``), not
exceptions: these classes are raised only where a caller asked for one thing. Every class is
importable from ``dicomflow`` itself (``dfl.FrameDecodeError``); the packages that raise them
re-export them where they are used.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AssociationAbortedError",
    "AssociationRejectedError",
    "CollisionError",
    "ConfigError",
    "DeidentificationError",
    "DerivedObjectError",
    "DicomWebError",
    "DicomflowError",
    "DimseStatusError",
    "DiskFullError",
    "EncodeError",
    "FileMetaError",
    "FrameDecodeError",
    "GeometryError",
    "InvalidDicomError",
    "MediaSetError",
    "MoveDestinationError",
    "NetworkConfigError",
    "NetworkError",
    "NetworkTimeoutError",
    "PixelDataError",
    "PixelSizeError",
    "Skip",
    "SourceError",
    "SourceNotFoundError",
    "SubOperationsFailedError",
    "TLSError",
    "TableError",
    "TextDetectionError",
    "TranscodeError",
    "TruncatedError",
]


class DicomflowError(Exception):
    """Root of every exception dicomflow raises on purpose."""


# -- sources and encoding ---------------------------------------------------------------------


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


# -- outputs ----------------------------------------------------------------------------------


class CollisionError(DicomflowError, FileExistsError):
    """Two different instances would be written to the same path."""


class DiskFullError(DicomflowError, OSError):
    """A sink ran out of space: the run stops cleanly, what was written stays valid."""


class FileMetaError(DicomflowError, ValueError):
    """An object cannot be given valid File Meta Information (PS3.10 7.1), so it is not written.

    Its Media Storage SOP Class or Instance UID is in neither the data set nor its File Meta,
    or a UID is not a valid one (PS3.5 9.1: digits in components separated by dots, no leading
    zero, at most 64 characters). Such a value is refused rather than copied into the File Meta.
    """


# -- pixels -----------------------------------------------------------------------------------


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

    def __reduce__(self) -> tuple[Any, ...]:  # keep the three fields through pickling (dask)
        return (type(self), (self.uri, self.frame, self.reason))


class EncodeError(PixelDataError):
    """A frame cannot be encoded in a transfer syntax: the syntax cannot hold the image, no
    encoder for it is installed, or the encoder failed."""


class GeometryError(PixelDataError):
    """Positions or orientations from which no volume geometry can be derived."""


# -- stages and sinks -------------------------------------------------------------------------


class DerivedObjectError(DicomflowError, ValueError):
    """A SEG, RTSTRUCT or SR that cannot be read onto its series, or written from a table."""


class TranscodeError(DicomflowError, ValueError):
    """An instance cannot be transcoded: undecodable pixels, or a target that cannot hold them."""


class DeidentificationError(DicomflowError, ValueError):
    """An instance that cannot be de-identified with certainty.

    De-identification fails closed: burned-in annotation without the Clean Pixel Data Option,
    a sequence that cannot be parsed, a value-representation-unknown (UN) sequence that would
    have to be kept, and similar cases raise this error with the reason instead of writing an
    instance that might still identify someone.
    """


class TextDetectionError(DeidentificationError):
    """Burned-in text cannot be searched for: Tesseract or its English data is missing (the
    message names the Debian packages), or Tesseract failed on the image. The instance is not
    de-identified."""


class MediaSetError(DicomflowError, ValueError):
    """An instance that cannot be put in a media set (no record type, a UID or key missing)."""


class TableError(DicomflowError, ValueError):
    """A batch a lake table cannot take (a column of another type than the table's), or a
    commit that kept conflicting with other writers past its retries."""


class Skip(DicomflowError):
    """Raised by a stage to drop an instance on purpose; the message is the manifest's reason."""


# -- network ----------------------------------------------------------------------------------


class NetworkError(DicomflowError, OSError):
    """A DICOM peer could not be reached or did not do what was asked."""


class AssociationRejectedError(NetworkError, ConnectionRefusedError):
    """The peer refused the connection or the association, or accepted no context we need."""


class AssociationAbortedError(NetworkError, ConnectionAbortedError):
    """The association was aborted or the connection dropped during an operation."""


class NetworkTimeoutError(NetworkError, TimeoutError):
    """No answer within the connection, ACSE or DIMSE timeout."""


class TLSError(NetworkError, ConnectionError):
    """The TLS layer failed: the handshake (an untrusted certificate, a client certificate the
    peer refused, a peer that does not speak TLS) or the encrypted channel afterwards."""


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

    def __reduce__(self) -> tuple[Any, ...]:  # keep the counts when pickled (worker processes)
        message = self.args[0] if self.args else ""
        fields = (self.status, self.completed, self.failed, self.warning, self.failed_uids)
        return (_rebuild_status_error, (type(self), message, *fields))


def _rebuild_status_error(
    cls: type[DimseStatusError],
    message: str,
    status: int | None,
    completed: int,
    failed: int,
    warning: int,
    failed_uids: tuple[str, ...],
) -> DimseStatusError:
    return cls(
        message,
        status=status,
        completed=completed,
        failed=failed,
        warning=warning,
        failed_uids=failed_uids,
    )


class NetworkConfigError(ConfigError, NetworkError):
    """A network setting that no retry can fix: the peer does not know our AE title as a
    C-MOVE destination, our port is in use. Raised on the first occurrence, with the fix in
    the message; a pull stops instead of retrying every series."""


class MoveDestinationError(DimseStatusError, NetworkConfigError, LookupError):
    """The peer does not know the C-MOVE destination AE title (register it on the peer)."""


class SubOperationsFailedError(DimseStatusError):
    """Some C-MOVE/C-GET sub-operations (C-STOREs) failed; the counts say how many."""


class DicomWebError(NetworkError):
    """A DICOMweb request failed; ``status_code`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
