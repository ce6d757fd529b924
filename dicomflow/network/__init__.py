"""DICOM networking: DIMSE and DICOMweb as sources and sinks, Storage and Q/R SCPs, bulk pulls.

>>> from dicomflow import network as net
>>> pacs = net.Peer.parse("ORTHANC@127.0.0.1:4242")
>>> net.find(pacs, "Modality=CT", level="series")            # doctest: +SKIP
>>> net.pull(pacs, "StudyDate=20240101-20240131", "lake/")   # doctest: +SKIP
>>> net.pull(pacs, lake="lake/", cohort="cohort.csv")       # doctest: +SKIP

Nothing here runs at import: no sockets, no threads. DIMSE is dicomflow's own (:mod:`._ul`,
:mod:`._dimse`): pynetdicom is not needed.
Exceptions: see :mod:`dicomflow.network._errors` (all derive from ``DicomflowError`` and the
builtin a caller would catch: ``ConnectionRefusedError``, ``TimeoutError``, ``LookupError``).
DICOM TLS and user identity: :class:`TLSOptions` and :class:`UserIdentity`, on
:class:`AssociationOptions` (as a service user) and :class:`SCPOptions` (``tls``,
``authenticate``); see ``docs/network.md``.
"""

from __future__ import annotations

from ._cohort import Cohort, read_cohort
from ._errors import (
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
from ._lake import Lake, Landed, read_catalog, read_records, read_state
from ._options import AssociationOptions, Peer, TLSOptions, UserIdentity
from ._qr import QueryRetrieveSCP
from ._schedule import Gate, OutsideWindow, TokenBucket, Window
from ._webindex import CatalogIndex, load_index
from ._webstatic import export_dicomweb
from ._workers import ReceivingWorkers
from .dicomweb import DicomWeb, DicomWebOptions, StowSink, retrieve_frames
from .pull import PullEvent, PullOptions, PullReport, plan, pull
from .scp import SCPOptions, StorageSCP
from .scu import RetrieveResult, StoreSink, echo, find, get, move

__all__ = [
    "AssociationAbortedError",
    "AssociationOptions",
    "AssociationRejectedError",
    "CatalogIndex",
    "Cohort",
    "DicomWeb",
    "DicomWebError",
    "DicomWebOptions",
    "DimseStatusError",
    "Gate",
    "Lake",
    "Landed",
    "MoveDestinationError",
    "NetworkConfigError",
    "NetworkError",
    "NetworkTimeoutError",
    "OutsideWindow",
    "Peer",
    "PullEvent",
    "PullOptions",
    "PullReport",
    "QueryRetrieveSCP",
    "ReceivingWorkers",
    "RetrieveResult",
    "SCPOptions",
    "StorageSCP",
    "StoreSink",
    "StowSink",
    "SubOperationsFailedError",
    "TLSError",
    "TLSOptions",
    "TokenBucket",
    "UserIdentity",
    "Window",
    "echo",
    "export_dicomweb",
    "find",
    "get",
    "load_index",
    "move",
    "plan",
    "pull",
    "read_catalog",
    "read_cohort",
    "read_records",
    "read_state",
    "retrieve_frames",
]
