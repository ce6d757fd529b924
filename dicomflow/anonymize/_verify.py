"""Prove that no identifying value of an original survives in its de-identified output.

`verify` collects every value of the original that the profile does not keep (any VR, any
character set, names and their parts, dates in DA/DT forms, UIDs, private text) and searches
each one everywhere in the output: every byte of it (all attributes, the ones the profile keeps
included, private blocks, nested items, the File Meta Information, the pixel data), its decoded
text values, and its path. Each value is classified by the attribute it came from:

- **strong** identifiers (person names and their parts, IDs, accession numbers, dates and
  datetimes, addresses, telephone numbers, institution, department and station names, device
  serial numbers, AE titles, UIDs) are a leak wherever they are found, in kept attributes too:
  a patient's name typed into Image Type is still the patient's name;
- **weak** values (descriptions, comments, codes, times, private text the profile removes) are
  reported as *kept* when found only inside an attribute the profile keeps whose original value
  already held them (a Study Description ``CHEST`` equal to the Body Part Examined the profile
  keeps), and as a leak anywhere else.

Attributes kept on purpose (a recipe's keeps, the ``kept`` argument) are reported as kept: their
own values wherever they are found, and any value found inside them that the original held
there.

Values that cannot identify anyone on their own are not searched (the trivial-value rule):
values shorter than 3 characters; numbers (digits, ``.``, ``+``, ``-``, spaces) shorter than 6
characters or made of zeros (longer numbers match only where no other digit touches them);
values contained in one of the engine's fixed texts (``ANONYMOUS``, ``CLEANED``, the dummy dates
and times, the CID 7050 code meanings).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pydicom
from pydicom.charset import convert_encodings
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from .._version import __version__
from ..dicom import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from ._keys import DICOM_UID_ROOT
from ._options import BASIC_PROFILE_CODE, DeidOptions
from ._policy import CURVE_GROUPS, DATE_VRS, KEEP_REFS, TEXT_VRS, policy_for, resolve
from ._record import INSERTED_TEXTS
from ._structured import STRUCTURED_SEQUENCES, content_overrides
from ._tables import iod_for_sop_class, iod_types, method_codes, safe_private
from ._values import FIXED_TEXTS
from ._verify_output import Output, Place, find, label, vr_of

__all__ = ["KEPT", "LEAK", "Finding", "verify"]

#: A finding's kind: an identifying value the output should not hold.
LEAK = "leak"
#: A finding's kind: a value the output holds because an attribute is kept (listed, not failed).
KEPT = "kept"
#: While searching: a single-word strong value kept, unless another part of its name is there.
_WORD_KEPT = "word"

_NUMERIC = re.compile(r"[0-9.+\- ]+")
#: Printable ASCII, tab and line breaks, and the printable Latin-1 range.
_PRINTABLE = bytes(range(0x20, 0x7F)) + b"\t\r\n" + bytes(range(0xA0, 0x100))
#: Longest binary private/UN value examined for text (longer ones are data, not text).
MAX_BINARY_TEXT = 65536
#: Occurrences of one value examined per output (enough to tell kept from leaked).
MAX_HITS = 32
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


@dataclass(frozen=True)
class Finding:
    """An identifying value of the original found in the output.

    Attributes
    ----------
    attribute : str
        Where the value sat in the original: tag path and keyword, e.g.
        ``(0008,1140) ReferencedImageSequence[0]>(0008,1155) ReferencedSOPInstanceUID``.
    value : str
        The value, masked (first two characters, then ``*``), so reports can be shared.
    where : str
        Where it was found in the output: the element (``(0008,0008) ImageType``,
        ``(0008,2218) AnatomicRegionSequence[0]>(0008,0104) CodeMeaning``, ``File Meta (0002,0016)
        SourceApplicationEntityTitle``), ``preamble``, ``bytes outside any element value``,
        or ``output path``.
    kind : str
        ``leak`` (`LEAK`): the output should not hold it; ``kept`` (`KEPT`): it is there because
        an attribute is kept (by the profile, for a value that is not a strong identifier and
        that the original held in that attribute, or on purpose, ``kept=``). Only leaks fail
        verification.
    offset : int or None
        The byte offset in the output (of the inflated data set for a deflated one), when found
        in its bytes.
    """

    attribute: str
    value: str
    where: str
    kind: str = LEAK
    offset: int | None = None


def _mask(text: str) -> str:
    return text[:2] + "*" * max(len(text) - 2, 1)


def _values(elem: DataElement) -> list[Any]:
    value = elem.value
    if value is None or value == "" or value == b"":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _kind(text: str) -> tuple[str, str]:
    return text, "number" if _NUMERIC.fullmatch(text) else "text"


def _strings(elem: DataElement, private: bool) -> Iterator[tuple[str, str]]:
    """The searchable forms of a non-sequence element's value, with how to match each:
    ``text``, ``number`` (no digit may touch it), ``date`` (a DA: digits may follow, as in a
    DT) or ``time`` (a TM: may follow the date of a DT)."""
    vr = elem.VR
    for value in _values(elem):
        if isinstance(value, bytes):
            if not (private or vr == "UN") or len(value) > MAX_BINARY_TEXT:
                continue  # binary numbers and pixel-like data are not distinctive
            body = value.rstrip(b"\0 ")
            if len(body.translate(None, _PRINTABLE)) > 0.1 * len(body):
                continue  # not text
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


def _trivial(text: str) -> bool:
    if len(text) < 3:
        return True
    if _NUMERIC.fullmatch(text):
        return len(text) < 6 or set(text) <= set("0.+- ")
    return False


def _strong(vr: str, keywords: tuple[str, ...]) -> bool:
    """Whether a value of this VR, in the attribute at the end of ``keywords`` (the sequences
    around it before), identifies on its own wherever it is found."""
    if vr in _STRONG_VRS:
        return True
    own = keywords[-1] if keywords else ""
    if own.startswith(_CODING):
        return False
    return any(w in k for k in keywords if k for w in _STRONG_WORDS)


def _word(text: str, vr: str, keywords: tuple[str, ...]) -> bool:
    """Whether a strong value is a single word that is also an ordinary word: a part of a
    person name, or a one-word institution, department or station name. Such a value found
    only where the original already held it, in an attribute the profile keeps, is reported as
    kept (a patient called "Knee" scanned with a coil named "KNEE"); two parts of one name
    there, or any other strong value, are a leak."""
    if not _WORD.fullmatch(text):
        return False
    return vr == "PN" or any(w in k for k in keywords if k for w in _WORDY)


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@dataclass(slots=True)
class _Searched:
    """One identifying value of the original, and what it came from: ``strong`` or weak, kept
    on purpose (``deliberate``), a single ordinary ``word`` (see `_word`), and the person names
    it is a part of (``names``: numbers shared by the parts of one name)."""

    attribute: str
    match: str
    strong: bool
    deliberate: bool
    word: bool
    names: frozenset[int]


class _Collector:
    """Walks the original with the engine's rules: the values the profile does not keep are
    searched; where the profile keeps an attribute, the original element is remembered (by its
    tag path) without decoding it, to tell later whether the original held a value there."""

    def __init__(self, original: Dataset, options: DeidOptions, kept: frozenset[str]) -> None:
        self.options = options
        self.policy = policy_for(options)
        self.safe = safe_private() if options.retain_safe_private else {}
        sop_class = original.get("SOPClassUID")
        self.types = iod_types(iod_for_sop_class(str(sop_class))) if sop_class else None
        self.present = (
            self.types.present_modules(set(original.keys())) if self.types else frozenset()
        )
        self.kept = kept
        self.values: dict[str, _Searched] = {}
        self.held: dict[tuple[int, ...], list[tuple[Dataset, int]]] = {}
        self.names = 0  # person names seen: their parts share the number
        # attributes an Option keeps that the Basic Profile would not (Retain Device Identity's
        # Station Name...): kept by the user's choice, like a recipe's
        self.basic = policy_for(DeidOptions()) if options != DeidOptions() else None
        self.chosen: set[tuple[int, ...]] = set()

    def deliberate(self, key: tuple[int, ...], keywords: tuple[str, ...]) -> bool:
        """Whether the attribute (or a sequence around it) is kept on purpose."""
        if not self.kept:
            return False
        return any(k in self.kept for k in keywords if k) or any(
            _tag_text(t) in self.kept for t in key
        )

    def hold(self, ds: Dataset, tag: int, key: tuple[int, ...]) -> None:
        self.held.setdefault(key, []).append((ds, tag))

    def holds(self, key: tuple[int, ...], folded: str, forms: Collection[bytes]) -> bool:
        """Whether a kept original element at ``key`` held the value."""
        for ds, tag in self.held.get(key, ()):
            try:
                value = ds[tag].value
            except Exception:  # noqa: BLE001 - unreadable in the original
                continue
            if isinstance(value, bytes):
                low = value.lower()
                if any(form in low for form in forms):
                    return True
                continue
            values = value if isinstance(value, MultiValue | list | tuple) else [value]
            if folded in "\\".join(str(v) for v in values).casefold():
                return True
        return False

    def add(
        self,
        ds: Dataset,
        elem: DataElement,
        where: str,
        key: tuple[int, ...],
        keywords: tuple[str, ...],
        *,
        private: bool = False,
        any_vr: bool = False,
    ) -> None:
        """Search the values of ``elem``: ``private`` (a private attribute: weak, its bytes
        read as text when they are text) or ``any_vr`` (inside a removed sequence: numbers and
        text bytes too)."""
        strong = not private and _strong(elem.VR, keywords)
        deliberate = self.deliberate(key, keywords)
        if deliberate:
            self.hold(ds, int(elem.tag), key)
        name: frozenset[int] = frozenset()
        if elem.VR == "PN":
            self.names += 1
            name = frozenset((self.names,))
        for text, match in _strings(elem, private or any_vr):
            if not text or text.startswith(DICOM_UID_ROOT):
                continue  # registered DICOM UIDs (SOP Classes, palettes...) identify no one
            word = strong and _word(text, elem.VR, keywords)
            found = self.values.get(text)
            if found is None:
                self.values[text] = _Searched(where, match, strong, deliberate, word, name)
                continue
            if strong and not found.strong:
                found.strong, found.attribute, found.word = True, where, word
            elif strong:
                found.word = found.word and word
            found.deliberate = found.deliberate or deliberate
            found.names = found.names | name

    def _element(self, ds: Dataset, tag: int) -> DataElement | None:
        try:
            return ds[tag]
        except Exception:  # noqa: BLE001 - unreadable: its bytes as text, if they are text
            raw = ds.get_item(tag)
            if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
                return DataElement(tag, "UN", raw.value)
            return None

    def everything(
        self, ds: Dataset, prefix: str, path: tuple[int, ...], names: tuple[str, ...]
    ) -> None:
        """Every value inside a removed sequence is identifying."""
        for tag in list(ds.keys()):
            elem = self._element(ds, int(tag))
            if elem is None:
                continue
            where = label(prefix, int(tag), elem.keyword or "")
            key, keywords = (*path, int(tag)), (*names, elem.keyword or "")
            if elem.VR == "SQ":
                for i, item in enumerate(elem.value or ()):
                    self.everything(item, f"{where}[{i}]>", key, keywords)
            else:
                private = bool(elem.tag.group & 1)
                self.add(ds, elem, where, key, keywords, private=private, any_vr=True)

    def walk(
        self,
        ds: Dataset,
        path: tuple[int, ...],
        prefix: str,
        names: tuple[str, ...],
        overrides: dict[int, str] | None = None,
    ) -> None:
        creators: dict[tuple[int, int], str] = {}
        for base_tag in list(ds.keys()):
            tag = int(base_tag)
            key = (*path, tag)
            if tag >> 16 & 1:
                self._private(ds, tag, key, prefix, names, creators)
                continue
            code = (overrides or {}).get(tag) or self.policy.code(tag)
            if len(code) > 1 or code == "T":
                code = resolve(code, tag, path, self.types, self.present)
            vr = vr_of(ds.get_item(base_tag), tag)
            if vr != "SQ" and self._keeps(code, tag, vr):
                self.hold(ds, tag, key)  # kept: decoded only if a value is found in it
                self._by_option(tag, path, vr)
                if self.kept and self.deliberate(key, (*names, keyword_for_tag(tag))):
                    elem = self._element(ds, tag)
                    if elem is not None:
                        keywords = (*names, elem.keyword or "")
                        self.add(ds, elem, label(prefix, tag, elem.keyword or ""), key, keywords)
                continue
            elem = self._element(ds, tag)
            if elem is None:
                continue
            keyword = elem.keyword or ""
            where = label(prefix, tag, keyword)
            keywords = (*names, keyword)
            if elem.VR == "SQ":
                if code in ("X", "Z") or (
                    code == "D" and (keyword.endswith("CodeSequence") or tag == 0x0040A300)
                ):
                    self.everything_in(elem, where, key, keywords)
                else:
                    self._items(elem, key, where, keywords)
            elif self._keeps(code, tag, elem.VR):
                self.hold(ds, tag, key)  # converted to an SQ-less VR only now (UN, implicit)
                self._by_option(tag, path, elem.VR)
                if self.deliberate(key, keywords):
                    self.add(ds, elem, where, key, keywords)
            else:
                if code == "C" and elem.VR == "DT":  # a shifted DT keeps its time of day
                    self.hold(ds, tag, key)
                self.add(ds, elem, where, key, keywords)

    def _private(
        self,
        ds: Dataset,
        tag: int,
        key: tuple[int, ...],
        prefix: str,
        names: tuple[str, ...],
        creators: dict[tuple[int, int], str],
    ) -> None:
        group, number = tag >> 16, tag & 0xFFFF
        elem = self._element(ds, tag)
        if elem is None:
            return
        where = label(prefix, tag, "")
        keywords = (*names, "")
        if 0x10 <= number <= 0xFF:
            creators[(group, number)] = str(elem.value or "").strip()
            self.hold(ds, tag, key)
            return
        creator = creators.get((group, number >> 8))
        if (group, creator, number & 0xFF) in self.safe:
            if elem.VR == "SQ":
                self._items(elem, key, where, keywords)
            else:
                self.hold(ds, tag, key)
                if self.deliberate(key, keywords):
                    self.add(ds, elem, where, key, keywords, private=True)
        elif elem.VR == "SQ":
            self.everything_in(elem, where, key, keywords)
        else:
            self.add(ds, elem, where, key, keywords, private=True)

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
        self, elem: DataElement, where: str, key: tuple[int, ...], names: tuple[str, ...]
    ) -> None:
        for i, item in enumerate(elem.value or ()):
            self.everything(item, f"{where}[{i}]>", key, names)

    def _items(
        self, elem: DataElement, path: tuple[int, ...], where: str, names: tuple[str, ...]
    ) -> None:
        structured = self.options.clean_structured_content and path[-1] in STRUCTURED_SEQUENCES
        for i, item in enumerate(elem.value or ()):
            overrides = None
            if structured:
                overrides = content_overrides(item, self.options)
                if overrides is None:
                    self.everything(item, f"{where}[{i}]>", path, names)
                    continue
            self.walk(item, path, f"{where}[{i}]>", names, overrides)

    def meta(self, meta: Dataset) -> None:
        """The identifying attributes of the original's File Meta Information."""
        for keyword in _META_IDENTIFYING:
            if keyword not in meta:
                continue
            if self.options.retain_uids and keyword == "MediaStorageSOPInstanceUID":
                continue
            elem = meta[keyword]
            tag = int(elem.tag)
            where = f"File Meta {label('', tag, keyword)}"
            self.add(meta, elem, where, (tag,), (keyword,), any_vr=elem.VR in ("OB", "UN"))


def _read(source: Dataset | str | Path) -> Dataset:
    if isinstance(source, Dataset):
        return source
    return pydicom.dcmread(source, force=True)


def _codecs(ds: Dataset) -> list[str]:
    try:
        charset = ds.get("SpecificCharacterSet")
        return list(convert_encodings(charset.value if charset is not None else None))
    except Exception:  # noqa: BLE001 - an unknown charset still gets UTF-8 and Latin-1
        return []


def _forms(text: str, codecs: list[str]) -> list[bytes]:
    """The value's encodings in the output's and original's character sets, UTF-8 and
    Latin-1, with ASCII letters lowered (as the searched bytes are)."""
    variants = {text} if text.isascii() else {text, text.lower(), text.upper()}
    forms: set[bytes] = set()
    for variant in variants:
        for codec in [*codecs, "utf-8", "latin-1"]:
            try:
                forms.add(variant.encode(codec).lower())
            except (UnicodeEncodeError, LookupError):
                continue
    return sorted(f for f in forms if f)


def _recorded_options(output: Dataset) -> DeidOptions:
    """The options of the last de-identification, from its CID 7050 codes."""
    recorded = output.get(0x00120064)
    items = recorded.value if recorded is not None and recorded.VR == "SQ" else []
    codes = [str(item.get("CodeValue", "")) for item in items]
    if BASIC_PROFILE_CODE in codes:  # the last de-identification's codes start there
        codes = codes[len(codes) - 1 - codes[::-1].index(BASIC_PROFILE_CODE) :]
    return DeidOptions.from_codes(codes)


def _fixed() -> str:
    return "\0".join(
        [
            *FIXED_TEXTS,
            *INSERTED_TEXTS,
            f"dicomflow {__version__} PS3.15 Annex E",
            IMPLEMENTATION_CLASS_UID,
            IMPLEMENTATION_VERSION_NAME,
            *(f"{c.code_value}\0{c.meaning}" for c in method_codes().values()),
        ]
    ).casefold()


class _Search:
    """Searches one output for the values of one original."""

    def __init__(self, output: Output, collector: _Collector, codecs: list[str], path: str):
        self.output = output
        self.collector = collector
        self.codecs = codecs
        self.path = path

    def judge(self, value: _Searched, folded: str, forms: list[bytes], place: Place | None) -> str:
        """``kept`` or ``leak`` for one place the value was found at; ``word``: kept, unless
        another part of the same name is found at the same place (decided by `verify`)."""
        if value.deliberate:
            return KEPT
        if place is None or place.meta:
            return LEAK
        keeps = not value.strong or value.word or place.key in self.collector.chosen
        keeps = keeps or self.collector.deliberate(place.key, place.keywords)
        if not keeps or not self.collector.holds(place.key, folded, forms):
            return LEAK
        return _WORD_KEPT if value.strong and value.word else KEPT

    def run(self, text: str, value: _Searched) -> list[Finding]:
        folded = text.casefold()
        forms = _forms(text, self.codecs)
        found: dict[str, Finding] = {}

        def record(where: str, kind: str, offset: int | None) -> None:
            old = found.get(where)
            if old is None or (old.kind != LEAK and kind == LEAK):
                found[where] = Finding(value.attribute, _mask(text), where, kind, offset)

        output = self.output
        seen = 0
        for form in forms:
            for at in output.search(form, value.match):
                place = output.place_at(at)
                where = place.label if place is not None else output.outside(at)
                record(where, self.judge(value, folded, forms, place), at)
                seen += 1
                if seen >= MAX_HITS:
                    break
        if not seen and not text.isascii():  # decoded text: encodings the byte forms missed
            for place, decoded in output.texts():
                if find(decoded, folded, value.match) != -1:
                    record(place.label, self.judge(value, folded, forms, place), None)
        if self.path and find(self.path, folded, value.match) != -1:
            record("output path", KEPT if value.deliberate else LEAK, None)
        return list(found.values())


def verify(
    original: Dataset | str | Path,
    deidentified: Dataset | str | Path,
    *,
    output_path: str | Path | None = None,
    options: DeidOptions | None = None,
    kept: Collection[str] = (),
) -> list[Finding]:
    """Search the de-identified output for every identifying value of the original.

    Parameters
    ----------
    original, deidentified : Dataset or path
        The instance before and after de-identification (datasets or Part 10 files).
    output_path : str or Path, optional
        Where the output is (or will be) stored; searched too. Defaults to ``deidentified``
        when that is a path.
    options : DeidOptions, optional
        The options used; by default read from the output's De-identification Method Code
        Sequence (CID 7050 codes), so values an Option keeps are not searched.
    kept : collection of str, optional
        Attributes kept on purpose (keywords, or tags as ``(gggg,eeee)``; a sequence covers
        what is inside it), e.g. by a recipe: their values, and values the original held in
        them, are reported as kept, not as leaks.

    Returns
    -------
    list of Finding
        One per value and place found, leaks (``kind == "leak"``) and values there because an
        attribute is kept (``kind == "kept"``); no leak means nothing identifying was left.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset()
    >>> ds.PatientName = "Doe^Jane"
    >>> leaky = Dataset()
    >>> leaky.ImageComments = "scan of Jane Doe"
    >>> sorted((f.value, f.where, f.kind) for f in verify(ds, leaky))
    [('Do*', '(0020,4000) ImageComments', 'leak'), ('Ja**', '(0020,4000) ImageComments', 'leak')]
    """
    if output_path is None and not isinstance(deidentified, Dataset):
        output_path = deidentified
    source = _read(original)
    output = Output.of(deidentified)
    if options is None:
        options = _recorded_options(output.dataset)
    collector = _Collector(source, options, frozenset(kept))
    meta = getattr(source, "file_meta", None)
    if meta is not None:
        collector.meta(meta)
    collector.walk(source, (), "", ())
    fixed = _fixed()
    path = str(output_path).casefold() if output_path is not None else ""
    search = _Search(output, collector, _codecs(output.dataset) + _codecs(source), path)
    findings: list[Finding] = []
    names: list[frozenset[int]] = []
    for text, value in collector.values.items():
        if _trivial(text) or text.casefold() in fixed:
            continue
        for finding in search.run(text, value):
            findings.append(finding)
            names.append(value.names)
    return _settle_words(findings, names)


def _settle_words(findings: list[Finding], names: list[frozenset[int]]) -> list[Finding]:
    """Single-word strong values found where the original held them are kept, unless two
    parts of one person name are found in the same place: then each is a leak."""
    parts: dict[tuple[str, int], int] = {}
    for finding, groups in zip(findings, names, strict=True):
        if finding.kind == _WORD_KEPT:
            for group in groups:
                parts[(finding.where, group)] = parts.get((finding.where, group), 0) + 1
    settled = []
    for finding, groups in zip(findings, names, strict=True):
        if finding.kind == _WORD_KEPT:
            together = any(parts[(finding.where, g)] > 1 for g in groups)
            finding = replace(finding, kind=LEAK if together else KEPT)
        settled.append(finding)
    return settled
