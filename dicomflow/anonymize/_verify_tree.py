"""The elements of a Part 10 object as the verifier reads them: a tree of value spans.

The verifier needs, for the original, every element's value (decoded only where it searches
it) and, for the output, where each element's value lies in the bytes, at every nesting level.
`read_tree` finds both in one pass over the encoding, with the header walker of
:mod:`dicomflow.dicom` (top level and item by item), without building pydicom objects; a
deflated data set is inflated whole, pixel data included. `tree_of` builds the same tree from a
pydicom data set: for an original given as a data set, and for objects the walker refuses
(offsets are then taken from pydicom, where it recorded them).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from ..dicom import MAX_INFLATED, parse_header, walk, walk_to_end

__all__ = [
    "UNKNOWN",
    "Element",
    "Tree",
    "Unwalkable",
    "element_vr",
    "read_tree",
    "tree_of",
    "walk_elements",
]

#: The offset of a value whose place in the bytes is not known.
UNKNOWN = -1
_UNDEFINED = 0xFFFFFFFF
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_DEFLATED = "1.2.840.10008.1.2.1.99"
_LE_META = struct.Struct("<HH2sH").unpack_from
_LE_U32 = struct.Struct("<L").unpack_from
_LONG_META_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN",
                            b"UR", b"UT", b"SV", b"UV"})  # fmt: skip
_ITEM = {True: struct.Struct("<HHL").unpack_from, False: struct.Struct(">HHL").unpack_from}


@dataclass(slots=True)
class Element:
    """One element: its value's span in `Tree.data` (`UNKNOWN` when not known), or its
    values already decoded (``decoded``, from pydicom), and the items of a sequence."""

    tag: int
    vr: str
    start: int
    end: int
    items: list[list[Element]] | None = None
    decoded: list[Any] | None = None


class Unwalkable(ValueError):
    """Items of a sequence that the header walker cannot follow, found when they are built
    (``tree``: the tree being built)."""

    def __init__(self, message: str, tree: Tree) -> None:
        super().__init__(message)
        self.tree = tree


class Tree:
    """A parsed object. ``data`` holds the values (for a deflated data set: the File Meta
    bytes followed by the inflated data set); ``start`` is where the data set begins in it.

    A tree from `read_tree` keeps the top level as the header walker found it (`entries`) and
    builds `Element` s only when asked: all of them (`elements`), or one top-level element with
    its items (`get`), so that a reader that needs a few of them does not pay for the rest.
    """

    __slots__ = ("_elements", "_found", "_reader", "_rest", "_shift", "_top", "data", "meta",
                 "preamble", "start")  # fmt: skip

    def __init__(
        self,
        data: bytes,
        start: int,
        preamble: bool,
        meta: list[Element],
        elements: list[Element] | None = None,
        *,
        walked: tuple[_Reader, dict[int, tuple[bytes | None, int, int]], int, list[Element]]
        | None = None,
    ) -> None:
        self.data, self.start, self.preamble, self.meta = data, start, preamble, meta
        self._elements = elements
        self._top: dict[int, Element] | None = None
        self._reader: _Reader | None = None
        self._found: dict[int, tuple[bytes | None, int, int]] = {}
        self._shift = 0
        self._rest: list[Element] = []
        if walked is not None:
            self._reader, self._found, self._shift, self._rest = walked

    @property
    def elements(self) -> list[Element]:
        """Every top-level element, in the order of the encoding, items built."""
        if self._elements is None:
            self._elements = self.build(self._found) + self._rest
        return self._elements

    @property
    def top(self) -> dict[int, Element]:
        """The top-level elements by tag (all built)."""
        if self._top is None:
            self._top = {e.tag: e for e in self.elements}
        return self._top

    def get(self, tag: int) -> Element | None:
        """One top-level element (with its items), building no other."""
        if self._elements is not None or self._reader is None:
            return self.top.get(tag)
        entry = self._found.get(tag)
        if entry is None:
            return next((e for e in self._rest if e.tag == tag), None)
        return self.build({tag: entry})[0]

    def tags(self) -> list[int]:
        """The tags of the top-level elements."""
        if self._elements is not None or self._reader is None:
            return [e.tag for e in self.elements]
        return [*self._found, *(e.tag for e in self._rest)]

    @property
    def walked(self) -> bool:
        """Whether the top level is the walker's (`entries`, `encoding`, `rest` can be read)."""
        return self._reader is not None

    def entries(self) -> dict[int, tuple[bytes | None, int, int]]:
        """The top-level elements before Pixel Data as the walker found them: tag -> (VR
        bytes or None, value offset in ``data`` less `shift`, value length)."""
        return self._found

    @property
    def shift(self) -> int:
        return self._shift

    def encoding(self) -> tuple[bool, bool]:
        """(little endian, implicit VR) of the data set."""
        assert self._reader is not None
        return self._reader.little, self._reader.implicit

    def build(self, entries: dict[int, tuple[bytes | None, int, int]]) -> list[Element]:
        """The elements (with items) of some of `entries`.

        Raises
        ------
        Unwalkable
            For items the walker cannot follow (found only now: the items of a sequence are
            read when its element is built); the caller then reads the object with pydicom.
        """
        assert self._reader is not None
        try:
            return self._reader.level(entries, self._shift, self._reader.implicit)
        except Exception as exc:  # noqa: BLE001 - whatever the walker raises, as one error
            raise Unwalkable(f"{type(exc).__name__}: {exc}", self) from exc

    def rest(self) -> list[Element]:
        """The Pixel Data element and what follows it (built)."""
        return self._rest

    def raw(self, elem: Element) -> bytes | None:
        """The value bytes of an element whose span is known."""
        if elem.start == UNKNOWN:
            return None
        return self.data[elem.start : elem.end]


@lru_cache(maxsize=8192)
def _dictionary_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag)).split(" ")[0]
    except KeyError:
        return None


#: `element_vr` of the (tag, VR bytes) pairs seen so far (a series repeats them all).
_VRS: dict[tuple[int, bytes | str | None], str] = {}
_MAX_VRS = 65536


def element_vr(tag: int, vr: bytes | str | None) -> str:
    """The VR of an element as pydicom reads it: its own, or for implicit VR and UN (public
    attributes) the dictionary's; private attributes without one are UN."""
    found = _VRS.get((tag, vr))
    if found is None:
        found = _element_vr(tag, vr)
        if len(_VRS) < _MAX_VRS:
            _VRS[(tag, vr)] = found
    return found


def _element_vr(tag: int, vr: bytes | str | None) -> str:
    text = vr.decode("ascii", "replace") if isinstance(vr, bytes) else vr
    if text and text != "UN":
        return text
    if not tag >> 16 & 1:
        return _dictionary_vr(tag) or text or "UN"
    return text or "UN"


def _meta(data: bytes, pos: int) -> tuple[list[Element], int]:
    """The File Meta elements (explicit VR little endian) and where the data set starts."""
    found: list[Element] = []
    n = len(data)
    while pos + 8 <= n:
        group, number, vr, length = _LE_META(data, pos)
        if group != 0x0002:
            break
        if vr in _LONG_META_VRS:
            if pos + 12 > n:
                break
            length = _LE_U32(data, pos + 8)[0]
            start = pos + 12
        else:
            start = pos + 8
        found.append(Element(0x00020000 | number, element_vr(0x00020000 | number, vr), start,
                             start + length))  # fmt: skip
        pos = start + length
    return found, pos


def _inflated(data: bytes, start: int) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        body = inflater.decompress(data[start:], MAX_INFLATED)
    except zlib.error as exc:
        raise ValueError(f"the deflated data set cannot be inflated: {exc}") from None
    if not inflater.eof and inflater.unconsumed_tail:
        raise ValueError(f"the deflated data set inflates past {MAX_INFLATED // 2**20} MiB")
    return data[:start] + body


class _Reader:
    """Builds the elements of one encoded data set, items of sequences included."""

    def __init__(self, data: bytes, little: bool, implicit: bool) -> None:
        self.data, self.little, self.implicit = data, little, implicit

    def level(
        self, found: dict[int, tuple[bytes | None, int, int]], shift: int, implicit: bool
    ) -> list[Element]:
        elements = [
            Element(tag, element_vr(tag, raw_vr), vpos + shift, vpos + shift + length)
            for tag, (raw_vr, vpos, length) in found.items()
        ]
        for elem in elements:
            vr = elem.vr
            if vr != "SQ" and vr != "UN":
                continue
            start, tag = elem.start, elem.tag
            raw_vr = found[tag][0]
            undefined_un = raw_vr in (None, b"UN") and vr == "UN" and self._undefined(start)
            if (vr == "SQ" or undefined_un) and tag not in _PIXEL_TAGS:
                elem.items = self.items(start, elem.end, implicit or vr == "UN")
        return elements

    def _undefined(self, start: int) -> bool:
        """Whether the element whose value starts at ``start`` has an undefined length."""
        return self.data[start - 4 : start] == b"\xff\xff\xff\xff"

    def items(self, start: int, end: int, implicit: bool) -> list[list[Element]]:
        data, little = self.data, self.little
        unpack = _ITEM[little]
        items: list[list[Element]] = []
        pos = start
        while pos + 8 <= end:
            group, number, length = unpack(data, pos)
            pos += 8
            if group != 0xFFFE or number == 0xE0DD:
                break
            if number != 0xE000:
                raise ValueError(f"({group:04X},{number:04X}) in a sequence at byte {pos - 8}")
            found: dict[int, tuple[bytes | None, int, int]] = {}
            if length == _UNDEFINED:
                after, _ = walk(data, pos, little, implicit, found, False)
                items.append(self.level(found, 0, implicit))
                pos = after
                continue
            body = data[pos : pos + length]
            pixel = walk_to_end(body, little, implicit, found, "an item")
            if pixel is not None:  # an icon image's pixel data ends the item
                found[pixel[0]] = (pixel[1], pixel[2], min(pixel[3], length - pixel[2]))
            items.append(self.level(found, pos, implicit))
            pos += length
        return items

    def pixel_end(self, start: int, length: int) -> int:
        """Where the value of a pixel data element ends (encapsulated: after its delimiter)."""
        if length != _UNDEFINED:
            return start + length
        unpack, pos, n = _ITEM[self.little], start, len(self.data)
        while pos + 8 <= n:
            group, number, size = unpack(self.data, pos)
            pos += 8
            if group != 0xFFFE or number == 0xE0DD:
                return pos
            pos += size
        return n


def read_tree(raw: bytes) -> Tree:
    """The tree of a Part 10 object (or a bare data set) from its bytes.

    The top level is walked now; the items of its sequences when their elements are built
    (see `Tree`).

    Raises
    ------
    Exception
        Whatever the walker raises for bytes it cannot follow (truncated, not DICOM, a
        delimiter out of place): the caller then reads the object with pydicom; and later,
        `Unwalkable` from `Tree` for items it cannot follow.
    """
    header = parse_header(raw, complete=True)
    if header.error:
        raise ValueError(header.error)
    preamble = raw[128:132] == b"DICM"
    meta, start = _meta(raw, 132 if preamble else 0) if header.meta else ([], 0)
    little, implicit = header.little, header.implicit
    if header.data_offset is None:  # deflated: inflate it all, pixel data included
        data = _inflated(raw, start)
        found: dict[int, tuple[bytes | None, int, int]] = {}
        pixel = walk_to_end(data[start:], little, implicit, found, "the inflated data set")
        shift = start
    else:
        data, found, pixel, shift = raw, dict(header.elements), header.pixel, 0
    reader = _Reader(data, little, implicit)
    rest: list[Element] = []
    if pixel is not None:
        tag, vr, vpos, length = pixel
        begin = vpos + shift
        end = reader.pixel_end(begin, length)
        rest.append(Element(tag, element_vr(tag, vr), begin, end))
        if end < len(data):  # what follows the pixel data (padding, signatures)
            trailing: dict[int, tuple[bytes | None, int, int]] = {}
            walk_to_end(data[end:], little, implicit, trailing, "the data after Pixel Data")
            rest.extend(reader.level(trailing, end, implicit))
    return Tree(data, start, preamble, meta, walked=(reader, found, shift, rest))


def _decoded(value: Any) -> list[Any]:
    if value is None or value == "" or value == b"":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _from_dataset(ds: Dataset, base: int, data: bytes | None) -> list[Element]:
    found: list[Element] = []
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        start = end = UNKNOWN
        if data is not None and isinstance(raw, RawDataElement) and raw.value is not None:
            begin = base + raw.value_tell
            if data.startswith(raw.value[:64], begin):
                start, end = begin, begin + len(raw.value)
        try:
            elem = ds[tag]
        except Exception:  # noqa: BLE001 - unreadable: its bytes, as UN
            value = raw.value if isinstance(raw, RawDataElement) else None
            found.append(Element(int(tag), "UN", start, end, None, _decoded(value)))
            continue
        if elem.VR == "SQ":
            items = [_from_dataset(item, start, data if start != UNKNOWN else None)
                     for item in elem.value or ()]  # fmt: skip
            found.append(Element(int(tag), "SQ", start, end, items))
        else:
            found.append(Element(int(tag), elem.VR, start, end, None, _decoded(elem.value)))
    return found


def tree_of(ds: Dataset, raw: bytes | None = None) -> Tree:
    """The tree of a pydicom data set; with ``raw`` (the bytes it was read from), value spans
    where pydicom recorded them (a deflated data set is inflated to find them)."""
    meta_ds = getattr(ds, "file_meta", None)
    preamble = raw is not None and raw[128:132] == b"DICM"
    start, data, base = 0, raw, 0
    if raw is not None and preamble:
        start = _meta(raw, 132)[1]
        syntax = str(meta_ds.get("TransferSyntaxUID", "")) if meta_ds is not None else ""
        if syntax == _DEFLATED:
            data, base = _inflated(raw, start), start
    meta = _from_dataset(meta_ds, 0, raw) if meta_ds is not None else []
    return Tree(data or b"", start, preamble, meta, _from_dataset(ds, base, data))


def walk_elements(elements: list[Element]) -> Iterator[Element]:
    """Every element, items included, depth first."""
    for elem in elements:
        yield elem
        for item in elem.items or ():
            yield from walk_elements(item)
