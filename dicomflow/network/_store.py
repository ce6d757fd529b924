"""The receiving side of C-STORE, shared by the Storage SCP and C-GET: land, then answer."""

from __future__ import annotations

from functools import lru_cache

from ._lake import Lake, Landed
from ._ul import (
    AFFECTED_SOP_CLASS,
    AFFECTED_SOP_INSTANCE,
    C_STORE_RSP,
    COMMAND_FIELD,
    DATASET_TYPE,
    ERROR_COMMENT,
    MESSAGE_ID,
    NO_DATASET,
    RESPONDED_TO,
    STATUS,
    Connection,
    Message,
    encode_command,
    text,
    us,
)

__all__ = ["VERIFICATION", "is_storage_class", "land_and_answer"]

VERIFICATION = "1.2.840.10008.1.1"
_STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."
_DICOM_ROOT = "1.2.840.10008."

#: C-STORE statuses (PS3.4 B.2.3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


@lru_cache(maxsize=1)
def _known_storage() -> frozenset[str]:
    from pynetdicom import sop_class

    return frozenset(sop_class._STORAGE_CLASSES.values())


def is_storage_class(uid: str) -> bool:
    """A SOP class we store: the storage subtree, pynetdicom's storage list, or a private one."""
    return (
        uid.startswith(_STORAGE_ROOT)
        or uid in _known_storage()
        or (bool(uid) and not uid.startswith(_DICOM_ROOT))
    )


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
    ``fsync="each"`` the sender's success means the file is durable.
    """
    command = msg.command
    sop_class = text(command, AFFECTED_SOP_CLASS)
    sop_instance = text(command, AFFECTED_SOP_INSTANCE)
    landed = lake.receive(
        sop_class=sop_class,
        sop_instance=sop_instance,
        transfer_syntax=transfer_syntax,
        dataset=msg.dataset if msg.dataset is not None else b"",
        calling_ae=calling_ae,
        source=source,
    )
    fields: list[tuple[int, int | str]] = [
        (COMMAND_FIELD, C_STORE_RSP),
        (RESPONDED_TO, us(command, MESSAGE_ID)),
        (DATASET_TYPE, NO_DATASET),
        (AFFECTED_SOP_CLASS, sop_class),
        (AFFECTED_SOP_INSTANCE, sop_instance),
    ]
    if landed.status == "failed":
        reason = landed.reason or "failed"
        oserror = reason.startswith(
            ("OSError", "PermissionError", "FileNotFound", "NoSpace", "no space left")
        )
        fields.append((STATUS, OUT_OF_RESOURCES if oserror else CANNOT_UNDERSTAND))
        fields.append((ERROR_COMMENT, reason[:64]))
    else:
        fields.append((STATUS, SUCCESS))
    conn.send_message(msg.context_id, encode_command(fields))
    return landed
