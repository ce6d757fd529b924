"""Part 10 framing (PS3.10 7.1): File Meta Information built in one place, with one
implementation identity, and read back without pydicom.

Every Part 10 object dicomflow writes (a pipeline output, a de-identified file, a received
instance, a DICOMDIR, the built-in sample) carries the same Implementation Class UID and Version
Name, so an output's identity does not change along a pipeline. File Meta comes in two forms: a
pydicom ``FileMetaDataset`` (:func:`file_meta`) for code that writes through pydicom, and the
encoded bytes (:func:`file_meta_bytes`: preamble, ``DICM`` and the group) for the receive paths
that never build a dataset. :func:`encode_part10` writes a whole dataset; :func:`split_part10`
and :func:`header_uids` find the UIDs of an encoded object from its first bytes.

Every UID that goes into a File Meta group built here from a data set or from arguments is
checked (:func:`checked_uid`, PS3.5 9.1), and the Media Storage SOP Class/Instance UIDs of a
data set are its own or, where it lacks them, those of the File Meta it was read with
(:func:`sop_uids`). A value that is not a UID (letters, spaces, more than 64 characters,
anything after the padding) raises :class:`~dicomflow.FileMetaError` instead of being copied:
the object is not written, and in a pipeline its manifest row fails with that reason. Only
:func:`file_meta_bytes`, for instances landed as received, writes the peer's UIDs unchecked.
"""

from __future__ import annotations

import io
import struct
from typing import Any

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from .._version import __version__
from ..errors import ConfigError, FileMetaError
from ._encode import encode_file
from ._header import NeedMore, parse_header
from ._uids import uid_problem

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "checked_uid",
    "encode_part10",
    "file_meta",
    "file_meta_bytes",
    "header_uids",
    "meta_uids",
    "read_meta",
    "sop_uids",
    "split_part10",
    "uid_of",
]

#: dicomflow's Implementation Class UID (2.25 form, derived once from the project name)
IMPLEMENTATION_CLASS_UID = "2.25.142393522637932862512378410419547612981"
#: ``DICOMFLOW_`` and the version without dots, at most 16 characters (SH)
IMPLEMENTATION_VERSION_NAME = ("DICOMFLOW_" + __version__.replace(".", ""))[:16]


def checked_uid(value: object, name: str) -> str:
    """``value`` as a UID, its trailing padding (NULs, spaces) removed, if it is a valid one.

    Parameters
    ----------
    value
        The value as read (a ``str`` or pydicom ``UID``).
    name
        What it is, for the message (``"SOP Instance UID"``).

    Raises
    ------
    FileMetaError
        Not a UID by :func:`~dicomflow.dicom.uid_problem` (PS3.5 9.1). A leading zero in a
        component, which legacy archives hold, is let through: the output keeps the UID its
        input had.

    Examples
    --------
    >>> checked_uid("1.2.840.10008.1.2.1\\0", "Transfer Syntax UID")
    '1.2.840.10008.1.2.1'
    >>> checked_uid("1.2.3.abc", "SOP Instance UID")
    Traceback (most recent call last):
    ...
    dicomflow.errors.FileMetaError: SOP Instance UID '1.2.3.abc' is not a valid UID: it has 'a' \
(digits and dots only) (PS3.5 9.1)
    """
    text = str(value).rstrip("\0 ")
    problem = uid_problem(text, strict=False)  # legacy leading zeros are kept as they came
    if problem is not None:
        raise FileMetaError(f"{name} {text!r} is not a valid UID: it {problem} (PS3.5 9.1)")
    return text


def _text(ds: Any, tag: int) -> str:
    element = ds.get(tag) if ds is not None else None
    value = None if element is None else element.value
    return "" if value is None else str(value).rstrip("\0 ")


def sop_uids(ds: Dataset) -> tuple[str, str]:
    """The (SOP Class UID, SOP Instance UID) of ``ds``'s File Meta, each checked.

    Each is the data set's (0008,0016) / (0008,0018) or, where the data set lacks it (absent or
    empty), its File Meta's Media Storage SOP Class / Instance UID. A data set value is never
    replaced by the File Meta's: an invalid one is refused, not corrected.

    Raises
    ------
    FileMetaError
        A UID in neither place, or not a valid UID.
    """
    meta = getattr(ds, "file_meta", None)
    found = []
    for tag, meta_tag, name in (
        (0x00080016, 0x00020002, "SOP Class UID"),
        (0x00080018, 0x00020003, "SOP Instance UID"),
    ):
        value = _text(ds, tag) or _text(meta, meta_tag)
        if not value:
            raise FileMetaError(
                f"no {name}: neither the data set ({tag >> 16:04X},{tag & 0xFFFF:04X}) nor its "
                f"File Meta (0002,{meta_tag & 0xFFFF:04X}) has one"
            )
        found.append(checked_uid(value, name))
    return found[0], found[1]


def file_meta(
    sop_class: str | None, sop_instance: str | None, transfer_syntax: str
) -> FileMetaDataset:
    """A File Meta group for one object; a UID given as ``None`` (or empty) is left out.

    Raises
    ------
    FileMetaError
        A UID given that is not a valid UID (see :func:`checked_uid`).
    """
    meta = FileMetaDataset()
    if sop_class:
        meta.MediaStorageSOPClassUID = UID(checked_uid(sop_class, "Media Storage SOP Class UID"))
    if sop_instance:
        meta.MediaStorageSOPInstanceUID = UID(
            checked_uid(sop_instance, "Media Storage SOP Instance UID")
        )
    meta.TransferSyntaxUID = UID(checked_uid(transfer_syntax, "Transfer Syntax UID"))
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    group, elem = tag >> 16, tag & 0xFFFF
    if vr == b"OB":
        return struct.pack("<HH2sHL", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def file_meta_bytes(
    sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str = ""
) -> bytes:
    """Preamble, ``DICM`` and an encoded File Meta group, without building a dataset.

    For the receive paths, which land an instance as it was received: the UIDs are the ones
    the peer sent (its C-STORE command), written as they are, not checked (a crafted one lands
    under a sanitized path; ``tests/network/test_scp.py``). File Meta built from a data set
    (:func:`file_meta`, :func:`encode_part10`) is checked.
    """
    body = (
        _element(0x00020001, b"OB", b"\0\1")
        + _element(0x00020002, b"UI", sop_class.encode("ascii"))
        + _element(0x00020003, b"UI", sop_instance.encode("ascii"))
        + _element(0x00020010, b"UI", transfer_syntax.encode("ascii"))
        + _element(0x00020012, b"UI", IMPLEMENTATION_CLASS_UID.encode())
        + _element(0x00020013, b"SH", IMPLEMENTATION_VERSION_NAME.encode())
    )
    if source_ae:
        body += _element(0x00020016, b"AE", source_ae.encode("ascii", "replace")[:16])
    return b"\0" * 128 + b"DICM" + _element(0x00020000, b"UL", struct.pack("<L", len(body))) + body


def encode_part10(ds: Dataset, transfer_syntax: str | None = None) -> bytes:
    """The dataset as a Part 10 file: preamble, ``DICM``, a regenerated File Meta group.

    The meta group's Media Storage SOP Class/Instance UIDs are the dataset's, or its current
    File Meta's where the dataset has none (:func:`sop_uids`); the transfer syntax is
    ``transfer_syntax`` or the dataset's current one. The data set itself is written as it is.

    Raises
    ------
    FileMetaError
        A SOP Class or Instance UID in neither place, or a UID that is not valid: nothing is
        encoded (and ``ds`` keeps its File Meta).
    """
    old = getattr(ds, "file_meta", None) or FileMetaDataset()
    ts = str(transfer_syntax or old.get("TransferSyntaxUID") or ExplicitVRLittleEndian)
    ds.file_meta = file_meta(*sop_uids(ds), ts)
    ds.preamble = b"\x00" * 128
    data = encode_file(ds)  # the same bytes as pydicom's writer, elements read copied as bytes
    if data is not None:
        return data
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def read_meta(data: bytes | memoryview) -> tuple[dict[int, str], int]:
    """File Meta Information text values and where the data set starts (0: no meta)."""
    if bytes(data[128:132]) != b"DICM":
        return {}, 0
    out: dict[int, str] = {}
    pos, n = 132, len(data)
    while pos + 8 <= n:
        group, elem, vr = struct.unpack_from("<HH2s", data, pos)
        if group != 0x0002:
            break
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR"):
            length = struct.unpack_from("<L", data, pos + 8)[0]
            start = pos + 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            start = pos + 8
        if vr in (b"UI", b"AE", b"SH", b"CS", b"LO"):
            out[0x00020000 | elem] = (
                bytes(data[start : start + length]).decode("ascii", "replace").rstrip("\0 ")
            )
        pos = start + length
    return out, pos


def uid_of(header: Any, tag: int) -> str:
    raw = header.value(tag)
    return raw.decode("ascii", "replace").rstrip("\0 ") if raw else ""


def header_uids(meta: bytes, dataset: bytes | bytearray | memoryview) -> tuple[str, str, str]:
    """(Study, Series, SOP Instance UID) of a data set, reading only its first bytes."""
    size = 16384
    while True:
        complete = size >= len(dataset)
        try:
            h = parse_header(meta + bytes(dataset[:size]), complete)
        except NeedMore as more:
            size = max(size * 4, more.needed - len(meta))
            continue
        return uid_of(h, 0x0020000D), uid_of(h, 0x0020000E), uid_of(h, 0x00080018)


def meta_uids(data: bytes) -> tuple[str, str]:
    meta, _ = read_meta(data)
    return meta.get(0x00020002, ""), meta.get(0x00020010, "")


def split_part10(data: bytes) -> tuple[str, str, str, memoryview]:
    """(SOP class, SOP instance, transfer syntax, data set bytes) of a Part 10 object."""
    meta, start = read_meta(data)
    ts = meta.get(0x00020010, "")
    if not ts:
        raise ConfigError("C-STORE of raw bytes needs a Part 10 file with File Meta Information")
    sop_class, sop = meta.get(0x00020002, ""), meta.get(0x00020003, "")
    if not (sop_class and sop):
        h = parse_header(data, complete=True)
        sop_class = sop_class or _text_of(h, 0x00080016)
        sop = sop or _text_of(h, 0x00080018)
    return sop_class, sop, ts, memoryview(data)[start:]


def _text_of(h: Any, tag: int) -> str:
    raw = h.value(tag)
    return raw.decode("ascii", "replace").rstrip("\0 ") if raw else ""
