"""What the verifier searches for: every identifying value of an original, and where the
profile keeps what.

`Collector` walks the original's element tree with the engine's rules (Table E.1-1 with the
Options, the IOD Types of compound codes, the defaults for unlisted attributes, Retain Safe
Private, Clean Structured Content) and gathers every value the profile does not keep, with the
attribute it came from and its class (strong or weak, see `verify`); the elements the profile
keeps are remembered by their tag path, not decoded, so that a value found in the output can be
checked against what the original held in the same attribute.
"""

from __future__ import annotations

import io
import itertools
import re
import warnings
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from ..dicom import compiled_core
from ._keys import DICOM_UID_ROOT
from ._options import DeidOptions
from ._policy import CURVE_GROUPS, DATE_VRS, KEEP_REFS, TEXT_VRS, policy_for, resolve
from ._structured import STRUCTURED_SEQUENCES, content_overrides
from ._tables import iod_for_sop_class, iod_types, safe_private
from ._verify_output import keyword_of, label, raw_values, text_values
from ._verify_tree import UNKNOWN, Element, Tree, element_vr, read_tree, tree_of

__all__ = ["DEFAULT_CODECS", "Collector", "Searched", "codecs_of", "extended", "source_tree"]

_NUMERIC = re.compile(r"[0-9.+\- ]+")
#: Printable ASCII, tab and line breaks, and the printable Latin-1 range.
_PRINTABLE = bytes(range(0x20, 0x7F)) + b"\t\r\n" + bytes(range(0xA0, 0x100))
_ASCII = bytes(range(0x20, 0x7F))
#: Longest binary private/UN value examined for text (longer ones are data, not text).
MAX_BINARY_TEXT = 65536
_STRING_VRS = TEXT_VRS | DATE_VRS | {"CS", "UI", "DS", "IS"}
_META_IDENTIFYING = (
    "MediaStorageSOPInstanceUID",
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
    "SourcePresentationAddress",
    "SendingPresentationAddress",
    "ReceivingPresentationAddress",
    "PrivateInformationCreatorUID",
    "PrivateInformation",
)
#: VRs whose every value identifies: person names, UIDs, dates and datetimes, AE titles.
_STRONG_VRS = frozenset({"PN", "UI", "DA", "DT", "AE"})
#: Words of the keywords (of an attribute, or of a sequence around it) that identify: patient
#: and other IDs, accession numbers, addresses and telephone numbers, institutions and their
#: departments, stations, devices and person identification codes.
_STRONG_WORDS = (
    "PatientID",
    "AccessionNumber",
    "AdmissionID",
    "MedicalRecordLocator",
    "Address",
    "Telephone",
    "Institution",
    "Department",
    "StationName",
    "SerialNumber",
    "DeviceID",
    "DetectorID",
    "PersonIdentification",
)
#: Words of the keywords whose single-word values are also ordinary words (a name part such as
#: "Test" or "Knee", an institution named "TOSHIBA"): see `_word`.
_WORDY = ("Institution", "Department", "StationName")
#: Keywords of the parts of a code that say how it is coded, not what it is: weak even in a
#: code sequence that identifies.
_CODING = ("Coding", "Context", "Mapping", "TypeOf")
_WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")


def _values(value: Any) -> list[Any]:
    if value is None or value == "" or value == b"":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


#: Binary numbers (not text: never searched).
_BINARY_NUMBERS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT"})


def _kind(text: str) -> tuple[str, str]:
    return text, "number" if _NUMERIC.fullmatch(text) else "text"


def _strings(vr: str, values: list[Any], private: bool) -> Iterator[tuple[str, str]]:
    """The searchable forms of a non-sequence element's values, with how to match each:
    ``text``, ``number`` (no digit may touch it), ``date`` (a DA: digits may follow, as in a
    DT) or ``time`` (a TM: may follow the date of a DT)."""
    for value in values:
        if isinstance(value, bytes):
            if not (private or vr == "UN") or len(value) > MAX_BINARY_TEXT:
                continue  # binary numbers and pixel-like data are not distinctive
            body = value.rstrip(b"\0 ")
            if len(body.translate(None, _PRINTABLE)) > 0.1 * len(body):
                continue  # not text
            if len(body.translate(None, _ASCII)) > 0.5 * len(body):
                continue  # mostly high bytes: binary (a delimiter's FE FF DD E0), not text
            text = value.decode("latin-1")
            for part in text.split("\\"):
                yield _kind(part.strip("\0 "))
            continue
        if vr not in _STRING_VRS and not private:
            continue
        text = str(value).strip("\0 ")
        if vr == "DA" and len(text) == 8 and text.isdigit():
            yield text, "date"
            yield f"{text[:4]}-{text[4:6]}-{text[6:]}", "number"
            yield f"{text[:4]}.{text[4:6]}.{text[6:]}", "number"
            continue
        if vr == "TM":
            yield text, "time"
            yield text.split(".")[0], "time"
            continue
        yield _kind(text)
        if vr == "PN":
            yield from (_kind(p.strip()) for p in re.split(r"[\^=]", text))
        elif vr == "DT" and text[:8].isdigit():
            yield text[:8], "date"


#: Values up to this long have their searchable forms cached (a series repeats most of them).
_CACHED_BYTES = 1024


@lru_cache(maxsize=32768)
def _cached_strings(
    vr: str, raw: bytes, codecs: tuple[str, ...], private: bool
) -> tuple[tuple[str, str, bool], ...]:
    return _searchable(_strings(vr, raw_values(raw, vr, codecs), private))


def _searchable(strings: Iterable[tuple[str, str]]) -> tuple[tuple[str, str, bool], ...]:
    """The strings searched (empty ones and registered DICOM UIDs, which identify no one,
    left out), with whether each has the shape of a single word (see `_word`)."""
    return tuple(
        (text, match, _WORD.fullmatch(text) is not None)
        for text, match in strings
        if text and not text.startswith(DICOM_UID_ROOT)
    )


@lru_cache(maxsize=4096)
def _strong(vr: str, keywords: tuple[str, ...]) -> bool:
    """Whether a value of this VR, in the attribute at the end of ``keywords`` (the sequences
    around it before), identifies on its own wherever it is found."""
    if vr in _STRONG_VRS:
        return True
    own = keywords[-1] if keywords else ""
    if own.startswith(_CODING):
        return False
    return any(w in k for k in keywords if k for w in _STRONG_WORDS)


@lru_cache(maxsize=4096)
def _classes(vr: str, keywords: tuple[str, ...]) -> tuple[bool, bool]:
    """`_strong` and `_wordy` of one attribute, in one look-up."""
    return _strong(vr, keywords), _wordy(vr, keywords)


def _word(text: str, vr: str, keywords: tuple[str, ...]) -> bool:
    """Whether a strong value is a single word that is also an ordinary word: a part of a
    person name, or a one-word institution, department or station name. Such a value found
    only where the original already held it, in an attribute the profile keeps, is reported as
    kept (a patient called "Knee" scanned with a coil named "KNEE"); two parts of one name
    there, or any other strong value, are a leak."""
    return _wordy(vr, keywords) and _WORD.fullmatch(text) is not None


@lru_cache(maxsize=4096)
def _wordy(vr: str, keywords: tuple[str, ...]) -> bool:
    return vr == "PN" or any(w in k for k in keywords if k for w in _WORDY)


_NO_NAME: frozenset[int] = frozenset()
#: The Basic Profile without Options (made once: the options of most outputs).
_BASIC = DeidOptions()


#: `IodTypes.present_modules` by (IOD, top-level tags): a series has the same tags.
_PRESENT: dict[tuple[int, tuple[int, ...]], tuple[tuple[Any, ...], frozenset[str]]] = {}


def _present(types: Any, tree: Tree) -> frozenset[str]:
    tags = tuple(tree.tags())

    def make() -> frozenset[str]:
        return cast(frozenset[str], types.present_modules(set(tags)))

    return cast(frozenset[str], _by_rules(_PRESENT, (id(types), tags), (types,), make, 1024))


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


#: What the verifier remembers of a kept original element: the bytes its value is in, its span
#: there (`UNKNOWN` when not known), VR, values already decoded (or ``None``), and codecs.
Held = tuple[bytes, int, int, str, list[Any] | None, tuple[str, ...]]


@dataclass(slots=True)
class Searched:
    """One identifying value of the original, and what it came from: ``strong`` or weak, kept
    on purpose (``deliberate``), a single ordinary ``word`` (see `_word`), and the person names
    it is a part of (``names``: numbers shared by the parts of one name)."""

    attribute: str
    match: str
    strong: bool
    deliberate: bool
    word: bool
    names: frozenset[int]


@lru_cache(maxsize=64)
def _python_codecs(terms: tuple[str, ...]) -> tuple[str, ...]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return tuple(convert_encodings(list(terms)))
        except Exception:  # noqa: BLE001 - an unknown character set: pydicom's default
            return tuple(convert_encodings(None))


DEFAULT_CODECS = _python_codecs(("ISO_IR 6",))


def _charset_terms(tree: Tree, elements: list[Element]) -> tuple[str, ...] | None:
    """The terms of a level's Specific Character Set (0008,0005), ``None`` without one."""
    for elem in elements:
        if elem.tag > 0x00080005:
            break
        if elem.tag == 0x00080005:
            values = text_values(tree, elem, ["iso8859"])
            return tuple(str(v).strip() for v in values)
    return None


def _top_charset(tree: Tree) -> tuple[str, ...] | None:
    """`_charset_terms` of the top level (building only the elements it reads)."""
    if not tree.walked:
        return _charset_terms(tree, tree.elements)
    for tag in tree.entries():
        if tag > 0x00080005:
            break
        if tag == 0x00080005:
            elem = tree.get(tag)
            return _charset_terms(tree, [elem]) if elem is not None else None
    return None


def _level_codecs(
    tree: Tree, elements: list[Element], inherited: tuple[str, ...]
) -> tuple[str, ...]:
    """The codecs of a data set's text: its own Specific Character Set, else its parent's."""
    terms = _charset_terms(tree, elements)
    return _python_codecs(terms) if terms else inherited


def _content_item(tree: Tree, item: list[Element], codecs: list[str]) -> Dataset:
    """What `content_overrides` reads of a content item: its Value Type and concept name."""
    ds = Dataset()
    for elem in item:
        if elem.tag == 0x0040A040:
            values = text_values(tree, elem, codecs)
            ds.add_new(elem.tag, "CS", str(values[0]) if values else "")
        elif elem.tag == 0x0040A043 and elem.items:
            concept = Dataset()
            for inner in elem.items[0]:
                if inner.tag in (0x00080100, 0x00080102):
                    values = text_values(tree, inner, codecs)
                    concept.add_new(inner.tag, "SH", str(values[0]) if values else "")
            ds.add_new(elem.tag, "SQ", Sequence([concept]))
    return ds


class Collector:
    """Walks the original with the engine's rules: the values the profile does not keep are
    searched; where the profile keeps an attribute, the original element is remembered (by its
    tag path) without decoding it, to tell later whether the original held a value there."""

    def __init__(self, tree: Tree, options: DeidOptions, kept: frozenset[str]) -> None:
        self.tree = tree
        self.options = options
        self.policy = policy_for(options)
        self.safe = safe_private() if options.retain_safe_private else {}
        sop_class = tree.get(0x00080016)
        values = text_values(tree, sop_class, ["iso8859"]) if sop_class is not None else []
        self.types = iod_types(iod_for_sop_class(str(values[0]))) if values else None
        self.present = _present(self.types, tree) if self.types else frozenset()
        self.kept = kept
        self.values: dict[str, Searched] = {}
        self.held: dict[tuple[int, ...], list[Held]] = {}
        self.parts: list[_Part] | None = None  # `collect`'s parts, in order (`walk`: None)
        self._index: dict[int, _Part] | None = None  # `_parts_of`
        self._valued: list[dict[str, Searched]] | None = None  # `searched`
        # attributes an Option keeps that the Basic Profile would not (Retain Device Identity's
        # Station Name...): kept by the user's choice, like a recipe's
        self.basic = policy_for(_BASIC) if options != _BASIC else None
        self.chosen: set[tuple[int, ...]] = set()
        self.decisions = _decisions(self.policy, self.types, self.present)

    def deliberate(self, key: tuple[int, ...], keywords: tuple[str, ...]) -> bool:
        """Whether the attribute (or a sequence around it) is kept on purpose."""
        if not self.kept:
            return False
        return any(k in self.kept for k in keywords if k) or any(
            _tag_text(t) in self.kept for t in key
        )

    def hold(self, elem: Element, key: tuple[int, ...], codecs: tuple[str, ...]) -> None:
        held = (self.tree.data, elem.start, elem.end, elem.vr, elem.decoded, codecs)
        self.held.setdefault(key, []).append(held)

    def holds(self, key: tuple[int, ...], folded: str, forms: Collection[bytes]) -> bool:
        """Whether a kept original element at ``key`` held the value."""
        entries: list[Held] = self.held.get(key, [])
        if self.parts is not None and key:
            for part in self._parts_of(key[0]):
                entries = entries + part.held.get(key, [])
        for data, start, end, vr, decoded, codecs in entries:
            if decoded is None:
                raw = data[start:end] if start != UNKNOWN else None
                decoded = raw_values(raw, vr, codecs)
            for value in decoded:
                if isinstance(value, bytes):
                    low = value.lower()
                    if any(form in low for form in forms):
                        return True
                elif folded in str(value).casefold():
                    return True
        return False

    def add(
        self,
        elem: Element,
        where: str,
        key: tuple[int, ...],
        keywords: tuple[str, ...],
        codecs: tuple[str, ...],
        *,
        private: bool = False,
        any_vr: bool = False,
    ) -> None:
        """Search the values of ``elem``: ``private`` (a private attribute: weak, its bytes
        read as text when they are text) or ``any_vr`` (inside a removed sequence: text bytes
        too). Binary numbers are never searched: they are not text."""
        vr = elem.vr
        if vr in _BINARY_NUMBERS:
            return
        strong_vr, wordy_vr = _classes(vr, keywords)
        strong = not private and strong_vr
        deliberate = bool(self.kept) and self.deliberate(key, keywords)
        if deliberate:
            self.hold(elem, key, codecs)
        name = _NO_NAME
        if vr == "PN":  # numbered for the whole process: parts of one name share the number
            name = frozenset((next(_NAME_NUMBERS),))
        start = elem.start
        if elem.decoded is None and start != UNKNOWN and elem.end - start <= _CACHED_BYTES:
            raw = self.tree.data[start : elem.end]
            strings = _cached_strings(vr, raw, codecs, private or any_vr)
        else:
            values = text_values(self.tree, elem, list(codecs))
            strings = _searchable(_strings(vr, values, private or any_vr))
        wordy = strong and wordy_vr  # see `_word`
        merge = self._merge
        for text, match, one_word in strings:
            merge(text, where, match, strong, deliberate, wordy and one_word, name)

    def _merge(
        self,
        text: str,
        where: str,
        match: str,
        strong: bool,
        deliberate: bool,
        word: bool,
        name: frozenset[int],
    ) -> None:
        found = self.values.get(text)
        if found is None:
            self.values[text] = Searched(where, match, strong, deliberate, word, name)
        else:
            _merged(found, where, strong, deliberate, word, name)

    def texts(self) -> Iterable[str]:
        """The values to search, in the order they were first seen."""
        if self.parts is None:
            return self.values
        return dict.fromkeys(itertools.chain.from_iterable(p.values for p in self.parts))

    def searched(self, text: str) -> Searched:
        """What is known of a value (one of `texts`): its occurrences merged in order."""
        found = self.values.get(text)
        if found is not None or self.parts is None:
            return self.values[text]
        if self._valued is None:
            self._valued = [p.values for p in self.parts if p.values]
        occurrences = [v for values in self._valued if (v := values.get(text)) is not None]
        if not occurrences:
            raise KeyError(text)
        first = occurrences[0]
        found = Searched(first.attribute, first.match, first.strong, first.deliberate,
                         first.word, first.names)  # fmt: skip
        for value in occurrences[1:]:
            _merged(found, value.attribute, value.strong, value.deliberate, value.word,
                    value.names)  # fmt: skip
        self.values[text] = found
        return found

    def chosen_by_option(self, key: tuple[int, ...]) -> bool:
        """Whether only a chosen Option keeps the attribute at ``key`` (see ``chosen``)."""
        if key in self.chosen:
            return True
        return bool(key) and any(key in part.chosen for part in self._parts_of(key[0]))

    def _parts_of(self, tag: int) -> list[_Part]:
        """The parts of the top-level elements with this tag (`collect`)."""
        if self.parts is None:
            return []
        if self._index is None:  # parts[0] is the File Meta's, then one per entry, then the rest
            self._index = dict(zip(self.tree.entries(), self.parts[1:], strict=False))
        found = self._index.get(tag)
        rest = [p for p in self.parts[1 + len(self._index) :] if p.tag == tag]
        return [found, *rest] if found is not None else rest

    def everything(
        self,
        elements: list[Element],
        prefix: str,
        path: tuple[int, ...],
        names: tuple[str, ...],
        codecs: tuple[str, ...],
    ) -> None:
        """Every value inside a removed sequence is identifying."""
        codecs = _level_codecs(self.tree, elements, codecs)
        for elem in elements:
            tag = elem.tag
            keyword = keyword_of(tag)
            where = label(prefix, tag, keyword)
            key, keywords = (*path, tag), (*names, keyword)
            if elem.items is not None:
                for i, item in enumerate(elem.items):
                    self.everything(item, f"{where}[{i}]>", key, keywords, codecs)
            else:
                private = bool(tag >> 16 & 1)
                self.add(elem, where, key, keywords, codecs, private=private, any_vr=True)

    def walk(
        self,
        elements: list[Element],
        path: tuple[int, ...],
        prefix: str,
        names: tuple[str, ...],
        codecs: tuple[str, ...],
        overrides: dict[int, str] | None = None,
    ) -> None:
        codecs = _level_codecs(self.tree, elements, codecs)
        creators: dict[tuple[int, int], str] = {}
        decisions = None if overrides else self.decisions
        for elem in elements:
            self._one(elem, path, prefix, names, codecs, creators, decisions, overrides)

    def _one(
        self,
        elem: Element,
        path: tuple[int, ...],
        prefix: str,
        names: tuple[str, ...],
        codecs: tuple[str, ...],
        creators: dict[tuple[int, int], str],
        decisions: dict[tuple[tuple[int, ...], str], tuple[str, bool]] | None,
        overrides: dict[int, str] | None,
    ) -> None:
        """One element of a level (`walk`)."""
        tag = elem.tag
        key = (*path, tag)
        if tag >> 16 & 1:
            self._private(elem, key, prefix, names, creators, codecs)
            return
        decided = decisions.get((key, elem.vr)) if decisions is not None else None
        if decided is None:
            decided = self._decide(tag, path, elem.vr, overrides)
            if decisions is not None and len(decisions) < _MAX_DECISIONS:
                decisions[(key, elem.vr)] = decided
        code, keeps = decided
        if keeps and elem.items is None:
            self.hold(elem, key, codecs)  # kept: decoded only if a value is found in it
            if self.basic is not None:
                self._by_option(tag, path, elem.vr)
            if self.kept and self.deliberate(key, (*names, keyword_of(tag))):
                keyword = keyword_of(tag)
                self.add(elem, label(prefix, tag, keyword), key, (*names, keyword), codecs)
            return
        keyword = keyword_of(tag)
        where = label(prefix, tag, keyword)
        keywords = (*names, keyword)
        if elem.items is not None:
            if code in ("X", "Z") or (
                code == "D" and (keyword.endswith("CodeSequence") or tag == 0x0040A300)
            ):
                self.everything_in(elem, where, key, keywords, codecs)
            else:
                self._items(elem, key, where, keywords, codecs)
            return
        if code == "C" and elem.vr == "DT":  # a shifted DT keeps its time of day
            self.hold(elem, key, codecs)
        self.add(elem, where, key, keywords, codecs)

    def collect(self) -> None:
        """`meta`, then `walk` the original's top level, each element a `_Part` remembered
        across the originals of a run (`_parts_memo`).

        A series repeats most elements byte for byte: what an element contributes (its values
        to search, the kept elements remembered, the attributes an Option keeps) depends only
        on its tag, encoding and bytes, the private creator of its block, the level's character
        set and the rules (options, IOD, the modules present, ``kept``). Each distinct element
        is walked once, on a collector of its own; `texts`, `searched` and `holds` read the
        parts in order, which gives what `walk` gives (tested on the corpus), and the elements
        of a repeated one are not even built.
        """
        tree = self.tree
        if not tree.walked:  # a tree from pydicom: walked as it is
            self.meta()
            self.walk(tree.elements, (), "", (), DEFAULT_CODECS)
            return
        meta = self._part(None, DEFAULT_CODECS, {}, copy=False)
        terms = _top_charset(tree)
        codecs = _python_codecs(terms) if terms else DEFAULT_CODECS
        memo = _parts_memo(self, codecs, tree.encoding())
        entries = tree.entries()
        keys = _element_keys(tree.data, entries, tree.shift, _MEMO_BYTES)
        recent = memo.recent
        found = [recent.get(key) if key is not None else None for key in keys]
        if None in found:  # new elements (and long ones): walked, in order
            creators: dict[tuple[int, int], str] = {}
            for i, (tag, entry) in enumerate(entries.items()):
                part, key = found[i], keys[i]
                if part is None and key is not None:
                    part = memo.older(key)
                if part is None:
                    part = self._part(
                        self._built(tag, entry), codecs, creators, copy=key is not None
                    )
                    if key is not None:
                        memo.put(key, part)
                    found[i] = part
                elif part.creator is not None:  # a private creator: names its block
                    creators[(tag >> 16, tag & 0xFFFF)] = part.creator
        elif any(e.tag >> 16 & 1 for e in tree.rest()):  # all seen before: the creators only
            creators = {  # for the private elements after Pixel Data
                (p.tag >> 16, p.tag & 0xFFFF): p.creator
                for p in found
                if p is not None and p.tag is not None and p.creator is not None
            }
        else:
            creators = {}
        parts = self.parts = [meta, *cast(list[_Part], found)]
        for elem in tree.rest():
            parts.append(self._part(elem, codecs, creators, copy=False))

    def _built(self, tag: int, entry: tuple[bytes | None, int, int]) -> Element:
        """The element of a top-level entry (items built for a sequence)."""
        raw_vr, vpos, length = entry
        vr = element_vr(tag, raw_vr)
        if vr == "SQ" or vr == "UN":
            return self.tree.build({tag: entry})[0]
        start = vpos + self.tree.shift
        return Element(tag, vr, start, start + length)

    def _part(
        self,
        elem: Element | None,
        codecs: tuple[str, ...],
        creators: dict[tuple[int, int], str],
        *,
        copy: bool,
    ) -> _Part:
        """What one top-level element adds (``None``: the File Meta Information), found by
        this collector with empty ``values``, ``held`` and ``chosen`` (put back after);
        ``copy``: its kept values copied out of this object's bytes (a part remembered for
        other objects)."""
        saved = self.values, self.held, self.chosen
        self.values, self.held, self.chosen = {}, {}, set()
        try:
            if elem is None:
                self.meta()
            else:
                self._one(elem, (), "", (), codecs, creators, self.decisions, None)
            values, held, chosen = self.values, self.held, self.chosen
        finally:
            self.values, self.held, self.chosen = saved
        if elem is None:
            return _Part(None, values, held, frozenset())
        if copy and held:
            held = {
                key: [
                    (data[start:end], 0, end - start, vr, decoded, held_codecs)
                    if start != UNKNOWN
                    else (b"", UNKNOWN, UNKNOWN, vr, decoded, held_codecs)
                    for data, start, end, vr, decoded, held_codecs in entries
                ]
                for key, entries in held.items()
            }
        tag, creator = elem.tag, None
        if tag >> 16 & 1 and 0x10 <= tag & 0xFFFF <= 0xFF:
            creator = creators.get((tag >> 16, tag & 0xFFFF))
        return _Part(tag, values, held, frozenset(chosen), creator)

    def _private(
        self,
        elem: Element,
        key: tuple[int, ...],
        prefix: str,
        names: tuple[str, ...],
        creators: dict[tuple[int, int], str],
        codecs: tuple[str, ...],
    ) -> None:
        tag = elem.tag
        group, number = tag >> 16, tag & 0xFFFF
        where = label(prefix, tag, "")
        keywords = (*names, "")
        if 0x10 <= number <= 0xFF:
            values = text_values(self.tree, elem, list(codecs))
            value = values[0] if values else ""
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            creators[(group, number)] = str(value).strip("\0 ")
            self.hold(elem, key, codecs)
            return
        creator = creators.get((group, number >> 8))
        if (group, creator, number & 0xFF) in self.safe:
            if elem.items is not None:
                self._items(elem, key, where, keywords, codecs)
            else:
                self.hold(elem, key, codecs)
                if self.deliberate(key, keywords):
                    self.add(elem, where, key, keywords, codecs, private=True)
        elif elem.items is not None:
            self.everything_in(elem, where, key, keywords, codecs)
        else:
            self.add(elem, where, key, keywords, codecs, private=True)

    def _decide(
        self, tag: int, path: tuple[int, ...], vr: str, overrides: dict[int, str] | None
    ) -> tuple[str, bool]:
        """The code of a public attribute at ``path`` (resolved), and whether the profile
        keeps its value as it is."""
        policy = self.policy
        code = (overrides and overrides.get(tag)) or policy.codes.get(tag) or policy.code(tag)
        if len(code) > 1 or code == "T":
            code = resolve(code, tag, path, self.types, self.present)
        return code, self._keeps(code, tag, vr)

    def _keeps(self, code: str, tag: int, vr: str) -> bool:
        return code in ("K", KEEP_REFS) or self._clean_keeps(code, tag, vr)

    def _by_option(self, tag: int, path: tuple[int, ...], vr: str) -> None:
        """Note a kept attribute that only a chosen Option keeps."""
        if self.basic is None:
            return
        code = self.basic.code(tag)
        if len(code) > 1 or code == "T":
            code = resolve(code, tag, path, self.types, self.present)
        if not self._keeps(code, tag, vr):
            self.chosen.add((*path, tag))

    def _clean_keeps(self, code: str, tag: int, vr: str) -> bool:
        """Whether action C keeps this value as it is (see `Deidentifier._clean`)."""
        if code != "C":
            return False
        return vr in ("TM", "CS") or (tag >> 16 in CURVE_GROUPS and vr not in TEXT_VRS)

    def everything_in(
        self,
        elem: Element,
        where: str,
        key: tuple[int, ...],
        names: tuple[str, ...],
        codecs: tuple[str, ...],
    ) -> None:
        for i, item in enumerate(elem.items or ()):
            self.everything(item, f"{where}[{i}]>", key, names, codecs)

    def _items(
        self,
        elem: Element,
        path: tuple[int, ...],
        where: str,
        names: tuple[str, ...],
        codecs: tuple[str, ...],
    ) -> None:
        structured = self.options.clean_structured_content and path[-1] in STRUCTURED_SEQUENCES
        for i, item in enumerate(elem.items or ()):
            overrides = None
            if structured:
                content = _content_item(self.tree, item, list(codecs))
                overrides = content_overrides(content, self.options)
                if overrides is None:
                    self.everything(item, f"{where}[{i}]>", path, names, codecs)
                    continue
            self.walk(item, path, f"{where}[{i}]>", names, codecs, overrides)

    def meta(self) -> None:
        """The identifying attributes of the original's File Meta Information."""
        for elem in self.tree.meta:
            keyword = keyword_of(elem.tag)
            if keyword not in _META_IDENTIFYING:
                continue
            if self.options.retain_uids and keyword == "MediaStorageSOPInstanceUID":
                continue
            where = f"File Meta {label('', elem.tag, keyword)}"
            any_vr = elem.vr in ("OB", "UN")
            self.add(elem, where, (elem.tag,), (keyword,), DEFAULT_CODECS, any_vr=any_vr)


#: The `Collector._decide` results of each (policy, IOD, modules present), by (key, VR).
_DECISION_TABLES: dict[tuple[int, int, frozenset[str]], tuple[tuple[Any, ...], Any]] = {}
_MAX_DECISIONS = 65536


def _decisions(
    policy: Any, types: Any, present: frozenset[str]
) -> dict[tuple[tuple[int, ...], str], tuple[str, bool]]:
    """The table of decisions shared by the originals with the same rules (a series)."""
    key = (id(policy), id(types), present)
    return _by_rules(_DECISION_TABLES, key, (policy, types), dict, 64)


def _by_rules(table: dict[Any, Any], key: Any, alive: tuple[Any, ...], make: Any, most: int) -> Any:
    """What ``table`` remembers for ``key`` (made by ``make()`` the first time), where ``key``
    holds the ids of the objects ``alive``: they are kept with it, so their ids stay theirs. A
    table of ``most`` entries is emptied before it grows."""
    found = table.get(key)
    if found is None or any(a is not b for a, b in zip(found[0], alive, strict=True)):
        if len(table) >= most:
            table.clear()
        found = table[key] = (alive, make())
    return found[1]


def _merged(
    found: Searched, where: str, strong: bool, deliberate: bool, word: bool, name: frozenset[int]
) -> None:
    """Merge one more occurrence into a value seen before: it keeps its first attribute and
    match, unless this is its first strong occurrence. Merging is associative: `Collector.searched`
    merges the occurrences merged within each part."""
    if strong and not found.strong:
        found.strong, found.attribute, found.word = True, where, word
    elif strong:
        found.word = found.word and word
    found.deliberate = found.deliberate or deliberate
    found.names = found.names | name


@dataclass(slots=True, eq=False)
class _Part:
    """What one top-level element contributes (its `Searched` values, held elements and
    attributes only an Option keeps), or the File Meta Information (``tag`` None); for a
    private creator, the creator it names. Not changed once made: shared by the objects of a
    run that hold the same element."""

    tag: int | None
    values: dict[str, Searched]
    held: dict[tuple[int, ...], list[Held]]
    chosen: frozenset[tuple[int, ...]]
    creator: str | None = None
    #: The verifier's searched forms of ``values`` (None: not searched), made once per codecs
    #: (``(codecs, forms)``; a cache of what ``values`` already say).
    forms: tuple[tuple[str, ...], dict[str, list[bytes] | None]] | None = None


#: Person names are numbered for the whole process (a part shared by objects keeps its numbers).
_NAME_NUMBERS = itertools.count(1)
#: Elements longer than this are walked each time (their bytes would fill the memo).
_MEMO_BYTES = 2048
#: Parts in the recent generation of a `_Memo` (per set of rules).
_MAX_MEMO = 16384
_UN_VRS = (None, b"UN")


def _element_keys_python(
    data: bytes, entries: dict[int, tuple[bytes | None, int, int]], shift: int, max_bytes: int
) -> list[tuple[int, bytes | None, bool, tuple[bytes | None, bytes] | None, bytes] | None]:
    """What the parts of top-level elements are remembered by: (tag, VR, whether an implicit
    or UN value has an undefined length, the (VR, value) of the private creator of its block
    when that comes before it, the value bytes); ``None`` for a value longer than
    ``max_bytes`` (walked each time). The compiled core's ``element_keys`` gives the same."""
    keys: list[tuple[int, bytes | None, bool, tuple[bytes | None, bytes] | None, bytes] | None]
    keys = []
    n = len(data)
    for tag, (raw_vr, vpos, length) in entries.items():
        start = vpos + shift
        if not (0 <= length <= max_bytes and 0 <= start <= n - length):
            keys.append(None)
            continue
        undefined = raw_vr in _UN_VRS and start >= 4 and data[start - 4 : start] == _UNDEFINED
        group, number = tag >> 16, tag & 0xFFFF
        creator = None
        if group & 1 and number > 0xFF:
            found = entries.get(group << 16 | number >> 8)
            if found is not None:
                cpos, clen = found[1] + shift, found[2]
                if 0 <= cpos < start and 0 <= clen and cpos <= n - clen:  # a creator before
                    creator = (found[0], data[cpos : cpos + clen])
        keys.append((tag, raw_vr, undefined, creator, data[start : start + length]))
    return keys


_UNDEFINED = b"\xff\xff\xff\xff"
_element_keys = getattr(compiled_core(), "element_keys", _element_keys_python)


class _Memo:
    """Parts by element (`Collector.collect`), in two generations: when the recent one is full
    it becomes the older one, whose parts move back to the recent one as they are met again (an
    element of every object, such as its SOP Instance UID, fills the memo but does not stay)."""

    __slots__ = ("older_parts", "recent")

    def __init__(self) -> None:
        self.recent: dict[Any, _Part] = {}
        self.older_parts: dict[Any, _Part] = {}

    def older(self, key: Any) -> _Part | None:
        part = self.older_parts.pop(key, None)
        if part is not None:
            self.put(key, part)
        return part

    def put(self, key: Any, part: _Part) -> None:
        if len(self.recent) >= _MAX_MEMO:
            self.older_parts, self.recent = self.recent, {}
        self.recent[key] = part


_MEMOS: dict[tuple[Any, ...], tuple[tuple[Any, ...], _Memo]] = {}


def _parts_memo(
    collector: Collector, codecs: tuple[str, ...], encoding: tuple[bool, bool]
) -> _Memo:
    """The parts of top-level elements under the collector's rules (a series shares them): by
    (options, IOD, modules present, kept, codecs, encoding)."""
    types = collector.types
    key = (collector.options, id(types), collector.present, collector.kept, codecs, encoding)
    return cast(_Memo, _by_rules(_MEMOS, key, (types,), _Memo, 64))


def source_tree(original: Dataset | str | Path, *, walker: bool = True) -> Tree:
    if isinstance(original, Dataset):
        return tree_of(original)
    with open(original, "rb") as f:
        raw = f.read()
    if walker:
        try:
            return read_tree(raw)
        except Exception:  # noqa: BLE001 - bytes the walker refuses: pydicom's reading
            pass
    return tree_of(pydicom.dcmread(io.BytesIO(raw), force=True))


def _terms(tree: Tree) -> tuple[str, ...]:
    return _top_charset(tree) or ()


def codecs_of(tree: Tree) -> list[str]:
    terms = _terms(tree)
    return list(_python_codecs(terms)) if terms else []


def extended(*trees: Tree) -> bool:
    """Whether a character set with code extensions (ISO 2022 escapes) is in use: a value's
    bytes then depend on the escapes around it, so the decoded texts are searched too."""
    for tree in trees:
        terms = _terms(tree)
        if len(terms) > 1 or any("2022" in t for t in terms):
            return True
    return False
