"""The receiving side of C-STORE, shared by the Storage SCP and C-GET: land, then answer."""

from __future__ import annotations

from functools import lru_cache

from ._dimse import (
    AFFECTED_SOP_CLASS,
    AFFECTED_SOP_INSTANCE,
    DATASET_DOES_NOT_MATCH,
    INVALID_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
    UNABLE_TO_PROCESS,
    VERIFICATION,
    Message,
    response,
    text,
)
from ._lake import Lake, Landed
from ._spool import Spool
from ._ul import Connection

__all__ = ["VERIFICATION", "is_storage_class", "land_and_answer", "storage_classes"]

#: The Storage Service Class (PS3.4 B.5) puts its SOP classes under this root, except the RT
#: delivery instruction classes, which are under :data:`_RT_INSTRUCTION_ROOT`.
_STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."
_RT_INSTRUCTION_ROOT = "1.2.840.10008.5.1.4.34."
_DICOM_ROOT = "1.2.840.10008."


@lru_cache(maxsize=1)
def storage_classes() -> frozenset[str]:
    """The storage SOP classes pydicom's UID dictionary (PS3.6 A-1) knows, retired included
    under the storage root, current ones only under the RT instruction root."""
    from pydicom._uid_dict import UID_dictionary

    out = set()
    for uid, (name, kind, _info, retired, _keyword) in UID_dictionary.items():
        if kind != "SOP Class" or "Storage" not in name:
            continue
        if uid.startswith(_STORAGE_ROOT) or (uid.startswith(_RT_INSTRUCTION_ROOT) and not retired):
            out.add(uid)
    return frozenset(out)


def is_storage_class(uid: str) -> bool:
    """A SOP class we store: the storage subtree, the dictionary's storage classes, or a
    private one (not under the DICOM root)."""
    return (
        uid.startswith(_STORAGE_ROOT)
        or uid in storage_classes()
        or (bool(uid) and not uid.startswith(_DICOM_ROOT))
    )


#: The C-STORE failure status for an instance refused for the value of this attribute; any
#: other attribute (those of the data set) is 0xA900, "Data Set does not match SOP Class".
_INVALID_STATUS = {
    "AffectedSOPInstanceUID": INVALID_SOP_INSTANCE,
    "AffectedSOPClassUID": SOP_CLASS_NOT_SUPPORTED,
}


def land_and_answer(
    conn: Connection,
    msg: Message,
    lake: Lake,
    transfer_syntax: str,
    calling_ae: str,
    source: str,
) -> Landed:
    """Land a C-STORE request's data set in ``lake``, then send the C-STORE response.

    The response goes out only after :meth:`Lake.receive` returned, so with
    ``fsync="each"`` the sender's success means the file is durable. A failure carries the
    reason as its Error Comment; its status says whose fault it was (PS3.4 B.2.3, PS3.7 C):
    0x0117 an Affected SOP Instance UID that is no UID, 0x0122 such an Affected SOP Class
    UID, 0xA900 a data set whose UIDs are no UIDs or whose SOP Instance UID is not the
    Affected one, 0xA700 a full disk, 0xC000 anything else.
    """
    command = msg.command
    dataset: bytes | bytearray | Spool = msg.dataset if msg.dataset is not None else b""
    if isinstance(msg.spool, Spool):  # the connection spooled it (the lake's spooler)
        dataset = msg.spool
    landed = lake.receive(
        sop_class=text(command, AFFECTED_SOP_CLASS),
        sop_instance=text(command, AFFECTED_SOP_INSTANCE),
        transfer_syntax=transfer_syntax,
        dataset=dataset,
        calling_ae=calling_ae,
        source=source,
    )
    if landed.status == "failed":
        reason = landed.reason or "failed"
        oserror = reason.startswith(
            ("OSError", "PermissionError", "FileNotFound", "NoSpace", "no space left")
        )
        if landed.invalid is not None:
            status = _INVALID_STATUS.get(landed.invalid, DATASET_DOES_NOT_MATCH)
        else:
            status = OUT_OF_RESOURCES if oserror else UNABLE_TO_PROCESS
        conn.send_message(msg.context_id, response(command, status, comment=reason))
    else:
        conn.send_message(msg.context_id, response(command, SUCCESS))
    return landed
