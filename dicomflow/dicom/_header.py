"""A purpose-built DICOM header scanner.

pydicom builds a Python object for every element it reads; a catalog needs the position of each
top-level element and the values of a few dozen. This module walks the encoded elements once,
records ``tag -> (VR, value offset, value length)`` for the top-level dataset, steps over
sequences without building them, and stops at Pixel Data, whose offset and length it records.
Values are decoded later, column by column (``dicomflow.dicom._values``), with pydicom's
character-set code, so decoded text equals pydicom's.

It reads from a byte prefix of the object; when the header is longer than the prefix it says how
many bytes it needs (:class:`NeedMore`) and the caller fetches a longer prefix.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from struct import Struct
from types import ModuleType
from typing import Protocol

from ..errors import InvalidDicomError, TruncatedError
from ._syntaxes import TRANSFER_SYNTAXES

__all__ = [
    "NOT_DICOM",
    "ALL_VRS",
    "LONG_VRS",
    "MAX_INFLATED",
    "MAX_NESTING",
    "SCANNER_CORE",
    "compiled_core",
    "NeedMore",
    "ParsedHeader",
    "Unsupported",
    "parse_header",
    "top_values",
    "walk",
    "walk_to_end",
]

_UNDEFINED = 0xFFFFFFFF
#: PS3.5 Table 7.1-1: explicit VRs with 2 reserved bytes and a 32-bit length (the rest: 16-bit).
LONG_VRS = frozenset(
    v.encode()
    for v in ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV")
)
_SHORT_VRS = frozenset(
    v.encode()
    for v in (
        "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH",
        "SL", "SS", "ST", "TM", "UI", "UL", "US",
    )
)  # fmt: skip
ALL_VRS = _SHORT_VRS | LONG_VRS
#: The most bytes a deflated data set may inflate to (its header and any pixel data in it).
MAX_INFLATED = 256 * 2**20
#: Undefined-length sequences nested deeper than this are refused (real objects, structured
#: reports included, stay far below; each level costs two stack frames here and in pydicom).
MAX_NESTING = 64
#: How the error of a file that is no DICOM at all begins (a README, a JPEG beside the series).
NOT_DICOM = "not a DICOM file"
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})

_LE_EXPLICIT = Struct("<HH2sH").unpack_from
_BE_EXPLICIT = Struct(">HH2sH").unpack_from
_LE_IMPLICIT = Struct("<HHL").unpack_from
_BE_IMPLICIT = Struct(">HHL").unpack_from
_LE_U32 = Struct("<L").unpack_from
_BE_U32 = Struct(">L").unpack_from
_LE_U16 = Struct("<H").unpack_from


class NeedMore(Exception):
    """The prefix ends inside the header; at least ``needed`` bytes are required."""

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


class Unsupported(InvalidDicomError):
    """An encoding anomaly this scanner does not handle; the caller may fall back to pydicom."""


#: tag -> (VR bytes or None for implicit VR, value offset in ``data``, value length)
Elements = dict[int, tuple[bytes | None, int, int]]


@dataclass(slots=True)
class ParsedHeader:
    """Where the elements of one object are.

    Offsets in ``elements`` index ``data``: the object's own bytes, or for a deflated transfer
    syntax the inflated dataset. ``data_offset`` is the file offset of ``data[0]`` (None when
    inflated: no file offset corresponds).
    """

    data: bytes
    little: bool
    implicit: bool
    transfer_syntax: str | None
    meta: dict[int, bytes]
    elements: Elements
    data_offset: int | None
    header_end: int  # file offset where the header ends (Pixel Data's tag, or the end)
    pixel: tuple[int, bytes | None, int, int] | None = None  # tag, VR, value offset, length
    pixel_offset: int | None = None  # file offset of the Pixel Data value
    preamble: bool = True
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # set when the object ends inside the header (partial elements)

    def value(self, tag: int) -> bytes | None:
        entry = self.elements.get(tag)
        if entry is None:
            return None
        _, pos, length = entry
        return self.data[pos : pos + length]


class _OutOfData(Exception):
    def __init__(self, needed: int) -> None:
        self.needed = needed


def _walk_python(
    buf: bytes,
    pos: int,
    little: bool,
    implicit: bool,
    out: Elements | None,
    top: bool,
    depth: int = 0,
) -> tuple[int, tuple[int, bytes | None, int, int] | None]:
    """Walk elements from ``pos`` (the pure-Python :func:`walk`).

    Returns at the end of ``buf`` (top level), after an Item Delimitation Item (inside an
    undefined-length item), or at a Pixel Data element (top level), which it returns.
    ``depth`` counts the undefined-length sequences around ``pos``; past
    :data:`MAX_NESTING` the object is refused (a nesting bomb would otherwise exhaust the stack).
    """
    n = len(buf)
    if little:
        explicit_hdr, implicit_hdr, u32 = _LE_EXPLICIT, _LE_IMPLICIT, _LE_U32
    else:
        explicit_hdr, implicit_hdr, u32 = _BE_EXPLICIT, _BE_IMPLICIT, _BE_U32
    long_vrs, short_vrs = LONG_VRS, _SHORT_VRS
    while True:
        if pos + 8 > n:
            if top and pos == n:
                raise _OutOfData(n + 1)  # the caller decides whether n is the end of the file
            raise _OutOfData(pos + 8)
        if implicit:
            group, elem, length = implicit_hdr(buf, pos)
            vr = None
            vpos = pos + 8
        else:
            group, elem, vr, length = explicit_hdr(buf, pos)
            if vr in short_vrs:
                vpos = pos + 8
            elif vr in long_vrs:
                if pos + 12 > n:
                    raise _OutOfData(pos + 12)
                length = u32(buf, pos + 8)[0]
                vpos = pos + 12
            elif not (b"AA" <= vr <= b"ZZ"):
                # no VR here: an item tag, or an element written in implicit VR inside an
                # explicit dataset (pydicom reads it the same way)
                length = u32(buf, pos + 4)[0]
                vr = None
                vpos = pos + 8
            else:
                vpos = pos + 8  # an unknown VR: a 2-byte length, typed from the dictionary
        if group == 0xFFFE:
            if elem == 0xE00D and not top:
                return vpos, None
            if elem == 0xE000 and length != _UNDEFINED and vpos + length <= n:
                pos = vpos + length  # a stray item outside a sequence: stepped over, as pydicom
                continue
            raise Unsupported(f"delimiter ({group:04X},{elem:04X}) out of place at byte {pos}")
        tag = group << 16 | elem
        if top and tag in _PIXEL_TAGS:
            return pos, (tag, vr, vpos, length)
        if length == _UNDEFINED:
            end = _skip_sequence(buf, vpos, little, implicit or vr == b"UN", depth + 1)
            if out is not None:
                out[tag] = (vr, vpos, end - 8 - vpos)  # the items, without the delimiter
            pos = end
        else:
            if out is not None:
                out[tag] = (vr, vpos, length)
            pos = vpos + length
            if pos > n:
                raise _OutOfData(pos)


def _bomb(stored: int, limit: int) -> InvalidDicomError:
    return InvalidDicomError(
        f"deflated dataset inflates past {limit // 2**20} MiB ({stored:,} bytes stored): "
        "refused as a decompression bomb"
    )


def _walk_deflated(
    stream: bytes, little: bool, implicit: bool
) -> tuple[bytes, Elements, tuple[int, bytes | None, int, int] | None]:
    """Inflate only as far as the header goes: up to Pixel Data, or the end of the stream.

    The stream is inflated in growing pieces and walked after each; it stops as soon as the
    walk reaches Pixel Data, so the pixels of a deflated image are never inflated for a
    catalog, and a bomb is refused at :data:`MAX_INFLATED`.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    pending: bytes = stream
    piece = 256 * 1024
    while True:
        try:
            chunk = inflater.decompress(pending, piece)
        except zlib.error as exc:
            raise InvalidDicomError(f"deflated dataset cannot be inflated: {exc}") from None
        out += chunk
        pending = inflater.unconsumed_tail
        elements: Elements = {}
        if inflater.eof or (not pending and len(chunk) < piece):  # all of it is inflated
            data = bytes(out)
            try:
                pixel = walk_to_end(data, little, implicit, elements, "the inflated dataset")
            except Unsupported as exc:
                raise InvalidDicomError(f"the inflated dataset: {exc}") from None
            return data, elements, pixel
        try:
            _, pixel = walk(out, 0, little, implicit, elements, True)  # type: ignore[arg-type]
            return bytes(out), elements, pixel
        except _OutOfData as more:  # the header goes on past what is inflated so far
            if more.needed > MAX_INFLATED + 1:  # a value declared past the bound: no need to
                raise _bomb(len(stream), MAX_INFLATED) from None  # inflate up to it first
        except Unsupported as exc:
            # pydicom would inflate the whole stream, unbounded: no fallback for these
            raise InvalidDicomError(f"the inflated dataset: {exc}") from None
        if len(out) > MAX_INFLATED:
            raise _bomb(len(stream), MAX_INFLATED)
        piece = min(piece * 2, 8 * 2**20, MAX_INFLATED + 1 - len(out))


def walk_to_end(
    data: bytes, little: bool, implicit: bool, out: Elements, what: str = "the dataset"
) -> tuple[int, bytes | None, int, int] | None:
    """Walk a complete encoded dataset to its end (or to Pixel Data, which it returns).

    For buffers known to be whole (an inflated or re-encoded dataset): running out of bytes
    exactly at an element boundary is the end, anywhere else a :class:`TruncatedError`.
    """
    try:
        return walk(data, 0, little, implicit, out, True)[1]
    except _OutOfData as exc:
        if exc.needed != len(data) + 1:
            raise TruncatedError(f"{what} ends inside an element") from None
        return None


def _skip_sequence(buf: bytes, pos: int, little: bool, implicit: bool, depth: int) -> int:
    """Step over the items of an undefined-length sequence; return the offset after it."""
    if depth > MAX_NESTING:
        raise InvalidDicomError(
            f"sequences nested more than {MAX_NESTING} levels deep at byte {pos}: refused"
        )
    n = len(buf)
    item_hdr = _LE_IMPLICIT if little else _BE_IMPLICIT
    while True:
        if pos + 8 > n:
            raise _OutOfData(pos + 8)
        group, elem, length = item_hdr(buf, pos)
        pos += 8
        if group != 0xFFFE:
            raise Unsupported(f"expected an item in a sequence at byte {pos - 8}")
        if elem == 0xE0DD:
            return pos
        if elem != 0xE000:
            raise Unsupported(f"({group:04X},{elem:04X}) where a sequence item should be")
        if length == _UNDEFINED:
            pos, _ = _walk_python(buf, pos, little, implicit, None, False, depth)
        else:
            pos += length


def _parse_meta_python(buf: bytes, pos: int) -> tuple[int, dict[int, bytes]]:
    """File Meta Information: group 0002, always explicit VR little endian."""
    meta: dict[int, bytes] = {}
    n = len(buf)
    while pos + 8 <= n:
        group, elem, vr, length = _LE_EXPLICIT(buf, pos)
        if group != 0x0002:
            return pos, meta
        if vr in LONG_VRS:
            if pos + 12 > n:
                raise _OutOfData(pos + 12)
            length = _LE_U32(buf, pos + 8)[0]
            vpos = pos + 12
        elif vr in _SHORT_VRS:
            vpos = pos + 8
        else:
            raise Unsupported("File Meta Information is not explicit VR little endian")
        if vpos + length > n:
            raise _OutOfData(vpos + length)
        meta[0x00020000 | elem] = buf[vpos : vpos + length]
        pos = vpos + length
    raise _OutOfData(pos + 8)


def _guess_encoding(buf: bytes, pos: int) -> tuple[bool, bool]:
    """(little, implicit) for a dataset without File Meta Information."""
    if pos + 8 > len(buf):
        raise _OutOfData(pos + 8)
    group_le = _LE_U16(buf, pos)[0]
    group_be = group_le >> 8 | (group_le & 0xFF) << 8
    explicit = buf[pos + 4 : pos + 6] in ALL_VRS
    if group_le <= 0x0008 or group_le in (0x0010, 0x0018, 0x0020, 0x0028):
        return True, not explicit
    if group_be <= 0x0008:
        return False, not explicit
    raise InvalidDicomError(
        f"{NOT_DICOM}: no 'DICM' marker at byte 128 and no DICOM element at byte 0"
    )


def parse_header(buf: bytes, complete: bool) -> ParsedHeader:
    """Locate the elements of the DICOM object whose first bytes are ``buf``.

    ``complete`` says ``buf`` is the whole object. Raises :class:`NeedMore` when a longer
    prefix is required, :class:`~dicomflow.errors.TruncatedError` when the whole object ends
    inside the header, and :class:`~dicomflow.errors.InvalidDicomError` for bytes that are not
    DICOM.
    """
    partial: list[ParsedHeader] = []
    try:
        return _parse(buf, complete, partial)
    except _OutOfData as exc:
        if not complete:
            raise NeedMore(exc.needed) from None
        if not buf:
            raise InvalidDicomError("empty file (0 bytes)") from None
        message = (
            f"truncated: the object ends at byte {len(buf)} inside an element "
            f"that needs {exc.needed} bytes"
        )
        if partial and partial[0].elements:
            partial[0].error = message
            partial[0].header_end = len(buf)
            return partial[0]
        raise TruncatedError(message) from None


def _parse(buf: bytes, complete: bool, partial: list[ParsedHeader]) -> ParsedHeader:
    if len(buf) < 132 and not complete:
        raise _OutOfData(132)
    preamble = buf[128:132] == b"DICM"
    pos = 132 if preamble else 0
    meta: dict[int, bytes] = {}
    if pos + 4 <= len(buf) and _LE_U16(buf, pos)[0] == 0x0002:
        pos, meta = _parse_meta(buf, pos)
    elif preamble:
        raise Unsupported("'DICM' marker but no File Meta Information")
    elif not buf:
        raise _OutOfData(8)
    ts_raw = meta.get(0x00020010)
    ts = ts_raw.decode("ascii", "replace").rstrip("\x00 ") if ts_raw else None
    notes = [] if preamble else ["no preamble"]
    syntax = TRANSFER_SYNTAXES.get(ts) if ts is not None else None
    if ts is None:
        little, implicit = _guess_encoding(buf, pos)
        notes.append("no transfer syntax: encoding guessed from the first element")
    elif syntax is None:  # a private or unknown syntax: read as explicit VR little endian
        little, implicit = True, False
    else:
        little, implicit = syntax.is_little_endian, syntax.is_implicit_vr

    if syntax is not None and syntax.deflated:
        if not complete:
            raise _OutOfData(len(buf) + 1)  # inflating needs the whole stream
        data, elements, pixel = _walk_deflated(buf[pos:], little, implicit)
        return ParsedHeader(
            data, little, implicit, ts, meta, elements, None, len(buf), pixel, None, preamble, notes
        )

    elements = {}
    partial.append(
        ParsedHeader(
            buf, little, implicit, ts, meta, elements, 0, len(buf), None, None, preamble, notes
        )
    )
    if not implicit and pos + 6 <= len(buf) and buf[pos + 4 : pos + 6] not in ALL_VRS:
        implicit = True  # as pydicom does: the data says implicit VR whatever the meta says
        notes.append("transfer syntax says explicit VR but the dataset is implicit VR")
    try:
        end, pixel = walk(buf, pos, little, implicit, elements, True)
    except _OutOfData as exc:
        # At the end of the whole object with every element complete: no Pixel Data.
        if complete and exc.needed == len(buf) + 1:
            return ParsedHeader(
                buf, little, implicit, ts, meta, elements, 0, len(buf), None, None, preamble, notes
            )
        raise
    return ParsedHeader(
        buf, little, implicit, ts, meta, elements, 0, end, pixel,
        pixel[2] if pixel else None, preamble, notes,
    )  # fmt: skip


def top_values(buf: bytes, tags: frozenset[int]) -> dict[int, tuple[bytes | None, bytes]] | None:
    """``tag -> (VR or None, value bytes)`` of the top-level ``tags`` of a whole Part 10 object
    with File Meta Information (implicit or explicit VR little endian), walking only as far as
    the largest of them; absent tags are left out. ``None`` for any other object.

    For a sink that names a file after a few attributes of an object it writes as it is.
    """
    if buf[128:132] != b"DICM" or not tags:
        return None
    last = max(tags)
    try:
        pos, meta = _parse_meta(buf, 132)
        ts_raw = meta.get(0x00020010)
        ts = ts_raw.decode("ascii", "replace").rstrip("\x00 ") if ts_raw else None
        syntax = TRANSFER_SYNTAXES.get(ts) if ts is not None else None
        if syntax is None or syntax.deflated or not syntax.is_little_endian:
            return None
        implicit = syntax.is_implicit_vr
        found: dict[int, tuple[bytes | None, bytes]] = {}
        n = len(buf)
        while pos + 8 <= n:
            if implicit:
                group, elem, length = _LE_IMPLICIT(buf, pos)
                vr = None
                vpos = pos + 8
            else:
                group, elem, vr, length = _LE_EXPLICIT(buf, pos)
                if vr in LONG_VRS:
                    length = _LE_U32(buf, pos + 8)[0]
                    vpos = pos + 12
                elif vr in _SHORT_VRS:
                    vpos = pos + 8
                else:
                    return None
            tag = group << 16 | elem
            if tag > last:
                break
            if length == _UNDEFINED:
                pos = _skip_sequence(buf, vpos, True, implicit or vr == b"UN", 1)
                continue
            if tag in tags:
                found[tag] = (vr, buf[vpos : vpos + length])
            pos = vpos + length
        return found
    except (_OutOfData, Unsupported, InvalidDicomError):
        return None


# --------------------------------------------------------------------------------------------
# the scanner core: compiled where it is built, else the pure-Python functions above


class _Walk(Protocol):
    def __call__(
        self,
        buf: bytes,
        pos: int,
        little: bool,
        implicit: bool,
        out: Elements | None,
        top: bool,
        depth: int = 0,
    ) -> tuple[int, tuple[int, bytes | None, int, int] | None]: ...


class _ParseMeta(Protocol):
    def __call__(self, buf: bytes, pos: int) -> tuple[int, dict[int, bytes]]: ...


def _load_core() -> ModuleType | None:
    """The compiled core (``_cheader``), unless it is not built or ``DICOMFLOW_PURE_PYTHON`` is
    set (to anything but ``0``)."""
    if os.environ.get("DICOMFLOW_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _cheader
    except ImportError:  # not built (no compiler at install time): the pure-Python scanner
        return None
    _cheader.init(_OutOfData, Unsupported, InvalidDicomError, MAX_NESTING)
    return _cheader


#: the compiled core of the scanner, or None where the pure-Python code runs
_compiled = _load_core()
#: which scanner core this process runs: "c" (the compiled ``_cheader``) or "python"
SCANNER_CORE = "c" if _compiled is not None else "python"


def compiled_core() -> ModuleType | None:
    """The compiled core this process runs (``None``: the pure-Python code), for the other
    layers' uses of its functions (the verifier's ``find_forms``)."""
    return _compiled


#: Walk elements from ``pos``; see :func:`_walk_python`, which the compiled core equals.
walk: _Walk = _compiled.walk if _compiled is not None else _walk_python
_parse_meta: _ParseMeta = _compiled.parse_meta if _compiled is not None else _parse_meta_python
