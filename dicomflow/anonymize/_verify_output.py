"""The output side of the verifier: the bytes searched, and which element a byte belongs to.

`Output` holds a de-identified object as it is shared: its Part 10 bytes (a deflated data set
inflated, so that its values can be searched), the same bytes with ASCII letters lowered (the
search is case-insensitive), and the parsed data set. A value found at some offset is placed in
the element whose value holds that byte (`Output.place_at`), at any nesting level and in the
File Meta Information, from the value offsets pydicom records while parsing; a byte outside every
element value is in the preamble or in the encoding itself (tags, lengths, item headers).
"""

from __future__ import annotations

import bisect
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import AnyStr

import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.multival import MultiValue

from ..dicom import MAX_INFLATED, read_meta
from ._policy import DATE_VRS, TEXT_VRS

__all__ = ["BULK_MIN_BYTES", "Output", "Place", "find", "hits", "label", "vr_of"]

#: Shortest value searched inside pixel data: a 6-byte run matches random bytes about once in
#: 2**48 positions, a 3-byte one every few megabytes.
BULK_MIN_BYTES = 6
_DEFLATED = "1.2.840.10008.1.2.1.99"
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_STRING_VRS = TEXT_VRS | DATE_VRS | {"CS", "UI", "DS", "IS"}
_UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Place:
    """One element value of the output.

    Attributes
    ----------
    label : str
        Tag path and keyword, e.g. ``(0008,2218) AnatomicRegionSequence[0]>(0008,0104)
        CodeMeaning``; File Meta
        elements start with ``File Meta``.
    key : tuple of int
        The tags from the top level, without item numbers: the same attribute of the original
        has the same key.
    keywords : tuple of str
        The keywords along the path (empty for private attributes).
    meta : bool
        Whether it is in the File Meta Information.
    """

    label: str
    key: tuple[int, ...]
    keywords: tuple[str, ...]
    meta: bool = False


def label(prefix: str, tag: int, keyword: str) -> str:
    """``prefix(gggg,eeee) Keyword``."""
    return f"{prefix}({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword}".strip()


def vr_of(raw: object, tag: int) -> str:
    """The VR of a raw or converted element: its own, else (implicit VR, UN) the dictionary's."""
    vr = getattr(raw, "VR", None)
    if vr and vr != "UN":
        return str(vr)
    try:
        return str(dictionary_VR(tag)).split(" ")[0]
    except KeyError:
        return str(vr or "UN")


def _digit(haystack: AnyStr, at: int) -> bool:
    """Whether position ``at`` holds a digit (``False`` outside the haystack)."""
    return 0 <= at < len(haystack) and haystack[at : at + 1].isdigit()


def hits(
    haystack: AnyStr, needle: AnyStr, match: str, start: int = 0, end: int | None = None
) -> Iterator[int]:
    """Every position of ``needle`` in ``haystack[start:end]`` where ``match`` allows it.

    ``match`` is ``text`` (anywhere), ``number`` (no digit, nor a ``.`` before, may touch it),
    ``date`` (a DA: nothing may come before it, digits may follow, as in a DT) or ``time`` (a
    TM: may follow the date of a DT, nothing may follow).
    """
    dot = b"." if isinstance(haystack, bytes) else "."
    end = len(haystack) if end is None else end
    at = haystack.find(needle, start, end)
    while at != -1:
        if match == "text":
            yield at
        else:
            stop = at + len(needle)
            touched_before = _digit(haystack, at - 1) or (at > 0 and haystack[at - 1 : at] == dot)
            if match == "time" and touched_before:  # the time part of a DT: YYYYMMDD before it
                date_start = at - 8
                touched_before = not (
                    date_start >= 0
                    and haystack[date_start:at].isdigit()
                    and not _digit(haystack, date_start - 1)
                )
            touched_after = match != "date" and _digit(haystack, stop)
            if not touched_before and not touched_after:
                yield at
        at = haystack.find(needle, at + 1, end)


def find(haystack: AnyStr, needle: AnyStr, match: str) -> int:
    """The first position `hits` gives, or -1."""
    return next(iter(hits(haystack, needle, match)), -1)


def _encode(ds: Dataset) -> bytes:
    """The Part 10 bytes of ``ds``; when its transfer syntax cannot be written (unknown to
    pydicom, or no File Meta), the meta and the data set are written as explicit VR little
    endian: the bytes searched are then the values, not the exact file."""
    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, ds)
        return buffer.getvalue()
    except (AttributeError, ValueError):
        pass
    meta = DicomBytesIO()
    if getattr(ds, "file_meta", None) is not None:
        write_file_meta_info(meta, ds.file_meta, enforce_standard=False)
    body = io.BytesIO()
    pydicom.dcmwrite(body, Dataset(ds), implicit_vr=False, little_endian=True)
    return meta.getvalue() + body.getvalue()


def _inflated(data: bytes, start: int) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        body = inflater.decompress(data[start:], MAX_INFLATED)
    except zlib.error as exc:
        raise ValueError(f"the deflated data set cannot be inflated: {exc}") from None
    if not inflater.eof and inflater.unconsumed_tail:
        raise ValueError(f"the deflated data set inflates past {MAX_INFLATED // 2**20} MiB")
    return data[:start] + body


#: One element of a data set as parsed: tag, raw element (or converted), value start and end
#: (None when pydicom recorded no offset).
_Span = tuple[int, object, int | None, int | None]


class Output:
    """A de-identified object as shared, ready to be searched.

    Parameters
    ----------
    data : bytes
        Its Part 10 bytes.
    """

    def __init__(self, data: bytes) -> None:
        self.dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        self.preamble = data[128:132] == b"DICM"
        meta = getattr(self.dataset, "file_meta", None)
        syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        self.start = read_meta(data)[1]  # where the data set starts
        base = 0  # where the offsets pydicom records for the data set count from
        if syntax == _DEFLATED:
            base = self.start
            data = _inflated(data, self.start)
        self.data = data
        self.low = data.lower()  # ASCII letters only: offsets stay the same
        # the offsets, taken now: an element pydicom converts later (reading the options, the
        # character set, the texts) no longer has one
        self._top = self._snapshot(self.dataset, base)
        self._meta = self._snapshot(meta, 0) if meta is not None else []
        self.pixels = self._pixels()
        self._starts: list[int] | None = None
        self._spans: list[tuple[int, Place]] = []
        self._texts: list[tuple[Place, str]] | None = None

    @classmethod
    def of(cls, deidentified: Dataset | str | Path) -> Output:
        """The output of a file, or of a data set as it would be written."""
        if isinstance(deidentified, Dataset):
            return cls(_encode(deidentified))
        return cls(Path(deidentified).read_bytes())

    def _snapshot(self, ds: Dataset, base: int) -> list[_Span]:
        """Each element's value span, where pydicom recorded an offset that holds its bytes."""
        spans: list[_Span] = []
        for tag in list(ds.keys()):
            raw = ds.get_item(tag)
            start = end = None
            if isinstance(raw, RawDataElement) and raw.value is not None:
                start = base + raw.value_tell
                end = start + len(raw.value)
                if not self.data.startswith(raw.value[:64], start):
                    start = end = None  # not where pydicom said: placed between neighbours
            spans.append((int(tag), raw, start, end))
        return spans

    def _pixels(self) -> tuple[int, int]:
        """Where the value of the top-level pixel data is (empty at the end when none)."""
        for tag, _, start, end in self._top:
            if tag in _PIXEL_TAGS and start is not None and end is not None:
                return start, end
        return len(self.data), len(self.data)

    def search(self, form: bytes, match: str) -> Iterator[int]:
        """Offsets of ``form`` (lowered) in the output; inside pixel data only when it is at
        least `BULK_MIN_BYTES` long."""
        if len(form) >= BULK_MIN_BYTES:
            yield from hits(self.low, form, match)
            return
        start, end = self.pixels
        yield from hits(self.low, form, match, 0, start)
        yield from hits(self.low, form, match, end)

    def place_at(self, offset: int) -> Place | None:
        """The element whose value holds byte ``offset``; ``None`` outside every value."""
        if self._starts is None:
            self._index()
        assert self._starts is not None
        i = bisect.bisect_right(self._starts, offset) - 1
        if i >= 0:
            end, place = self._spans[i]
            if offset < end:
                return place
        return None

    def outside(self, offset: int) -> str:
        """Where a byte outside every element value is."""
        if self.preamble and offset < 128:
            return "preamble"
        return "bytes outside any element value"

    def _index(self) -> None:
        found: list[tuple[int, int, Place]] = []
        meta_start = 132 if self.preamble else 0
        self._level(self.dataset.file_meta if self._meta else Dataset(), self._meta,
                    meta_start, self.start, (), (), "File Meta ", True, found)  # fmt: skip
        self._level(self.dataset, self._top, self.start, len(self.data), (), (), "", False, found)
        found.sort(key=lambda span: span[0])
        self._starts = [start for start, _, _ in found]
        self._spans = [(end, place) for _, end, place in found]

    def _level(
        self,
        ds: Dataset,
        spans: list[_Span],
        low: int,
        high: int,
        key: tuple[int, ...],
        keywords: tuple[str, ...],
        prefix: str,
        meta: bool,
        found: list[tuple[int, int, Place]],
    ) -> None:
        """Record the value span of every element of ``ds`` (``spans``; the data set lies
        between ``low`` and ``high``), items of sequences included. An element without a
        recorded offset is given the bytes between its neighbours."""
        previous = low
        for i, (tag, raw, start, end) in enumerate(spans):
            if start is None or end is None:
                start = previous
                end = next((s for _, _, s, _ in spans[i + 1 :] if s is not None), high)
            previous = max(previous, end)
            keyword = keyword_for_tag(tag) if not tag >> 16 & 1 else ""
            where = label(prefix, tag, keyword)
            path, names = (*key, tag), (*keywords, keyword)
            vr = vr_of(raw, tag)
            if vr == "SQ" or (vr == "UN" and getattr(raw, "length", 0) == _UNDEFINED):
                try:
                    elem = ds[tag]
                except Exception:  # noqa: BLE001 - unreadable: its bytes stay one value
                    elem = None
                if elem is not None and elem.VR == "SQ":
                    for n, item in enumerate(elem.value or ()):
                        self._level(item, self._snapshot(item, start), start, end, path, names,
                                    f"{where}[{n}]>", meta, found)  # fmt: skip
                    continue
            found.append((start, end, Place(where, path, names, meta)))

    def texts(self) -> list[tuple[Place, str]]:
        """Every text value of the output, decoded and case-folded, with its place (made once,
        for values whose encoded forms were not found)."""
        if self._texts is None:
            if self._starts is None:
                self._index()  # before the texts convert every element
            self._texts = []
            self._collect(self.dataset, (), (), "", self._texts)
        return self._texts

    def _collect(
        self,
        ds: Dataset,
        key: tuple[int, ...],
        keywords: tuple[str, ...],
        prefix: str,
        out: list[tuple[Place, str]],
    ) -> None:
        for tag in list(ds.keys()):
            try:
                elem = ds[tag]
            except Exception:  # noqa: BLE001 - unreadable: its bytes were searched
                continue
            where = label(prefix, int(tag), elem.keyword or "")
            path, names = (*key, int(tag)), (*keywords, elem.keyword or "")
            if elem.VR == "SQ":
                for n, item in enumerate(elem.value or ()):
                    self._collect(item, path, names, f"{where}[{n}]>", out)
            elif elem.VR in _STRING_VRS or elem.tag.is_private:
                value = elem.value
                values = value if isinstance(value, MultiValue | list | tuple) else [value]
                text = "\\".join(str(v) for v in values if not isinstance(v, bytes))
                if text:
                    out.append((Place(where, path, names), text.casefold()))
