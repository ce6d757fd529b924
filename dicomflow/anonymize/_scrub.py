"""Identifying values typed into attributes the profile keeps are masked in the output.

The Basic Profile keeps attributes such as Image Type, Body Part Examined, Sequence Name,
Convolution Kernel, Window Center & Width Explanation and the meanings of kept codes: their
values are assumed not to identify. A technologist who types the patient's name or ID into one
of them breaks that assumption, and the value would reach the share unchanged. So, after the
profile has run, every text value of the output (at every nesting level, private blocks
included) is searched for the instance's identifying values, and each occurrence is replaced
by as many ``X`` as it has characters (the value keeps its length, hence its encoding stays
valid for every text VR, CS included).

The identifying values searched are those of the original that the profile does not keep:
every person name (PN) as stored and as people type it (``John Doe``, ``Doe, John``: family
and given name together; one name part alone is too often an ordinary word); patient
and other IDs and their issuers, accession numbers, admission IDs, birth dates; institution,
department and station names and addresses, telephone numbers, device serial numbers. Values
of fewer than 3 characters, and short numbers (fewer than 6 digits), are not searched: they
would mask ordinary codes. The search ignores case.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

__all__ = ["Scrubber", "identifying_values"]

#: Text VRs whose kept values are searched (UIDs, dates and numbers have their own actions).
SEARCHED_VRS = frozenset({"CS", "SH", "LO", "ST", "LT", "UT", "UC"})
#: Attributes whose values identify the patient or the place, by keyword.
IDENTIFYING = (
    "PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "AdmissionID",
    "PatientBirthDate", "PatientAddress", "PatientTelephoneNumbers", "MilitaryRank",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "DeviceSerialNumber", "MedicalRecordLocator", "PatientInsurancePlanCodeSequence",
    "OtherPatientIDsSequence", "RegionOfResidence", "CountryOfResidence",
)  # fmt: skip
_NUMBER = re.compile(r"[0-9 .+\-]+")


def _texts(value: Any) -> Iterator[str]:
    if value is None:
        return
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, MultiValue | list | tuple):
        for v in value:
            yield from _texts(v)
        return
    text = str(value).strip(" \0")
    if text:
        yield text


def _searchable(text: str) -> bool:
    if len(text) < 3:
        return False
    return not (_NUMBER.fullmatch(text) and sum(c.isdigit() for c in text) < 6)


def _name_forms(text: str) -> set[str]:
    """A person name as it is stored and as people type it: ``DOE^JOHN``, ``John Doe``,
    ``Doe John``, ``Doe, John`` (family and given name together; one name part alone is an
    ordinary word too often: a patient "Test^Patient" and a "Test Manufacturer")."""
    forms = {text}
    for group in text.split("="):  # alphabetic, ideographic, phonetic
        parts = [p.strip() for p in group.split("^")]
        family, given = (parts + ["", ""])[:2]
        forms.add(group.strip("^ "))
        if family and given:
            forms.update({f"{given} {family}", f"{family} {given}", f"{family}, {given}",
                          f"{family},{given}"})  # fmt: skip
    return {f for f in forms if f}


def _vr(elem: Any, tag: int) -> str | None:
    vr = elem.VR
    if vr is None:  # implicit VR: the dictionary says what it is
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return None
    return str(vr)


_IDENTIFYING_TAGS = frozenset(tag_for_keyword(k) for k in IDENTIFYING) - {None}


def identifying_values(ds: Dataset, skip: Callable[[int], bool] | None = None) -> set[str]:
    """The identifying values of ``ds`` (top level and nested) worth searching for.

    ``skip(tag)`` says which attributes are kept on purpose (a recipe's ``keep``): their
    values are in the output because the user wants them there, and are not searched for.
    Only the elements that can hold such values are read (no other value is converted).
    """
    found: set[str] = set()

    def value(d: Dataset, elem: Any) -> Any:
        # converted here, not through d[tag]: that would store the conversion in the caller's
        # data set, which the engine must leave as it was
        if isinstance(elem, RawDataElement):
            return convert_raw_data_element(elem, encoding=d._character_set, ds=d).value
        return elem.value

    def walk(d: Dataset) -> None:
        for tag, elem in list(d._dict.items()):
            if skip is not None and skip(int(tag)):
                continue
            vr = _vr(elem, int(tag))
            if vr == "SQ":
                for item in value(d, elem) or ():
                    walk(item)
            elif vr == "PN":
                for text in _texts(value(d, elem)):
                    found.update(_name_forms(text))
            elif int(tag) in _IDENTIFYING_TAGS:
                found.update(_texts(value(d, elem)))

    try:
        walk(ds)
    except Exception:  # noqa: BLE001 - an unreadable part: the engine reports it itself
        pass
    return {v.strip() for v in found if _searchable(v.strip())}


class Scrubber:
    """Masks the identifying values of one original in the text values of its output."""

    def __init__(self, values: set[str]):
        terms = sorted((v.strip() for v in values if v.strip()), key=len, reverse=True)
        self._text = re.compile("|".join(map(re.escape, terms)), re.I) if terms else None
        raw: set[bytes] = set()
        for term in terms:
            for codec in ("utf-8", "latin-1"):
                try:
                    raw.add(term.encode(codec))
                except UnicodeEncodeError:
                    continue
        ordered = sorted(raw, key=len, reverse=True)
        self._bytes = re.compile(b"|".join(map(re.escape, ordered)), re.I) if ordered else None
        #: keyword (or tag) -> occurrences masked
        self.masked: dict[str, int] = {}

    def __bool__(self) -> bool:
        return self._text is not None

    def scrub(self, ds: Dataset, skip: Callable[[int], bool] | None = None) -> None:
        """Mask, in place, every occurrence in the text elements of ``ds`` (and nested);
        attributes ``skip(tag)`` keeps on purpose, and the identifying attributes themselves
        (removed, replaced, or kept on purpose), are left as they are."""
        if self._text is None:
            return
        elements = ds._dict
        for tag in list(elements):
            key = int(tag)
            if key in _IDENTIFYING_TAGS or (skip is not None and skip(key)):
                continue
            elem = elements[tag]
            vr = _vr(elem, key)
            if vr == "SQ":
                value = ds[tag].value
                if isinstance(value, Sequence):
                    for item in value:
                        self.scrub(item, skip)
                continue
            if vr not in SEARCHED_VRS:
                continue
            if isinstance(elem, RawDataElement):
                if elem.value is None or self._bytes is None:
                    continue
                new, n = self._bytes.subn(lambda m: b"X" * len(m.group(0)), elem.value)
                if n:
                    elements[tag] = elem._replace(value=new)
                    self._count(tag, n)
                continue
            value = elem.value
            if isinstance(value, MultiValue):
                changed, n = [], 0
                for v in value:
                    text, k = self._mask(v)
                    changed.append(text)
                    n += k
                if n:
                    elem.value = changed
                    self._count(tag, n)
            elif isinstance(value, str):
                text, n = self._mask(value)
                if n:
                    elem.value = text
                    self._count(tag, n)

    def _mask(self, value: Any) -> tuple[Any, int]:
        if not isinstance(value, str) or self._text is None:
            return value, 0
        return self._text.subn(lambda m: "X" * len(m.group(0)), value)

    def _count(self, tag: int, n: int) -> None:
        name = keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        self.masked[name] = self.masked.get(name, 0) + n
