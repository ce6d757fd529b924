"""Prove that no identifying value of an original survives in its de-identified output.

`verify` collects every value of the original that the profile does not keep (any VR, any
character set, PN components, dates in DA/DT/TM forms, UIDs, private text) and searches each one
in the output: in its bytes (encoded in the output's and the original's character sets, UTF-8
and Latin-1), in its decoded text values, and in the output path.

Values that cannot identify anyone on their own, or that the output holds for other reasons,
are not searched (the "trivial value rule", see ``docs/deidentification.md``):

- empty values and values of fewer than 3 characters;
- numbers (digits, ``.``, ``+``, ``-``, spaces) of fewer than 6 characters, or made of zeros;
  longer numbers only match where no other digit touches them;
- values also found in an attribute of the original that the profile keeps (they are in the
  output because they are kept there, e.g. a Study Description equal to a Body Part Examined);
- values contained in one of the engine's fixed texts (``ANONYMOUS``, ``CLEANED``, the dummy
  dates and times, the CID 7050 code meanings).
"""

from __future__ import annotations

import bisect
import io
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import AnyStr

import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.multival import MultiValue

from ..dicom import IMPLEMENTATION_CLASS_UID
from ._keys import DICOM_UID_ROOT
from ._options import BASIC_PROFILE_CODE, DeidOptions
from ._policy import CURVE_GROUPS, DATE_VRS, KEEP_REFS, TEXT_VRS, policy_for, resolve
from ._record import INSERTED_TEXTS
from ._structured import STRUCTURED_SEQUENCES, content_overrides
from ._tables import iod_for_sop_class, iod_types, method_codes, safe_private
from ._values import FIXED_TEXTS

__all__ = ["Finding", "verify"]

_NUMERIC = re.compile(r"[0-9.+\- ]+")
#: Printable ASCII, tab and line breaks, and the printable Latin-1 range.
_PRINTABLE = bytes(range(0x20, 0x7F)) + b"\t\r\n" + bytes(range(0xA0, 0x100))
#: Longest binary private/UN value examined for text (longer ones are data, not text).
MAX_BINARY_TEXT = 65536
_STRING_VRS = TEXT_VRS | DATE_VRS | {"CS", "UI", "DS", "IS"}
_META_IDENTIFYING = (
    "MediaStorageSOPInstanceUID",
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
)


@dataclass(frozen=True)
class Finding:
    """One identifying value of the original found in the output.

    Attributes
    ----------
    attribute : str
        Where the value sat in the original: tag path and keyword, e.g.
        ``(0008,1140)[0]>(0008,1155) ReferencedSOPInstanceUID``.
    value : str
        The value, masked (first two characters, then ``*``), so reports can be shared.
    where : str
        Where it was found: ``bytes at offset 1234 (ISO_IR 100)``, ``text of (0010,4000)
        PatientComments``, or ``output path``.
    """

    attribute: str
    value: str
    where: str


def _mask(text: str) -> str:
    return text[:2] + "*" * max(len(text) - 2, 1)


def _label(path: str, elem: DataElement) -> str:
    tag = f"({elem.tag.group:04X},{elem.tag.element:04X})"
    return f"{path}{tag} {elem.keyword}".strip()


def _values(elem: DataElement) -> list:
    value = elem.value
    if value is None or value == "" or value == b"":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


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


def _kind(text: str) -> tuple[str, str]:
    return text, "number" if _NUMERIC.fullmatch(text) else "text"


def _trivial(text: str) -> bool:
    if len(text) < 3:
        return True
    if _NUMERIC.fullmatch(text):
        return len(text) < 6 or set(text) <= set("0.+- ")
    return False


class _Collector:
    """Walks the original with the engine's rules, sorting values into identifying and kept."""

    def __init__(self, original: Dataset, options: DeidOptions) -> None:
        self.options = options
        self.policy = policy_for(options)
        self.safe = safe_private() if options.retain_safe_private else {}
        sop_class = original.get("SOPClassUID")
        self.types = iod_types(iod_for_sop_class(str(sop_class))) if sop_class else None
        self.present = (
            self.types.present_modules(set(original.keys())) if self.types else frozenset()
        )
        self.identifying: dict[str, tuple[str, str]] = {}  # value -> (attribute, kind)
        self.kept: list[str] = []

    def add(self, label: str, elem: DataElement, private: bool = False) -> None:
        for text, kind in _strings(elem, private):
            if text.startswith(DICOM_UID_ROOT):
                continue  # registered DICOM UIDs (SOP Classes, palettes...) identify no one
            if text and text not in self.identifying:
                self.identifying[text] = (label, kind)

    def keep(self, elem: DataElement) -> None:
        self.kept.extend(text for text, _ in _strings(elem, True))

    def everything(self, ds: Dataset, prefix: str) -> None:
        for elem in _elements(ds):
            label = _label(prefix, elem)
            if elem.VR == "SQ":
                for i, item in enumerate(elem.value or ()):
                    self.everything(item, f"{label}[{i}]>")
            else:
                self.add(label, elem, private=True)

    def walk(self, ds: Dataset, path: tuple[int, ...], prefix: str, overrides=None) -> None:
        creators: dict[tuple[int, int], str] = {}
        for elem in _elements(ds):
            tag = int(elem.tag)
            group, number = tag >> 16, tag & 0xFFFF
            label = _label(prefix, elem)
            if group & 1:
                if 0x10 <= number <= 0xFF:
                    creators[(group, number)] = str(elem.value or "").strip()
                    self.keep(elem)
                    continue
                creator = creators.get((group, number >> 8))
                if (group, creator, number & 0xFF) in self.safe:
                    self._kept(elem, path, label)
                elif elem.VR == "SQ":
                    self.everything_in(elem, label)
                else:
                    self.add(label, elem, private=True)
                continue
            code = (overrides or {}).get(tag) or self.policy.code(tag)
            if len(code) > 1 or code == "T":
                code = resolve(code, tag, path, self.types, self.present)
            if elem.VR == "SQ":
                keyword = elem.keyword or ""
                if code in ("X", "Z") or (
                    code == "D" and (keyword.endswith("CodeSequence") or tag == 0x0040A300)
                ):
                    self.everything_in(elem, label)
                else:
                    self._items(elem, (*path, tag), label)
            elif code in ("K", KEEP_REFS) or self._clean_keeps(code, tag, elem.VR):
                self.keep(elem)
            else:
                if code == "C" and elem.VR == "DT":  # a shifted DT keeps its time of day
                    self.kept.extend(str(v)[8:] for v in _values(elem))
                self.add(label, elem)

    def _clean_keeps(self, code: str, tag: int, vr: str) -> bool:
        """Whether action C keeps this value as it is (see `Deidentifier._clean`)."""
        if code != "C":
            return False
        return vr in ("TM", "CS") or (tag >> 16 in CURVE_GROUPS and vr not in TEXT_VRS)

    def _kept(self, elem: DataElement, path: tuple[int, ...], label: str) -> None:
        if elem.VR == "SQ":
            self._items(elem, (*path, int(elem.tag)), label)
        else:
            self.keep(elem)

    def everything_in(self, elem: DataElement, label: str) -> None:
        for i, item in enumerate(elem.value or ()):
            self.everything(item, f"{label}[{i}]>")

    def _items(self, elem: DataElement, path: tuple[int, ...], label: str) -> None:
        structured = self.options.clean_structured_content and path[-1] in STRUCTURED_SEQUENCES
        for i, item in enumerate(elem.value or ()):
            overrides = None
            if structured:
                overrides = content_overrides(item, self.options)
                if overrides is None:
                    self.everything(item, f"{label}[{i}]>")
                    continue
            self.walk(item, path, f"{label}[{i}]>", overrides)


def _elements(ds: Dataset) -> Iterator[DataElement]:
    for tag in list(ds.keys()):
        try:
            yield ds[tag]
        except Exception:  # noqa: BLE001 - unreadable in the original: nothing to compare
            continue


def _read(source: Dataset | str | Path) -> Dataset:
    if isinstance(source, Dataset):
        return source
    return pydicom.dcmread(source, force=True)


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


def _codecs(ds: Dataset) -> list[str]:
    try:
        charset = ds.get("SpecificCharacterSet")
        return list(convert_encodings(charset.value if charset is not None else None))
    except Exception:  # noqa: BLE001 - an unknown charset still gets UTF-8 and Latin-1
        return []


def _forms(text: str, codecs: list[str]) -> set[bytes]:
    forms = set()
    for codec in [*codecs, "utf-8", "latin-1"]:
        try:
            forms.add(text.encode(codec))
        except (UnicodeEncodeError, LookupError):
            continue
    return {f for f in forms if f}


def _digit(haystack: AnyStr, at: int) -> bool:
    """Whether position ``at`` holds a digit (``False`` outside the haystack)."""
    return 0 <= at < len(haystack) and haystack[at : at + 1].isdigit()


def _find(haystack: AnyStr, needle: AnyStr, kind: str) -> int:
    """First position of ``needle`` where its ``kind`` allows a match (see `_strings`)."""
    dot = haystack[:0] + (b"." if isinstance(haystack, bytes) else ".")
    start = 0
    while True:
        at = haystack.find(needle, start)
        if at == -1 or kind == "text":
            return at
        end = at + len(needle)
        touched_before = _digit(haystack, at - 1) or (at > 0 and haystack[at - 1 : at] == dot)
        if kind == "time" and touched_before:  # the time part of a DT: YYYYMMDD before it
            date_start = at - 8
            touched_before = not (
                date_start >= 0
                and haystack[date_start:at].isdigit()
                and not _digit(haystack, date_start - 1)
            )
        touched_after = kind != "date" and _digit(haystack, end)
        if not touched_before and not touched_after:
            return at
        start = at + 1


def _output_texts(ds: Dataset, prefix: str = "") -> Iterator[tuple[str, str]]:
    for elem in _elements(ds):
        label = _label(prefix, elem)
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or ()):
                yield from _output_texts(item, f"{label}[{i}]>")
        elif elem.VR in _STRING_VRS or elem.tag.is_private:
            for value in _values(elem):
                if not isinstance(value, bytes):
                    yield label, str(value).casefold()


def verify(
    original: Dataset | str | Path,
    deidentified: Dataset | str | Path,
    *,
    output_path: str | Path | None = None,
    options: DeidOptions | None = None,
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
        Sequence (CID 7050 codes), so values an Option keeps are not reported.

    Returns
    -------
    list of Finding
        Empty when nothing identifying was found.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset()
    >>> ds.PatientName = "Doe^Jane"
    >>> leaky = Dataset()
    >>> leaky.ImageComments = "scan of Jane Doe"
    >>> [f.value for f in verify(ds, leaky)]
    ['Do*', 'Ja**']
    """
    if output_path is None and not isinstance(deidentified, Dataset):
        output_path = deidentified
    source = _read(original)
    if isinstance(deidentified, Dataset):
        output, data = deidentified, _encode(deidentified)
    else:
        data = Path(deidentified).read_bytes()
        output = pydicom.dcmread(io.BytesIO(data), force=True)
    if options is None:
        recorded = output.get(0x00120064)
        items = recorded.value if recorded is not None and recorded.VR == "SQ" else []
        codes = [str(item.get("CodeValue", "")) for item in items]
        if BASIC_PROFILE_CODE in codes:  # the last de-identification's codes start there
            codes = codes[len(codes) - 1 - codes[::-1].index(BASIC_PROFILE_CODE) :]
        options = DeidOptions.from_codes(codes)

    collector = _Collector(source, options)
    meta = getattr(source, "file_meta", None)
    if meta is not None:
        for keyword in _META_IDENTIFYING:
            if keyword in meta and not (
                options.retain_uids and keyword == "MediaStorageSOPInstanceUID"
            ):
                collector.add(f"File Meta {keyword}", meta[keyword])
        for elem in _elements(meta):
            if elem.keyword not in _META_IDENTIFYING:
                collector.keep(elem)
    collector.walk(source, (), "")

    kept = "\0".join(collector.kept).casefold()
    fixed = "\0".join(
        [
            *FIXED_TEXTS,
            *INSERTED_TEXTS,
            IMPLEMENTATION_CLASS_UID,
            *(f"{c.code_value}\0{c.meaning}" for c in method_codes().values()),
        ]
    ).casefold()
    texts = list(_output_texts(output))
    labels = [where for where, _ in texts]
    starts = list(itertools.accumulate((len(t) + 1 for _, t in texts), initial=0))[:-1]
    blob = "\0".join(t for _, t in texts)
    where_path = str(output_path).casefold() if output_path is not None else ""
    codecs = _codecs(output) + _codecs(source)
    header, bulk, bulk_at = _split_bulk(data, output)
    findings: list[Finding] = []
    for value, (label, kind) in collector.identifying.items():
        folded = value.casefold()
        if _trivial(value) or folded in kept or folded in fixed:
            continue
        found = False
        for form in _forms(value, codecs):
            at = _find(header, form, kind)
            if at == -1 and len(form) >= BULK_MIN_BYTES:
                at = _find(bulk, form, kind)
                at = at if at == -1 else at + bulk_at
            if at != -1:
                findings.append(Finding(label, _mask(value), f"bytes at offset {at}"))
                found = True
                break
        if not found:  # decoded text: catches encodings the byte forms missed
            at = _find(blob, folded, kind)
            if at != -1:
                where = labels[bisect.bisect_right(starts, at) - 1]
                findings.append(Finding(label, _mask(value), f"text of {where}"))
        if where_path and _find(where_path, folded, kind) != -1:
            findings.append(Finding(label, _mask(value), "output path"))
    return findings


#: Shortest value searched inside pixel data: a 6-byte run matches random bytes about once in
#: 2**48 positions, a 3-byte one every few megabytes.
BULK_MIN_BYTES = 6
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def _split_bulk(data: bytes, output: Dataset) -> tuple[bytes, bytes, int]:
    """Split the output bytes into the header and the pixel data value (if it can be found)."""
    for tag in _PIXEL_TAGS:
        if tag not in output:
            continue
        try:
            value = output[tag].value
        except Exception:  # noqa: BLE001 - unreadable pixel data: search everything fully
            break
        if isinstance(value, bytes) and len(value) >= 256:
            at = data.rfind(value)
            if at != -1:
                return data[:at] + b"\0" + data[at + len(value) :], value, at
        break
    return data, b"", 0
