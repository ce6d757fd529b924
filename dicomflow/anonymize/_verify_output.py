"""The output side of the verifier: the bytes searched, and which element a byte belongs to.

`Output` holds a de-identified object as it is shared: its bytes (a deflated data set inflated,
so that its values can be searched), the same bytes with ASCII letters lowered (the search is
case-insensitive), and its element tree (`read_tree`). A value found at some offset is placed in
the element whose value holds that byte (`Output.place_at`), at any nesting level and in the
File Meta Information; a byte outside every element value is in the preamble or in the encoding
itself (tags, lengths, item headers).
"""

from __future__ import annotations

import bisect
import io
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, AnyStr, cast

import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info

from ..dicom import compiled_core, to_text
from ._policy import DATE_VRS, TEXT_VRS
from ._verify_tree import UNKNOWN, Element, Tree, read_tree, tree_of

__all__ = ["BULK_MIN_BYTES", "Output", "Place", "find", "hits", "label", "text_values"]

#: Shortest value searched inside pixel data: a 6-byte run matches random bytes about once in
#: 2**48 positions, a 3-byte one every few megabytes.
BULK_MIN_BYTES = 6
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_STRING_VRS = TEXT_VRS | DATE_VRS | {"CS", "UI", "DS", "IS"}
_SINGLE_VRS = frozenset({"LT", "ST", "UT", "UR"})
#: Pixel data shorter than this is searched form by form; longer, by `Output.index_pixels`
#: (one pass for all forms: from a few kilobytes on, faster than a search per form).
_PIXELS_SCANNED = 4096
#: More candidate positions than this: pixel data full of text-like bytes, searched form by form.
_MAX_CANDIDATES = 50000
#: A form found more often than this by `Output.index` is searched again by `hits`.
_MAX_OFFSETS = 256
_find_forms = getattr(compiled_core(), "find_forms", None)


@dataclass(frozen=True, slots=True)
class Place:
    """One element value of the output.

    Attributes
    ----------
    label : str
        Tag path and keyword, e.g. ``(0008,2218) AnatomicRegionSequence[0]>(0008,0104)
        CodeMeaning``; File Meta elements start with ``File Meta``.
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


@lru_cache(maxsize=16384)
def keyword_of(tag: int) -> str:
    """The keyword of a public attribute ('' for private ones and unknown tags)."""
    return "" if tag >> 16 & 1 else keyword_for_tag(tag)


@lru_cache(maxsize=65536)
def label(prefix: str, tag: int, keyword: str) -> str:
    """``prefix(gggg,eeee) Keyword``."""
    return f"{prefix}({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword}".strip()


def text_values(tree: Tree, elem: Element, codecs: list[str]) -> list[Any]:
    """An element's values: decoded text (as pydicom decodes it) for string VRs, the bytes
    for the others."""
    if elem.decoded is not None:
        return elem.decoded
    return raw_values(tree.raw(elem), elem.vr, codecs)


def raw_values(raw: bytes | None, vr: str, codecs: list[str] | tuple[str, ...]) -> list[Any]:
    """`text_values` of an element's value bytes."""
    if not raw:
        return []
    if vr in _STRING_VRS or vr == "UR":
        text = to_text(raw, vr, codecs)
        if not text:
            return []
        return [text] if vr in _SINGLE_VRS else text.split("\\")
    return [raw]


def _digit(haystack: AnyStr, at: int) -> bool:
    """Whether position ``at`` holds a digit (``False`` outside the haystack)."""
    return 0 <= at < len(haystack) and haystack[at : at + 1].isdigit()


def _allowed(haystack: AnyStr, at: int, stop: int, match: str) -> bool:
    """Whether the match ``haystack[at:stop]`` counts for a value matched as ``match``."""
    if match == "text":
        return True
    dot = b"." if isinstance(haystack, bytes) else "."
    touched_before = _digit(haystack, at - 1) or (at > 0 and haystack[at - 1 : at] == dot)
    if match == "time" and touched_before:  # the time part of a DT: YYYYMMDD before it
        date_start = at - 8
        touched_before = not (
            date_start >= 0
            and haystack[date_start:at].isdigit()
            and not _digit(haystack, date_start - 1)
        )
    touched_after = match != "date" and _digit(haystack, stop)
    return not touched_before and not touched_after


def hits(
    haystack: AnyStr, needle: AnyStr, match: str, start: int = 0, end: int | None = None
) -> Iterator[int]:
    """Every position of ``needle`` in ``haystack[start:end]`` where ``match`` allows it.

    ``match`` is ``text`` (anywhere), ``number`` (no digit, nor a ``.`` before, may touch it),
    ``date`` (a DA: nothing may come before it, digits may follow, as in a DT) or ``time`` (a
    TM: may follow the date of a DT, nothing may follow).
    """
    end = len(haystack) if end is None else end
    at = haystack.find(needle, start, end)
    while at != -1:
        if _allowed(haystack, at, at + len(needle), match):
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


def _descend(level: _Level, offset: int, prefix: str, meta: bool) -> Place | None:
    """The place of ``offset`` in ``level`` and the items below it (`Output.place_at`)."""
    key: tuple[int, ...] = ()
    keywords: tuple[str, ...] = ()
    while True:
        i = level.find(offset)
        if i == -1:
            return None
        elem = level.elements[i]
        keyword = keyword_of(elem.tag)
        where = label(prefix, elem.tag, keyword)
        key, keywords = (*key, elem.tag), (*keywords, keyword)
        if elem.items is None:
            return Place(where, key, keywords, meta)
        items = level.item_levels(i)
        lows = [item.starts[0] if item.starts else level.starts[i] for item in items]
        j = bisect.bisect_right(lows, offset) - 1
        if j < 0:
            return None
        level, prefix = items[j], f"{where}[{j}]>"


#: The places of offsets in short top-level elements (`Output._top_key`), across outputs.
_PLACES: dict[tuple[Any, ...], Place | None] = {}
_MAX_PLACES = 16384
_PLACED_BYTES = 2048
#: `Output.method_codes` by the encoding and bytes of the sequence.
_CODES: dict[tuple[Any, ...], list[str]] = {}
_MISSING = object()


class _Built:
    """The top-level elements of a walked tree, built when first read (see `_Level.top`)."""

    def __init__(self, tree: Tree) -> None:
        self.tree, self.tags, self.rest = tree, list(tree.entries()), tree.rest()
        self.built: dict[int, Element] = {}

    def __getitem__(self, i: int) -> Element:
        if i >= len(self.tags):
            return self.rest[i - len(self.tags)]
        elem = self.built.get(i)
        if elem is None:
            elem = self.built[i] = cast(Element, self.tree.get(self.tags[i]))
        return elem


class _Level:
    """The elements of one data set or item, by where their values start (an element whose
    offset is not known gets the bytes between its neighbours)."""

    def __init__(self, elements: list[Element], low: int, high: int) -> None:
        self.elements: list[Element] | _Built = elements
        self.items: dict[int, list[_Level]] = {}
        self.starts: list[int] = [e.start for e in elements]
        self.ends: list[int] = [e.end for e in elements]
        if UNKNOWN not in self.starts:  # every offset known: the spans as they are
            return
        self.starts, self.ends = [], []
        previous = low
        for i, elem in enumerate(elements):
            start, end = elem.start, elem.end
            if start == UNKNOWN:
                start = previous
                end = next((e.start for e in elements[i + 1 :] if e.start != UNKNOWN), high)
            previous = max(previous, end)
            self.starts.append(start)
            self.ends.append(end)

    @classmethod
    def top(cls, tree: Tree) -> _Level:
        """The top level of a tree from the walker, its elements built one by one when a
        value is placed in them (a clean output places few)."""
        level = cls([], 0, 0)
        shift, rest = tree.shift, tree.rest()
        entries = tree.entries()
        level.elements = _Built(tree)
        level.starts = [vpos + shift for _, vpos, _ in entries.values()]
        level.ends = [vpos + shift + length for _, vpos, length in entries.values()]
        level.starts.extend(e.start for e in rest)
        level.ends.extend(e.end for e in rest)
        return level

    def find(self, offset: int) -> int:
        """The index of the element whose span holds ``offset``, or -1."""
        i = bisect.bisect_right(self.starts, offset) - 1
        return i if i >= 0 and offset < self.ends[i] else -1

    def item_levels(self, i: int) -> list[_Level]:
        found = self.items.get(i)
        if found is None:
            start, end = self.starts[i], self.ends[i]
            items = self.elements[i].items or ()
            found = self.items[i] = [_Level(item, start, end) for item in items]
        return found


class Output:
    """A de-identified object as shared, ready to be searched.

    Parameters
    ----------
    raw : bytes
        Its Part 10 bytes.
    """

    def __init__(self, raw: bytes, *, walker: bool = True) -> None:
        tree = None
        if walker:
            try:
                tree = read_tree(raw)
            except Exception:  # noqa: BLE001 - bytes the walker refuses: pydicom's reading
                pass
        if tree is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = tree_of(pydicom.dcmread(io.BytesIO(raw), force=True), raw)
        self.tree = tree
        self.data = tree.data
        self.low = tree.data.lower()  # ASCII letters only: offsets stay the same
        self.start = tree.start
        self.preamble = tree.preamble
        self.pixels = len(self.data), len(self.data)
        for elem in tree.rest() if tree.walked else tree.elements:
            if elem.tag in _PIXEL_TAGS and elem.start != UNKNOWN:
                self.pixels = elem.start, elem.end
                break
        self._levels: tuple[_Level, _Level] | None = None  # made on the first `place_at`
        self._texts: list[tuple[Place, str]] | None = None
        self._bulk: dict[bytes, list[int]] = {}
        self._indexed: frozenset[bytes] = frozenset()  # the forms `index` was given
        self._found: dict[bytes, list[int] | None] = {}

    @classmethod
    def of(cls, deidentified: Dataset | str | Path, *, walker: bool = True) -> Output:
        """The output of a file, or of a data set as it would be written (``walker=False``:
        its tree read by pydicom, not by the header walker)."""
        if isinstance(deidentified, Dataset):
            return cls(_encode(deidentified), walker=walker)
        with open(deidentified, "rb") as f:
            return cls(f.read(), walker=walker)

    def value(self, tag: int) -> str:
        """The text of a top-level element ('' when absent)."""
        elem = self.tree.get(tag)
        if elem is None:
            return ""
        values = text_values(self.tree, elem, ["iso8859"])
        return "\\".join(str(v) for v in values)

    def method_codes(self) -> list[str]:
        """The Code Values of the De-identification Method Code Sequence (0012,0064)."""
        tree = self.tree
        if not tree.walked:
            return self._method_codes()
        entry = tree.entries().get(0x00120064)
        if entry is None:
            return []
        start = entry[1] + tree.shift
        key = (entry[0], self.data[start - 4 : start + entry[2]], tree.encoding())
        codes = _CODES.get(key)  # the outputs of a run share their sequence
        if codes is None:
            if len(_CODES) >= 256:
                _CODES.clear()
            codes = _CODES[key] = self._method_codes()
        return list(codes)

    def _method_codes(self) -> list[str]:
        elem = self.tree.get(0x00120064)
        codes = []
        for item in (elem.items or ()) if elem is not None else ():
            for inner in item:
                if inner.tag == 0x00080100:
                    values = text_values(self.tree, inner, ["iso8859"])
                    codes.append(str(values[0]).strip() if values else "")
        return codes

    def may_hold(self, form: bytes) -> bool:
        """Whether `search` can find ``form`` at all (its bytes are somewhere it looks, whatever
        the match rule): most values of a clean output are nowhere, and are settled so."""
        if form in self._indexed:
            return form in self._found
        low = self.low
        start, end = self.pixels
        if low.find(form, 0, start) != -1 or low.find(form, end) != -1:
            return True
        if len(form) < BULK_MIN_BYTES:
            return False
        found = self._bulk.get(form)
        return low.find(form, start, end) != -1 if found is None else bool(found)

    def search(self, form: bytes, match: str) -> Iterator[int]:
        """Offsets of ``form`` (lowered) in the output; inside pixel data only when it is at
        least `BULK_MIN_BYTES` long (from `index_pixels`, when it was given the form)."""
        if form in self._indexed:
            offsets = self._found.get(form, [])
            if offsets is not None:
                low, size = self.low, len(form)
                yield from (at for at in offsets if _allowed(low, at, at + size, match))
                return
        start, end = self.pixels
        yield from hits(self.low, form, match, 0, start)
        if len(form) >= BULK_MIN_BYTES:
            found = self._bulk.get(form)
            if found is None:
                yield from hits(self.low, form, match, start, end)
            else:
                yield from (at for at in found if _allowed(self.low, at, at + len(form), match))
        yield from hits(self.low, form, match, end)

    def index(self, forms: list[bytes]) -> None:
        """Find every form everywhere `search` looks, in one pass over the bytes (the compiled
        core's ``find_forms``; `may_hold` and `search` then look the forms up); without the
        compiled core, `index_pixels`."""
        if _find_forms is None:
            self.index_pixels(forms)
            return
        given = [f for f in forms if len(f) >= 2]
        start, end = self.pixels
        self._found = _find_forms(self.low, given, start, end, BULK_MIN_BYTES, _MAX_OFFSETS)
        self._indexed = frozenset(given)

    def index_pixels(self, forms: Iterable[bytes]) -> None:
        """Find every long form inside the pixel data in one pass (a search per form would read
        megabytes each time): the positions whose first two bytes begin some form are found
        with numpy, then each is compared with the forms that begin so."""
        start, end = self.pixels
        if end - start < _PIXELS_SCANNED:
            return  # small pixel data: searched with the rest (``forms`` is not even read)
        forms = [f for f in dict.fromkeys(forms) if len(f) >= BULK_MIN_BYTES]
        if not forms:
            return
        import numpy as np

        by_prefix: dict[int, list[bytes]] = {}
        table = np.zeros(65536, dtype=bool)
        for form in forms:
            key = form[0] | form[1] << 8
            table[key] = True
            by_prefix.setdefault(key, []).append(form)
        pixels = np.frombuffer(self.low, np.uint8, count=end - start, offset=start)
        even, odd = (len(pixels) // 2) * 2, ((len(pixels) - 1) // 2) * 2
        candidates = np.concatenate(  # little-endian pairs: first byte + 256 * second
            [
                np.flatnonzero(table[pixels[:even].view("<u2")]) * 2,
                np.flatnonzero(table[pixels[1 : 1 + odd].view("<u2")]) * 2 + 1,
            ]
        )
        if len(candidates) > _MAX_CANDIDATES:
            return  # text-like pixel data: one search per form is faster then
        found: dict[bytes, list[int]] = {form: [] for form in forms}
        low = self.low
        for offset in sorted(candidates.tolist()):
            at = start + offset
            for form in by_prefix[low[at] | low[at + 1] << 8]:
                if low.startswith(form, at) and at + len(form) <= end:
                    found[form].append(at)
        self._bulk = found

    def place_at(self, offset: int) -> Place | None:
        """The element whose value holds byte ``offset``; ``None`` outside every value."""
        meta = offset < self.start
        if self._levels is None:
            tree = self.tree
            self._levels = (
                _Level(tree.meta, 132 if tree.preamble else 0, tree.start),
                _Level.top(tree)
                if tree.walked
                else _Level(tree.elements, tree.start, len(self.data)),
            )
        if meta:
            return _descend(self._levels[0], offset, "File Meta ", True)
        level = self._levels[1]
        memo = self._top_key(level, offset)
        if memo is None:
            return _descend(level, offset, "", False)
        place = _PLACES.get(memo, _MISSING)
        if place is _MISSING:
            place = _descend(level, offset, "", False)
            if len(_PLACES) >= _MAX_PLACES:
                _PLACES.clear()
            _PLACES[memo] = place
        return cast(Place | None, place)

    def _top_key(self, level: _Level, offset: int) -> tuple[Any, ...] | None:
        """What the place of ``offset`` depends on, when it is in a short top-level element
        of a walked tree: the element's tag, encoding and bytes, and the offset in them (a
        series repeats the elements, and the values kept in them are found at the same
        offsets)."""
        elements = level.elements
        if not isinstance(elements, _Built):
            return None
        i = level.find(offset)
        if not 0 <= i < len(elements.tags):
            return None
        tree = self.tree
        tag = elements.tags[i]
        raw_vr, vpos, length = tree.entries()[tag]
        if length > _PLACED_BYTES:
            return None
        start = vpos + tree.shift
        data = self.data
        return (tag, raw_vr, data[start - 4 : start], data[start : start + length],
                tree.encoding(), offset - start)  # fmt: skip

    def outside(self, offset: int) -> str:
        """Where a byte outside every element value is."""
        if self.preamble and offset < 128:
            return "preamble"
        return "bytes outside any element value"

    def texts(self, codecs: list[str]) -> list[tuple[Place, str]]:
        """Every text value of the output, decoded and case-folded, with its place (made once,
        for values whose encoded forms were not found)."""
        if self._texts is None:
            self._texts = []
            self._collect(self.tree.elements, (), (), "", codecs, self._texts)
        return self._texts

    def _collect(
        self,
        elements: list[Element],
        key: tuple[int, ...],
        keywords: tuple[str, ...],
        prefix: str,
        codecs: list[str],
        out: list[tuple[Place, str]],
    ) -> None:
        for elem in elements:
            keyword = keyword_of(elem.tag)
            where = label(prefix, elem.tag, keyword)
            path, names = (*key, elem.tag), (*keywords, keyword)
            if elem.items is not None:
                for n, item in enumerate(elem.items):
                    self._collect(item, path, names, f"{where}[{n}]>", codecs, out)
            elif elem.vr in _STRING_VRS or elem.tag >> 16 & 1:
                values = text_values(self.tree, elem, codecs)
                text = "\\".join(str(v) for v in values if not isinstance(v, bytes))
                if text:
                    out.append((Place(where, path, names), text.casefold()))
