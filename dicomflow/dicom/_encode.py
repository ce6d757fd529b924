"""Writing Part 10 files fast: elements read from a file are written back as bytes.

An instance leaving a pipeline is mostly elements copied byte for byte from its source (pydicom
``RawDataElement``), a few new values (de-identified, transcoded) and the sequences around them.
pydicom's writer spends ~10 us on every element whatever it is; here a raw element whose
encoding is the output's is a header and a slice of bytes, sequences are walked the same way,
and every other element (new values, encapsulated pixel data, anything unusual) is handed to
pydicom's own ``write_data_element``. The bytes are the ones ``dcmwrite(...,
enforce_file_format=True)`` writes (a test compares them on the corpus); any data set this
cannot write exactly (deflated or private transfer syntaxes, a changed character set or
encoding, File Meta elements in the data set) goes to pydicom's ``save_as`` unchanged.
"""

from __future__ import annotations

import os
import struct
from typing import Any, cast

from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import PersonName

from ._header import LONG_VRS

__all__ = ["DeidentifiedDataset", "Fallback", "Writer", "encode_file"]

#: VRs whose explicit-VR header has two reserved bytes and a 32-bit length (PS3.5 7.1.2).
_LONG_VRS = frozenset(v.decode() for v in LONG_VRS)
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF


#: String VRs whose values pydicom writes as the ASCII text, values joined by a backslash and
#: padded to an even length (UI with NUL, the others with a space).
_STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                         "UI", "UR", "UT"})  # fmt: skip


def _ascii_value(elem: DataElement) -> bytes | None:
    """The encoded value of a string element whose text is ASCII; None for anything else."""
    vr = elem.VR
    if vr not in _STRING_VRS or elem.is_buffered:
        return None
    value = elem.value
    if value is None or value == "":
        return b""
    if isinstance(value, str | PersonName):
        text = str(value)
    elif isinstance(value, list | MultiValue) and all(
        isinstance(v, str | PersonName) for v in value
    ):
        text = "\\".join(str(v) for v in value)
    else:
        return None
    if not text.isascii():
        return None
    data = text.encode("ascii")
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return data


_NUMBER_FORMS = {"US": "H", "SS": "h", "UL": "L", "SL": "l"}


class Fallback(Exception):
    """This data set needs pydicom's writer."""


class Writer:
    __slots__ = ("endian", "implicit", "parts", "pack_tag_len", "pack_short", "pack_long")

    def __init__(self, implicit: bool, little: bool) -> None:
        self.implicit = implicit
        self.endian = "<" if little else ">"
        self.parts: list[bytes] = []
        self.pack_tag_len = struct.Struct(self.endian + "HHL").pack  # tag and 32-bit length
        self.pack_short = struct.Struct(self.endian + "HH2sH").pack  # tag, VR, 16-bit length
        self.pack_long = struct.Struct(self.endian + "HH2sHL").pack  # tag, VR, 0, 32-bit length

    def header(self, tag: int, vr: str | None, length: int) -> bytes:
        if self.implicit:
            return self.pack_tag_len(tag >> 16, tag & 0xFFFF, length)
        if vr is None or len(vr) != 2:
            raise Fallback
        if vr in _LONG_VRS:
            return self.pack_long(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), 0, length)
        if length > 0xFFFF:
            raise Fallback  # pydicom writes it as UN
        return self.pack_short(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)

    def pydicom_element(self, elem: DataElement | RawDataElement, encodings: Any) -> bytes:
        buffer = DicomBytesIO()
        buffer.is_implicit_VR, buffer.is_little_endian = self.implicit, self.endian == "<"
        try:
            write_data_element(buffer, elem, encodings)
        except Exception as exc:  # noqa: BLE001 - e.g. an ambiguous VR pydicom resolves first
            raise Fallback from exc
        return buffer.getvalue()

    def binary_value(self, elem: DataElement) -> bytes | None:
        """A bytes value (OB, OW, UN) or whole numbers (US, SS, UL, SL) as pydicom writes them;
        None for anything else."""
        vr, value = elem.VR, elem.value
        if elem.is_buffered or elem.is_undefined_length:
            return None
        if vr in ("OB", "OW", "UN") and isinstance(value, bytes):
            return value + b"\0" if len(value) % 2 else value
        form = _NUMBER_FORMS.get(vr)
        if form is None or value is None or value == "":
            return None if form is None else b""
        values = list(value) if isinstance(value, list | MultiValue) else [value]
        if not all(type(v) is int for v in values):
            return None
        try:
            return struct.pack(f"{self.endian}{len(values)}{form}", *values)
        except struct.error:
            return None  # out of range: pydicom's writer reports it

    def dataset(self, ds: Dataset, parent_encoding: Any) -> bytes:
        """The encoded elements of ``ds``, as pydicom's ``write_dataset`` encodes them."""
        # where the encoding or character set changed, pydicom decodes and re-encodes every
        # raw element: such a data set is left to it
        raw_ok = ds.original_encoding == (self.implicit, self.endian == "<") and (
            ds.original_character_set == ds._character_set
        )
        encodings = ds.get("SpecificCharacterSet", parent_encoding)
        parts: list[bytes] = []
        elements = ds._dict
        for tag in sorted(elements, key=int):
            if tag & 0xFFFF == 0 and tag >> 16 > 6:
                continue  # retired group lengths are not written (PS3.5 7.2)
            elem = elements[tag]
            if isinstance(elem, RawDataElement):
                if not raw_ok:
                    raise Fallback
                value = elem.value
                if elem.length == _UNDEFINED or value is None:
                    parts.append(self.pydicom_element(elem, encodings))
                    continue
                # a defined-length sequence read in this encoding is its items' bytes as they
                # are: pydicom would parse and write them back to the same bytes
                parts.append(self.header(tag, elem.VR, len(value)))
                parts.append(value)
            elif elem.VR == "SQ":
                parts.append(self.sequence(elem, convert_encodings(encodings)))
            else:
                value = _ascii_value(elem)
                if value is None:
                    value = self.binary_value(elem)
                if value is None:
                    parts.append(self.pydicom_element(elem, encodings))
                else:
                    parts.append(self.header(tag, elem.VR, len(value)))
                    parts.append(value)
        return b"".join(parts)

    def sequence(self, elem: DataElement, encodings: Any) -> bytes:
        items = []
        for item in elem.value or ():
            body = self.dataset(item, encodings)
            if item.is_undefined_length_sequence_item:
                items += [self.pack_tag_len(0xFFFE, 0xE000, _UNDEFINED), body,
                          self.pack_tag_len(0xFFFE, 0xE00D, 0)]  # fmt: skip
            else:
                items += [self.pack_tag_len(0xFFFE, 0xE000, len(body)), body]
        content = b"".join(items)
        tag = int(elem.tag)
        if elem.is_undefined_length:
            end = self.pack_tag_len(0xFFFE, 0xE0DD, 0)
            return self.header(tag, "SQ", _UNDEFINED) + content + end
        return self.header(tag, "SQ", len(content)) + content


def _meta(ds: Dataset) -> FileMetaDataset:
    """The File Meta Information ``dcmwrite(enforce_file_format=True)`` would write."""
    meta = ds.file_meta
    sop_class, sop_instance = ds.get(0x00080016), ds.get(0x00080018)
    ds_class = sop_class.value if sop_class is not None else None
    ds_instance = sop_instance.value if sop_instance is not None else None
    meta_class, meta_instance = meta.get(0x00020002), meta.get(0x00020003)
    if (
        meta_class is not None
        and meta_instance is not None
        and (not ds_class or ds_class == meta_class.value)
        and (not ds_instance or ds_instance == meta_instance.value)
    ):
        return meta  # nothing to change: written as it is
    copy = FileMetaDataset()
    for elem in meta:
        copy.add(elem)
    if meta_class is None or (ds_class and ds_class != meta_class.value):
        copy.MediaStorageSOPClassUID = ds_class
    if meta_instance is None or (ds_instance and ds_instance != meta_instance.value):
        copy.MediaStorageSOPInstanceUID = ds_instance
    return copy


#: File Meta elements that must have a value (pydicom's ``validate_file_meta``).
_META_REQUIRED = (0x00020002, 0x00020003, 0x00020010, 0x00020012)
_PACK_UL = struct.Struct("<HH2sHL").pack


def _meta_bytes(meta: FileMetaDataset) -> bytes | None:
    """``write_file_meta_info(enforce_standard=True)``'s bytes for a complete, plain File Meta
    group; ``None`` when pydicom would add or fix something (then pydicom writes it)."""
    elements = cast(dict[int, Any], meta._dict)
    if any(tag >> 16 != 2 for tag in elements) or 0x00020013 not in elements:
        return None
    for tag in _META_REQUIRED:
        elem = elements.get(tag)
        if elem is None or isinstance(elem, RawDataElement) or not elem.value:
            return None
    writer = Writer(implicit=False, little=True)
    parts = []
    version = elements.get(0x00020001)
    if version is None or isinstance(version, RawDataElement) or not version.value:
        parts.append(writer.header(0x00020001, "OB", 2) + b"\0\1")
    for tag in sorted(elements, key=int):
        if tag == 0x00020000:
            continue
        elem = elements[tag]
        if isinstance(elem, RawDataElement):
            return None
        value: bytes | None
        if tag == 0x00020001:
            value = bytes(elem.value)
            value += b"\0" * (len(value) % 2)
        else:
            value = _ascii_value(elem)
            if value is None:
                return None
        parts.append(writer.header(tag, elem.VR, len(value)))
        parts.append(value)
    body = b"".join(parts)
    return _PACK_UL(0x0002, 0x0000, b"UL", 4, len(body)) + body


def encode_file(ds: Dataset) -> bytes | None:
    """The Part 10 bytes of ``ds`` as ``dcmwrite(enforce_file_format=True)`` writes them.

    Returns ``None`` when this writer cannot produce exactly those bytes (the caller then uses
    pydicom): no File Meta, a deflated, private or unknown transfer syntax, Command or File Meta
    elements inside the data set, or an encoding or character set that differs from the one
    the elements were read in.
    """
    meta_group = getattr(ds, "file_meta", None)
    if meta_group is None or "TransferSyntaxUID" not in meta_group:
        return None
    syntax = UID(str(meta_group.TransferSyntaxUID))
    if syntax.is_private or not syntax.is_transfer_syntax or syntax.is_deflated:
        return None
    if any(tag >> 16 in (0, 2) for tag in ds._dict):
        return None
    preamble = getattr(ds, "preamble", None)
    if preamble and len(preamble) != 128:
        return None
    if 0x7FE00010 in ds._dict:  # as dcmwrite does (which also turns it into a DataElement)
        ds[0x7FE00010].is_undefined_length = syntax.is_compressed
    meta = _meta(ds)
    head_bytes = _meta_bytes(meta)
    if head_bytes is None:
        head = DicomBytesIO()
        head.is_implicit_VR, head.is_little_endian = False, True
        try:
            write_file_meta_info(head, meta, enforce_standard=True)
        except (AttributeError, ValueError):
            return None  # pydicom's writer raises the error the caller should see
        head_bytes = head.getvalue()
    try:
        body = Writer(syntax.is_implicit_VR, syntax.is_little_endian).dataset(ds, "iso8859")
    except Fallback:
        return None
    return b"".join((preamble or b"\0" * 128, b"DICM", head_bytes, body))


class DeidentifiedDataset(FileDataset):
    """The `FileDataset` the engine returns: ``save_as(..., enforce_file_format=True)`` uses
    `encode_file`, and pydicom's writer whenever that cannot write the data set exactly."""

    def save_as(self, filename: Any, /, *args: Any, **kwargs: Any) -> None:
        fast = (
            not args
            and kwargs.get("enforce_file_format") is True
            and set(kwargs) <= {"enforce_file_format", "overwrite"}
        )
        data = encode_file(self) if fast else None
        if data is None:
            super().save_as(filename, *args, **kwargs)
            return
        if isinstance(filename, str | os.PathLike):
            mode = "wb" if kwargs.get("overwrite", True) else "xb"
            with open(filename, mode) as f:
                f.write(data)
        else:
            filename.write(data)
